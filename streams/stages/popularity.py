"""The popular-content stage: engagement re-keyed by post, counted in windows, candidates out.

Domain events are keyed by the acting account, so the likes of one post are spread over every
partition. Counting them per partition would undercount by the number of partitions, so the
engagement is re-keyed first (a repartition, as in Kafka Streams): the collect agent sends each
engagement event it emits to ``growth.events`` and, through :meth:`Popularity.route`, to
``growth.engagement`` too::

    collect ──► growth.engagement (key = post at-uri)
    growth.engagement ──popularity──► growth.events (CandidateFound, key = the post's author)

The ``popularity`` agent keeps one :class:`domain.growth.EngagementWindow` per post, keyed by the
post's at-uri and partitioned like ``growth.engagement``, in a :class:`streams.kafka.state.ChangelogState`,
and runs ``domain.growth.popular_content`` on each engagement.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from returns.result import Failure, Success

from domain.collection import Collected
from domain.events import DomainEvent, decode, encode, partition_key
from domain.growth import (
    EngagementWindow,
    PopularContentConfig,
    decode_engagement_window,
    encode_state,
    engagements_of,
    expired_windows,
    popular_content,
)
from streams.kafka.clients import Outbox
from streams.kafka.deadletter import rejection_code, rejection_headers
from streams.observability.log import ContextLogger, get_logger
from streams.kafka.state import ChangelogState, DecodedView, StateBatch
from streams.observability.tracing import inject_headers
from streams.topology import Header

__all__ = ["ENGAGEMENT_SCHEMAS", "Popularity"]

ENGAGEMENT_SCHEMAS = frozenset({"LikeAdded", "RepostAdded", "ReplyAdded", "QuoteAdded"})


def _collected(event: DomainEvent) -> Collected:
    return Collected(event.source, (event,))


class Popularity:
    """Routes engagement by post and decides popular content."""

    def __init__(self, *, config: PopularContentConfig, windows: ChangelogState,
                 engagement_topic: str, events_topic: str, dlq_topic: str,
                 logger: ContextLogger | None = None) -> None:
        self.config = config
        self.windows = windows
        self.engagement_topic = engagement_topic
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.log = logger or get_logger("popularity")
        self.candidates_found = 0  # CandidateFound events sent (metrics read it)
        self.rejections: dict[str, int] = {}  # dead letters by reason (metrics read it)
        self.expired = 0  # windows forgotten (tombstoned in the changelog)
        self._swept_at: dict[int, int] = {}  # partition -> event time of its last sweep

    def route(self, event: DomainEvent, headers: list[tuple[str, bytes]], outbox: Outbox) -> None:
        """Add an engagement ``event`` for ``growth.engagement`` to ``outbox`` (one event a
        message, :func:`domain.events.encode`, with its ``schema`` header before ``headers``),
        keyed by the post it concerns; other events are not routed."""
        if not self.config.enabled or event.schema_name not in ENGAGEMENT_SCHEMAS:
            return
        engagements = engagements_of(_collected(event))
        if not engagements:
            return
        value, headers = encode(event), [(Header.SCHEMA, event.schema_name.encode()), *headers]
        for engagement in engagements:
            outbox.add(self.engagement_topic, engagement.post_uri.encode(), value, headers)

    async def observe_batch(self, records: Iterable[Any], partitions: Iterable[int], outbox: Outbox) -> None:
        """Count engagement ``records`` (each with ``partition`` and ``value``) of ``partitions``
        in their posts' windows; add the window changes and the candidates to ``outbox``."""
        for partition in partitions:
            await self.windows.ensure(partition)
        windows = StateBatch(self.windows, decode_engagement_window, encode_state)
        latest: dict[int, int] = {}
        for record in records:
            time_us = self.observe(record, windows, outbox)
            if time_us is not None and time_us > latest.get(record.partition, 0):
                latest[record.partition] = time_us
        windows.flush(outbox)
        for partition, now_us in latest.items():
            self.expire(partition, now_us, outbox)

    def expire(self, partition: int, now_us: int, outbox: Outbox) -> None:
        """Forget the windows of ``partition`` that event time ``now_us`` left behind
        (:func:`domain.growth.expired_windows`), with a tombstone in the changelog so recovery
        stays small; at most once per bucket of event time per partition."""
        last = self._swept_at.get(partition)
        if last is not None and now_us - last < self.config.bucket_us:
            return
        self._swept_at[partition] = now_us
        view = DecodedView(self.windows.view(partition), decode_engagement_window)
        for uri in expired_windows(view, now_us, self.config):
            self.windows.put(partition, uri, None, outbox)
            self.expired += 1

    def observe(self, record: Any, windows: StateBatch[EngagementWindow], outbox: Outbox) -> int | None:
        """Count one engagement ``record`` (``topic``, ``partition``, ``offset``, ``value``) in its
        post's window (of a partition already ensured), in the batch's ``windows``; one that does
        not decode is dead-lettered to ``growth.dlq`` with the reason, like collect's."""
        partition, value = record.partition, record.value
        match decode(value or b""):
            case Success(event):
                view = windows.view(partition)
                changed, decision = popular_content(view, _collected(event), event.source.time_us, self.config)
                for uri, window in changed.items():
                    windows.put(partition, uri, window)
                for found in decision.value_or(()):
                    self.candidates_found += 1
                    self.log.info("candidate found", strategy=found.strategy, candidate=found.did,
                                  score=found.score, reasons="; ".join(found.reasons))
                    headers = inject_headers([(Header.SCHEMA, found.schema_name.encode())])
                    outbox.add(self.events_topic, partition_key(found), encode(found), headers)
                return event.source.time_us
            case Failure(rejection):
                self._dead_letter(record, rejection, outbox)
        return None

    def _dead_letter(self, record: Any, rejection: Any, outbox: Outbox) -> None:
        code = rejection_code(rejection)
        self.rejections[code] = self.rejections.get(code, 0) + 1
        self.log.warning("engagement dead-lettered", reason=code, error=rejection.message,
                         source_topic=record.topic, partition=record.partition, offset=record.offset)
        outbox.add(self.dlq_topic, None, record.value or b"",
                   rejection_headers(rejection, topic=record.topic, partition=record.partition, offset=record.offset))
