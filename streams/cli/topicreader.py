"""Reading a range of a Kafka topic fast, without a group or with a replay group of its own.

:func:`open_reader` makes a consumer tuned for bulk reads (large fetches, no auto-commit).
:func:`plan_ranges` turns the selection's bounds into ``[start, end)`` offsets per partition
(asking the broker for beginning and end offsets, and ``offsets_for_times`` for times).
:func:`read_ranges` yields batches of messages (``getmany``) until every range is read, or
forever with ``follow``, or until ``stop`` is set. Nothing here commits, except
:func:`commit_positions` for a replay group the user named explicitly.
"""

from __future__ import annotations

import asyncio
import bisect
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams.config import Settings
from streams.kafka.clients import new_reader, topic_partitions
from streams.cli.selection import AtTime, Bounds, SelectionError, end_offset, start_offset

__all__ = [
    "FETCH_MAX_BYTES",
    "MAX_RECORDS",
    "PartitionRange",
    "commit_positions",
    "open_reader",
    "plan_ranges",
    "messages_of",
    "read_ranges",
    "replay_group",
    "topic_partitions",
]

MAX_RECORDS = 10_000
FETCH_MAX_BYTES = 64 * 1024 * 1024
PARTITION_FETCH_BYTES = 4 * 1024 * 1024


def replay_group(settings: Settings, name: str) -> str:
    """The consumer group of a named replay: ``<prefix>bge-replay.<name>``, a namespace the
    workers' groups never use, so a replay can never move their committed offsets."""
    return f"{settings.bge_topic_prefix}bge-replay.{name}"


async def open_reader(settings: Settings, *, group: str | None = None, **overrides: object) -> AIOKafkaConsumer:
    """A started consumer for bulk reads. Without ``group`` it has none and commits nothing;
    with one (see :func:`replay_group`) it commits only through :func:`commit_positions`."""
    options: dict[str, object] = {
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": PARTITION_FETCH_BYTES,
        "fetch_max_wait_ms": 200,
        "client_id": "bge-replay",
    }
    if group is not None:
        options["group_id"] = group
    options.update(overrides)
    consumer = new_reader(settings, **options)
    await consumer.start()
    return consumer


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """Offsets ``[start, end)`` of one partition (``end`` None: follow the partition's growth)."""

    tp: TopicPartition
    start: int
    end: int | None

    @property
    def size(self) -> int | None:
        return None if self.end is None else max(self.end - self.start, 0)


async def plan_ranges(
    consumer: AIOKafkaConsumer,
    topic: str,
    *,
    partitions: Sequence[int] = (),
    start: Bounds,
    end: Bounds,
    follow: bool = False,
    committed_start: bool = False,
) -> list[PartitionRange]:
    """The range of every selected partition of ``topic``.

    ``partitions`` empty means all. ``committed_start``: start where the consumer's group
    committed (partitions without a commit use ``start``). ``follow``: no end. Raises
    :class:`SelectionError` for a topic or partition that does not exist.

    It only asks (offsets, times, commits) and never assigns: :func:`read_ranges` does, once.
    """
    existing = await topic_partitions(consumer, topic)
    if not existing:
        raise SelectionError(f"topic {topic!r} does not exist")
    chosen = list(dict.fromkeys(partitions)) or existing
    missing = [p for p in chosen if p not in existing]
    if missing:
        raise SelectionError(f"topic {topic!r} has no partition {missing[0]} (it has {len(existing)}: 0-{existing[-1]})")
    tps = [TopicPartition(topic, p) for p in chosen]
    begins = await consumer.beginning_offsets(tps)
    ends = await consumer.end_offsets(tps)

    async def times(bounds: Bounds) -> dict[TopicPartition, int | None]:
        wanted = {tp: bounds.of(tp.partition) for tp in tps}
        query = {tp: bound.ms for tp, bound in wanted.items() if isinstance(bound, AtTime)}
        if not query:
            return {}
        found = await consumer.offsets_for_times(query)
        return {tp: (answer.offset if answer is not None else None) for tp, answer in found.items()}

    start_times, end_times = await times(start), await times(end)
    committed: dict[TopicPartition, int] = {}
    if committed_start:
        for tp in tps:
            offset = await consumer.committed(tp)
            if offset is not None:
                committed[tp] = offset
    ranges = []
    for tp in tps:
        begin, stop = begins[tp], ends[tp]
        first = (
            max(begin, min(committed[tp], stop)) if tp in committed
            else start_offset(start.of(tp.partition), begin, stop, start_times.get(tp))
        )
        last = None if follow else end_offset(end.of(tp.partition), begin, stop, end_times.get(tp))
        ranges.append(PartitionRange(tp, first, last))
    return ranges


def _before(messages: list, end: int) -> list:
    """The messages (sorted by offset) with offsets below ``end``."""
    if not messages or messages[-1].offset < end:
        return messages
    return messages[: bisect.bisect_left([m.offset for m in messages], end)]


async def read_ranges(
    consumer: AIOKafkaConsumer,
    ranges: Sequence[PartitionRange],
    *,
    stop: asyncio.Event | None = None,
    max_records: int = MAX_RECORDS,
    poll_ms: int = 500,
) -> AsyncIterator[dict[TopicPartition, list]]:
    """Batches of the ranges' ``ConsumerRecord`` s by partition, each in offset order.

    Ends when every bounded range is read (a partition is done when the consumer's position
    reaches its end, so gaps left by compaction or transaction markers do not stall it), or when
    ``stop`` is set; ranges without an end are followed until then. An empty batch is yielded
    after an idle poll, so callers can refresh progress and check their own limits.

    A replay group's reader must read its ranges in one call: each ``assign`` replaces the
    subscription, and aiokafka's group coordinator fails ("Unexpected error during
    coordination AssertionError()") when that happens while it is still finding the group's
    coordinator. One assignment per reader leaves it nothing to race with.
    """
    active = {r.tp: r for r in ranges if r.end is None or r.start < r.end}
    if not active:
        return
    consumer.assign(list(active))
    for r in active.values():
        consumer.seek(r.tp, r.start)
    while active and not (stop is not None and stop.is_set()):
        fetched = await consumer.getmany(*active, timeout_ms=poll_ms, max_records=max_records)
        batch: dict[TopicPartition, list] = {}
        for tp, messages in fetched.items():
            r = active.get(tp)
            if r is not None and messages:
                kept = messages if r.end is None else _before(messages, r.end)
                if kept:
                    batch[tp] = kept
        finished = [tp for tp, r in active.items() if r.end is not None and await consumer.position(tp) >= r.end]
        if finished:
            for tp in finished:
                del active[tp]
            consumer.pause(*finished)
        yield batch


def messages_of(batch: dict[TopicPartition, list]) -> list:
    """The messages of a :func:`read_ranges` batch in one list."""
    return [message for messages in batch.values() for message in messages]


async def commit_positions(consumer: AIOKafkaConsumer, positions: dict[TopicPartition, int]) -> None:
    """Commit ``positions`` (next offset to read, per partition) for the consumer's group."""
    if positions:
        await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in positions.items()})
