"""The popular-content stage: engagement re-keyed by post, counted in windows, candidates out.

Domain events are keyed by the acting account, so the likes of one post are spread over every
partition. Counting them per partition would undercount by the number of partitions, so the
engagement is re-keyed first (a repartition, as in Kafka Streams): the collect agent sends each
engagement event it emits to ``growth.events`` and, through :meth:`Popularity.route`, to
``growth.engagement`` too::

    collect ──► growth.engagement (key = post at-uri)
    growth.engagement ──popularity──► growth.events (CandidateFound, key = the post's author)

The ``popularity`` agent keeps one :class:`domain.growth.EngagementWindow` per post, keyed by the
post's at-uri and partitioned like ``growth.engagement``, in a :class:`streams.state.ChangelogState`,
and runs ``domain.growth.popular_content`` on each engagement.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from returns.result import Success

from domain.collection import Collected
from domain.events import DomainEvent, decode, encode, partition_key
from domain.growth import (
    PopularContentConfig,
    decode_engagement_window,
    encode_state,
    engagements_of,
    popular_content,
)
from streams.log import ContextLogger, get_logger
from streams.state import ChangelogState, DecodedView
from streams.telemetry import inject_headers

__all__ = ["ENGAGEMENT_SCHEMAS", "Popularity"]

ENGAGEMENT_SCHEMAS = frozenset({"LikeAdded", "RepostAdded", "ReplyAdded", "QuoteAdded"})


def _collected(event: DomainEvent) -> Collected:
    return Collected(event.source, (event,))


class Popularity:
    """Routes engagement by post and decides popular content."""

    def __init__(self, *, config: PopularContentConfig, windows: ChangelogState,
                 engagement_topic: Any, events_topic: Any, logger: ContextLogger | None = None) -> None:
        self.config = config
        self.windows = windows
        self.engagement_topic = engagement_topic
        self.events_topic = events_topic
        self.log = logger or get_logger("popularity")
        self.candidates_found = 0  # CandidateFound events sent (metrics read it)
        self.routed = 0  # engagement messages sent to growth.engagement (metrics read it)

    async def route(self, event: DomainEvent, value: bytes, headers: list[tuple[str, bytes]]) -> list[Awaitable[Any]]:
        """Send an engagement ``event`` (encoded as ``value``) to ``growth.engagement`` keyed by
        the post it concerns; other events are not sent. Returns the acknowledgements."""
        if not self.config.enabled or event.schema_name not in ENGAGEMENT_SCHEMAS:
            return []
        sends = [await self.engagement_topic.send(key=e.post_uri.encode(), value=value, headers=headers)
                 for e in engagements_of(_collected(event))]
        self.routed += len(sends)
        return sends

    async def observe(self, partition: int, value: bytes) -> list[Awaitable[Any]]:
        """Count one engagement in its post's window; send the candidates it makes."""
        match decode(value):
            case Success(event):
                await self.windows.ensure(partition)
                view = DecodedView(self.windows.view(partition), decode_engagement_window)
                changed, decision = popular_content(view, _collected(event), event.source.time_us, self.config)
                sends = [await self.windows.put(partition, uri, encode_state(window)) for uri, window in changed.items()]
                for found in decision.value_or(()):
                    self.candidates_found += 1
                    self.log.info("candidate found", strategy=found.strategy, candidate=found.did,
                                  score=found.score, reasons="; ".join(found.reasons))
                    headers = inject_headers([("schema", found.schema_name.encode())])
                    sends.append(await self.events_topic.send(key=partition_key(found), value=encode(found),
                                                              headers=headers))
                return sends
        return []
