"""The worker's batched Kafka source: one aiokafka consumer that hands Faust agents a batch per event.

Faust takes every message through its own consumer at about 130 µs of CPU each on this machine
(``../shared/notes/faust-throughput.md``), which caps a worker near 7k messages/s before any
work is done. The worker's stages read their input here instead::

    aiokafka consumer (group = the worker's app id, getmany)
        ──► Batch (one topic's records of one fetch) ──► app.channel() ──► Faust agent (the stage)
        ◄── settle(batch, deliveries) ◄──────────────────────────────────────┘
    commit: per partition, the offset after the last batch whose effect is durable

Contracts:

- *At least once.* A stage processes a batch, sends its output and calls :meth:`BatchedSource.settle`
  with the futures of those sends (none when the effect is already durable, as the projector's
  Postgres commit is). A partition's offset is committed only past batches whose every future
  succeeded, in the order they were fetched. A failed delivery stops all committing and crashes
  the worker (``on_fatal``): the batches from the failed one on are delivered again after restart.
- *Order.* A partition's records reach its stage in offset order; each stage runs one agent
  (concurrency 1) and settles in order.
- *Rebalances.* The source is a group member of its own (outside Faust's assignor). On revoke it
  stops handing out batches, waits until the batch a stage is processing is settled (at most
  ``drain_timeout_s``), commits, and calls the stages' ``on_revoked`` (they drop the partitions'
  state). Batches fetched before the revoke and not yet processed are skipped (each batch carries
  the generation it was fetched in) and fetched again by the partition's next owner. On assign, a
  stage may position its partitions (``on_assigned`` returns offsets to seek to: the projector's
  marks in Postgres).
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import platform
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streams.config import Settings
from streams.kafka.clients import delivered
from streams.observability.log import ContextLogger, get_logger

__all__ = ["Batch", "BatchChannel", "BatchedSource", "Route", "Settling", "tune_gc", "tune_malloc"]


class BatchChannel(faust.Channel):
    """The in-memory channel a stage's batches travel on, with a buffer of its own.

    A plain ``app.channel()`` buffers in a queue under the app's flow control, which Faust
    suspends and *clears* on each rebalance of its own consumer group: batches already fetched
    would vanish while later ones of the same partitions were processed and committed. This
    buffer answers to the source's rebalances only (see :meth:`BatchedSource.batches`)."""

    @property
    def queue(self) -> ThrowableQueue:
        if self._queue is None:
            self._queue = ThrowableQueue(maxsize=self.maxsize or 1,
                                         flow_control=FlowControlEvent(initially_suspended=False))
        return self._queue


@dataclass(frozen=True, slots=True)
class Batch:
    """One topic's records of one fetch, each partition's in offset order."""

    topic: str
    records: list[ConsumerRecord]
    generation: int
    next_offsets: dict[int, int]  # partition -> the offset after its last record here


@dataclass(frozen=True, slots=True)
class Settling:
    """A processed batch waiting for its sends' acknowledgements: what committing it needs, not
    its records (a settling batch's records would stay in memory only to be counted)."""

    topic: str
    records: int
    next_offsets: dict[int, int]
    deliveries: Sequence[asyncio.Future[Any]]


@dataclass
class Route:
    """Where a topic's batches go, and what the stage does when its partitions move.

    ``on_assigned(partitions)`` may return partition -> offset to start from (else the group's
    committed offset); ``on_revoked(partitions)`` drops what the stage holds for them."""

    channel: faust.ChannelT
    on_assigned: Callable[[list[int]], Awaitable[dict[int, int]]] | None = None
    on_revoked: Callable[[list[int]], None] | None = None
    settled: int = field(default=0)  # records whose effect is durable (metrics read it)
    # fetched batches waiting for the stage's channel; at BACKLOG_HOLD the topic's records are left
    # in the consumer's buffer (held) until the backlog is shorter
    backlog: asyncio.Queue[Batch] = field(default_factory=asyncio.Queue)
    held: bool = False
    # processed batches whose sends are not acknowledged yet; the stage waits when two are
    settling: asyncio.Queue[Settling] = field(default_factory=lambda: asyncio.Queue(maxsize=2))


BACKLOG_HOLD = 1
"""Batches waiting for one stage before its topic's records are no longer taken from the consumer:
a stage that is behind never holds up another one's input (one worker runs collect and project
side by side), and what waits in memory stays a batch per stage and one fetch per partition."""


class BatchedSource(ConsumerRebalanceListener):
    """The worker's input (see the module docstring). :meth:`route` each topic before
    :meth:`start`; stages iterate :meth:`batches` and :meth:`settle` each batch."""

    def __init__(self, settings: Settings, group: str, *, on_fatal: Callable[[BaseException], Awaitable[Any]],
                 commit_interval_s: float = 1.0, drain_timeout_s: float = 60.0,
                 logger: ContextLogger | None = None) -> None:
        self._settings = settings
        self.group = group
        self._on_fatal = on_fatal
        self._max_records = settings.stage_batch_size
        self._commit_interval_s = commit_interval_s
        self._drain_timeout_s = drain_timeout_s
        self.log = logger or get_logger("source")
        self.routes: dict[str, Route] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._generation = 0
        self._revoking = False
        self._owned: set[TopicPartition] = set()
        self._active = 0  # batches a stage took and that are not settled yet
        self._stopping = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._room = asyncio.Event()  # set when a held topic may be taken again
        self._durable: dict[TopicPartition, int] = {}  # offsets safe to commit
        self._committed: dict[TopicPartition, int] = {}
        self._failed: BaseException | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def route(self, topic: str, route: Route) -> None:
        self.routes[topic] = route

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **self._settings.kafka_client_options(),
            group_id=self.group,
            client_id=f"{self.group}-source",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # what is fetched waits in memory: a few batches ahead of the stages, not a backlog
            fetch_max_bytes=8_388_608,
            max_partition_fetch_bytes=1_048_576,
            # at a low rate, let the broker gather a batch worth a transaction (STAGE_BATCH_WAIT_MS at most)
            fetch_min_bytes=65_536,
            fetch_max_wait_ms=self._settings.stage_batch_wait_ms,
        )
        consumer.subscribe(list(self.routes), listener=self)
        await consumer.start()
        self._consumer = consumer
        self._tasks = [asyncio.create_task(self._fetch(), name="source-fetch"),
                       asyncio.create_task(self._commit_periodically(), name="source-commit"),
                       *(asyncio.create_task(self._deliver(route), name=f"source-deliver-{topic}")
                         for topic, route in self.routes.items()),
                       *(asyncio.create_task(self._settle_in_order(route), name=f"source-settle-{topic}")
                         for topic, route in self.routes.items())]
        for task in self._tasks:
            task.add_done_callback(self._on_task_done)

    def _on_task_done(self, task: asyncio.Task[None]) -> None:
        """A loop of the source that ends by an error (an unrecoverable fetch error, ...) would
        leave the worker silently idle: it crashes the worker instead."""
        if task.cancelled() or task.exception() is None:
            return
        error = task.exception()
        assert error is not None
        self._failing = asyncio.ensure_future(self._fail(error, task.get_name()))

    async def stop(self) -> None:
        """Stop fetching, let settled work commit (briefly), leave the group."""
        if self._consumer is None:
            return
        self._stopping = True
        self._tasks[0].cancel()
        await self._drain(timeout_s=5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        consumer, self._consumer = self._consumer, None
        await consumer.stop()

    # --- what stages call ----------------------------------------------------------------------

    async def batches(self, stream: faust.StreamT) -> AsyncIterator[Batch]:
        """The batches of ``stream`` (a route's channel) still current: one fetched before a
        revoke is skipped (its records are fetched again by the partition's owner)."""
        stream.enable_acks = False  # type: ignore[attr-defined] - a channel's events have no offsets
        async for batch in stream:
            if batch.generation == self._generation and not (self._revoking or self._stopping or self._failed):
                self._active += 1
                self._idle.clear()
                yield batch
            del batch  # not held while the next one is awaited (see Settling)

    async def run(self, stream: faust.StreamT,
                  handle: Callable[[Batch], Awaitable[Sequence[asyncio.Future[Any]]]]) -> None:
        """A stage's loop: each current batch of ``stream`` to ``handle``, which returns the
        futures of what it sent, then :meth:`settle`. If ``handle`` raises, committing stops and
        the worker crashes: the batch is delivered again after the restart, never skipped."""
        async for batch in self.batches(stream):
            try:
                deliveries = await handle(batch)
            except Exception as error:
                await self._fail(error, batch.topic)
                raise
            await self.settle(batch, deliveries)
            del batch, deliveries  # not held while the next one is awaited (see Settling)

    async def settle(self, batch: Batch, deliveries: Sequence[asyncio.Future[Any]] = ()) -> None:
        """``batch`` was processed; its effect is durable once ``deliveries`` (futures of
        :meth:`streams.kafka.clients.Sender.submit`) succeed. Waits when many batches are still settling."""
        await self.routes[batch.topic].settling.put(Settling(batch.topic, len(batch.records), batch.next_offsets, deliveries))

    @property
    def unsettled(self) -> int:
        """Batches a stage took and that are not settled yet."""
        return self._active

    # --- the rebalance listener ------------------------------------------------------------------

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._revoking = True
        self._generation += 1
        await self._drain(timeout_s=1.0 if self._stopping else self._drain_timeout_s)
        self._owned.difference_update(revoked)
        for topic, route in self.routes.items():
            partitions = sorted(tp.partition for tp in revoked if tp.topic == topic)
            if partitions and route.on_revoked is not None:
                route.on_revoked(partitions)
        self.log.info("partitions revoked", group=self.group, partitions=len(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        consumer = self._consumer
        for topic, route in self.routes.items():
            partitions = sorted(tp.partition for tp in assigned if tp.topic == topic)
            if not partitions or route.on_assigned is None:
                continue
            for partition, offset in (await route.on_assigned(partitions)).items():
                if consumer is not None:
                    consumer.seek(TopicPartition(topic, partition), offset)
        for route in self.routes.values():
            route.held = False  # a new assignment starts with every topic taken
        self._room.set()
        self._owned.update(assigned)
        self._revoking = False
        self.log.info("partitions assigned", group=self.group, partitions=len(assigned))

    # --- inside ----------------------------------------------------------------------------------

    async def _fetch(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        while True:  # no local holds a fetch while the next one is awaited (see Settling)
            wanted = self._wanted(consumer)
            if wanted is None:  # every stage is behind: wait until one takes its batch
                self._room.clear()
                await self._room.wait()
                continue
            self._hand_over(await consumer.getmany(*wanted, timeout_ms=100, max_records=self._max_records))

    def _wanted(self, consumer: AIOKafkaConsumer) -> list[TopicPartition] | None:
        """The partitions whose records to take: every one (``[]``) unless a topic is held, none
        (``None``) when every topic is. A held topic's fetched records stay in the consumer's buffer,
        one fetch per partition at most, which aiokafka does not fetch again until they are taken.

        Not ``consumer.pause``: aiokafka drops a paused partition's buffered fetch and fetches it again
        on resume, and the dropped records stay alive in a reference cycle (``PartitionRecords`` and
        its generator) until a full garbage collection, which ``tune_gc`` makes rare: with batches of
        2,000 a worker held 544 dropped fetches, about 540 MB, after 90 seconds."""
        held = {topic for topic, route in self.routes.items() if route.held}
        if not held:
            return []
        return [tp for tp in consumer.assignment() if tp.topic not in held] or None

    def _hand_over(self, fetched: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        """A fetch's records as one batch per topic, into each topic's backlog."""
        if self._revoking or self._failed is not None or not fetched:
            return
        by_topic: dict[str, list[tuple[TopicPartition, list[ConsumerRecord]]]] = {}
        for tp, records in fetched.items():
            if records:
                by_topic.setdefault(tp.topic, []).append((tp, records))
        for topic, parts in by_topic.items():
            records = [record for _, part in parts for record in part]
            batch = Batch(topic, records, self._generation, {tp.partition: part[-1].offset + 1 for tp, part in parts})
            route = self.routes[topic]
            route.backlog.put_nowait(batch)
            if route.backlog.qsize() >= BACKLOG_HOLD:
                route.held = True

    async def _deliver(self, route: Route) -> None:
        """Hand a topic's fetched batches to its stage, one at a time (the channel is a few
        batches deep), and let its records be taken again once the backlog is short again."""
        while True:  # no local holds the batch handed over while the next one is awaited
            await route.channel.send(value=await route.backlog.get())
            if route.held and route.backlog.qsize() < BACKLOG_HOLD:
                route.held = False
                self._room.set()

    async def _settle_in_order(self, route: Route) -> None:
        """One stage's batches, in the order it processed them (a stage waiting for Kafka's
        acknowledgements never holds up another stage)."""
        while True:
            settling = await route.settling.get()
            try:
                await delivered(settling.deliveries)
            except Exception as error:  # noqa: BLE001 - nothing from here on may be committed
                self._finish()
                await self._fail(error, settling.topic)
                return
            route.settled += settling.records
            for partition, offset in settling.next_offsets.items():
                tp = TopicPartition(settling.topic, partition)
                if tp in self._owned:
                    self._durable[tp] = offset
            self._finish()

    async def _fail(self, error: BaseException, topic: str) -> None:
        if self._failed is None:
            self._failed = error
            self.log.error("a batch failed; committing stops and the worker crashes (it is delivered again "
                           "after the restart)", error=repr(error), topic=topic)
            await self._on_fatal(error)

    def _finish(self) -> None:
        self._active -= 1
        if self._active <= 0:
            self._active = 0
            self._idle.set()

    async def _drain(self, *, timeout_s: float) -> None:
        """Wait until the batches stages took are settled, then commit."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=timeout_s)
        except asyncio.TimeoutError:
            self.log.warning("a batch is still unsettled; it will be delivered again", unsettled=self._active)
        await self._commit()

    async def _commit_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._commit_interval_s)
            await self._commit()

    async def _commit(self) -> None:
        if self._consumer is None or self._failed is not None:
            return
        due = {tp: offset for tp, offset in self._durable.items()
               if tp in self._owned and self._committed.get(tp) != offset}
        if not due:
            return
        try:
            await self._consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in due.items()})
        except Exception as error:  # noqa: BLE001 - the next commit (or a redelivery) covers it
            self.log.warning("offset commit failed; retried at the next interval", error=repr(error))
            return
        self._committed.update(due)


def tune_gc() -> None:
    """Garbage collection sized for batches: the objects that live as long as the process (the
    app, its modules, the strategy config) move to the permanent generation, and the youngest
    generation is collected every 50,000 allocations instead of 700. A batch of 5,000 messages
    allocates hundreds of thousands of short-lived objects, and each full collection rescanned
    everything the process holds: the projector spent 15-20% of its Python time in collections
    (about 320 ms of CPU per transaction of 5,000 domain events before, 250-270 ms after). Almost
    all garbage here is freed by reference counting; the collector is only for cycles."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


M_MMAP_THRESHOLD = -3
"""glibc's ``mallopt`` parameter for the size from which ``malloc`` maps memory of its own."""

MMAP_THRESHOLD_BYTES = 2 * 1024 * 1024
"""Buffers of this size and more are mapped on their own: fetch responses and produce requests
(megabytes). Those of 128 KiB to 2 MiB come from the heap: aiokafka's batch builders and each
partition's fetched records (up to 1 MiB), the projector's statements and their JSON."""


def tune_malloc() -> bool:
    """Buffers of 2 MiB and more mapped on their own, so that freeing them returns their memory.

    glibc starts with a threshold of 128 KiB but raises it to the size of each mapped buffer freed
    (up to 32 MiB): after the first fetch response (megabytes) is freed, the next ones come from
    the heap, between the small values of the records, and their space stays in the process once
    freed, because something small is alive above it. At its peak a worker's heap held 214 MB
    free beside 158 MB in use (``mallinfo2``, 200,000 events). A threshold set with ``mallopt``
    stays where it is.

    Not lower: each mapped buffer is faulted in page by page when written and unmapped when
    freed, and a worker writes about 50 KiB of such buffers per raw event (the sends encoded into
    requests, the fetches copied out of responses, the projector's statements). With 128 KiB it
    took 12.5 minor page faults and about 35 µs of kernel time per raw event, 12% of its CPU.

    Returns whether it was set: not when ``MALLOC_MMAP_THRESHOLD_`` in the environment already
    chose one, nor outside glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
