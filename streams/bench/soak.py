"""The soak: the whole pipeline under faults, ending with the database a clean run makes.

    local Jetstream server ──► bge ingest ──► Kafka ──► bge worker ──► Postgres (scratch schema)

``N`` generated events (plus malformed ones mixed in) are served at a steady rate, so that the
faults land while events flow. At random times (from a seeded generator) within the stream:

1. malformed frames: ``send_malformed`` and ``send_not_event`` on the server (the ingest must
   dead-letter each to ``jetstream.dlq``, exactly once);
2. SIGKILL of ``bge ingest`` (restarted a moment later: it resumes from Kafka's tail);
3. ``drop_connections`` on the server (TCP abort: the ingest reconnects and rewinds);
4. SIGKILL of ``bge worker`` (restarted: at-least-once delivery, exactly-once effect);
5. Kafka stopped and started again (``infra/stack down kafka`` / ``up kafka``);
6. Postgres stopped and started again (``infra/stack down postgres`` / ``up postgres``).

Malformed events in the corpus itself (valid Jetstream envelopes whose record the domain
rejects: a like without a subject) must reach ``growth.dlq``: their distinct source offsets are
counted. A supervisor restarts any product process that exits on its own (as systemd would)
and counts it.

At the end the scratch schema must equal the clean reference: the same corpus run through the
same collect code (:class:`~streams.stages.collect.Collector`, no Kafka) and applied in order with
``projections.apply_batch`` into a second schema; every table but the bookkeeping
``projection_offsets`` and ``schema_migrations`` is compared by row count and an md5 of its
sorted rows. The worker runs the default strategies without popular content
(:data:`SOAK_STRATEGIES`: its candidates depend on how partitions interleave).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from domain.growth import PopularContentConfig, StrategyConfig
from streams.bench.harness import (
    BackgroundLoop,
    ROOT,
    Corner,
    Figure,
    KafkaCounters,
    Options,
    Proc,
    ProcessSampler,
    corpus_file,
    corpus_lines,
    read_topic,
)
from streams.bench.pipeline import wait_pipeline_done, worker_ready
from streams.topology import PROJECTOR_CONSUMER, Topic

__all__ = ["MALFORMED_EVENT", "SoakResult", "bench_soak", "soak", "table_checksums"]

MALFORMED_EVENT = (
    b'{"did":"{DID}","time_us":{TIME_US},"kind":"commit","commit":{"rev":"3soakrev{N}",'
    b'"operation":"create","collection":"app.bsky.feed.like","rkey":"3soak{N}",'
    b'"record":{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.000Z"}}}'
)
"""A valid Jetstream event whose like record has no subject: the collect stage dead-letters it
(``invalid_record``). ``{DID}``/``{TIME_US}`` come from the event before it, ``{N}`` numbers it."""

SKIPPED_TABLES = ("schema_migrations", "projection_offsets")

SOAK_STRATEGIES = StrategyConfig().model_copy(update={"popular_content": PopularContentConfig(enabled=False)})
"""The default strategies without popular content. Its decisions depend on event time across
the posts' windows, and so on how the partitions of ``growth.engagement`` interleave: no two runs,
faulty or clean, are bound to make the same popular-content candidates. Everything else is
deterministic per key, so the soak can demand an identical database."""


@dataclass
class SoakResult:
    events: int
    malformed_events: int
    malformed_frames: int
    jetstream_dlq: int = 0
    growth_dlq_messages: int = 0
    growth_dlq_distinct: int = 0
    raw_messages: int = 0
    raw_duplicates: int = 0
    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    faults: list[dict[str, Any]] = field(default_factory=list)
    unplanned_restarts: Counter[str] = field(default_factory=Counter)
    stall_restarts: int = 0
    seconds: float = 0.0
    peak_rss_mb: dict[str, float | None] = field(default_factory=dict)

    @property
    def tables_equal(self) -> bool:
        return bool(self.tables) and all(t["equal"] for t in self.tables.values())

    @property
    def ok(self) -> bool:
        return (self.tables_equal and self.jetstream_dlq == self.malformed_frames
                and self.growth_dlq_distinct == self.malformed_events)

    def as_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["unplanned_restarts"] = dict(self.unplanned_restarts)
        out["tables_equal"] = self.tables_equal
        out["ok"] = self.ok
        return out


async def table_checksums(database_url: str, schema: str, skip: tuple[str, ...] = SKIPPED_TABLES) -> dict[str, tuple[int, str]]:
    """Row count and md5 of the sorted rows (as text) of every base table of ``schema``."""
    from psycopg import sql

    from projections import connect

    async with await connect(database_url, schema) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
            "AND table_type = 'BASE TABLE' ORDER BY table_name")
        tables = [name for (name,) in await cur.fetchall() if name not in skip]
        out: dict[str, tuple[int, str]] = {}
        for table in tables:
            query = sql.SQL(
                "SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') "
                "FROM (SELECT * FROM {}) r").format(sql.Identifier(table))
            if table == "dead_letters":  # recorded_at is the database clock
                query = sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') FROM "
                    "(SELECT consumer, topic, partition, kafka_offset, code, reason, payload FROM dead_letters) r")
            if table == "candidates":  # source_*: where the deciding event was read, which a re-ingested copy changes
                query = sql.SQL(
                    "SELECT count(*), coalesce(md5(string_agg(r::text, E'\\n' ORDER BY r::text)), '') FROM "
                    "(SELECT did, strategy, score, reasons, subject_uri, source_did, first_seen_at, last_seen_at "
                    "FROM candidates) r")
            row = await (await conn.execute(query)).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
        return out


async def reference_schema(corner: Corner, lines: list[bytes]) -> str:
    """The clean run: the corpus through the Collector (no Kafka), applied in order."""
    from projections import Message, apply_batch, connect, migrate
    from streams.bench.throughput import domain_messages

    schema = f"{corner.schema}_ref"
    await migrate(corner.settings.database_url, schema)
    messages = await domain_messages(lines, topic="reference", partitions=1)
    async with await connect(corner.settings.database_url, schema) as conn:
        for start in range(0, len(messages), 5000):
            await apply_batch(conn, PROJECTOR_CONSUMER, [Message(*m) for m in messages[start : start + 5000]])
    return schema


async def _stack(opts: Options, *args: str) -> float:
    """``infra/stack ARGS`` (the environment the bench was started with); returns its seconds."""
    started = time.monotonic()
    completed = await asyncio.to_thread(
        subprocess.run, [str(ROOT / "infra" / "stack"), *args], env=opts.base_env, capture_output=True, text=True,
        timeout=300,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"infra/stack {' '.join(args)} failed: {completed.stderr[-500:]}")
    return time.monotonic() - started


class _Supervisor(BackgroundLoop):
    """Restarts product processes that exit when nobody meant them to; SIGKILLs a worker that
    makes no progress for ``stall_s`` while work is pending."""

    def __init__(self, opts: Options, corner: Corner, procs: dict[str, Proc], result: SoakResult,
                 kafka: KafkaCounters, stall_s: float = 120.0) -> None:
        self.opts = opts
        self.corner = corner
        self.procs = procs
        self.result = result
        self.kafka = kafka
        self.paused: set[str] = set()
        self.stall_s = stall_s
        self._progress = (-1, time.monotonic())
        self.infra_busy = False

    async def _run(self) -> None:
        raw = self.corner.topic(Topic.JETSTREAM_EVENTS)
        while True:
            await asyncio.sleep(1.0)
            for name, proc in self.procs.items():
                if name not in self.paused and not proc.alive:
                    self.result.unplanned_restarts[name] += 1
                    self.opts.log(f"soak: {name} exited ({proc.returncode}); restarting")
                    proc.start()
            if self.infra_busy:
                self._progress = (self._progress[0], time.monotonic())
                continue
            with contextlib.suppress(Exception):
                committed = await self.kafka.committed_total(self.corner.worker_group, raw)
                end = await self.kafka.end_total(raw)
                now = time.monotonic()
                if committed != self._progress[0] or committed >= end:
                    self._progress = (committed, now)
                elif now - self._progress[1] > self.stall_s and "worker" not in self.paused:
                    self.opts.log(f"soak: the worker made no progress for {self.stall_s:.0f}s; SIGKILL and restart")
                    self.result.stall_restarts += 1
                    worker = self.procs["worker"]
                    worker.kill()
                    worker.start()
                    self._progress = (committed, now)


async def soak(opts: Options, n: int, *, accounts: int | None = None, seconds: float | None = None,
               restart_kafka: bool = True, restart_postgres: bool = True, malformed_every: int | None = None,
               frames_each: int = 2) -> SoakResult:
    """Run the soak (see the module docstring) and return what it found."""
    rng = random.Random(opts.seed)
    accounts = accounts or max(n // 5, 100)
    seconds = seconds or max(60.0, n / 2000)
    every = malformed_every or max(n // 20, 1)
    corner = Corner(opts, "soak")
    started = time.monotonic()
    try:
        path = corpus_file(opts.workdir, n, seed=opts.seed, accounts=accounts, malformed=[MALFORMED_EVENT], every=every)
        lines = corpus_lines(path)
        result = SoakResult(events=n, malformed_events=len(lines) - n, malformed_frames=2 * frames_each)
        rate = len(lines) / seconds
        await corner.ensure_topics()
        await corner.migrate()
        strategies = corner.folder / "strategies.json"
        strategies.write_text(SOAK_STRATEGIES.model_dump_json())
        sampler = ProcessSampler(0.5).start()
        server = corner.server(path, rate=rate).start()
        await server.ready()
        worker = corner.worker(BGE_STRATEGIES_FILE=str(strategies)).start()
        ingest = corner.ingest(server.url, compress=True, JETSTREAM_STALL_TIMEOUT_SECONDS=10,
                               INGEST_DELIVERY_TIMEOUT_SECONDS=120)
        sampler.watch("worker", lambda: worker.pid)
        sampler.watch("ingest", lambda: ingest.pid)
        await worker_ready(worker)
        opts.log(f"soak: {len(lines):,} events ({result.malformed_events} malformed) at {rate:,.0f}/s over {seconds:.0f}s")
        ingest.start()
        stream_started = time.monotonic()

        def at(fraction: float, jitter: float = 0.04) -> float:
            return stream_started + seconds * (fraction + rng.uniform(-jitter, jitter))

        async def until(moment: float) -> None:
            await asyncio.sleep(max(0.0, moment - time.monotonic()))

        async with KafkaCounters(corner.settings) as kafka:
            supervisor = _Supervisor(opts, corner, {"ingest": ingest, "worker": worker}, result, kafka).start()
            dlq = corner.topic(Topic.JETSTREAM_DLQ)
            try:
                # 1. malformed frames, while all is calm; each must be dead-lettered once
                await until(at(0.08, 0.02))
                await _wait_connected(server)
                for _ in range(frames_each):
                    server.control("send_malformed")
                    server.control("send_not_event")
                await _wait_count(kafka, dlq, result.malformed_frames, 60)
                result.faults.append({"fault": "malformed frames", "count": result.malformed_frames,
                                      "at_s": time.monotonic() - stream_started})
                # 2. SIGKILL the ingest
                await until(at(0.2))
                supervisor.paused.add("ingest")
                ingest.kill()
                result.faults.append({"fault": "SIGKILL ingest", "at_s": time.monotonic() - stream_started})
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                ingest.start()
                supervisor.paused.discard("ingest")
                # 3. drop the Jetstream connections
                await until(at(0.32))
                dropped = server.control("drop_connections").get("connections", 0)
                result.faults.append({"fault": "drop_connections", "connections": dropped,
                                      "at_s": time.monotonic() - stream_started})
                # 4. SIGKILL the worker
                await until(at(0.44))
                supervisor.paused.add("worker")
                worker.kill()
                result.faults.append({"fault": "SIGKILL worker", "at_s": time.monotonic() - stream_started})
                await asyncio.sleep(rng.uniform(0.5, 2.0))
                worker.start()
                supervisor.paused.discard("worker")

                async def restart(service: str, fault: str, fraction: float) -> None:
                    """Stop ``service`` of the stack for 1-3 s once ``fraction`` of the stream was sent."""
                    await until(at(fraction))
                    supervisor.infra_busy = True
                    t0 = time.monotonic()
                    down = await _stack(opts, "down", service)
                    await asyncio.sleep(rng.uniform(1.0, 3.0))
                    up = await _stack(opts, "up", service)
                    supervisor.infra_busy = False
                    result.faults.append({"fault": fault, "outage_s": time.monotonic() - t0,
                                          "down_s": down, "up_s": up, "at_s": t0 - stream_started})

                if restart_kafka:  # 5. restart Kafka
                    await restart("kafka", "Kafka restart", 0.56)
                if restart_postgres:  # 6. restart Postgres
                    await restart("postgres", "Postgres restart", 0.72)
                opts.log("soak: faults done; waiting for the pipeline to finish")
                await wait_pipeline_done(corner, kafka, len(lines), timeout=600 + n / 100)
            finally:
                await supervisor.stop()
                await sampler.stop()
                for proc in list(corner.procs):
                    proc.stop(20)
        result.seconds = time.monotonic() - started
        result.peak_rss_mb = {name: sampler.peak_mb(name) for name in ("ingest", "worker")}

        result.jetstream_dlq = len(await read_topic(corner.settings, dlq))
        dead = await read_topic(corner.settings, corner.topic(Topic.GROWTH_DLQ))
        result.growth_dlq_messages = len(dead)
        result.growth_dlq_distinct = len({(dict(m.headers).get("source_partition"), dict(m.headers).get("source_offset"))
                                          for m in dead})
        raw = await read_topic(corner.settings, corner.topic(Topic.JETSTREAM_EVENTS))
        result.raw_messages = len(raw)
        result.raw_duplicates = len(raw) - len({m.value for m in raw})

        opts.log("soak: building the clean reference")
        reference = await reference_schema(corner, lines)
        live = await table_checksums(corner.settings.database_url, corner.schema)
        clean = await table_checksums(corner.settings.database_url, reference)
        for table in sorted(set(live) | set(clean)):
            got, want = live.get(table, (0, "")), clean.get(table, (0, ""))
            result.tables[table] = {"rows": got[0], "reference_rows": want[0], "md5": got[1],
                                    "reference_md5": want[1], "equal": got == want}
        return result
    finally:
        await corner.cleanup()


async def _wait_connected(server: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if server.stats().get("connections", 0) > 0:
                return
        await asyncio.sleep(0.2)


async def _wait_count(kafka: KafkaCounters, topic: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if await kafka.end_total(topic) >= count:
                return
        await asyncio.sleep(0.2)


async def bench_soak(opts: Options, n: int, *, accounts: int | None = None, restart_kafka: bool = True,
                     restart_postgres: bool = True) -> list[Figure]:
    result = await soak(opts, n, accounts=accounts, restart_kafka=restart_kafka, restart_postgres=restart_postgres)
    differing = [t for t, v in result.tables.items() if not v["equal"]]
    opts.log(f"soak: tables equal {len(result.tables) - len(differing)}/{len(result.tables)}; "
             f"jetstream.dlq {result.jetstream_dlq}/{result.malformed_frames}; "
             f"growth.dlq {result.growth_dlq_distinct}/{result.malformed_events}")
    rows = sum(v["rows"] for v in result.tables.values())
    faults = ", ".join(f["fault"] for f in result.faults)
    restarts = dict(result.unplanned_restarts)
    return [
        Figure("soak", f"database = clean run's ({len(result.tables)} tables, row counts + md5)",
               len(result.tables) - len(differing), "tables equal", target="all tables equal",
               met=result.tables_equal,
               notes=(f"{rows:,} rows; " + (f"differ: {', '.join(differing)}" if differing else "identical")),
               extra={"equality": True, "tables": result.tables}),
        Figure("soak", "jetstream.dlq dead letters vs malformed frames injected", result.jetstream_dlq, "messages",
               target=f"= {result.malformed_frames}", met=result.jetstream_dlq == result.malformed_frames,
               extra={"equality": True}),
        Figure("soak", "growth.dlq dead letters (distinct sources) vs malformed events", result.growth_dlq_distinct,
               "events", target=f"= {result.malformed_events}", met=result.growth_dlq_distinct == result.malformed_events,
               notes=f"{result.growth_dlq_messages} messages incl. re-deliveries",
               extra={"equality": True}),
        Figure("soak", f"{n:,} events through faults: {faults}", result.seconds, "s",
               notes=(f"raw topic {result.raw_messages:,} messages, {result.raw_duplicates} duplicates; "
                      f"unplanned restarts {restarts or 0}; stall restarts {result.stall_restarts}; "
                      f"peak RSS ingest {result.peak_rss_mb.get('ingest') or 0:.0f} MB, "
                      f"worker {result.peak_rss_mb.get('worker') or 0:.0f} MB"),
               extra=result.as_dict()),
    ]
