"""The enrichment planner: ``UserSeen`` domain events in, :class:`~domain.crawl.EnrichProfile`
crawl requests out (to partition 0 of ``growth.crawl``, see :mod:`streams.stages.crawl`)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from returns.result import Success

from domain.crawl import EnrichmentConfig, EnrichProfile, enrichment_decision
from domain.events import UserSeen, decode_all
from streams.kafka.clients import Received, Sender
from streams.observability.log import ContextLogger, get_logger
from streams.stages.crawler import send_requests
from streams.topology import Header

__all__ = ["EnrichmentPlanner"]


class EnrichmentPlanner:
    """``UserSeen`` domain events in, :class:`EnrichProfile` requests out, sent with ``sender``
    to ``crawl_topic`` (the full name of ``growth.crawl``).

    It remembers, in a bounded in-memory LRU, when it last requested each account's profile,
    so a busy account does not flood the crawl topic; the memory may be lost (a restart, a
    rebalance) because the crawler deduplicates again against Postgres before fetching.
    """

    def __init__(self, *, sender: Sender, crawl_topic: str, config: EnrichmentConfig, capacity: int = 200_000,
                 logger: ContextLogger | None = None) -> None:
        self.sender = sender
        self.crawl_topic = crawl_topic
        self.config = config
        self.capacity = capacity
        self.log = logger or get_logger("crawl.planner")
        self._requested: OrderedDict[str, int] = OrderedDict()
        self.requested = 0

    async def handle_batch(self, messages: Sequence[Received]) -> int:
        """Consider a batch of ``growth.events`` messages and send the requests they call for;
        returns how many, once Kafka acknowledged them all."""
        requests = [request for m in messages if m.value is not None and (request := self.plan(m.value, m.headers)) is not None]
        return await send_requests(self.sender, self.crawl_topic, requests) if requests else 0

    def plan(self, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None) -> EnrichProfile | None:
        """The request one ``growth.events`` message calls for, if any (remembered as sent): from
        its ``UserSeen`` (a message holds one source event's domain events, at most one of them a
        ``UserSeen``). Messages whose ``schema`` header names no ``UserSeen`` are not decoded."""
        schema = dict(headers or ()).get(Header.SCHEMA)
        if schema is not None and b"UserSeen" not in schema.split(b","):
            return None
        seen = next((event for event in decode_all(value).value_or(()) if isinstance(event, UserSeen)), None)
        if seen is None:
            return None
        match enrichment_decision(seen, self._requested.get(seen.did), self.config):
            case Success(request):
                self._remember(seen)
                return request
        return None

    def _remember(self, seen: UserSeen) -> None:
        self._requested[seen.did] = seen.time_us
        self._requested.move_to_end(seen.did)
        while len(self._requested) > self.capacity:
            self._requested.popitem(last=False)
        self.requested += 1
