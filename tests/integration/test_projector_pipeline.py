"""The projector's batches pipelined one deep: decoded while the previous transaction runs,
applied in order, one transaction at a time, and a failure stops what follows."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from returns.result import Failure

from domain.rejections import Rejection, RejectionCode
from projections import Prepared, decode_messages, project_batch
from streams.bench.throughput import Consumed
from streams.config import load_settings
from streams.kafka.clients import delivered
from streams.stages.project import Projector
from tests.integration.projection_support import (  # noqa: F401  (fixtures)
    Events,
    Offsets,
    make_schema,
    scalar,
    schema,
)


def consumed(messages: list[Any]) -> list[Consumed]:
    return [Consumed(m.topic, m.partition, m.offset, m.value) for m in messages]


@pytest.fixture
async def projector(database_url: str, schema: str) -> Any:  # noqa: F811
    settings = load_settings(env_file=None, database_url=database_url, db_schema=schema, db_pool_min=1,
                             db_pool_max=2, projector_batch_size=3)
    projector = Projector(settings)
    await projector.start()
    try:
        yield projector
    finally:
        await projector.stop()


async def marks(projector: Projector) -> dict[int, int]:
    async with projector.pool.connection() as conn:
        cur = await conn.execute("SELECT partition, next_offset FROM projection_offsets ORDER BY partition")
        return dict(await cur.fetchall())


async def test_batches_apply_in_order_one_transaction_at_a_time(projector: Projector, monkeypatch) -> None:
    e, offsets = Events(), Offsets()
    first = consumed(offsets.messages([e.follow("did:plc:a", f"did:plc:{n}") for n in range(5)]))
    second = consumed(offsets.messages([e.follow("did:plc:b", f"did:plc:{n}") for n in range(4)]))
    running: list[int] = []
    overlaps: list[int] = []
    apply = Projector.apply

    async def watched(self: Projector, batch: Any, decoded: Any = None) -> Any:
        running.append(batch[0].offset)
        overlaps.append(len(running))
        try:
            await asyncio.sleep(0.05)  # the next batch is decoded meanwhile
            return await apply(self, batch, decoded)
        finally:
            running.remove(batch[0].offset)

    monkeypatch.setattr(Projector, "apply", watched)
    handed_first = await projector.submit(first)
    handed_second = await projector.submit(second)
    await delivered(handed_first + handed_second)
    assert max(overlaps) == 1  # never two transactions at once
    assert projector.stats.batches == 4  # batches of at most PROJECTOR_BATCH_SIZE (3): 5 → 3 + 2, 4 → 3 + 1
    assert (projector.stats.applied, projector.stats.skipped) == (9, 0)
    assert await marks(projector) == {0: 9}
    async with projector.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM follows") == 9
        assert await scalar(conn, "SELECT follow_count FROM users WHERE did = 'did:plc:a'") == 5


async def test_a_redelivered_batch_is_skipped_below_the_marks(projector: Projector) -> None:
    e, offsets = Events(), Offsets()
    batch = consumed(offsets.messages([e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:b", "did:plc:a")]))
    await delivered(await projector.submit(batch))
    await delivered(await projector.submit(batch))  # delivered again (a restart before Kafka's commit)
    assert (projector.stats.applied, projector.stats.skipped) == (2, 2)
    async with projector.pool.connection() as conn:
        assert await scalar(conn, "SELECT count(*) FROM follows") == 2
        assert await scalar(conn, "SELECT follower_count FROM users WHERE did = 'did:plc:a'") == 1


async def test_a_failed_transaction_stops_the_batches_after_it(projector: Projector, monkeypatch) -> None:
    e, offsets = Events(), Offsets()
    first = consumed(offsets.messages([e.follow("did:plc:a", "did:plc:b")]))
    second = consumed(offsets.messages([e.follow("did:plc:b", "did:plc:a")]))

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise psycopg.errors.UndefinedTable("no such table")  # not transient: never retried

    monkeypatch.setattr("streams.stages.project.project_batch", broken)
    handed = await projector.submit(first)
    with pytest.raises(psycopg.errors.UndefinedTable):
        await projector.submit(second)
    with pytest.raises(psycopg.errors.UndefinedTable):
        await delivered(handed)  # the source sees it too, and commits nothing from here on
    assert await marks(projector) == {}


async def test_values_decoded_before_the_transaction_are_the_ones_applied(database_url, schema) -> None:  # noqa: F811
    from projections import create_pool

    e, offsets = Events(), Offsets()
    messages = offsets.messages([e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:b", "did:plc:a")])
    decoded = decode_messages(messages)
    assert set(decoded) == {(m.topic, m.partition, m.offset) for m in messages}
    refused = Rejection(RejectionCode.INVALID_DOMAIN_EVENT, "refused before the transaction")
    decoded[(messages[1].topic, 0, 1)] = Failure(refused)
    async with create_pool(database_url, schema, max_size=1) as pool:
        result = await project_batch(pool, "projector", messages, prepared=Prepared("projector", messages, decoded))
        assert (result.applied, result.dead_lettered) == (2, 1)
        async with pool.connection() as conn:
            assert await scalar(conn, "SELECT count(*) FROM follows") == 1
            assert await scalar(conn, "SELECT reason FROM dead_letters") == "refused before the transaction"
