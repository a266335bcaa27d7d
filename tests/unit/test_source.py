"""The batched source's bookkeeping: what it commits, when, and what it skips (no Kafka needed:
the consumer is a recorder of commits)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from streams.config import Settings
from streams.kafka.source import Batch, BatchedSource, Route

TOPIC = "raw"
TP0, TP1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)


class CommitRecorder:
    def __init__(self) -> None:
        self.commits: list[dict[TopicPartition, int]] = []

    async def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        self.commits.append({tp: meta.offset for tp, meta in offsets.items()})

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1}


class Stream:
    """What an agent's stream gives the source: the batches, in order."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches
        self.enable_acks = True

    async def __aiter__(self):  # noqa: ANN204 - an async generator
        for batch in self.batches:
            yield batch


def source_with(consumer: CommitRecorder, fatal: list[BaseException]) -> BatchedSource:
    async def on_fatal(error: BaseException) -> None:
        fatal.append(error)

    source = BatchedSource(Settings(), "group", on_fatal=on_fatal)
    source._consumer = consumer  # noqa: SLF001 - the recorder stands in for the aiokafka consumer
    source._owned = {TP0, TP1}  # noqa: SLF001
    return source


def batch(next_offsets: dict[int, int], generation: int = 0) -> Batch:
    return Batch(TOPIC, [object()] * sum(next_offsets.values()), generation, next_offsets)


def acked() -> asyncio.Future[Any]:
    handed = asyncio.get_running_loop().create_future()
    delivery = asyncio.get_running_loop().create_future()
    delivery.set_result(None)
    handed.set_result(delivery)
    return handed


def refused() -> asyncio.Future[Any]:
    handed = asyncio.get_running_loop().create_future()
    handed.set_exception(RuntimeError("KafkaTimeoutError"))
    return handed


async def settle_all(source: BatchedSource, items: list[tuple[Batch, list[asyncio.Future[Any]]]]) -> None:
    settling = asyncio.create_task(source._settle_in_order(source.routes[TOPIC]))  # noqa: SLF001
    for item, deliveries in items:
        source._active += 1  # noqa: SLF001 - as batches() does for each batch a stage takes
        await source.settle(item, deliveries)
    for _ in range(20):
        await asyncio.sleep(0)
    settling.cancel()


async def test_offsets_are_committed_past_the_last_settled_batch_of_each_partition() -> None:
    consumer, fatal = CommitRecorder(), []
    source = source_with(consumer, fatal)
    source.route(TOPIC, Route(channel=None))  # type: ignore[arg-type]
    await settle_all(source, [(batch({0: 10}), [acked()]), (batch({0: 25, 1: 7}), [acked(), acked()])])
    await source._commit()  # noqa: SLF001
    assert consumer.commits == [{TP0: 25, TP1: 7}]
    assert source.routes[TOPIC].settled == 42 and source.unsettled == 0 and not fatal
    await source._commit()  # noqa: SLF001 - nothing new: no second commit
    assert len(consumer.commits) == 1


async def test_a_failed_delivery_stops_every_later_commit_and_crashes_the_worker() -> None:
    consumer, fatal = CommitRecorder(), []
    source = source_with(consumer, fatal)
    source.route(TOPIC, Route(channel=None))  # type: ignore[arg-type]
    await settle_all(source, [(batch({0: 10}), [acked()]), (batch({0: 20}), [acked(), refused()]),
                              (batch({0: 30}), [acked()])])
    await source._commit()  # noqa: SLF001
    assert consumer.commits == []  # once a delivery failed the worker commits nothing more (a redelivery is safe)
    assert len(fatal) == 1 and "KafkaTimeoutError" in str(fatal[0])


async def test_a_revoke_waits_for_the_batch_in_flight_commits_it_then_lets_the_stage_drop_its_state() -> None:
    consumer, fatal = CommitRecorder(), []
    source = source_with(consumer, fatal)
    dropped: list[list[int]] = []
    source.route(TOPIC, Route(channel=None, on_revoked=dropped.append))  # type: ignore[arg-type]
    settling = asyncio.create_task(source._settle_in_order(source.routes[TOPIC]))  # noqa: SLF001
    stream = Stream([batch({0: 10}), batch({1: 5})])
    stages = source.batches(stream)  # type: ignore[arg-type]
    first = await stages.__anext__()  # the stage took a batch and is still processing it
    revoke = asyncio.create_task(source.on_partitions_revoked([TP0, TP1]))
    await asyncio.sleep(0.05)
    assert not revoke.done() and consumer.commits == []  # waiting for the batch in flight
    await source.settle(first, [acked()])
    await asyncio.wait_for(revoke, 1)
    assert consumer.commits == [{TP0: 10}] and dropped == [[0, 1]]
    # the batch fetched before the revoke is skipped, not processed: its partition's next owner reads it
    assert [b async for b in stages] == []
    settling.cancel()
    assert stream.enable_acks is False
