"""Dead letters: the original bytes, and headers that say why, where from and when.

Both dead-letter topics (``jetstream.dlq`` for frames that are not events, ``growth.dlq`` for
raw events the domain rejected) use these headers, so one tool reads and re-drives both:

| header | meaning |
| --- | --- |
| ``error_class`` | the error's type (``BadFrame``, ``Rejection``, ...) |
| ``error_reason`` | a short stable code (``invalid_json``, ``oversized``, ``invalid_record``, ...) |
| ``error_message`` | the human-readable reason (at most 1,000 characters) |
| ``source`` | where the bytes came from: ``jetstream`` or ``kafka`` |
| ``source_topic``, ``source_partition``, ``source_offset`` | the Kafka coordinates (``kafka`` only) |
| ``endpoint`` | the Jetstream URL (``jetstream`` only) |
| ``failed_at`` | when it was dead-lettered (ISO 8601, UTC) |
| ``traceparent`` | the trace of the failed processing, when there was one |
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.kafka.clients import topic_partitions
from streams.observability.tracing import inject_headers
from streams.topology import Header

__all__ = ["DeadLetter", "RecentDeadLetters", "dead_letter_headers", "read_dead_letter", "recent_dead_letters",
           "rejection_code", "rejection_headers"]

MAX_MESSAGE = 1000


def dead_letter_headers(
    *,
    error_class: str,
    reason: str,
    message: str,
    source: str,
    failed_at: datetime | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    endpoint: str | None = None,
) -> list[tuple[str, bytes]]:
    """The headers of one dead letter (see the module docstring)."""
    headers = [
        (Header.ERROR_CLASS, error_class.encode()),
        (Header.ERROR_REASON, reason.encode()),
        (Header.ERROR_MESSAGE, message[:MAX_MESSAGE].encode()),
        (Header.SOURCE, source.encode()),
        (Header.FAILED_AT, (failed_at or datetime.now(UTC)).isoformat().encode()),
    ]
    if topic is not None:
        headers += [(Header.SOURCE_TOPIC, topic.encode()), (Header.SOURCE_PARTITION, str(partition).encode()),
                    (Header.SOURCE_OFFSET, str(offset).encode())]
    if endpoint is not None:
        headers.append((Header.ENDPOINT, endpoint.encode()))
    return headers


def rejection_code(rejection: Any) -> str:
    """The stable code of a domain :class:`~domain.rejections.Rejection` (its enum's value)."""
    return str(getattr(rejection.code, "value", rejection.code))


def rejection_headers(rejection: Any, *, topic: str, partition: int, offset: int) -> list[tuple[str, bytes]]:
    """The headers of a Kafka message the domain rejected (``source`` ``kafka``, its coordinates,
    the rejection's code and message), with the current trace context."""
    return inject_headers(dead_letter_headers(
        error_class="Rejection", reason=rejection_code(rejection), message=rejection.message, source="kafka",
        topic=topic, partition=partition, offset=offset))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The headers of a dead letter, read back."""

    error_class: str
    reason: str
    message: str
    source: str
    failed_at: str
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    endpoint: str | None = None


def read_dead_letter(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> DeadLetter:
    """Read the headers written by :func:`dead_letter_headers` (missing ones become empty)."""
    h = {k: v.decode("utf-8", "replace") for k, v in headers or ()}
    return DeadLetter(
        error_class=h.get(Header.ERROR_CLASS, ""),
        reason=h.get(Header.ERROR_REASON, ""),
        message=h.get(Header.ERROR_MESSAGE, ""),
        source=h.get(Header.SOURCE, ""),
        failed_at=h.get(Header.FAILED_AT, ""),
        topic=h.get(Header.SOURCE_TOPIC),
        partition=int(h[Header.SOURCE_PARTITION]) if h.get(Header.SOURCE_PARTITION, "").isdigit() else None,
        offset=int(h[Header.SOURCE_OFFSET]) if h.get(Header.SOURCE_OFFSET, "").isdigit() else None,
        endpoint=h.get(Header.ENDPOINT),
    )


@dataclass(frozen=True, slots=True)
class RecentDeadLetters:
    """Dead letters appended since a time: ``total`` by offsets (exact), ``by_reason`` counted
    from the headers of the newest ``counted`` of them (all of them unless there were more than
    the reader's cap), as ``(topic, reason) -> count``."""

    total: int
    counted: int
    by_reason: dict[tuple[str, str], int]


async def recent_dead_letters(consumer: AIOKafkaConsumer, topics: list[str], since_ms: int, *,
                              cap: int = 5_000, timeout_s: float = 5.0) -> RecentDeadLetters:
    """Count the dead letters of ``topics`` appended at or after ``since_ms`` (Kafka timestamps)
    by topic and ``error_reason``, reading at most ``cap`` of the newest per partition, with a
    started ``consumer`` that has no group."""
    total, counted = 0, 0
    by_reason: Counter[tuple[str, str]] = Counter()
    for topic in topics:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        if not tps:
            continue
        end = await consumer.end_offsets(tps)
        found = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        start = {tp: end[tp] if found.get(tp) is None else found[tp].offset for tp in tps}
        total += sum(end[tp] - start[tp] for tp in tps)
        pending = {tp: end[tp] for tp in tps if end[tp] > start[tp]}
        if not pending:
            continue
        consumer.assign(list(pending))
        for tp in pending:
            consumer.seek(tp, max(start[tp], end[tp] - cap))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending and loop.time() < deadline:
            for tp, messages in (await consumer.getmany(*pending, timeout_ms=200)).items():
                stop = pending[tp]
                for message in messages:
                    if message.offset < stop:
                        by_reason[(topic, read_dead_letter(message.headers).reason or "(none)")] += 1
                        counted += 1
                if messages and messages[-1].offset + 1 >= stop:
                    del pending[tp]
    return RecentDeadLetters(total, counted, dict(by_reason.most_common()))
