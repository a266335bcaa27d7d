"""Catch-up: a backlog in the raw topic drained to rows by the default layout, next to the plain consumer.

What a user sees after an outage: the raw topic holds a backlog (``--events``, default 500,000,
written as the ingest writes them: key and headers, :func:`~streams.bench.harness.produce_raw`)
and ``bge worker`` starts, as a user starts it (one process with every agent; two with
``--split-workers``), with a fresh consumer group and schema.

- The figure: raw events per second from the moment the worker process is started (its start-up
  included) to the moment the backlog is done: the collect group committed the whole raw topic
  AND the projector's stored offsets (``projection_offsets``, written in the same transaction as
  the rows) reached the end of ``growth.events``. Done is confirmed by one more poll that sees
  the end of ``growth.events`` unchanged (popularity may still send after collect committed);
  the time reported is the first poll that saw it. Kafka is polled every 0.25 s, Postgres every
  0.1 s, so the end is late by at most a poll.
- Also: the time from the start to the first row (the projector's first committed batch), when
  collect committed the raw topic, and the peak RSS of the worker.
- The two phases: the ``growth.events`` messages projected by the time collect committed the raw
  topic (while collect had input, the stages share the worker), and the projector's rate alone
  after that (messages: collect sends a raw event's domain events as one message per key).
- The baseline: :func:`streams.bench.baselines.consume_and_decode` (a plain aiokafka consumer,
  ``orjson.loads`` of every value) over the same backlog, before the worker starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
from aiokafka.errors import KafkaError

from streams.bench import targets
from streams.bench.baselines import consume_and_decode
from streams.bench.harness import (
    Corner, Figure, KafkaCounters, Options, ProcessSampler, corpus_file, produce_raw, service_cpu_s,
)
from streams.bench.pipeline import OffsetsWatcher
from streams.topology import STAGE_OUTPUTS, State, Topic, changelog_topic

__all__ = ["CatchupClock", "bench_catchup", "drain"]

KAFKA_POLL_S = 0.25
POSTGRES_POLL_S = 0.1


def _stream_lines(path: Path) -> Iterator[bytes]:
    """The corpus's lines one by one (a 500k backlog is not held in the bench's memory)."""
    with open(path, "rb") as corpus:
        for line in corpus:
            line = line.rstrip(b"\n")
            if line:
                yield line


class CatchupClock:
    """Turns polls of the counters into the catch-up's moments (seconds since the worker started).

    Each :meth:`observe` gives the committed raw offsets, the end of ``growth.events`` and the
    projector's stored offsets at ``at``; :attr:`done_s` is set once a poll found everything
    drained and the next one found the end of ``growth.events`` unchanged."""

    def __init__(self, raw_total: int, started: float) -> None:
        self.raw_total = raw_total
        self.started = started
        self.collected_s: float | None = None
        self.done_s: float | None = None
        self._candidate: tuple[float, int] | None = None  # (when, growth end) of a poll that saw it drained

    def observe(self, at: float, committed_raw: int, growth_end: int, projected: int) -> bool:
        """Record one poll; True once done."""
        if self.done_s is not None:
            return True
        collected = committed_raw >= self.raw_total
        if collected and self.collected_s is None:
            self.collected_s = at - self.started
        drained = collected and growth_end > 0 and projected >= growth_end
        if not drained:
            self._candidate = None
            return False
        if self._candidate is not None and self._candidate[1] == growth_end:
            self.done_s = self._candidate[0] - self.started
            return True
        self._candidate = (at, growth_end)
        return False


async def drain(corner: Corner, kafka: KafkaCounters, watcher: OffsetsWatcher, clock: CatchupClock,
                alive: Any, timeout: float) -> None:
    """Poll until ``clock`` says the raw topic is collected and every domain event projected."""
    raw, growth = corner.topic(Topic.JETSTREAM_EVENTS), corner.topic(Topic.GROWTH_EVENTS)
    deadline = time.monotonic() + timeout
    while True:
        try:
            committed = await kafka.committed_total(corner.collect_group, raw)
            end = await kafka.end_total(growth)
        except KafkaError:  # the group's coordinator not there yet (a fresh group, a fresh broker)
            committed, end = 0, 0
        if clock.observe(time.time(), committed, end, watcher.total):
            return
        if not alive():
            raise RuntimeError(f"the worker exited with {committed:,}/{clock.raw_total:,} raw events committed")
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not drained in {timeout:.0f}s: raw committed {committed:,}/{clock.raw_total:,}, "
                               f"projected {watcher.total:,}/{end:,} growth.events messages")
        await asyncio.sleep(KAFKA_POLL_S)


WRITTEN_BY_STAGES = (*STAGE_OUTPUTS, *(changelog_topic(state) for state in State))
"""Every topic the stages write, before the prefix: their outputs and their state's changelogs."""


def stage_records_figure(records: dict[str, int], raw_events: int) -> Figure:
    """The Kafka records the stages wrote per raw event, each topic's share in the notes, and the
    post windows' changelog records per engagement message (at most one per post per batch)."""
    engagement, windows = records.get(Topic.GROWTH_ENGAGEMENT, 0), records.get(changelog_topic(State.POST_WINDOWS), 0)
    per_topic = ", ".join(f"{name} {count / raw_events:.2f}" for name, count in records.items())
    per_engagement = f"; {windows / engagement:.2f} post-window records per engagement" if engagement else ""
    return Figure("catchup", "Kafka records the stages wrote per raw event", sum(records.values()) / raw_events,
                  "records", notes=per_topic + per_engagement, extra={"records": records})


async def bench_catchup(opts: Options, n: int) -> list[Figure]:
    corner = Corner(opts, "catchup")
    try:
        corpus = corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 100))
        await corner.ensure_topics()
        await corner.migrate()
        raw, growth = corner.topic(Topic.JETSTREAM_EVENTS), corner.topic(Topic.GROWTH_EVENTS)
        written = await produce_raw(corner.settings, raw, _stream_lines(corpus))
        opts.log(f"catchup: {written:,} raw events in {raw}")

        plain = await consume_and_decode(corner.settings, raw, written)
        plain_label = "baseline: aiokafka consumer + orjson.loads (same backlog)"
        opts.log(f"catchup baseline (plain consumer): {plain['rate']:,.0f} events/s")

        layout = "two processes (--split-workers)" if opts.split_workers else "one process, every agent"
        async with KafkaCounters(corner.settings) as kafka:
            watcher = OffsetsWatcher(corner, growth, interval=POSTGRES_POLL_S).start()
            sampler = ProcessSampler(0.25).start()
            services_before = service_cpu_s()
            started = time.time()
            workers = corner.start_workers(sampler)
            clock = CatchupClock(written, started)
            try:
                await drain(corner, kafka, watcher, clock, lambda: all(w.alive for w in workers.values()),
                             timeout=300 + written / 200)
                services = {name: used - services_before[name] for name, used in service_cpu_s().items()}
            finally:
                await watcher.stop()
                await sampler.stop()
                for worker in workers.values():
                    worker.stop(15)
            messages = await kafka.end_total(growth)
            records = {name: await kafka.end_total(corner.topic(name)) for name in WRITTEN_BY_STAGES}
        assert clock.done_s is not None
        first_moves = [moves[0][1] for moves in watcher.moves.values() if moves]
        first_row_s = min(first_moves) - started if first_moves else None
        rate = written / clock.done_s
        opts.log(f"catchup (bge worker): {rate:,.0f} raw events/s over {clock.done_s:.1f} s; first row after "
                 f"{first_row_s or 0:.1f} s; raw topic committed after {clock.collected_s or 0:.1f} s")
        cpu_us = {**{name: (sampler.cpu_s(name) or 0.0) / written * 1e6 for name in workers},
                  "postgres": services["postgres"] / written * 1e6, "kafka": services["kafka"] / written * 1e6}
        cores_busy = services["all"] / clock.done_s
        opts.log("catchup CPU per raw event: " + ", ".join(f"{name} {us:,.0f} µs" for name, us in cpu_us.items())
                 + f"; the machine's cores busy: {cores_busy:.2f} of {psutil.cpu_count()}")
        kernel_us = {name: (sampler.system_s(name) or 0.0) / written * 1e6 for name in workers}
        faults = {name: (sampler.minor_faults(name) or 0) / written for name in workers}
        collected_s = clock.collected_s or 0.0
        projected_while_collecting = watcher.total_at(started + collected_s)
        alone_s = clock.done_s - collected_s
        alone_rate = (messages - projected_while_collecting) / alone_s if alone_s > 0 else None
        extra = {"events": written, "growth_messages": messages, "seconds": clock.done_s,
                 "first_row_s": first_row_s, "collected_s": clock.collected_s, "workers": list(workers),
                 "peak_rss_mb": {name: sampler.peak_mb(name) for name in workers},
                 "cpu_us_per_event": cpu_us, "kernel_us_per_event": kernel_us,
                 "minor_faults_per_event": faults, "cores_busy": cores_busy,
                 "projected_while_collecting": projected_while_collecting, "projector_alone_rate": alone_rate}
        figures = [
            Figure("catchup", plain_label, plain["rate"], "events/s", role="baseline",
                   extra={"seconds": plain["seconds"], "events": plain["events"]}),
            Figure("catchup", f"bge worker ({layout}): {written:,}-event backlog drained to rows", rate, "events/s",
                   baseline=plain_label, target=targets.CATCHUP.text, met=targets.CATCHUP.met(rate),
                   notes=(f"{clock.done_s:.1f} s from the worker's start; raw topic committed after "
                          f"{clock.collected_s or 0:.1f} s; {messages:,} growth.events messages; "
                          + (f"{rate / plain['rate']:.1%} of the plain consumer" if plain["rate"] else "")),
                   extra=extra),
            Figure("catchup", "time from the worker's start to the first row", first_row_s, "s",
                   notes="the projector's first committed batch"),
            Figure("catchup", "growth.events messages projected while collect had input", projected_while_collecting,
                   "messages", notes=f"of {messages:,}, in the first {collected_s:.1f} s"),
            Figure("catchup", "the projector alone, after collect committed the raw topic", alone_rate, "messages/s",
                   notes=f"growth.events messages per second over the last {alone_s:.1f} s"),
        ]
        for name, us in cpu_us.items():
            figures.append(Figure("catchup", f"CPU of {name} per raw event while catching up", us, "µs",
                                  notes=(f"{us * rate / 1e6:.2f} of a core busy" if name in workers
                                         else "the local stack's processes")))
            if name in workers:
                figures.append(Figure("catchup", f"of which in the kernel ({name})", kernel_us[name], "µs",
                                      notes=f"{faults[name]:.1f} minor page faults per raw event"))
        figures.append(stage_records_figure(records, written))
        figures.append(Figure("catchup", "the machine's cores busy while catching up", cores_busy, "cores",
                              notes=f"of {psutil.cpu_count()}: every process on the machine"))
        for name in workers:
            figures.append(Figure("catchup", f"peak RSS of bge {name} while catching up", sampler.peak_mb(name), "MB",
                                  extra={"samples": sampler.samples.get(name, 0)}))
        return figures
    finally:
        await corner.cleanup()
