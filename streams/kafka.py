"""Kafka clients built from the settings, and the product's topics.

One place decides how the product talks to Kafka: security options, the idempotent producer
tuned for throughput, consumers that never commit, and the topics with their partition counts.
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.config import Settings, Topic

__all__ = ["PRODUCT_TOPICS", "end_offsets", "ensure_topics", "new_producer", "new_reader", "partition_count",
           "topic_partitions"]

PRODUCT_TOPICS: tuple[Topic, ...] = tuple(Topic)


def new_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    """An idempotent producer (``acks=all``) batching for throughput: lz4-compressed batches of
    up to 1 MiB that linger 20 ms. ``request_timeout_ms`` is the delivery timeout: a batch that
    cannot be delivered within it fails its futures."""
    options: dict[str, object] = {
        **settings.kafka_client_options(),
        "acks": "all",
        "enable_idempotence": True,
        "compression_type": "lz4",
        "linger_ms": 20,
        "max_batch_size": 1_048_576,
        "max_request_size": 8_388_608,
        "request_timeout_ms": int(settings.ingest_delivery_timeout_seconds * 1000),
        "client_id": "bge",
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


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
