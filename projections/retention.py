"""Retention: what the projections keep, and the pruning that bounds them.

Three families age out, each by its own time column and period (``BGE_RETENTION_DAYS`` for the
event ledgers, ``BGE_RETENTION_DAYS_DEAD_LETTERS``, ``BGE_RETENTION_DAYS_HOURLY``):

| family | tables | by | default |
| --- | --- | --- | --- |
| event ledgers | ``activity_events``, ``follow_events`` | ``occurred_at`` | 30 days |
| dead letters | ``dead_letters`` | ``recorded_at`` | 30 days |
| hourly aggregates | ``follower_gains_hourly`` | ``hour`` | 400 days |
| the network's records | ``posts`` (``indexed_at``) and their facets (``threads``, ``mentions``, ``hashtags``, ``links``, ``media``), ``likes``, ``reposts``, ``replies``, ``quotes`` | the firehose's time | kept (``BGE_RETENTION_DAYS_RECORDS`` turns it on) |

Pruning records is a trade-off, so it is off unless set: an account's counters (``users``) and a
post's (``engagement_counts``) keep what they counted, and an unlike, an un-repost or a post
deletion that arrives after its record was pruned finds nothing to subtract. The graph
(``follows``, ``observed_follows``, ``blocks``) and lists are never pruned: they are the state an
unfollow needs.

The event-time families count back from **stream time**: the newest event in the ledgers
(Jetstream's ``time_us``), never later than the wall clock (:func:`stream_time`). Caught up, that
is the wall clock; after an outage, or while a rebuild or a simulated multi-day corpus replays
older days, it is the stream's own day, so a backlog is pruned as the stream advances through it,
exactly as it would have been live, and a stream that stalls loses nothing while it is stalled.
Dead letters are aged by when they were recorded, from the wall clock.

The aggregates the API reads for longer windows (``activity_patterns``, the counters on
``users`` and ``engagement_counts``) are accumulated and never pruned: analytics keep working on
what is retained. The ledgers are what make those accumulations immune to re-delivered events,
so keep them longer than any re-delivery can lag (the Kafka retention of ``growth.events``).

:func:`prune` deletes in batches of ``batch_size`` rows, one short transaction each, so the
projector (which writes the same tables) never waits long, then vacuums each table it pruned
(a plain ``VACUUM`` blocks neither reads nor writes), so the next rows reuse the space at once
instead of waiting for autovacuum and the tables stop growing on disk; :func:`count_prunable` says what it
would delete (``bge projections prune --dry-run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

__all__ = ["EVENT_TIME_FAMILIES", "FAMILIES", "RetentionPolicy", "count_prunable", "prune", "stream_time"]

FAMILIES: dict[str, tuple[tuple[str, str], ...]] = {
    "ledgers": (("activity_events", "occurred_at"), ("follow_events", "occurred_at")),
    "dead_letters": (("dead_letters", "recorded_at"),),
    "hourly": (("follower_gains_hourly", "hour"),),
    "records": (("likes", "created_at"), ("reposts", "created_at"), ("replies", "created_at"),
                ("quotes", "created_at"), ("threads", "indexed_at"), ("mentions", "created_at"),
                ("hashtags", "created_at"), ("links", "created_at"), ("media", "created_at"),
                ("posts", "indexed_at")),
}
"""Each family's tables with the column their age is read from (every one indexed)."""

EVENT_TIME_FAMILIES = frozenset({"ledgers", "hourly", "records"})
"""The families aged by event time, counted back from :func:`stream_time`."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days kept per family (``records_days`` None: the records are kept)."""

    ledgers_days: float = 30.0
    dead_letters_days: float = 30.0
    hourly_days: float = 400.0
    records_days: float | None = None

    def cutoffs(self, now: datetime, stream_now: datetime | None = None) -> dict[str, datetime]:
        """Per table: rows older than this go. ``now`` is the wall clock, ``stream_now`` the stream
        time the event-time families count back from (``now`` when not given)."""
        days = {"ledgers": self.ledgers_days, "dead_letters": self.dead_letters_days, "hourly": self.hourly_days,
                "records": self.records_days}
        return {table: (stream_now or now if family in EVENT_TIME_FAMILIES else now) - timedelta(days=kept)
                for family, tables in FAMILIES.items() if (kept := days[family]) is not None for table, _ in tables}


async def stream_time(conn: psycopg.AsyncConnection[Any], now: datetime) -> datetime:
    """The newest event time in the ledgers, but never later than ``now`` (the wall clock); ``now``
    when they are empty. Two index lookups."""
    cur = await conn.execute("SELECT greatest((SELECT max(occurred_at) FROM activity_events),"
                             " (SELECT max(occurred_at) FROM follow_events))")
    row = await cur.fetchone()
    newest = row[0] if row else None
    return min(newest, now) if newest is not None else now


def _column(table: str) -> str:
    return next(column for tables in FAMILIES.values() for name, column in tables if name == table)


async def count_prunable(conn: psycopg.AsyncConnection[Any], policy: RetentionPolicy, now: datetime) -> dict[str, int]:
    """How many rows of each table :func:`prune` would delete now."""
    counts = {}
    for table, cutoff in policy.cutoffs(now, await stream_time(conn, now)).items():
        cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE {_column(table)} < %s", (cutoff,))
        row = await cur.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


async def prune(conn: psycopg.AsyncConnection[Any], policy: RetentionPolicy, now: datetime, *,
                batch_size: int = 10_000) -> dict[str, int]:
    """Delete what ``policy`` no longer keeps at wall-clock ``now`` (event-time families from the
    stream time), ``batch_size`` rows per transaction; returns the rows deleted per table. ``conn`` must be in autocommit mode (each batch commits alone)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    deleted: dict[str, int] = {}
    for table, cutoff in policy.cutoffs(now, await stream_time(conn, now)).items():
        column = _column(table)
        total = 0
        while True:
            async with conn.transaction():
                cur = await conn.execute(
                    f"DELETE FROM {table} WHERE ctid IN "
                    f"(SELECT ctid FROM {table} WHERE {column} < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
                    (cutoff, batch_size))
            total += cur.rowcount
            if cur.rowcount < batch_size:
                break
        if total:
            await conn.execute(f"VACUUM {table}")
        deleted[table] = total
    return deleted
