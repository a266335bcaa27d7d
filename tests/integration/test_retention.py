"""Retention: pruning removes exactly what is older than each family's period, in bounded batches,
and nothing newer; the dry run counts the same rows and deletes none; the CLI does both."""

from __future__ import annotations

import os
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from projections.retention import RetentionPolicy, count_prunable, prune, stream_time
from tests.conftest import ROOT
from tests.integration.projection_support import (  # noqa: F401  (fixtures)
    conn,
    make_schema,
    scalar,
    schema,
)

NOW = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy(ledgers_days=30, dead_letters_days=7, hourly_days=400)
AGES_DAYS = (0, 1, 6.9, 7.1, 29, 29.99, 30.01, 31, 90, 399, 401, 1000)
"""Ages of the rows written to every table (days before NOW)."""


async def fill(conn: psycopg.AsyncConnection[Any]) -> None:
    for i, age in enumerate(AGES_DAYS):
        moment = NOW - timedelta(days=age)
        await conn.execute("INSERT INTO activity_events VALUES (%s, %s, %s, 'app.bsky.feed.post', 'create')",
                           (uuid.uuid4(), f"did:plc:a{i}", moment))
        await conn.execute("INSERT INTO follow_events VALUES (%s, %s, %s, 'follow', %s)",
                           (uuid.uuid4(), f"did:plc:a{i}", "did:plc:subject", moment))
        await conn.execute("INSERT INTO dead_letters VALUES ('projector', 't', 0, %s, 'c', 'r', '\\x00', %s)", (i, moment))
        await conn.execute("INSERT INTO follower_gains_hourly VALUES (%s, %s, 1, 0)",
                           (f"did:plc:a{i}", moment.replace(minute=0, second=0, microsecond=0)))


async def ages(conn: psycopg.AsyncConnection[Any], table: str, column: str) -> list[float]:
    cur = await conn.execute(f"SELECT extract(epoch FROM %s - {column}) / 86400 FROM {table} ORDER BY 1", (NOW,))
    return [round(float(age), 2) for (age,) in await cur.fetchall()]


def older(days: float) -> int:
    return sum(1 for age in AGES_DAYS if age > days)


async def test_pruning_removes_exactly_what_is_older_than_each_familys_period(conn) -> None:
    await fill(conn)
    expected = {"activity_events": older(30), "follow_events": older(30), "dead_letters": older(7),
                "follower_gains_hourly": older(400)}
    assert await count_prunable(conn, POLICY, NOW) == expected
    assert await scalar(conn, "SELECT count(*) FROM activity_events") == len(AGES_DAYS)  # the dry run deleted nothing

    assert await prune(conn, POLICY, NOW, batch_size=2) == expected  # several batches per table
    for table, column, days in (("activity_events", "occurred_at", 30), ("follow_events", "occurred_at", 30),
                                ("dead_letters", "recorded_at", 7)):
        assert await ages(conn, table, column) == sorted(round(a, 2) for a in AGES_DAYS if a <= days), table
    kept_hours = await ages(conn, "follower_gains_hourly", "hour")
    assert len(kept_hours) == len(AGES_DAYS) - older(400) and max(kept_hours) < 400
    # what stays is never pruned again; nothing is left to prune
    assert await prune(conn, POLICY, NOW) == dict.fromkeys(expected, 0)
    assert await count_prunable(conn, POLICY, NOW) == dict.fromkeys(expected, 0)


async def test_event_time_families_count_back_from_the_stream_time_never_later_than_the_clock(conn) -> None:
    """A stream that is behind (after an outage, a replay of older days) is pruned as of its own
    newest event; dead letters by the wall clock; an event stamped in the future is no clock."""
    await fill(conn)
    behind = NOW + timedelta(days=10)  # the wall clock, ten days after the newest event
    assert await stream_time(conn, behind) == NOW
    expected = {"activity_events": older(30), "follow_events": older(30), "dead_letters": older(7 - 10),
                "follower_gains_hourly": older(400)}
    assert await count_prunable(conn, POLICY, behind) == expected
    assert await prune(conn, POLICY, behind) == expected
    assert await ages(conn, "activity_events", "occurred_at") == sorted(round(a, 2) for a in AGES_DAYS if a <= 30)

    await conn.execute("INSERT INTO activity_events VALUES (%s, 'did:plc:future', %s, 'app.bsky.feed.post', 'create')",
                       (uuid.uuid4(), NOW + timedelta(days=365)))
    assert await stream_time(conn, NOW) == NOW
    await conn.execute("TRUNCATE activity_events, follow_events")
    assert await stream_time(conn, NOW) == NOW  # nothing projected yet: the clock


async def test_the_networks_records_are_kept_unless_their_retention_is_set(conn) -> None:
    for age in (1, 10):
        moment = NOW - timedelta(days=age)
        uri = f"at://did:plc:a/app.bsky.feed.post/{age}"
        await conn.execute("INSERT INTO posts (uri, did, rkey, text, created_at_raw, indexed_at) "
                           "VALUES (%s, 'did:plc:a', %s, 't', '', %s)", (uri, str(age), moment))
        await conn.execute("INSERT INTO hashtags (post_uri, tag, did, created_at) VALUES (%s, 'x', 'did:plc:a', %s)",
                           (uri, moment))
        await conn.execute("INSERT INTO likes (uri, did, rkey, subject_uri, subject_did, subject_collection, created_at) "
                           "VALUES (%s, 'did:plc:b', %s, %s, 'did:plc:a', 'app.bsky.feed.post', %s)",
                           (f"at://did:plc:b/app.bsky.feed.like/{age}", str(age), uri, moment))
    assert "posts" not in await prune(conn, POLICY, NOW)  # off by default
    assert await scalar(conn, "SELECT count(*) FROM posts") == 2
    kept = RetentionPolicy(records_days=7)
    counts = await count_prunable(conn, kept, NOW)
    assert counts["posts"] == counts["hashtags"] == counts["likes"] == 1 and counts["media"] == 0
    assert (await prune(conn, kept, NOW))["likes"] == 1
    for table, column in (("posts", "indexed_at"), ("hashtags", "created_at"), ("likes", "created_at")):
        assert await ages(conn, table, column) == [1.0], table


async def test_bge_projections_prune_dry_run_counts_and_the_real_run_deletes(conn, schema: str, database_url: str) -> None:
    await fill(conn)
    env = {**os.environ, "DB_SCHEMA": schema, "DATABASE_URL": database_url, "BGE_RETENTION_DAYS": "30",
           "BGE_RETENTION_DAYS_DEAD_LETTERS": "7", "BGE_RETENTION_DAYS_HOURLY": "400"}
    # the CLI prunes relative to the real clock: the rows are aged relative to NOW, so shift them to today
    shift = datetime.now(UTC) - NOW
    for table, column in (("activity_events", "occurred_at"), ("follow_events", "occurred_at"),
                          ("dead_letters", "recorded_at"), ("follower_gains_hourly", "hour")):
        await conn.execute(f"UPDATE {table} SET {column} = {column} + %s", (shift,))
    bge = [str(ROOT / ".venv/bin/bge"), "projections", "prune"]
    dry = subprocess.run([*bge, "--dry-run"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert dry.returncode == 0, dry.stderr
    assert f"activity_events: would delete {older(30)} rows" in dry.stdout
    assert await scalar(conn, "SELECT count(*) FROM activity_events") == len(AGES_DAYS)
    real = subprocess.run(bge, env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert real.returncode == 0, real.stderr
    assert f"dead_letters: deleted {older(7)} rows" in real.stdout
    assert await scalar(conn, "SELECT count(*) FROM activity_events") == len(AGES_DAYS) - older(30)
