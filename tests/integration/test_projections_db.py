"""Connections, query statistics, retries, batches planned before their transaction, and the
isolation of a message Postgres refuses."""

from __future__ import annotations

import psycopg
import pytest

from domain import events as ev
from projections import (
    Prepared, QueryStats, RetryPolicy, apply_batch, create_pool, decode_messages, project_batch, with_retry,
)
from tests.integration.projection_support import (  # noqa: F401  (fixtures)
    Events,
    Offsets,
    make_schema,
    scalar,
    schema,
)

FAST = RetryPolicy(attempts=4, base_delay_s=0.001, max_delay_s=0.01)


async def test_pooled_connections_have_the_schema_and_statement_timeout(database_url, schema) -> None:  # noqa: F811
    async with create_pool(database_url, schema, min_size=1, max_size=2, statement_timeout_ms=1234) as pool:
        async with pool.connection() as conn:
            assert await scalar(conn, "SHOW statement_timeout") == "1234ms"
            assert await scalar(conn, "SELECT current_schema()") == schema
            assert conn.autocommit


async def test_query_stats_count_durations_slow_queries_and_errors(database_url, schema) -> None:  # noqa: F811
    stats = QueryStats(slow_threshold_ms=150)
    async with create_pool(database_url, schema, max_size=1, statement_timeout_ms=100, stats=stats) as pool:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
            await conn.execute("SELECT pg_sleep(0.05)")
            with pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(1)")  # cancelled by statement_timeout
    snapshot = stats.snapshot()
    assert (snapshot["total_queries"], snapshot["total_errors"]) == (3 + 2, 1)  # + the 2 SETs on connect
    assert snapshot["error_rate"] == pytest.approx(1 / 5)
    assert snapshot["avg_duration_ms"] > 0
    assert snapshot["slow_queries"] == 0  # the failed one was cut off at 100 ms
    stats.slow_threshold_ms = 0
    stats.record("SELECT   something\n slow", 12.5, failed=False)
    assert stats.snapshot()["recent_slow"][-1] == {"statement": "SELECT something slow", "duration_ms": 12.5, "failed": False}


async def test_transient_errors_are_retried_with_backoff_and_others_are_not() -> None:
    calls: list[int] = []
    retries: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise psycopg.errors.SerializationFailure("could not serialize access")
        return "done"

    assert await with_retry(flaky, FAST, on_retry=lambda attempt, error, delay: retries.append(attempt)) == "done"
    assert (len(calls), retries) == (3, [1, 2])

    async def broken() -> None:
        calls.append(1)
        raise psycopg.errors.UndefinedTable("no such table")

    calls.clear()
    with pytest.raises(psycopg.errors.UndefinedTable):
        await with_retry(broken, FAST)
    assert len(calls) == 1

    async def always_deadlocked() -> None:
        calls.append(1)
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    calls.clear()
    with pytest.raises(psycopg.errors.DeadlockDetected):
        await with_retry(always_deadlocked, FAST)
    assert len(calls) == FAST.attempts


async def test_a_batch_survives_losing_its_connection(database_url, schema) -> None:  # noqa: F811
    e = Events()
    messages = Offsets().messages([e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:b", "did:plc:a")])
    async with create_pool(database_url, schema, min_size=1, max_size=1) as pool:
        async with pool.connection() as conn:
            pid = conn.info.backend_pid
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        result = await project_batch(pool, "projector", messages, retry=FAST)
        assert result.applied == 2
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT count(*) FROM follows") == 2
            assert conn.info.backend_pid != pid


async def test_a_message_postgres_refuses_is_dead_lettered_and_the_rest_applied(database_url, schema) -> None:  # noqa: F811
    e = Events()
    post = e.post("did:plc:a", "fine")
    created, enriched = post[0], post[1]
    poisoned = ev.PostEnriched.derive(  # a depth no integer column holds
        enriched.source, uri=enriched.uri, thread=ev.Thread(root_uri=enriched.uri, root_did="did:plc:a", depth=2**40)
    )
    messages = Offsets().messages([created, poisoned, e.follow("did:plc:a", "did:plc:b")])
    async with create_pool(database_url, schema, max_size=2) as pool:
        result = await project_batch(pool, "projector", messages, retry=FAST)
        assert (result.applied, result.dead_lettered) == (3, 1)
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT count(*) FROM posts") == 1
            assert await scalar(conn, "SELECT count(*) FROM follows") == 1
            assert await scalar(conn, "SELECT count(*) FROM threads") == 0
            row = await (await conn.execute("SELECT kafka_offset, code, reason FROM dead_letters")).fetchone()
            assert row is not None and row[:2] == (1, "projection_refused") and "out of range" in row[2]
            assert await scalar(conn, "SELECT next_offset FROM projection_offsets") == 3


async def counts(conn: psycopg.AsyncConnection) -> tuple[int, ...]:
    row = await (await conn.execute(
        "SELECT count(*), sum(follower_count), sum(follow_count), sum(likes_received), "
        "(SELECT next_offset FROM projection_offsets) FROM users")).fetchone()
    return tuple(int(value or 0) for value in row)


async def test_a_planned_batch_whose_transaction_failed_is_planned_again_when_retried(database_url, schema) -> None:  # noqa: F811
    e = Events()
    post = e.post("did:plc:b", "hello")
    messages = Offsets().messages([e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:c", "did:plc:b"), *post,
                                   e.like("did:plc:a", post[0].uri)])
    prepared = Prepared("projector", messages, decode_messages(messages))
    async with create_pool(database_url, schema, max_size=2) as pool:
        async with pool.connection() as conn:
            with pytest.raises(RuntimeError):
                async with conn.transaction():  # the batch's transaction nested, then lost before it commits
                    await apply_batch(conn, "projector", messages, prepared=prepared)
                    assert await counts(conn) == (3, 2, 2, 1, len(messages))
                    raise RuntimeError("the connection was lost before the commit")
            assert await counts(conn) == (0, 0, 0, 0, 0)
        # applying a plan changes it: the retry plans again instead of counting the follows twice
        result = await project_batch(pool, "projector", messages, retry=FAST, prepared=prepared)
        assert result.applied == len(messages)
        async with pool.connection() as conn:
            assert await counts(conn) == (3, 2, 2, 1, len(messages))


async def test_a_planned_batch_partly_below_the_marks_applies_only_the_rest(database_url, schema) -> None:  # noqa: F811
    e = Events()
    messages = Offsets().messages([e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:c", "did:plc:b"),
                                   e.follow("did:plc:a", "did:plc:c")])
    async with create_pool(database_url, schema, max_size=2) as pool:
        await project_batch(pool, "projector", messages[:2], retry=FAST)  # a worker before a rebalance
        prepared = Prepared("projector", messages, decode_messages(messages))
        result = await project_batch(pool, "projector", messages, retry=FAST, prepared=prepared)
        assert (result.skipped, result.applied, result.events) == (2, 1, 1)
        async with pool.connection() as conn:
            assert await counts(conn) == (3, 3, 3, 0, 3)
