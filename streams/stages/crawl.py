"""The crawl stage: crawl requests in, AppView calls out, domain events back in ``growth.events``.

Topology (names carry ``BGE_TOPIC_PREFIX``)::

    growth.events ──crawl-planner (UserSeen → EnrichProfile)──► growth.crawl  (partition 0, key "crawl")
    operators / timers / the crawl itself (next BFS steps) ───► growth.crawl  (partition 0, key "crawl")
    growth.crawl ──crawl (one consumer)──► AT Protocol AppView ──► growth.events (ProfileEnriched,
                                                                   CandidateFound, GrowthActionTaken)
                                     └──► growth.dlq (requests that do not decode, with the reason)

**One partition per rate limit.** Every crawl request is produced to partition 0 of
``growth.crawl`` (explicitly, and with the constant key ``crawl``). Kafka gives a partition to
exactly one consumer of the group, so exactly one crawl agent in the whole deployment executes
requests, through one :class:`~streams.adapters.atproto.AppViewClient` whose token bucket is paced at
``ATPROTO_RATE_LIMIT``: adding workers never multiplies the request rate to the AppView (the
other partitions of the topic stay empty; the agent on them idles). Keying by account would
spread requests over N consumers with N buckets and N times the rate. The same single consumer
makes the breadth-first crawl a queue: a crawl step's next steps are appended to the same
partition, behind the steps already queued, so accounts are visited in degree order.

**Deduplication that survives restarts: Postgres, not a Faust table.** What was fetched and
done is kept in the crawl's own schema (``bge_crawl`` by default; not the projection schema,
which a rebuild swaps away) by :class:`projections.crawl_store.CrawlStore`, its tables built by
the crawl migrations (``projections/migrations/0002_crawl.sql``), written after the request's
events were acknowledged by Kafka:

- ``crawl_profiles``: when each account's profile was last fetched (one fetch per account per
  ``refresh_after_us``, whoever asked for it: enrichment or a crawl step);
- ``crawl_requests``: requests executed (a re-sent or re-delivered request is skipped);
- ``crawl_discovered``: accounts each snowball crawl has judged (none twice per crawl), and
  how many it kept (``max_users``);
- ``growth_actions``: every growth action, unique on ``(action, subject)``.

A Faust table would do for the first three, but it lives in a changelog topic tied to
partition 0 of ``growth.crawl`` and dies with a topic reset; the growth actions need Postgres
anyway (they must never repeat, even after the topics are recreated); and the crawl logic can
then be driven without Faust (:func:`run_crawl`, the tests). A crash between the Kafka
acknowledgements and the Postgres write repeats one request: its events carry the same ids
(they derive from the request's id), so projections apply them once.

The crawl in modules: :mod:`streams.stages.crawler` executes requests
(:class:`~streams.stages.crawler.Crawler`) and queues them for ``growth.crawl``
(:func:`~streams.stages.crawler.add_request`); :mod:`streams.stages.enrichment` plans profile
fetches; :mod:`streams.stages.actions` takes the growth actions;
:class:`projections.crawl_store.CrawlStore` keeps the bookkeeping. Everything is sent through
the worker's :class:`streams.kafka.clients.Sender`, an outbox per unit of work. This module runs
them: :func:`register_crawl` adds the agents to the Faust app (``streams.app`` calls it),
:func:`run_crawl` drives a crawler without Faust, and :func:`request_crawl` sends requests
outside a worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from domain.crawl import FOLLOW_BACK, LIKE_MENTIONS, CrawlConfig, CrawlRequest, growth_actions_request
from projections.crawl_store import DEFAULT_SCHEMA, CrawlStore
from streams.adapters.atproto import AppViewClient, AtprotoSession, RetryPolicy, XrpcClient, XrpcError
from streams.adapters.breaker import BreakerConfig, CircuitBreaker
from streams.adapters.ratelimit import TokenBucket
from streams.config import Settings
from streams.topology import Topic
from streams.kafka.acking import AckBatcher
from streams.kafka.clients import Received, Sender
from streams.observability.log import ContextLogger, get_logger
from streams.stages.actions import GrowthActions, SessionCredentials
from streams.stages.crawler import CRAWL_PARTITION, Crawler, CrawlTopics, send_requests
from streams.stages.enrichment import EnrichmentPlanner

__all__ = ["CrawlRuntime", "load_crawl_config", "register_crawl", "request_crawl", "run_crawl"]


def load_crawl_config(path: Path | None) -> CrawlConfig:
    """The crawl's configuration from a JSON file (:class:`domain.crawl.CrawlConfig`), or the defaults."""
    if path is None:
        return CrawlConfig()
    return CrawlConfig.model_validate_json(path.read_bytes())


async def request_crawl(settings: Settings, requests: Iterable[CrawlRequest]) -> int:
    """Send crawl requests with a sender of its own, outside a worker (scripts, the tests)."""
    sender = Sender(settings, client_id="bge")
    await sender.start()
    try:
        return await send_requests(sender, settings.topic(Topic.GROWTH_CRAWL), requests)
    finally:
        await sender.stop()


# --- running without Faust -------------------------------------------------------------------


async def run_crawl(settings: Settings, crawler: Crawler, *, group_id: str, max_messages: int | None = None,
                    idle_seconds: float | None = None, stop: asyncio.Event | None = None,
                    batch_size: int = 100) -> int:
    """Consume partition 0 of ``growth.crawl`` as consumer group ``group_id``, executing each
    batch with ``crawler`` and committing its offsets after it; returns the messages handled.

    Stops when ``stop`` is set, after at least ``max_messages`` messages (at a batch boundary),
    or when nothing arrived for ``idle_seconds``. Resumes from the group's committed offset.
    """
    name = settings.topic(Topic.GROWTH_CRAWL)
    consumer = AIOKafkaConsumer(**settings.kafka_client_options(), group_id=group_id, enable_auto_commit=False,
                                auto_offset_reset="earliest", client_id="bge-crawl")
    await consumer.start()
    handled = 0
    idle_since = time.monotonic()
    try:
        partition = TopicPartition(name, CRAWL_PARTITION)
        consumer.assign([partition])
        while not (stop is not None and stop.is_set()):
            if max_messages is not None and handled >= max_messages:
                break
            limit = batch_size if max_messages is None else max(1, min(batch_size, max_messages - handled))
            fetched = await consumer.getmany(partition, timeout_ms=200, max_records=limit)
            messages = fetched.get(partition, [])
            if not messages:
                if idle_seconds is not None and time.monotonic() - idle_since >= idle_seconds:
                    break
                continue
            await crawler.handle_batch(messages)
            await consumer.commit({partition: messages[-1].offset + 1})
            handled += len(messages)
            idle_since = time.monotonic()
    finally:
        await consumer.stop()
    return handled


# --- the Faust agents --------------------------------------------------------------------------


class CrawlRuntime:
    """The crawl's resources in a worker: the AppView client, the store, the crawler, the
    planner and, when credentials are given, the growth actions. Opened by the crawl agent
    when it starts, closed when it stops. Everything is sent with ``sender`` (the worker's,
    started by the app before its agents)."""

    def __init__(self, settings: Settings, config: CrawlConfig, *, sender: Sender, topics: CrawlTopics,
                 schema: str, credentials: SessionCredentials | None, logger: ContextLogger) -> None:
        self.settings = settings
        self.config = config
        self.appview = AppViewClient.from_settings(settings, logger=logger.child("appview"))
        self.store = CrawlStore(settings.database_url, schema)
        self.session = None if credentials is None else pds_session(settings, credentials, logger)
        actions = None
        if self.session is not None:
            actions = GrowthActions(appview=self.appview, session=self.session, store=self.store,
                                    config=config.actions, logger=logger.child("actions"))
        self.crawler = Crawler(appview=self.appview, store=self.store, sender=sender, topics=topics, config=config,
                               actions=actions, logger=logger)
        self.planner = EnrichmentPlanner(sender=sender, crawl_topic=topics.crawl, config=config.enrichment,
                                         logger=logger.child("planner"))
        self._opened = False

    async def open(self) -> None:
        if not self._opened:
            await self.store.open()
            await self.appview.start()
            if self.session is not None:
                await self.session.client.start()
            self._opened = True

    async def close(self) -> None:
        if self._opened:
            await self.appview.close()
            if self.session is not None:
                await self.session.client.close()
            await self.store.close()
            self._opened = False


def pds_session(settings: Settings, credentials: SessionCredentials, logger: ContextLogger) -> AtprotoSession:
    """The growth actions' session on their PDS: a client with its own bucket (half the AppView
    rate) and breaker, since the PDS's limits are not the AppView's."""
    bucket = TokenBucket(max(1.0, settings.atproto_rate_limit / 2), burst=1, name="pds", logger=logger)
    breaker = CircuitBreaker("pds", BreakerConfig(failure_threshold=settings.breaker_failure_threshold,
                                                  recovery_timeout=settings.breaker_recovery_seconds,
                                                  enabled=settings.enable_circuit_breaker),
                             is_failure=lambda exc: not isinstance(exc, XrpcError) or exc.counts_against_service,
                             logger=logger)
    pds = XrpcClient(credentials.service, bucket=bucket, breaker=breaker, retry=RetryPolicy(), logger=logger.child("pds"))
    return AtprotoSession(pds, credentials.identifier, credentials.password)


def register_crawl(app: Any, settings: Settings, *, sender: Sender, events_topic: Any, crawl_topic: Any,
                   config: CrawlConfig | None = None, schema: str = DEFAULT_SCHEMA,
                   credentials: SessionCredentials | None = None, plan_enrichment: bool = True,
                   batch_size: int = 100, actions_interval_seconds: float = 3600.0) -> CrawlRuntime:
    """Add the crawl to the Faust ``app``:

    - agent ``crawl`` on ``crawl_topic`` (``growth.crawl``), concurrency 1: executes the
      requests in batches of up to ``batch_size`` (or what arrived within 0.5 s) and
      acknowledges them only after (:class:`streams.kafka.acking.AckBatcher`: never on a
      cancellation); only partition 0 carries requests, so one worker of the group does it all;
    - agent ``crawl-planner`` on ``events_topic`` (``growth.events``) when ``plan_enrichment``:
      ``UserSeen`` → ``EnrichProfile`` requests, events acknowledged after the requests are;
    - when ``config.actions.enabled`` and ``credentials`` are given: a leader-only timer that
      requests a growth-action run every ``actions_interval_seconds`` (the run's id is its
      hour, so a repeated timer never runs twice).

    ``events_topic``/``crawl_topic`` are the app's raw-bytes topics the agents consume; what the
    crawl produces (events, requests, and requests that do not decode to ``growth.dlq``) goes
    through ``sender`` (the app's :class:`~streams.kafka.clients.Sender`,
    started before the agents). Returns the runtime (also set as ``app.crawl``).
    """
    config = config or CrawlConfig()
    log = get_logger("crawl")
    topics = CrawlTopics.of(settings)
    runtime = CrawlRuntime(settings, config, sender=sender, topics=topics, schema=schema, credentials=credentials,
                           logger=log)
    app.crawl = runtime
    batches: dict[str, AckBatcher[Any]] = {}

    @app.agent(crawl_topic, name="crawl", concurrency=1)
    async def crawl(stream: Any) -> None:
        await runtime.open()
        # a batch is executed as a whole (profile requests share calls of 25), then acknowledged
        batch = batches["crawl"] = AckBatcher[Received](stream, runtime.crawler.handle_batch,
                                                            max_events=batch_size, max_seconds=0.5)
        try:
            async for event in stream.events():
                if batch.add(event, event.message):
                    await batch.flush()
        finally:
            batches.pop("crawl", None)
            await runtime.close()

    @app.timer(0.5, name="crawl-flush")
    async def flush_crawl() -> None:
        batch = batches.get("crawl")
        if batch is not None:
            await batch.flush_if_older()

    if plan_enrichment and config.enrichment.enabled:
        @app.agent(events_topic, name="crawl-planner", concurrency=1)
        async def plan(stream: Any) -> None:
            # events acknowledged once the requests they called for are
            batch = batches["planner"] = AckBatcher[Received](stream, runtime.planner.handle_batch,
                                                                  max_events=500, max_seconds=0.5)
            async for event in stream.events():
                if batch.add(event, event.message):
                    await batch.flush()

        @app.timer(0.5, name="crawl-planner-flush")
        async def flush_planner() -> None:
            batch = batches.get("planner")
            if batch is not None:
                await batch.flush_if_older()

    if config.actions.enabled and credentials is not None:
        @app.timer(actions_interval_seconds, on_leader=True, name="crawl-growth-actions")
        async def schedule_actions() -> None:
            now = time.time()
            run = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H")
            request = growth_actions_request((FOLLOW_BACK, LIKE_MENTIONS), run=run,
                                             requested_at_us=int(now * 1_000_000), origin="timer")
            await send_requests(sender, topics.crawl, [request])

    return runtime
