"""The batched source's bookkeeping: what it commits, when, and what it skips (no Kafka needed:
the consumer is a recorder of commits)."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import weakref
from typing import Any

import pytest
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


class Record:
    """A fetched record that can be watched for being freed."""

    __slots__ = ("offset", "__weakref__")

    def __init__(self, offset: int) -> None:
        self.offset = offset


class Fetching(CommitRecorder):
    """A consumer with fetches to give, then none; it records the partitions each ``getmany`` asked for."""

    def __init__(self, *fetches: dict[TopicPartition, list[Record]],
                 assigned: set[TopicPartition] | None = None) -> None:
        super().__init__()
        self.fetches = list(fetches)
        self.assigned = assigned or {TP0, TP1}
        self.asked: list[set[TopicPartition]] = []

    def assignment(self) -> set[TopicPartition]:
        return self.assigned

    async def getmany(self, *partitions: TopicPartition, timeout_ms: int,
                      max_records: int) -> dict[TopicPartition, list[Record]]:
        self.asked.append(set(partitions))
        wanted = set(partitions) or self.assigned
        for index, fetched in enumerate(self.fetches):
            if all(tp in wanted for tp in fetched):
                return self.fetches.pop(index)
        await asyncio.sleep(timeout_ms / 1000)
        return {}


class QueueChannel:
    """A stage's channel and its stream in one: what is sent is iterated, and nothing else holds it."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Batch] = asyncio.Queue()
        self.enable_acks = True

    async def send(self, value: Batch) -> None:
        self.queue.put_nowait(value)

    def __aiter__(self) -> QueueChannel:
        return self

    async def __anext__(self) -> Batch:
        return await self.queue.get()


async def test_a_processed_batch_waiting_for_its_acknowledgements_holds_no_records() -> None:
    """A settling batch keeps its offsets, not its records: fetching, handing over, processing and
    settling leave nothing that holds them while the stage waits for Kafka and for the next batch."""
    fetched = {TP0: [Record(0), Record(1)], TP1: [Record(0)]}
    watched = [weakref.ref(record) for records in fetched.values() for record in records]
    consumer, fatal = Fetching(fetched), []
    del fetched
    source = source_with(consumer, fatal)
    channel = QueueChannel()
    source.route(TOPIC, Route(channel=channel))  # type: ignore[arg-type]
    pending: asyncio.Future[Any] = asyncio.get_running_loop().create_future()  # not acknowledged yet
    handled: list[int] = []

    async def handle(batch: Batch) -> list[asyncio.Future[Any]]:
        handled.append(len(batch.records))
        return [pending]

    tasks = [asyncio.create_task(source._fetch()), asyncio.create_task(source._deliver(source.routes[TOPIC])),  # noqa: SLF001
             asyncio.create_task(source.run(channel, handle))]  # type: ignore[arg-type]
    for _ in range(20):
        await asyncio.sleep(0)
    gc.collect()
    assert handled == [3] and source.routes[TOPIC].settling.qsize() == 1  # settled, waiting for Kafka
    assert [ref() for ref in watched] == [None, None, None]
    tasks.append(asyncio.create_task(source._settle_in_order(source.routes[TOPIC])))  # noqa: SLF001
    delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    delivery.set_result(None)
    pending.set_result(delivery)  # handed to the producer, then acknowledged
    for _ in range(20):
        await asyncio.sleep(0)
    await source._commit()  # noqa: SLF001
    assert consumer.commits == [{TP0: 2, TP1: 1}] and source.routes[TOPIC].settled == 3 and not fatal
    assert not source.routes[TOPIC].held and consumer.asked[-1] == set()  # the backlog emptied: every partition taken
    for task in tasks:
        task.cancel()


async def test_a_stage_behind_leaves_its_records_in_the_consumer_and_never_holds_up_another_topic() -> None:
    """A topic whose stage has a batch waiting is not asked for (its fetched records stay in the
    consumer's buffer; nothing is paused, which would make aiokafka drop and fetch them again); the
    other topics' records still flow; with every topic behind, the source waits without asking."""
    other = TopicPartition("events", 0)
    consumer, fatal = Fetching({TP0: [Record(0)]}, {TP1: [Record(0)]}, {other: [Record(0)]},
                               assigned={TP0, TP1, other}), []
    source = source_with(consumer, fatal)
    raw, events = QueueChannel(), QueueChannel()
    source.route(TOPIC, Route(channel=raw))  # type: ignore[arg-type]
    source.route("events", Route(channel=events))  # type: ignore[arg-type]
    fetch = asyncio.create_task(source._fetch())  # noqa: SLF001
    await asyncio.sleep(0.01)
    assert source.routes[TOPIC].held and consumer.asked[0] == set() and consumer.asked[1] == {other}
    assert source.routes[TOPIC].backlog.qsize() == 1 and [set(f) for f in consumer.fetches] == [{TP1}]  # left in the consumer
    assert source.routes["events"].held and source.routes["events"].backlog.qsize() == 1
    asked = len(consumer.asked)
    await asyncio.sleep(0.3)
    assert len(consumer.asked) == asked  # every topic behind: nothing asked for
    deliver = asyncio.create_task(source._deliver(source.routes[TOPIC]))  # noqa: SLF001
    await asyncio.sleep(0.01)
    assert not source.routes[TOPIC].held and consumer.asked[asked] == {TP0, TP1}
    assert consumer.fetches == [] and raw.queue.qsize() == 2  # both raw batches reached the stage
    for task in (fetch, deliver):
        task.cancel()
    assert not fatal


MAPPED_AFTER_A_BIG_FREE = """
import ctypes, sys
from streams.kafka.source import tune_malloc

class Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
tuned = tune_malloc() if sys.argv[1] == "tuned" else False
fetched = bytearray(16 << 20)  # a fetch response: mapped, then freed
del fetched


def mapped(size):
    before = libc.mallinfo2().hblkhd
    buffer = bytearray(size)
    return libc.mallinfo2().hblkhd - before >= len(buffer)


print(tuned, mapped(4 << 20), mapped(1 << 20))  # a produce request; a batch builder
"""


@pytest.mark.parametrize(("mode", "env", "expected"), [
    ("untuned", {}, "False False False"),  # glibc raised its threshold to 16 MiB: 4 MiB come from the heap
    ("tuned", {}, "True True False"),  # mapped from 2 MiB, so a builder's MiB is not faulted in afresh each time
    ("tuned", {"MALLOC_MMAP_THRESHOLD_": str(32 << 20)}, "False False False"),  # the environment's choice stands
])
def test_tune_malloc_keeps_big_buffers_mapped_after_a_bigger_one_was_freed(mode: str, env: dict[str, str],
                                                                            expected: str) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    done = subprocess.run([sys.executable, "-c", MAPPED_AFTER_A_BIG_FREE, mode], env=environment,
                          capture_output=True, text=True, check=True, timeout=120)
    assert done.stdout.split("\n")[-2] == expected
