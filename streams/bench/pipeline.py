"""The whole pipeline as it runs in production: end-to-end latency at a fixed rate, and peak RSS.

Both start the real processes, each its own OS process: the local Jetstream server (``bge
jetstream-serve``, the stand-in for Jetstream), ``bge ingest`` and ``bge worker`` (collect and
projector agents), with a fresh topic prefix and Postgres schema.

Latency method. For every raw event, from its arrival at the ingest to the commit of the
Postgres transaction holding its rows:

- arrival: the raw Kafka message's timestamp (CreateTime, ms), which aiokafka stamps when the
  ingest hands it the frame it just read and decompressed (within microseconds of the websocket
  frame's arrival; the server sends at the fixed rate, so this is also the send time plus the
  loopback's and the ingest's reading delay);
- commit: the projector writes each batch's (topic, partition, next offset) marks in the same
  transaction as its rows, so the moment a mark passes a ``growth.events`` offset is the moment
  that domain event's rows became visible. The bench polls ``projection_offsets`` every 20 ms
  and records when each mark moved; each domain event carries its source raw event's
  coordinates (``source.partition``/``source.offset``), so a raw event's latency is the latest
  commit among its domain events minus its arrival. The polling adds 0-20 ms (10 ms on average).
- The first ``WARMUP_S`` seconds are left out (connections, first fetches). Raw events that
  yield no domain event (collections not collected) are not counted.

The stage split (``collect``: raw arrival → domain event produced, the growth message's own
CreateTime; ``project``: that → commit) is in the JSON.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import re
import time
from collections.abc import Sequence
from typing import Any

import orjson

from streams.bench import targets
from streams.bench.harness import (
    BackgroundLoop,
    Corner,
    Figure,
    KafkaCounters,
    Options,
    Proc,
    ProcessSampler,
    corpus_file,
    percentile,
    read_topic,
    wait_for,
)
from streams.topology import Topic

__all__ = ["DEFAULT_LATENCY_RUNS", "OffsetsWatcher", "bench_latency", "bench_memory", "latency_runs",
           "tracing_label", "wait_pipeline_done", "worker_ready"]

WARMUP_S = 3.0
POLL_S = 0.02
# the rows: 1,000/s untraced and with every event traced, 5,000/s untraced
DEFAULT_LATENCY_RUNS: tuple[tuple[float, str], ...] = ((1000.0, "off"), (1000.0, "on"), (5000.0, "off"))
DEFAULT_LATENCY_RATES = (1000.0, 5000.0)


def latency_runs(rates: Sequence[float] | None, tracing: str | None) -> list[tuple[float, str]]:
    """The (rate, tracing) runs of a latency bench: the issue's three when neither is chosen;
    otherwise every chosen rate (default 1,000 and 5,000) with the chosen tracing (default off)."""
    if not rates and tracing is None:
        return list(DEFAULT_LATENCY_RUNS)
    return [(float(rate), tracing or "off") for rate in (rates or DEFAULT_LATENCY_RATES)]


def tracing_label(mode: str) -> str:
    """How a row names its tracing mode."""
    if mode == "off":
        return "tracing off"
    if mode == "on":
        return "every event traced to Jaeger"
    return f"traces sampled at {float(mode):g}"


async def worker_ready(worker: Proc, timeout: float = 90.0) -> None:
    """Until the Faust worker logged that it is ready (its agents subscribed)."""
    def ready() -> bool:
        if not worker.alive:
            raise RuntimeError(f"the worker exited: {worker.tail()}")
        return "Ready" in worker.tail(400)

    with contextlib.suppress(TimeoutError):
        await wait_for(ready, timeout, "the worker to be ready", interval=0.5)


class OffsetsWatcher(BackgroundLoop):
    """Polls the projector's marks for ``topic`` and records when each one moved."""

    def __init__(self, corner: Corner, topic: str, interval: float = POLL_S) -> None:
        self.corner = corner
        self.topic = topic
        self.interval = interval
        self.moves: dict[int, list[tuple[int, float]]] = {}
        self.marks: dict[int, int] = {}

    async def _run(self) -> None:
        from projections import connect

        settings = self.corner.settings
        while True:
            try:
                async with await connect(settings.database_url, self.corner.schema) as conn:
                    while True:
                        cur = await conn.execute(
                            "SELECT partition, next_offset FROM projection_offsets WHERE consumer = 'projector' "
                            "AND topic = %s", (self.topic,))
                        now = time.time()
                        for partition, next_offset in await cur.fetchall():
                            if next_offset > self.marks.get(partition, 0):
                                self.marks[partition] = next_offset
                                self.moves.setdefault(partition, []).append((next_offset, now))
                        await asyncio.sleep(self.interval)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - Postgres restarting (soak): poll again
                await asyncio.sleep(1.0)

    def committed_at(self, partition: int, offset: int) -> float | None:
        """When the mark of ``partition`` first passed ``offset`` (None if it never did)."""
        moves = self.moves.get(partition)
        if not moves:
            return None
        index = bisect.bisect_right([mark for mark, _ in moves], offset)
        return moves[index][1] if index < len(moves) else None

    def total_at(self, when: float) -> int:
        """The sum of the marks as polled at ``when`` (each partition's last move at or before it)."""
        total = 0
        for moves in self.moves.values():
            index = bisect.bisect_right([at for _, at in moves], when)
            total += moves[index - 1][0] if index else 0
        return total

    @property
    def total(self) -> int:
        return sum(self.marks.values())


async def projected_total(corner: Corner, topic: str) -> int:
    from projections import connect

    async with await connect(corner.settings.database_url, corner.schema) as conn:
        cur = await conn.execute("SELECT coalesce(sum(next_offset), 0) FROM projection_offsets "
                                 "WHERE consumer = 'projector' AND topic = %s", (topic,))
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def wait_pipeline_done(corner: Corner, kafka: KafkaCounters, n_raw: int, timeout: float,
                             on_poll: Any = None) -> float:
    """Until the raw topic holds ``n_raw`` events, the worker committed all of them, and the
    projector's marks reach the end of ``growth.events`` (stable across two polls). Returns the
    monotonic time it was first seen done."""
    raw, growth = corner.topic(Topic.JETSTREAM_EVENTS), corner.topic(Topic.GROWTH_EVENTS)
    state = {"last": -1}

    async def done() -> float | None:
        if on_poll is not None:
            await on_poll()
        try:
            if await kafka.end_total(raw) < n_raw:
                return None
            if await kafka.committed_total(corner.collect_group, raw) < n_raw:
                return None
            end = await kafka.end_total(growth)
            if end == 0 or await projected_total(corner, growth) < end:
                return None
        except Exception:  # noqa: BLE001 - a service restarting (soak): not done yet
            return None
        if state["last"] == end:
            return time.monotonic()
        state["last"] = end
        return None

    return await wait_for(done, timeout, "the pipeline to project everything", interval=1.0)


# --- latency ------------------------------------------------------------------------------


async def _latency_run(opts: Options, rate: float, seconds: float, tracing: str = "off") -> dict[str, Any]:
    n = int(rate * seconds)
    opts = dataclasses.replace(opts, tracing=tracing)
    corner = Corner(opts, re.sub(r"[^a-z0-9]+", "_", f"latency_{int(rate)}_{tracing}"))
    try:
        corpus = corpus_file(opts.workdir, n, seed=opts.seed + 1, accounts=max(n // 5, 100), rate_per_s=rate)
        await corner.ensure_topics()
        await corner.migrate()
        growth = corner.topic(Topic.GROWTH_EVENTS)
        saturated = False
        export_problem = await _trace_export_problem(corner)
        sampler = ProcessSampler(0.5).start()
        workers = corner.start_workers(sampler)
        watcher = OffsetsWatcher(corner, growth).start()
        try:
            for worker in workers.values():
                await worker_ready(worker)
            server = corner.server(corpus, rate=rate).start()
            await server.ready()
            ingest = corner.ingest(server.url, compress=True).start()
            sampler.watch("ingest", lambda: ingest.pid)
            async with KafkaCounters(corner.settings) as kafka:
                try:
                    await wait_pipeline_done(corner, kafka, n, timeout=seconds * 4 + 90)
                except TimeoutError:  # the pipeline cannot keep up: what was not committed counts as infinite
                    saturated = True
        finally:
            await watcher.stop()
            await sampler.stop()
            for proc in list(corner.procs):
                proc.stop(15)
        raw_messages = await read_topic(corner.settings, corner.topic(Topic.JETSTREAM_EVENTS))
        arrival = {(m.partition, m.offset): m.timestamp / 1000 for m in raw_messages}
        start = min(arrival.values()) + WARMUP_S
        end = max(arrival.values())
        commit: dict[tuple[int, int], float] = {}
        produced: dict[tuple[int, int], float] = {}
        missing = 0
        for m in await read_topic(corner.settings, growth):
            source = orjson.loads(m.value).get("source", {})
            key = (source.get("partition"), source.get("offset"))
            at = watcher.committed_at(m.partition, m.offset)
            if at is None:
                missing += 1
                continue
            commit[key] = max(commit.get(key, 0.0), at)
            produced[key] = max(produced.get(key, 0.0), m.timestamp / 1000)
        total, collect, project = [], [], []
        for key, at in commit.items():
            arrived = arrival.get(key)
            if arrived is None or arrived < start:
                continue
            total.append((at - arrived) * 1000)
            collect.append((produced[key] - arrived) * 1000)
            project.append((at - produced[key]) * 1000)
        unfinished = 0
        if saturated:  # raw events not yet collected, or collected and not yet committed
            unfinished = sum(1 for key, arrived in arrival.items() if arrived >= start and key not in commit)
            total += [float("inf")] * unfinished
        achieved = len(raw_messages) / (end - min(arrival.values())) if end > min(arrival.values()) else None
        return {
            "rate": rate, "tracing": tracing, "seconds": seconds, "events": n, "achieved_rate": achieved, "measured": len(total),
            "p50_ms": percentile(total, 50), "p95_ms": percentile(total, 95), "p99_ms": percentile(total, 99),
            "max_ms": max(total) if total else None,
            "collect_p50_ms": percentile(collect, 50), "collect_p99_ms": percentile(collect, 99),
            "project_p50_ms": percentile(project, 50), "project_p99_ms": percentile(project, 99),
            "unmatched_domain_events": missing, "poll_ms": POLL_S * 1000, "saturated": saturated,
            "unfinished": unfinished, "max_finite_ms": max((t for t in total if t != float("inf")), default=None),
            "peak_rss_mb": {name: sampler.peak_mb(name) for name in ("ingest", *workers)},
            "workers": list(workers), "trace_export_problem": export_problem,
        }
    finally:
        await corner.cleanup()


async def _trace_export_problem(corner: Corner) -> str | None:
    """Why the product processes' spans would not reach the OTLP endpoint (Jaeger), or None when
    it answers or tracing is off: a traced row measured without Jaeger does not measure export."""
    from streams.health.checks import otlp_endpoint, probe_tcp

    endpoint = otlp_endpoint(corner.env())
    if endpoint is None:
        return None
    problem = await probe_tcp(endpoint.host, endpoint.port, 2.0)
    return f"{endpoint.url}: {problem}" if problem else None


async def bench_latency(opts: Options, runs: Sequence[tuple[float, str]], seconds: float) -> list[Figure]:
    """One run per (rate, tracing) in ``runs``, each with its own corner and fresh processes."""
    figures: list[Figure] = []
    for rate, tracing in runs:
        at = f"at {rate:,.0f} events/s, {tracing_label(tracing)}"
        try:
            result = await _latency_run(opts, rate, seconds, tracing)
        except Exception as error:  # noqa: BLE001 - one run failing keeps the others' figures
            figures.append(Figure("latency", f"latency {at} failed", None, "",
                                  notes=f"{type(error).__name__}: {str(error)[:300]}", extra={"failed": True}))
            continue
        opts.log(f"latency {at}: p50 {result['p50_ms'] or 0:.0f} ms, p95 {result['p95_ms'] or 0:.0f} ms, "
                 f"p99 {result['p99_ms'] or 0:.0f} ms (achieved {result['achieved_rate'] or 0:,.0f}/s"
                 + (", saturated)" if result["saturated"] else ")"))
        target = targets.latency_target(rate, tracing)
        for p in ("p50", "p95", "p99"):
            notes = ""
            if p == "p50":
                notes = (f"collect p50 {result['collect_p50_ms'] or 0:.0f} ms + project p50 {result['project_p50_ms'] or 0:.0f} ms;"
                         f" achieved {result['achieved_rate'] or 0:,.0f}/s")
            if p == "p99":
                notes = f"{result['measured']:,} events measured; max {result['max_finite_ms'] or 0:,.0f} ms"
                if result["saturated"]:
                    notes += (f"; SATURATED: {result['unfinished']:,} events not committed within the wait "
                              "(counted as infinite)")
                if result["trace_export_problem"]:
                    notes += f"; SPANS NOT EXPORTED (OTLP endpoint {result['trace_export_problem']})"
            met = None
            if target is not None and p == "p99":
                met = target.met(result["p99_ms"], saturated=result["saturated"])
                if met and result["trace_export_problem"]:
                    met = None  # met without the export the target includes: undecided
            figures.append(Figure("latency", f"frame → committed row, {p}, {at}", result[f"{p}_ms"], "ms",
                                  target=target.text if target and p == "p99" else None, met=met,
                                  notes=notes, extra=result if p == "p50" else {}))
    return figures


# --- memory -------------------------------------------------------------------------------


async def bench_memory(opts: Options, n: int, accounts: int) -> list[Figure]:
    corner = Corner(opts, "memory")
    try:
        corpus = corpus_file(opts.workdir, n, seed=opts.seed, accounts=accounts)
        await corner.ensure_topics()
        await corner.migrate()
        sampler = ProcessSampler(0.25).start()
        workers = corner.start_workers(sampler)
        server = corner.server(corpus).start()
        sampler.watch("jetstream-server", lambda: server.pid)
        await server.ready()
        for worker in workers.values():
            await worker_ready(worker)
        started = time.monotonic()
        ingest = corner.ingest(server.url, compress=True).start()
        sampler.watch("ingest", lambda: ingest.pid)
        try:
            async with KafkaCounters(corner.settings) as kafka:
                finished = await wait_pipeline_done(corner, kafka, n, timeout=300 + n / 200)
        finally:
            await sampler.stop()
            for proc in list(corner.procs):
                proc.stop(15)
        elapsed = finished - started
        peaks = ", ".join(f"{name} {sampler.peak_mb(name) or 0:.0f} MB" for name in ("ingest", *workers))
        opts.log(f"memory: {peaks} ({n:,} events, {accounts:,} accounts, {n / elapsed:,.0f} events/s end to end)")
        figures = []
        for name in ("ingest", *workers):
            peak = sampler.peak_mb(name)
            met = targets.rss_met(peak, n)
            notes = "the target is over 1M events: --events 1000000" if met is None and peak is not None else ""
            figures.append(Figure("memory", f"peak RSS of bge {name} ({n:,} events, {accounts:,} accounts)", peak, "MB",
                                  target=targets.RSS.text, met=met, notes=notes,
                                  extra={"samples": sampler.samples.get(name, 0)}))
        figures.append(Figure("memory", "peak RSS of the local Jetstream server (test stand-in, holds the corpus)",
                              sampler.peak_mb("jetstream-server"), "MB", role="baseline"))
        figures.append(Figure("memory", "whole pipeline, unpaced: raw events fully projected per second", n / elapsed,
                              "events/s", notes="server → ingest → worker → Postgres, "
                              + ("two worker processes (--split-workers)" if opts.split_workers else "one worker"),
                              extra={"seconds": elapsed}))
        return figures
    finally:
        await corner.cleanup()
