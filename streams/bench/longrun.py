"""Long run: several simulated days through the real pipeline, with retention applied by the worker.

What a user running for months needs to know: once retention applies, do the tables and the
worker stop growing? A generated corpus spans ``days`` simulated days (``events`` in all, at an
even rate, so each day holds about as many; the last day ends now) and ``bge worker`` runs as
a user starts it, with ``BGE_RETENTION_DAYS=1``, ``BGE_RETENTION_DAYS_HOURLY=2``,
``BGE_RETENTION_DAYS_RECORDS=1`` and the leader's retention timer every 2 s. The event-time families are pruned as of the stream's own time
(:func:`projections.retention.stream_time`), which is what lets days of simulated time pass in
minutes: the worker's code path is the live one.

The corpus goes to the raw topic one simulated day at a time. After each day the bench waits
until the pipeline has drained it (as :mod:`streams.bench.catchup` does) and the leader's
retention left nothing prunable, then samples:

- the event ledgers' rows kept (``activity_events`` + ``follow_events``), next to the rows ever
  written to them (Postgres's ``n_tup_ins``: what a run without retention would hold);
- the size on disk of the pruned tables (``pg_total_relation_size``; deleted rows' space is
  reused once autovacuum has seen it, so it stops growing rather than shrinking) and of every
  table of the schema;
- the worker's resident set size (the popularity windows expire by event time, so their memory
  stops growing too).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psutil

from projections.retention import FAMILIES
from streams.bench.catchup import CatchupClock, drain
from streams.bench.harness import Corner, Figure, KafkaCounters, Options, produce_raw, wait_for
from streams.bench.pipeline import OffsetsWatcher
from streams.topology import Topic

__all__ = ["DaySample", "bench_longrun", "days_of", "long_run"]

DAY_US = 86_400_000_000
TIME_US = re.compile(rb'"time_us":(\d+)')
LEDGERS = ("activity_events", "follow_events")
PRUNED = tuple(table for tables in FAMILIES.values() for table, _ in tables if table != "dead_letters")
RETENTION = {"bge_retention_days": 1.0, "bge_retention_days_hourly": 2.0, "bge_retention_days_records": 1.0,
             "bge_retention_interval_seconds": 2.0}


@dataclass(frozen=True, slots=True)
class DaySample:
    """What the bench saw after one simulated day was drained and pruned."""

    day: int
    raw_events: int
    ledger_rows: int
    ledger_rows_written: int
    pruned_tables_mb: float
    all_tables_mb: float
    worker_rss_mb: float
    ledger_span_days: float


def days_of(n: int, days: int, *, seed: int, accounts: int, now_us: int) -> Iterator[list[bytes]]:
    """A generated corpus of about ``n`` events spanning the ``days`` days that end at ``now_us``,
    one list of lines per simulated day (split by ``time_us``; the generator's gaps are random,
    so the few events it would place after ``now_us`` are left out)."""
    from streams.local import corpus

    start_us = now_us - days * DAY_US
    lines = corpus.generate(n, seed=seed, accounts=accounts, start_time_us=start_us, rate_per_s=n / (days * 86_400))
    day: list[bytes] = []
    boundary = start_us + DAY_US
    for line in lines:
        match = TIME_US.search(line)
        time_us = int(match.group(1)) if match else start_us
        if time_us > now_us:
            break
        while time_us >= boundary:
            yield day
            day, boundary = [], boundary + DAY_US
        day.append(line)
    while boundary <= now_us:
        yield day
        day, boundary = [], boundary + DAY_US


async def _ledger_counts(conn: Any, schema: str) -> tuple[int, int, int]:
    """Rows in the ledgers now, and Postgres's statistics of rows ever inserted and deleted."""
    rows = 0
    for table in LEDGERS:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")  # noqa: S608 - fixed names
        rows += (await cur.fetchone())[0]
    cur = await conn.execute("SELECT coalesce(sum(n_tup_ins), 0), coalesce(sum(n_tup_del), 0) FROM pg_stat_user_tables "
                             "WHERE schemaname = %s AND relname = ANY(%s)", (schema, list(LEDGERS)))
    inserted, deleted = await cur.fetchone()
    return rows, int(inserted), int(deleted)


async def _sample(corner: Corner, day: int, raw_events: int, worker_pid: int) -> DaySample:
    from projections import connect

    async with await connect(corner.settings.database_url, corner.schema) as conn:
        # backends report their statistics at most every second, idle ones after ten: wait until
        # inserted - deleted matches the rows counted, so "written" is exact
        deadline = time.monotonic() + 20
        while True:
            rows, inserted, deleted = await _ledger_counts(conn, corner.schema)
            if inserted - deleted == rows or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        cur = await conn.execute(
            "SELECT relname, pg_total_relation_size(relid) FROM pg_stat_user_tables WHERE schemaname = %s",
            (corner.schema,))
        sizes = dict(await cur.fetchall())
        cur = await conn.execute("SELECT extract(epoch FROM max(occurred_at) - min(occurred_at)) / 86400 "
                                 "FROM activity_events")
        age = (await cur.fetchone())[0]
    return DaySample(
        day=day, raw_events=raw_events, ledger_rows=rows, ledger_rows_written=inserted,
        pruned_tables_mb=sum(sizes.get(table, 0) for table in PRUNED) / 2**20,
        all_tables_mb=sum(sizes.values()) / 2**20,
        worker_rss_mb=psutil.Process(worker_pid).memory_info().rss / 2**20,
        ledger_span_days=float(age or 0.0),
    )


async def _nothing_prunable(corner: Corner) -> bool:
    from projections import connect
    from projections.retention import count_prunable

    async with await connect(corner.settings.database_url, corner.schema) as conn:
        counts = await count_prunable(conn, corner.settings.retention(), datetime.now(UTC))
    return not any(counts[table] for table in PRUNED)


async def long_run(opts: Options, n: int, days: int, *, accounts: int | None = None,
                   timeout_per_day: float = 300.0) -> list[DaySample]:
    """Run the simulated days through ``bge worker``; one :class:`DaySample` per day."""
    corner = Corner(opts, "longrun", **RETENTION)
    samples: list[DaySample] = []
    try:
        await corner.ensure_topics()
        await corner.migrate()
        raw, growth = corner.topic(Topic.JETSTREAM_EVENTS), corner.topic(Topic.GROWTH_EVENTS)
        worker = corner.worker()
        async with KafkaCounters(corner.settings) as kafka:
            watcher = OffsetsWatcher(corner, growth, interval=0.25).start()
            worker.start()
            total = 0
            try:
                now_us = time.time_ns() // 1000
                for day, lines in enumerate(days_of(n, days, seed=opts.seed, accounts=accounts or max(n // days // 4, 100),
                                                    now_us=now_us), start=1):
                    total += await produce_raw(corner.settings, raw, lines)
                    clock = CatchupClock(total, time.time())
                    await drain(corner, kafka, watcher, clock, lambda: worker.alive, timeout=timeout_per_day)
                    await wait_for(lambda: _nothing_prunable(corner), timeout_per_day, "the leader's retention")
                    assert worker.pid is not None
                    sample = await _sample(corner, day, total, worker.pid)
                    opts.log(f"longrun day {day}: {sample.ledger_rows:,} ledger rows kept of "
                             f"{sample.ledger_rows_written:,} written; pruned tables {sample.pruned_tables_mb:.1f} MB, "
                             f"all {sample.all_tables_mb:.1f} MB; worker RSS {sample.worker_rss_mb:.0f} MB")
                    samples.append(sample)
            finally:
                await watcher.stop()
                worker.stop(15)
        return samples
    finally:
        await corner.cleanup()


def figures_of(samples: list[DaySample]) -> list[Figure]:
    figures = []
    for s in samples:
        written = f"day {s.day}: event-ledger rows written so far (what a run without retention keeps)"
        figures += [
            Figure("longrun", written, s.ledger_rows_written, "rows", role="baseline"),
            Figure("longrun", f"day {s.day}: event-ledger rows kept (BGE_RETENTION_DAYS=1)", s.ledger_rows, "rows",
                   baseline=written, notes=f"{s.raw_events:,} raw events so far; the kept rows span "
                                           f"{s.ledger_span_days:.2f} days"),
            Figure("longrun", f"day {s.day}: pruned tables on disk", s.pruned_tables_mb, "MB",
                   notes="ledgers, hourly gains and the records (posts, likes, facets...) with their indexes"),
            Figure("longrun", f"day {s.day}: every table on disk", s.all_tables_mb, "MB",
                   notes="also the graph and one row per account or engaged post (kept)"),
            Figure("longrun", f"day {s.day}: worker RSS", s.worker_rss_mb, "MB"),
        ]
    return figures


async def bench_longrun(opts: Options, n: int, days: int) -> list[Figure]:
    return figures_of(await long_run(opts, n, days))

