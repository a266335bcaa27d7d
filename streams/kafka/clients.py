"""Kafka clients built from the settings, and the product's topics.

One place decides how the product talks to Kafka: security options, the idempotent producer
tuned for throughput, consumers that never commit, and the topics with their partition counts.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from murmurhash2 import murmurhash2

from projections import Record
from streams.config import Settings
from streams.topology import Topic

__all__ = ["PRODUCER_COMPRESSION", "PRODUCT_TOPICS", "KeyPartitioner", "Outbox", "Received", "Sender", "delivered", "end_offsets", "ensure_topics", "murmur2", "new_producer",
           "new_reader", "partition_count", "topic_partitions"]

PRODUCT_TOPICS: tuple[Topic, ...] = tuple(Topic)


class Received(Record, Protocol):
    """A consumed Kafka record with its headers: the one record type of every stage. aiokafka's
    ``ConsumerRecord`` is one, and so is Faust's ``event.message``; the projections read the
    same record without headers (:class:`projections.Record`)."""

    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...

_MURMUR2_SEED = 0x9747B28C
"""The seed of Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``)."""


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (``org.apache.kafka.common.utils.Utils.murmur2``), as an unsigned 32-bit
    int: the same result as ``aiokafka.partitioner.murmur2``. Kafka's is the standard 32-bit
    MurmurHash2 with its own seed, so the C one of ``murmurhash2`` computes it: under 1 µs for a DID
    against 8.8 µs word by word in Python, which was an eighth of the ingest's time."""
    return murmurhash2(data, _MURMUR2_SEED)


class KeyPartitioner:
    """Kafka's default partitioner (the Java client's: murmur2 of the key modulo the partitions;
    a random available partition for a null key), for aiokafka and Faust producers.

    aiokafka's own is pure Python byte by byte (about 40 µs a key, a third of a send); this one
    hashes in C (:func:`murmur2`): 0.7 µs a key over 60,000 DIDs, without a cache (a cache of recent keys
    saved 0.1 µs when a raw event's four records share its DID, and cost 0.5 µs when the keys
    seldom repeat, as the ingest's do)."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:
            return random.choice(available or all_partitions)
        return all_partitions[(murmur2(key) & 0x7FFFFFFF) % len(all_partitions)]


PRODUCER_COMPRESSION = "zstd"
"""How :func:`new_producer` compresses batches (see there); the ingest keeps it for the raw topic."""


def new_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """An idempotent producer (``acks=all``) batching for throughput: zstd-compressed batches of
    up to 1 MiB that linger 20 ms. ``request_timeout_ms`` is the delivery timeout: a batch that
    cannot be delivered within it fails its futures.

    zstd, not lz4: aiokafka compresses lz4 at level 9 (lz4 HC), 6.3 µs per raw event of the
    bench corpus for a ratio of 3.8, in the event loop's thread; zstd at its level 3 takes 1.8 µs
    for a ratio of 5.8 (``bge bench ingest``: lz4 was a quarter of the ingest's samples)."""
    options: dict[str, object] = {
        **settings.kafka_client_options(),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": PRODUCER_COMPRESSION,
        "linger_ms": 20,
        "max_batch_size": 1_048_576,
        "max_request_size": 8_388_608,
        "request_timeout_ms": int(settings.ingest_delivery_timeout_seconds * 1000),
        "client_id": "bge",
        "partitioner": KeyPartitioner(),
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


class Outbox:
    """What one input batch sends, grouped by topic and partition into aiokafka batch builders.

    ``add`` is synchronous and cheap (a few µs: the key is partitioned like the producer would,
    then appended to that partition's builder); :meth:`Sender.submit` hands the builders to the
    producer in one go. Per-partition order is the order of ``add``."""

    def __init__(self, sender: Sender) -> None:
        self._sender = sender
        self._open: dict[tuple[str, int], Any] = {}
        self._full: list[tuple[tuple[str, int], Any]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None,
            headers: Sequence[tuple[str, bytes]] = (), partition: int | None = None) -> None:
        """Queue one record for ``topic`` (partitioned by ``key`` unless ``partition`` is given)."""
        if partition is None:
            partition = self._sender.partition_of(topic, key)
        if type(headers) is not list:
            headers = list(headers)  # aiokafka's builder takes a list only
        tp = (topic, partition)
        builder = self._open.get(tp)
        if builder is None:
            builder = self._open[tp] = self._sender.producer.create_batch()
        if builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._full.append((tp, builder))  # full: start the partition's next builder
            builder = self._open[tp] = self._sender.producer.create_batch()
            builder.append(timestamp=None, key=key, value=value, headers=headers)

    def drain(self) -> list[tuple[tuple[str, int], Any]]:
        """The builders in the order they must be sent, and an empty outbox."""
        builders, self._full, self._open = [*self._full, *self._open.items()], [], {}
        for _, builder in builders:
            builder.close()  # closed builders are sent at once: they are already batches, no linger
        return builders


class Sender:
    """One started aiokafka producer (:func:`new_producer`) that the worker's stages send their
    output with, a batch at a time.

    A stage fills an :class:`Outbox` per input batch and :meth:`submit` s it: one task hands the
    builders to ``producer.send_batch`` in submission order (so each partition keeps its order
    even while an earlier builder of the same partition still waits to be drained), and the
    stage gets one future per builder, resolved when Kafka acknowledged it. A send per message
    (``producer.send``, or Faust's ``Topic.send`` on top of it) costs 15-40 µs and a future each;
    a builder append costs a few µs."""

    def __init__(self, settings: Settings, **overrides: object) -> None:
        self._settings = settings
        compression = None if settings.kafka_compression == "none" else settings.kafka_compression
        self._options = {"client_id": "bge-worker", "compression_type": compression, **overrides}
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = KeyPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._queue: asyncio.Queue[tuple[tuple[str, int], Any, asyncio.Future[Any]] | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    @property
    def producer(self) -> AIOKafkaProducer:
        """The started producer (``RuntimeError`` before :meth:`start`)."""
        if self._producer is None:
            raise RuntimeError("Sender.start() was not awaited")
        return self._producer

    async def start(self) -> None:
        """Create and start the producer (aiokafka creates it inside the running loop)."""
        if self._producer is None:
            producer = new_producer(self._settings, **self._options)
            await producer.start()
            self._producer = producer
            self._task = asyncio.create_task(self._hand_over(), name="sender")

    async def stop(self) -> None:
        """Deliver what was submitted, then close."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task  # it hands over what is queued with self.producer: cleared only after
            self._task = None
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.stop()

    async def open(self, *topics: str) -> None:
        """Learn the partitions of ``topics`` (a metadata request the first time only); an
        :class:`Outbox` can send only to topics opened."""
        for topic in topics:
            if topic not in self._partitions:
                partitions = await self.producer.client._wait_on_metadata(topic)  # noqa: SLF001 - what send() does
                self._partitions[topic] = sorted(partitions)

    def partition_of(self, topic: str, key: bytes | None) -> int:
        """The partition the producer's partitioner gives ``key`` in ``topic`` (opened)."""
        partitions = self._partitions[topic]
        return self._partitioner(key, partitions, partitions)

    def outbox(self) -> Outbox:
        return Outbox(self)

    def submit(self, outbox: Outbox) -> list[asyncio.Future[Any]]:
        """Send what ``outbox`` holds; one future per builder, resolved with its delivery (a
        future of the record metadata) once the producer took it."""
        loop = asyncio.get_running_loop()
        taken = []
        for tp, builder in outbox.drain():
            handed: asyncio.Future[Any] = loop.create_future()
            self._queue.put_nowait((tp, builder, handed))
            taken.append(handed)
        return taken

    async def _hand_over(self) -> None:
        while (item := await self._queue.get()) is not None:
            (topic, partition), builder, handed = item
            try:
                delivery = await self.producer.send_batch(builder, topic, partition=partition)
            except Exception as error:  # noqa: BLE001 - the stage sees it when it awaits
                handed.set_exception(error)
            else:
                handed.set_result(delivery)


async def delivered(handed: Sequence[asyncio.Future[Any]]) -> None:
    """Wait until Kafka acknowledged every builder of :meth:`Sender.submit` (raises the first
    failure)."""
    for future in handed:
        await (await future)


def new_reader(settings: Settings, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    """A consumer without a group: it reads what it is told and commits nothing, so it never
    disturbs the workers' committed offsets."""
    options: dict[str, object] = {
        **settings.kafka_client_options(),
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "client_id": "bge-reader",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


def partition_count(settings: Settings, topic: Topic) -> int:
    """Partitions of each product topic when created: the operational topic is small and ordered."""
    return 1 if topic is Topic.JETSTREAM_OPS else settings.bge_topic_partitions


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The partitions of an existing ``topic`` (fresh metadata; never creates the topic)."""
    cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - the one metadata call that creates nothing
    return sorted(cluster.partitions_for_topic(topic) or ())


async def end_offsets(settings: Settings, topic: str) -> dict[TopicPartition, int]:
    """The end offset of every partition of ``topic`` (a full name): what has been written so far."""
    reader = new_reader(settings)
    await reader.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(reader, topic)]
        return dict(await reader.end_offsets(tps)) if tps else {}
    finally:
        await reader.stop()


async def ensure_topics(settings: Settings, topics: Iterable[Topic] = PRODUCT_TOPICS) -> list[str]:
    """Create the missing product topics (with the deployment prefix); returns those created."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    created: list[str] = []
    try:
        existing = set(await admin.list_topics())
        for topic in topics:
            name = settings.topic(topic)
            if name in existing:
                continue
            try:
                await admin.create_topics(
                    [NewTopic(name, num_partitions=partition_count(settings, topic), replication_factor=1)]
                )
                created.append(name)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return created
