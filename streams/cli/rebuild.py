"""``bge projections rebuild``: replay ``growth.events`` into a fresh schema, then swap it in;
``bge projections prune [--dry-run]``: apply the retention (:mod:`projections.retention`) now.

1. A fresh schema ``<DB_SCHEMA>_next`` is created and migrated.
2. ``growth.events`` is read from the earliest offset and applied to it in batches (the same
   ``projections.apply_batch`` the live projector uses, with the same consumer name), with a progress
   bar, until it has caught up with what the live projector has applied; the live projection keeps
   serving and writing meanwhile.
3. The swap: an exclusive advisory lock on the live schema waits for the live projector's current
   batch and holds the next one back (each batch takes the lock shared); the fresh schema catches up
   to the live schema's stored offsets exactly, and both schemas are renamed in one transaction
   (live → ``<live>_retired``). The live projector's next batch then lands in the new schema, whose
   stored offsets are exactly where the old one's were.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka import TopicPartition
from psycopg import sql
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from projections import apply_batch, connect, create_fresh_schema, drop_schema, swap_schema
from projections.migrate import SCHEMA_LOCK_NAMESPACE
from projections.retention import count_prunable, prune, stream_time
from streams.config import Settings, load_settings
from streams.kafka.clients import end_offsets, new_reader
from streams.topology import PROJECTOR_CONSUMER as CONSUMER, Topic

__all__ = ["main", "rebuild"]

BATCH = 2000


async def stored_marks(settings: Settings, schema: str) -> dict[tuple[str, int], int]:
    async with await connect(settings.database_url, schema) as conn:
        rows = await (await conn.execute(
            "SELECT topic, partition, next_offset FROM projection_offsets WHERE consumer = %s", (CONSUMER,)
        )).fetchall()
    return {(topic, partition): offset for topic, partition, offset in rows}


async def catch_up(settings: Settings, schema: str, targets: dict[tuple[str, int], int],
                   progress: Progress | None = None) -> int:
    """Apply ``growth.events`` to ``schema`` from its stored offsets up to ``targets`` (exclusive)."""
    marks = await stored_marks(settings, schema)
    todo = {tp: (marks.get(tp, 0), end) for tp, end in targets.items() if marks.get(tp, 0) < end}
    if not todo:
        return 0
    task = progress.add_task("replaying growth.events", total=sum(e - s for s, e in todo.values())) if progress else None
    reader = new_reader(settings, max_partition_fetch_bytes=8 * 1024 * 1024)
    await reader.start()
    applied = 0
    try:
        async with await connect(settings.database_url, schema) as conn:
            for (topic, partition), (start, end) in sorted(todo.items()):
                tp = TopicPartition(topic, partition)
                reader.assign([tp])
                reader.seek(tp, start)
                while await reader.position(tp) < end:
                    records = (await reader.getmany(tp, timeout_ms=1000, max_records=BATCH)).get(tp, [])
                    batch = [m for m in records if m.offset < end]
                    if batch:
                        await apply_batch(conn, CONSUMER, batch)
                        applied += len(batch)
                        if progress is not None and task is not None:
                            progress.advance(task, len(batch))
    finally:
        await reader.stop()
    return applied


async def growth_end_offsets(settings: Settings) -> dict[tuple[str, int], int]:
    ends = await end_offsets(settings, settings.topic(Topic.GROWTH_EVENTS))
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


async def rebuild(settings: Settings, console: Console) -> str:
    """Rebuild ``DB_SCHEMA`` from ``growth.events``; returns the retired schema's name."""
    live, fresh = settings.db_schema, f"{settings.db_schema}_next"
    async with await connect(settings.database_url, "public") as admin:
        await drop_schema(admin, fresh)  # a previous rebuild that did not finish
    await create_fresh_schema(settings.database_url, fresh)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.speed} msg/s"),
               TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr)) as progress:
        # replay until the fresh schema is close to the live one (the live one keeps moving)
        while True:
            targets = await growth_end_offsets(settings)
            applied = await catch_up(settings, fresh, targets, progress)
            lag = sum(targets.values()) - sum((await stored_marks(settings, fresh)).values())
            if applied < BATCH and lag < BATCH:
                break
    async with await connect(settings.database_url, "public") as conn:
        async with conn.transaction():
            # held until the swap commits: the live projector's batches wait (they take it shared)
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))",
                               (SCHEMA_LOCK_NAMESPACE, live))
            exact = await stored_marks(settings, live)
            await catch_up(settings, fresh, exact)
            mine = await stored_marks(settings, fresh)
            if any(mine.get(tp, 0) != offset for tp, offset in exact.items()):
                raise RuntimeError("the fresh schema did not reach the live schema's offsets; nothing swapped")
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{live}_retired")))
            retired = await swap_schema(conn, live, fresh)
    console.print(f"rebuilt schema {live!r} from growth.events; the previous one is kept as {retired!r}")
    return retired


async def prune_now(settings: Settings, console: Console, *, dry_run: bool, batch_size: int) -> dict[str, int]:
    """``bge projections prune``: delete (or, dry, count) what the retention no longer keeps."""
    policy, now = settings.retention(), datetime.now(UTC)
    async with await connect(settings.database_url, settings.db_schema) as conn:
        counts = (await count_prunable(conn, policy, now) if dry_run
                  else await prune(conn, policy, now, batch_size=batch_size))
        stream_now = await stream_time(conn, now)
    verb = "would delete" if dry_run else "deleted"
    if stream_now < now:
        console.print(f"stream time {stream_now:%Y-%m-%d %H:%M} UTC (the newest event): event ledgers and hourly "
                      "aggregates are aged from it")
    for table, cutoff in policy.cutoffs(now, stream_now).items():
        console.print(f"{table}: {verb} {counts[table]:,} rows older than {cutoff:%Y-%m-%d %H:%M} UTC")
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bge projections", description="projection maintenance")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rebuild", help="replay growth.events into a fresh schema, then swap it in")
    pruning = sub.add_parser("prune", help="delete the rows older than the retention (BGE_RETENTION_DAYS*)")
    pruning.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")
    pruning.add_argument("--batch-size", type=int, default=10_000, help="rows per transaction (default 10000)")
    args = parser.parse_args(argv)
    if args.command == "prune":
        asyncio.run(prune_now(load_settings(), Console(), dry_run=args.dry_run, batch_size=args.batch_size))
        return 0
    asyncio.run(rebuild(load_settings(), Console()))
    return 0
