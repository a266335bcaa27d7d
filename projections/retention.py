"""Retention: what the projections keep, and the pruning that bounds them.

Three families age out, each by its own time column and period (``BGE_RETENTION_DAYS`` for the
event ledgers, ``BGE_RETENTION_DAYS_DEAD_LETTERS``, ``BGE_RETENTION_DAYS_HOURLY``):

| family | tables | by | default |
| --- | --- | --- | --- |
| event ledgers | ``activity_events``, ``follow_events`` | ``occurred_at`` | 30 days |
| dead letters | ``dead_letters`` | ``recorded_at`` | 30 days |
| hourly aggregates | ``follower_gains_hourly`` | ``hour`` | 400 days |

The aggregates the API reads for longer windows (``activity_patterns``, the counters on
``users`` and ``engagement_counts``) are accumulated and never pruned: analytics keep working on
what is retained. The ledgers are what make those accumulations immune to re-delivered events,
so keep them longer than any re-delivery can lag (the Kafka retention of ``growth.events``).

:func:`prune` deletes in batches of ``batch_size`` rows, one short transaction each, so the
projector (which writes the same tables) never waits long; :func:`count_prunable` says what it
would delete (``bge projections prune --dry-run``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

__all__ = ["FAMILIES", "RetentionPolicy", "count_prunable", "prune"]

FAMILIES: dict[str, tuple[tuple[str, str], ...]] = {
    "ledgers": (("activity_events", "occurred_at"), ("follow_events", "occurred_at")),
    "dead_letters": (("dead_letters", "recorded_at"),),
    "hourly": (("follower_gains_hourly", "hour"),),
}
"""Each family's tables with the column their age is read from (every one indexed)."""


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """Days kept per family."""

    ledgers_days: float = 30.0
    dead_letters_days: float = 30.0
    hourly_days: float = 400.0

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """Per table: rows older than this go."""
        days = {"ledgers": self.ledgers_days, "dead_letters": self.dead_letters_days, "hourly": self.hourly_days}
        return {table: now - timedelta(days=days[family])
                for family, tables in FAMILIES.items() for table, _ in tables}


def _column(table: str) -> str:
    return next(column for tables in FAMILIES.values() for name, column in tables if name == table)


async def count_prunable(conn: psycopg.AsyncConnection[Any], policy: RetentionPolicy, now: datetime) -> dict[str, int]:
    """How many rows of each table :func:`prune` would delete now."""
    counts = {}
    for table, cutoff in policy.cutoffs(now).items():
        cur = await conn.execute(f"SELECT count(*) FROM {table} WHERE {_column(table)} < %s", (cutoff,))
        row = await cur.fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


async def prune(conn: psycopg.AsyncConnection[Any], policy: RetentionPolicy, now: datetime, *,
                batch_size: int = 10_000) -> dict[str, int]:
    """Delete what ``policy`` no longer keeps, ``batch_size`` rows per transaction; returns the
    rows deleted per table. ``conn`` must be in autocommit mode (each batch commits alone)."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    deleted: dict[str, int] = {}
    for table, cutoff in policy.cutoffs(now).items():
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
        deleted[table] = total
    return deleted
