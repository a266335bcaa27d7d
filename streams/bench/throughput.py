"""Throughput: ingest, collect, project, replay, each next to its baseline from the same run.

How each figure is taken (so the numbers can be read):

- *ingest*: a local Jetstream server (its own process, unpaced) serves the corpus; ``bge ingest``
  (its own process) writes it to the raw topic. The rate is the slope of the topic's end offsets,
  polled every 0.1 s, from the first event to the last (start-up excluded). The baseline is
  :func:`streams.bench.baselines.socket_to_kafka` in its own process against a fresh server, taken
  the same way. Compressed (``compress=true``, zstd) and plain JSON.
- *collect*: the corpus is put in the raw topic first. The worker (``bge worker``: the Faust app,
  collect and project agents) runs as its own process; the rate is the slope of its consumer
  group's committed offsets on the raw topic (Faust commits every second). The same for the Quix
  Streams pipeline (:mod:`streams.bench.quix_pipeline`, its own process and group). Also the
  :class:`~streams.stages.collect.Collector` driven directly by aiokafka in the bench process (the collect
  code without Faust), and the plain consumer (read + ``orjson.loads``), both timed inside.
- *project*: the corpus's domain events (made by the Collector, without Kafka:
  :func:`domain_messages`) cut into batches of ``PROJECTOR_BATCH_SIZE``, each pass into a fresh
  schema under the worker's GC policy; rows/s counts the rows the batches inserted, updated or
  deleted. *The stage*: :meth:`streams.stages.project.Projector.submit` as the worker calls it (a
  batch is decoded while Postgres runs the previous batch's transaction). *One batch after
  another*: ``projections.project_batch``, each batch decoded inside its transaction and the next
  started when it committed (the stage before it was pipelined), with its Python CPU per domain
  event (``time.process_time``), a figure far steadier than the wall rates, which wait on Postgres
  too. The baseline ``COPY``s the same batches' planned rows into unindexed temporary tables.
- *replay*: ``bge replay`` run in the bench process (``streams.cli.replay.run``) over the raw topic,
  JSON lines to ``/dev/null``, without and with a filter, next to the plain consumer.

One module of about 550 lines: the four throughput benches share their corpus, topics and
baselines; each is one section.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.bench import targets
from streams.bench.baselines import consume_and_decode
from streams.bench.harness import (
    ROOT,
    Corner,
    Figure,
    KafkaCounters,
    Options,
    Proc,
    ProcessSampler,
    batch_gc_policy,
    corpus_file,
    corpus_lines,
    process_cpu_s,
    produce_raw,
    service_cpu_s,
    slope,
)
from streams.config import Settings
from streams.topology import PROJECTOR_CONSUMER, Topic
from streams.kafka.clients import new_reader
from streams.observability.log import LOGGER_PREFIX

__all__ = ["Consumed", "MemoryState", "bench_collect", "bench_ingest", "bench_project", "bench_replay",
           "domain_messages", "quix_python"]


async def create_topics(settings: Settings, names: Sequence[str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="bge-bench")
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        for name in names:
            if name not in existing:
                try:
                    await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
                except TopicAlreadyExistsError:
                    pass
    finally:
        await admin.close()


# --- ingest -------------------------------------------------------------------------------


async def _ingest_once(opts: Options, corpus: Path, n: int, compress: bool) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    mode = "zstd" if compress else "json"
    corner = Corner(opts, f"ingest_{mode}")
    try:
        await corner.ensure_topics()
        raw = corner.topic(Topic.JETSTREAM_EVENTS)
        baseline_topic = corner.topic("bench.baseline.raw")
        await create_topics(corner.settings, [baseline_topic], opts.partitions)
        timeout = 60 + n / 1000
        async with KafkaCounters(corner.settings) as kafka:
            server = corner.server(corpus).start()
            await server.ready()
            ingest = corner.ingest(server.url, compress=compress).start()
            sampler = ProcessSampler().start()
            sampler.watch("ingest", lambda: ingest.pid)
            try:
                product = await slope(lambda: kafka.end_total(raw), n, timeout=timeout, alive=lambda: ingest.alive,
                                      cpu=lambda: _ingest_cpu_s(ingest, server))
            finally:
                await sampler.stop()
                ingest.stop()
                server.stop()
            opts.log(f"ingest ({mode}): {product['rate']:,.0f} events/s")

            server = corner.server(corpus).start()
            await server.ready()
            argv = [sys.executable, "-m", "streams.bench.baselines", "ingest", "--url", server.url,
                    "--topic", baseline_topic, "--count", str(n)] + (["--compress"] if compress else [])
            base_proc = Proc("baseline-ingest", argv, corner.env(), corner.folder / "baseline-ingest.log").start()
            corner.procs.append(base_proc)
            try:
                baseline = await slope(lambda: kafka.end_total(baseline_topic), n, timeout=timeout,
                                       alive=lambda: base_proc.alive or base_proc.returncode == 0,
                                       cpu=lambda: _ingest_cpu_s(base_proc, server))
            finally:
                base_proc.stop()
                server.stop()
            opts.log(f"ingest baseline ({mode}): {baseline['rate']:,.0f} events/s")
        return product, baseline, sampler.peak_mb("ingest")
    finally:
        await corner.cleanup()


def _ingest_cpu_s(ingest: Proc, server: Proc) -> dict[str, float]:
    """CPU seconds used so far by an ingest (``bge ingest`` or the bare loop), the Jetstream server
    feeding it, and Kafka."""
    return {"ingest": process_cpu_s(ingest.pid), "server": process_cpu_s(server.pid),
            "kafka": service_cpu_s()["kafka"]}


def _cpu_note(cpu_us: dict[str, float]) -> str:
    return (f"CPU per event: {cpu_us['ingest']:.1f} µs, its server {cpu_us['server']:.1f}, "
            f"Kafka {cpu_us['kafka']:.1f}") if cpu_us else ""


async def bench_ingest(opts: Options, n: int) -> list[Figure]:
    corpus = corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 100))
    figures: list[Figure] = []
    for compress in (True, False):
        mode = "zstd" if compress else "json"
        product, baseline, rss = await _ingest_once(opts, corpus, n, compress)
        base_label = f"baseline: websocket → aiokafka ({mode})"
        ratio = product["rate"] / baseline["rate"] if baseline["rate"] else None
        figures.append(Figure("ingest", base_label, baseline["rate"], "events/s", role="baseline",
                              notes=_cpu_note(baseline["cpu_us"]),
                              extra={"seconds": baseline["seconds"], "cpu_us_per_event": baseline["cpu_us"]}))
        figures.append(Figure(
            "ingest", f"bge ingest ({mode})", product["rate"], "events/s", baseline=base_label,
            target=targets.INGEST.text, met=targets.INGEST.met(product["rate"], baseline["rate"]),
            notes="; ".join(filter(None, [f"{ratio:.0%} of baseline" if ratio else "", f"peak RSS {rss or 0:.0f} MB",
                                          _cpu_note(product["cpu_us"])])),
            extra={"seconds": product["seconds"], "ratio": ratio, "peak_rss_mb": rss,
                   "cpu_us_per_event": product["cpu_us"]},
        ))
    return figures


# --- collect ------------------------------------------------------------------------------


class MemoryState:
    """The interface of :class:`streams.kafka.state.ChangelogState` held in memory, without a changelog
    (``ensure``, ``view``, ``put``, ``forget``): for running the Collector without Kafka."""

    def __init__(self) -> None:
        self._partitions: dict[int, dict[str, bytes]] = {}

    def __len__(self) -> int:
        return sum(len(data) for data in self._partitions.values())

    async def ensure(self, partition: int) -> None:
        self._partitions.setdefault(partition, {})

    def view(self, partition: int) -> dict[str, bytes]:
        return self._partitions[partition]

    def forget(self, partitions: Any) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    def put(self, partition: int, key: str, value: bytes | None, outbox: Any) -> None:
        data = self._partitions[partition]
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


class _Capture:
    """An outbox that keeps what is added for one topic (domain events without Kafka)."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.sent: list[tuple[bytes | None, bytes]] = []

    def add(self, topic: str, key: bytes | None, value: bytes, headers: Any = (), partition: int | None = None) -> None:
        if topic == self.topic:
            self.sent.append((key, value))


async def collector_direct(settings: Settings, raw: str, out: str, dlq: str, n: int) -> dict[str, Any]:
    """The collect code (:class:`~streams.stages.collect.Collector`) fed by a plain aiokafka consumer and
    sending through the worker's :class:`~streams.kafka.clients.Sender` (an outbox per fetch, awaited
    before the next). No Faust and no source; the account memory is held in memory
    (:class:`MemoryState`, no changelog)."""
    from domain.growth import StrategyConfig
    from streams.stages.collect import Collector
    from streams.kafka.clients import Sender, delivered

    sender = Sender(settings, client_id="bge-bench-collector")
    await sender.start()
    await sender.open(out, dlq)
    reader = new_reader(settings, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
                        client_id="bge-bench-collector")
    await reader.start()
    collector = Collector(config=StrategyConfig(), accounts=MemoryState(), events_topic=out, dlq_topic=dlq)
    try:
        from aiokafka import TopicPartition

        cluster = await reader._client.fetch_all_metadata()  # noqa: SLF001
        tps = [TopicPartition(raw, p) for p in sorted(cluster.partitions_for_topic(raw) or ())]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        started = time.perf_counter()
        done = 0
        while done < n:
            fetched = await reader.getmany(timeout_ms=500, max_records=5_000)
            outbox = sender.outbox()
            for tp, messages in fetched.items():
                await collector.handle_batch(messages, [tp.partition], outbox)
                done += len(messages)
            await delivered(sender.submit(outbox))
        elapsed = time.perf_counter() - started
    finally:
        await reader.stop()
        await sender.stop()
    return {"events": done, "seconds": elapsed, "rate": done / elapsed, "domain_events": collector.stats.domain_events}


def quix_python() -> str | None:
    """The interpreter of the Quix Streams baseline: ``BGE_BENCH_QUIX_PYTHON``, or the venv
    ``infra/bench/quix-venv`` makes; None when neither exists."""
    explicit = os.environ.get("BGE_BENCH_QUIX_PYTHON")
    if explicit:
        return explicit
    state = Path(os.environ.get("BGE_STATE_DIR") or ROOT / ".state")
    candidate = state / "bench" / "quix-venv" / "bin" / "python"
    return str(candidate) if candidate.exists() else None


async def _quix_run(opts: Options, corner: Corner, kafka: KafkaCounters, raw: str, n: int, timeout: float) -> tuple[dict[str, Any] | None, float | None, str]:
    python = quix_python()
    if python is None:
        return None, None, "not run: no Quix Streams venv (run infra/bench/quix-venv)"
    out, dlq = corner.topic("bench.quix.growth.events"), corner.topic("bench.quix.growth.dlq")
    await create_topics(corner.settings, [out, dlq], opts.partitions)
    group = f"{corner.prefix}quix"
    env = dict(opts.base_env)
    env["PYTHONPATH"] = str(ROOT)
    argv = [python, str(ROOT / "streams" / "bench" / "quix_pipeline.py"),
            "--bootstrap", ",".join(corner.settings.kafka_bootstrap_servers), "--input", raw, "--output", out,
            "--dlq", dlq, "--group", group, "--state-dir", str(corner.folder / "quix-state"),
            "--partitions", str(opts.partitions)]
    proc = Proc("quix", argv, env, corner.folder / "quix.log").start()
    corner.procs.append(proc)
    sampler = ProcessSampler().start()
    sampler.watch("quix", lambda: proc.pid)
    try:
        result = await slope(lambda: kafka.committed_total(group, raw), n, timeout=timeout, interval=0.25,
                             alive=lambda: proc.alive)
    except (TimeoutError, RuntimeError) as error:
        return None, None, f"failed: {error}; log: {proc.tail(5)}"
    finally:
        await sampler.stop()
        proc.stop()
    return result, sampler.peak_mb("quix"), ""


async def bench_collect(opts: Options, n: int) -> list[Figure]:
    corner = Corner(opts, "collect")
    try:
        lines = corpus_lines(corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 100)))
        await corner.ensure_topics()
        await corner.migrate()
        raw = corner.topic(Topic.JETSTREAM_EVENTS)
        await produce_raw(corner.settings, raw, lines)
        figures: list[Figure] = []
        timeout = 120 + n / 300

        plain = await consume_and_decode(corner.settings, raw, n)
        plain_label = "baseline: aiokafka consumer + orjson.loads"
        figures.append(Figure("collect", plain_label, plain["rate"], "events/s", role="baseline"))
        opts.log(f"collect baseline (plain consumer): {plain['rate']:,.0f} events/s")

        async with KafkaCounters(corner.settings) as kafka:
            quix, quix_rss, quix_note = await _quix_run(opts, corner, kafka, raw, n, timeout)
            quix_label = "baseline: same pipeline on Quix Streams 3.28.1"
            figures.append(Figure("collect", quix_label, quix["rate"] if quix else None, "events/s", role="baseline",
                                  notes=quix_note or f"peak RSS {quix_rss or 0:.0f} MB",
                                  extra={"peak_rss_mb": quix_rss}))
            if quix:
                opts.log(f"collect baseline (Quix Streams): {quix['rate']:,.0f} events/s")

            direct = await collector_direct(corner.settings, raw, corner.topic("bench.direct.growth.events"),
                                            corner.topic("bench.direct.growth.dlq"), n)
            figures.append(Figure("collect", "Collector class, aiokafka, no Faust (in-process)", direct["rate"],
                                  "events/s", baseline=plain_label,
                                  notes=f"{direct['domain_events'] / max(direct['events'], 1):.2f} domain events per raw event",
                                  extra=direct))
            opts.log(f"collect (Collector without Faust): {direct['rate']:,.0f} events/s")

            # the target's process: a worker running the collect stage only (its own group),
            # then, for the record, the default worker with every agent sharing the process
            for agents, group, label in (
                (["collect"], f"{corner.worker_group}-collect", "bge worker running the collect stage (WORKER_AGENTS=collect)"),
                (None, corner.worker_group, "bge worker with every agent in one process (default)"),
            ):
                worker = (corner.worker(worker_agents=agents) if agents else corner.worker()).start()
                sampler = ProcessSampler().start()
                sampler.watch("worker", lambda: worker.pid)
                try:
                    result = await slope(lambda: kafka.committed_total(group, raw), n, timeout=timeout,
                                         interval=0.25, alive=lambda: worker.alive)
                finally:
                    await sampler.stop()
                    worker.stop()
                rate = result["rate"]
                targeted = agents is not None
                figures.append(Figure(
                    "collect", label + ": raw events collected", rate, "events/s",
                    baseline=quix_label, target=targets.COLLECT.text if targeted else None,
                    met=targets.COLLECT.met(rate, quix["rate"] if quix else None) if targeted else None,
                    notes=(f"{rate / quix['rate']:.2f}x Quix; " if quix else "") + f"peak RSS {sampler.peak_mb('worker') or 0:.0f} MB",
                    extra={**result, "peak_rss_mb": sampler.peak_mb("worker")},
                ))
                opts.log(f"collect ({label}): {rate:,.0f} events/s")
        return figures
    finally:
        await corner.cleanup()


# --- project ------------------------------------------------------------------------------


@contextlib.contextmanager
def _collect_log_quieted() -> Iterator[None]:
    """The collect logger at ERROR for the block, its own level restored afterwards (the bench
    also runs inside other processes, such as the soak test's)."""
    logger = logging.getLogger(f"{LOGGER_PREFIX}.collect")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


async def domain_messages(lines: Sequence[bytes], *, topic: str, partitions: int) -> list[Any]:
    """The domain events the collect agent makes of ``lines`` (run by the Collector itself,
    without Kafka), as its ``growth.events`` messages (one per raw event and key), as projection
    messages on ``partitions`` partitions keyed like the worker
    (crc32 of the key stands in for Kafka's murmur2: only the per-key order matters)."""
    from domain.growth import StrategyConfig
    from projections import Message
    from streams.stages.collect import Collector

    events = _Capture("events")
    accounts = MemoryState()
    collector = Collector(config=StrategyConfig(), accounts=accounts, events_topic="events", dlq_topic="dlq")
    await accounts.ensure(0)
    with _collect_log_quieted():  # the dead letters are expected
        await collector.handle_batch([Consumed("raw", 0, offset, line) for offset, line in enumerate(lines)], [0], events)
    next_offset = [0] * partitions
    messages = []
    for key, value in events.sent:
        partition = zlib.crc32(key or b"") % partitions
        messages.append(Message(topic, partition, next_offset[partition], value))
        next_offset[partition] += 1
    return messages


# --- project --------------------------------------------------------------------------------


class Consumed(NamedTuple):
    """A message as the source hands it to a stage (with headers)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


def _copy_rows(plan: Any) -> dict[str, list[tuple[Any, ...]]]:
    from projections.writer import COLUMNS

    tables: dict[str, list[dict[str, Any]]] = {table: list(rows) for table, rows in plan.rows.items()}
    tables.setdefault("activity_events", []).extend(plan.activity)
    tables.setdefault("candidates", []).extend(plan.candidates)
    for round_ in plan.follow_rounds:
        tables.setdefault("follows", []).extend(round_.rows)
    out: dict[str, list[tuple[Any, ...]]] = {}
    for table, rows in tables.items():
        if table in COLUMNS and rows:
            names = [name for name, _ in COLUMNS[table]]
            out[table] = [tuple(row.get(name) for name in names) for row in rows]
    return out


async def _through_stage(opts: Options, batches: list[list[Any]]) -> tuple[int, float]:
    """``(rows, seconds)`` of the batches through the stage's :class:`Projector`, into a schema of
    its own."""
    from streams.kafka.clients import delivered
    from streams.stages.project import Projector

    corner = Corner(opts, "project_stage")
    try:
        await corner.migrate()
        projector = Projector(corner.settings.model_copy(update={"db_pool_min": 1, "db_pool_max": 2}))
        await projector.pool.open(wait=True)
        try:
            with batch_gc_policy():
                started = time.perf_counter()
                handed = []
                for batch in batches:
                    handed += await projector.submit([Consumed(*message) for message in batch])
                await delivered(handed)
                elapsed = time.perf_counter() - started
        finally:
            await projector.stop()
        return projector.stats.rows, elapsed
    finally:
        await corner.cleanup()


async def bench_project(opts: Options, n: int) -> list[Figure]:
    from domain.events import decode_all
    from projections import QueryStats, create_pool, project_batch
    from projections.plan import plan_batch
    from projections.writer import COLUMNS

    corner = Corner(opts, "project")
    try:
        schema = await corner.migrate()
        lines = corpus_lines(corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 100)))
        messages = await domain_messages(lines, topic=corner.topic(Topic.GROWTH_EVENTS), partitions=opts.partitions)
        events = sum(len(decode_all(m.value).unwrap()) for m in messages)
        size = corner.settings.projector_batch_size
        batches = [messages[i : i + size] for i in range(0, len(messages), size)]
        stage_rows, stage_elapsed = await _through_stage(opts, batches)
        opts.log(f"project (the stage, pipelined): {events / stage_elapsed:,.0f} domain events/s, "
                 f"{stage_rows / stage_elapsed:,.0f} rows/s")
        settings = corner.settings
        pool = create_pool(settings.database_url, schema, min_size=1, max_size=2,
                           statement_timeout_ms=settings.db_statement_timeout_ms, stats=QueryStats())
        await pool.open(wait=True)
        rows = 0
        by_table: dict[str, int] = {}
        try:
            with batch_gc_policy():  # the projector runs under it in the worker (about +15% here)
                started, cpu_started = time.perf_counter(), time.process_time()
                for batch in batches:
                    result = await project_batch(pool, PROJECTOR_CONSUMER, batch)
                    rows += sum(result.rows.values())
                    for table, count in result.rows.items():
                        by_table[table] = by_table.get(table, 0) + count
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
            opts.log(f"project (one batch after another): {events / elapsed:,.0f} domain events/s, "
                     f"{rows / elapsed:,.0f} rows/s")

            plans = [_copy_rows(plan_batch([e for m in batch for e in decode_all(m.value).unwrap()])) for batch in batches]
            async with pool.connection() as conn:
                for table in sorted({t for plan in plans for t in plan}):
                    spec = ", ".join(f"{name} {kind}" for name, kind in COLUMNS[table])
                    await conn.execute(f"CREATE TEMP TABLE copy_{table} ({spec})")
                copied = 0
                started = time.perf_counter()
                for plan in plans:
                    async with conn.transaction():
                        cur = conn.cursor()
                        for table, table_rows in plan.items():
                            names = ", ".join(name for name, _ in COLUMNS[table])
                            async with cur.copy(f"COPY copy_{table} ({names}) FROM STDIN") as copy:
                                for row in table_rows:
                                    await copy.write_row(row)
                            copied += len(table_rows)
                copy_elapsed = time.perf_counter() - started
            opts.log(f"project baseline (COPY): {copied / copy_elapsed:,.0f} rows/s")
        finally:
            await pool.close()
        copy_label = "baseline: bare COPY of the planned rows (unindexed temp tables)"
        copy_rate = copied / copy_elapsed
        return [
            Figure("project", copy_label, copy_rate, "rows/s", role="baseline",
                   extra={"rows": copied, "seconds": copy_elapsed}),
            Figure("project", f"the project stage (Projector.submit, pipelined; batches of {size}, the worker's GC "
                   "policy)", stage_rows / stage_elapsed, "rows/s", baseline=copy_label, target=targets.PROJECT.text,
                   met=targets.PROJECT.met(stage_rows / stage_elapsed, copy_rate),
                   notes=f"{stage_rows / stage_elapsed / copy_rate:.0%} of COPY; "
                         f"{events / stage_elapsed:,.0f} domain events/s",
                   extra={"rows": stage_rows, "seconds": stage_elapsed, "events": events, "messages": len(messages)}),
            Figure("project", "projections.project_batch, one batch after another (the stage unpipelined)",
                   rows / elapsed, "rows/s", baseline=copy_label,
                   notes=f"{rows / elapsed / copy_rate:.0%} of COPY; the stage did {stage_elapsed / elapsed:.0%} "
                         "of its time",
                   extra={"rows": rows, "seconds": elapsed, "by_table": by_table}),
            Figure("project", "projections.project_batch: domain events", events / elapsed, "events/s",
                   notes=f"{events:,} domain events in {len(messages):,} messages from {n:,} raw events in "
                         f"{len(batches)} batches",
                   extra={"events": events, "messages": len(messages), "batches": len(batches)}),
            # the Python half alone: far steadier than the wall rate, which waits on Postgres too
            Figure("project", "projections.project_batch: Python CPU per domain event", cpu / events * 1e6,
                   "µs", notes=f"of {elapsed / events * 1e6:.0f} µs wall per domain event",
                   extra={"cpu_seconds": cpu}),
        ]
    finally:
        await corner.cleanup()


# --- replay -------------------------------------------------------------------------------


async def bench_replay(opts: Options, n: int) -> list[Figure]:
    from streams.cli import replay

    corner = Corner(opts, "replay")
    try:
        lines = corpus_lines(corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 100)))
        await corner.ensure_topics()
        raw = corner.topic(Topic.JETSTREAM_EVENTS)
        await produce_raw(corner.settings, raw, lines)
        plain = await consume_and_decode(corner.settings, raw, n)
        plain_label = "baseline: aiokafka consumer + orjson.loads"
        with batch_gc_policy():  # nothing to decode: the floor aiokafka's fetching and unpacking set
            bare = await consume_and_decode(corner.settings, raw, n, decode=False)
        figures = [
            Figure("replay", plain_label, plain["rate"], "events/s", role="baseline"),
            Figure("replay", "baseline: aiokafka consumer alone (no decoding)", bare["rate"], "events/s",
                   role="baseline"),
        ]
        opts.log(f"replay baselines: plain consumer {plain['rate']:,.0f}, consumer alone {bare['rate']:,.0f} events/s")
        for label, args in (
            ("bge replay raw -o json > /dev/null", ["raw", "-o", "json", "-q", "--no-progress"]),
            ("bge replay raw --collection app.bsky.feed.post -o json > /dev/null",
             ["raw", "--collection", "app.bsky.feed.post", "-o", "json", "-q", "--no-progress"]),
        ):
            with open(os.devnull, "w") as devnull:
                started = time.perf_counter()
                with batch_gc_policy():  # as in the command (streams.cli.replay.main)
                    code = await replay.run(args, settings=corner.settings, stdout=devnull, stderr=io.StringIO())
                elapsed = time.perf_counter() - started
            rate = n / elapsed
            met = targets.REPLAY.met(rate, plain["rate"]) if code == 0 else False
            figures.append(Figure("replay", label, rate, "events/s", baseline=plain_label, target=targets.REPLAY.text,
                                  met=met,
                                  notes=f"{rate / plain['rate']:.0%} of the plain consumer, "
                                        f"{rate / bare['rate']:.0%} of the consumer alone; exit {code}",
                                  extra={"seconds": elapsed, "exit_code": code}))
            opts.log(f"{label}: {rate:,.0f} events/s")
        return figures
    finally:
        await corner.cleanup()
