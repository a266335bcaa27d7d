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

:func:`register_crawl` adds the agents to the Faust app (``streams.app`` calls it).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr
from returns.result import Failure, Result, Success

from domain.appview import ProfileView, ProfileViewDetailed, PostView, thread_replies
from domain.crawl import (
    FOLLOW_BACK,
    LIKE_MENTIONS,
    CollectInteractions,
    CrawlConfig,
    CrawlRequest,
    Discovery,
    EnrichmentConfig,
    EnrichProfile,
    ExpandSnowball,
    GrowthActionsConfig,
    Interaction,
    PlannedAction,
    RunGrowthActions,
    SearchPopular,
    StartSnowball,
    batches,
    crawl_source,
    day_start_us,
    decode_request,
    encode_request,
    enrichment_decision,
    expansion_request,
    growth_action_event,
    growth_actions_request,
    interaction_candidates,
    new_neighbours,
    plan_follow_back,
    plan_like_mentions,
    popular_search_candidates,
    profile_enriched,
    profiles_to_fetch,
    recent_posts,
    snowball_step,
)
from domain.events import DomainEvent, GrowthActionTaken, UserSeen, decode, encode, partition_key
from domain.identity import SourceCoordinates
from projections.crawl_store import DEFAULT_SCHEMA, CrawlStore
from streams.kafka.acking import AckBatcher, all_acknowledged
from streams.adapters.atproto import AppViewClient, AtprotoSession, RetryPolicy, XrpcClient, XrpcError, collect_pages, iso_now
from streams.adapters.breaker import BreakerConfig, CircuitBreaker
from streams.config import Settings, Topic
from streams.kafka.deadletter import dead_letter_headers
from streams.kafka.clients import new_producer
from streams.observability.log import ContextLogger, get_logger
from streams.adapters.ratelimit import TokenBucket
from streams.observability.tracing import extract_context, inject_headers

__all__ = [
    "CRAWL_KEY",
    "CRAWL_PARTITION",
    "ActionReport",
    "CrawlMessage",
    "CrawlRuntime",
    "CrawlStats",
    "Crawler",
    "EnrichmentPlanner",
    "GrowthActions",
    "KafkaTopic",
    "SessionCredentials",
    "load_crawl_config",
    "register_crawl",
    "request_crawl",
    "run_crawl",
    "send_request",
]

CRAWL_PARTITION = 0
"""The one partition of ``growth.crawl`` that carries requests (see the module docstring)."""
CRAWL_KEY = b"crawl"

_tracer = trace.get_tracer("bge.crawl")


def load_crawl_config(path: Path | None) -> CrawlConfig:
    """The crawl's configuration from a JSON file (:class:`domain.crawl.CrawlConfig`), or the defaults."""
    if path is None:
        return CrawlConfig()
    return CrawlConfig.model_validate_json(path.read_bytes())


# --- sending ---------------------------------------------------------------------------------


class Sender(Protocol):
    """A topic to send to: a Faust topic, or :class:`KafkaTopic`. ``await send(...)`` returns
    an awaitable that completes when Kafka acknowledged the message."""

    async def send(self, *, key: bytes | None, value: bytes, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]: ...


class KafkaTopic:
    """An aiokafka producer bound to one topic, with the same ``send`` as a Faust topic."""

    def __init__(self, producer: Any, name: str) -> None:
        self.producer = producer
        self.name = name

    async def send(self, *, key: bytes | None, value: bytes, partition: int | None = None,
                   headers: list[tuple[str, bytes]] | None = None) -> Awaitable[Any]:
        return await self.producer.send(self.name, value=value, key=key, partition=partition, headers=headers)


async def send_request(topic: Sender, request: CrawlRequest) -> Awaitable[Any]:
    """Send a crawl request to partition 0 of ``growth.crawl`` (key ``crawl``)."""
    headers = inject_headers([("schema", request.schema_name.encode()), ("request_id", request.id.encode())])
    return await topic.send(key=CRAWL_KEY, value=encode_request(request), partition=CRAWL_PARTITION, headers=headers)


async def request_crawl(settings: Settings, requests: Iterable[CrawlRequest]) -> int:
    """Send crawl requests with a producer of its own (for the command line and the demo)."""
    producer = new_producer(settings)
    await producer.start()
    try:
        topic = KafkaTopic(producer, settings.topic(Topic.GROWTH_CRAWL))
        acks = [await send_request(topic, request) for request in requests]
        await asyncio.gather(*acks)
        return len(acks)
    finally:
        await producer.stop()


# --- growth actions ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """The account the growth actions act for: its PDS (or entryway) and an app password."""

    service: str
    identifier: str
    password: SecretStr


@dataclass
class ActionReport:
    """What a growth action run decided and did. In a dry run only ``planned`` is filled."""

    dry_run: bool
    planned: list[PlannedAction] = field(default_factory=list)
    taken: list[tuple[PlannedAction, str]] = field(default_factory=list)
    """Actions taken, with the record created."""
    failed: list[tuple[PlannedAction, str]] = field(default_factory=list)
    skipped: list[tuple[PlannedAction, str]] = field(default_factory=list)
    events: list[GrowthActionTaken] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: ActionReport) -> ActionReport:
        return ActionReport(self.dry_run and other.dry_run, self.planned + other.planned, self.taken + other.taken,
                            self.failed + other.failed, self.skipped + other.skipped, self.events + other.events,
                            self.notes + other.notes)

    def lines(self) -> list[str]:
        """The report for people: one line per action (``would follow ...`` in a dry run)."""
        verb = {"follow": "follow", "like": "like"}
        out = [f"{'would ' if self.dry_run else ''}{verb[a.action]} {a.subject} ({a.reason})" for a in self.planned]
        out += [f"took: {a.action} {a.subject} -> {uri}" for a, uri in self.taken]
        out += [f"failed: {a.action} {a.subject}: {why}" for a, why in self.failed]
        out += [f"skipped: {a.action} {a.subject}: {why}" for a, why in self.skipped]
        return out + self.notes


class GrowthActions:
    """Follow-back and liking mentions for the session's account, through ``session``.

    Off unless ``config.enabled``; a dry run (``config.dry_run``, the default) reports exactly
    what it would do and records nothing. Otherwise each action is claimed in
    ``growth_actions`` before it is taken and settled after, so nothing is done twice across
    restarts; daily caps count what was claimed since 00:00 UTC. Reads of follower and follow
    lists go through the public AppView client (all pages, up to ``max_pages`` as a safety
    bound: a follow list longer than that refuses the follow-back rather than guess).
    """

    def __init__(self, *, appview: AppViewClient, session: AtprotoSession, store: CrawlStore,
                 config: GrowthActionsConfig, clock: Callable[[], float] = time.time,
                 logger: ContextLogger | None = None) -> None:
        self.appview = appview
        self.session = session
        self.store = store
        self.config = config
        self._clock = clock
        self.log = logger or get_logger("crawl.actions")

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    async def _me(self) -> Result[str, XrpcError]:
        try:
            return Success(self.session.did)
        except RuntimeError:
            return (await self.session.login()).map(lambda out: out.did)

    async def run(self, actions: Iterable[str] = (FOLLOW_BACK, LIKE_MENTIONS)) -> Result[ActionReport, XrpcError]:
        """Run the named actions (those enabled in the configuration)."""
        report = ActionReport(dry_run=self.config.dry_run)
        if not self.config.enabled:
            report.notes.append("growth actions are off (enabled=false)")
            return Success(report)
        for name in actions:
            if name == FOLLOW_BACK and self.config.follow_back:
                step = await self.follow_back()
            elif name == LIKE_MENTIONS and self.config.like_mentions:
                step = await self.like_mentions()
            else:
                continue
            match step:
                case Success(done):
                    report = report.merge(done)
                case Failure(error):
                    return Failure(error)
        return Success(report)

    async def follow_back(self) -> Result[ActionReport, XrpcError]:
        """Follow the followers we do not follow yet (checking ALL pages of both lists)."""
        me = await self._me()
        if not isinstance(me, Success):
            return me  # type: ignore[return-value]
        did = me.unwrap()
        limit, pages = self.config.page_size, self.config.max_pages
        followers = await collect_pages(self.appview.followers(did, limit=limit, max_pages=pages))
        follows = await collect_pages(self.appview.follows(did, limit=limit, max_pages=pages))
        match followers, follows:
            case Success(follower_pages), Success(follow_pages):
                pass
            case Failure(error), _:
                return Failure(error)
            case _, Failure(error):
                return Failure(error)
        report = ActionReport(dry_run=self.config.dry_run)
        if len(follow_pages) >= pages and follow_pages[-1].cursor:
            report.notes.append(f"follow-back refused: our follow list has more than {pages} pages")
            return Success(report)
        now = self._now_us()
        remaining = self.config.max_follows_per_day - await self.store.count_since("follow", day_start_us(now))
        plan = plan_follow_back(did, _profiles(p.followers for p in follower_pages),
                                _profiles(p.follows for p in follow_pages),
                                await self.store.recorded_subjects("follow"), max(0, remaining))
        return Success(await self._take(plan, report, did, now))

    async def like_mentions(self) -> Result[ActionReport, XrpcError]:
        """Like the recent posts that mention us."""
        me = await self._me()
        if not isinstance(me, Success):
            return me  # type: ignore[return-value]
        did = me.unwrap()
        pages = await self.session.notifications(reasons=("mention",), limit=self.config.page_size,
                                                 max_pages=min(self.config.max_pages, 10))
        if not isinstance(pages, Success):
            return pages  # type: ignore[return-value]
        now = self._now_us()
        remaining = self.config.max_likes_per_day - await self.store.count_since("like", day_start_us(now))
        plan = plan_like_mentions(did, [n for page in pages.unwrap() for n in page.notifications],
                                  await self.store.recorded_subjects("like"), max(0, remaining), now,
                                  self.config.mention_max_age_us)
        return Success(await self._take(plan, ActionReport(dry_run=self.config.dry_run), did, now))

    async def _take(self, plan: Sequence[PlannedAction], report: ActionReport, did: str, now: int) -> ActionReport:
        report.planned.extend(plan)
        if self.config.dry_run:
            for action in plan:
                self.log.user_action(f"would {action.action}", did=action.subject_did, subject=action.subject,
                                     reason=action.reason, dry_run=True)
            return report
        for action in plan:
            if not await self.store.claim(action, now):
                report.skipped.append((action, "already recorded"))
                continue
            created_at = iso_now(self._clock())
            if action.action == "follow":
                result = await self.session.follow(action.subject, created_at=created_at)
            else:
                result = await self.session.like(action.subject, action.subject_cid or "", created_at=created_at)
            taken_at = self._now_us()
            match result:
                case Success(record):
                    await self.store.settle(action, "done", taken_at, record_uri=record.uri)
                    report.taken.append((action, record.uri))
                    report.events.append(growth_action_event(action, did, record.uri, taken_at))
                    self.log.user_action(action.action, did=action.subject_did, subject=action.subject,
                                         record=record.uri, reason=action.reason)
                case Failure(error):
                    # a refusal (4xx) may be retried later; no answer (5xx, timeout) may have
                    # acted: never retried automatically
                    status = "unknown" if error.transient else "failed"
                    await self.store.settle(action, status, taken_at, error=str(error))
                    report.failed.append((action, str(error)))
        return report


def _profiles(lists: Iterable[list[ProfileView]]) -> list[ProfileView]:
    return [profile for page in lists for profile in page]


# --- the crawler -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrawlMessage:
    """One message of ``growth.crawl``."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def coordinates(self) -> SourceCoordinates:
        return SourceCoordinates(self.topic, self.partition, self.offset)

    @classmethod
    def of(cls, message: Any) -> CrawlMessage:
        """From a Faust or aiokafka message."""
        return cls(message.topic, message.partition, message.offset, message.value, list(message.headers or ()))


@dataclass
class CrawlStats:
    requests: int = 0
    executed: int = 0
    skipped: int = 0
    failed: int = 0
    dead_lettered: int = 0
    profiles: int = 0
    candidates: int = 0
    expansions: int = 0
    waits: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)


class Crawler:
    """Executes crawl requests: the logic of the crawl agent, without Faust.

    :meth:`handle_batch` takes a batch of ``growth.crawl`` messages and returns once every
    event and follow-up request it produced was acknowledged by Kafka and recorded in the
    store, so the caller may then commit the batch's offsets. Profile requests of a batch are
    deduplicated and fetched 25 a call; the rest run in order. A transient failure (rate
    limit, 5xx, timeout, open breaker) waits and retries, blocking the queue: the request is
    not lost; a permanent one (4xx, a response breaking its lexicon) is logged and recorded as
    ``failed``.
    """

    def __init__(self, *, appview: AppViewClient, store: CrawlStore, events_topic: Sender, crawl_topic: Sender,
                 dlq_topic: Sender | None = None, config: CrawlConfig | None = None,
                 actions: GrowthActions | None = None, clock: Callable[[], float] = time.time,
                 logger: ContextLogger | None = None, retry_delay: float = 1.0, max_retry_delay: float = 60.0,
                 max_waits: int | None = None) -> None:
        self.appview = appview
        self.store = store
        self.events_topic = events_topic
        self.crawl_topic = crawl_topic
        self.dlq_topic = dlq_topic
        self.config = config or CrawlConfig()
        self.actions = actions
        self._clock = clock
        self.log = logger or get_logger("crawl")
        self.retry_delay, self.max_retry_delay, self.max_waits = retry_delay, max_retry_delay, max_waits
        self.stats = CrawlStats()
        self._crawls: OrderedDict[str, tuple[set[str], int]] = OrderedDict()

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    # -- the batch ------------------------------------------------------------------------

    async def handle_batch(self, messages: Sequence[CrawlMessage]) -> None:
        """Execute the requests of ``messages`` (see the class docstring)."""
        enrich: list[tuple[EnrichProfile, CrawlMessage]] = []
        others: list[tuple[CrawlRequest, CrawlMessage]] = []
        for message in messages:
            self.stats.requests += 1
            match decode_request(message.value):
                case Success(EnrichProfile() as request):
                    enrich.append((request, message))
                case Success(request):
                    others.append((request, message))
                case Failure(rejection):
                    await self._dead_letter(message, str(rejection.code.value), rejection.message)
        if enrich:
            await self._enrich(enrich)
        for request, message in others:
            with _tracer.start_as_current_span(f"crawl {request.schema_name}", context=extract_context(message.headers),
                                               kind=SpanKind.CONSUMER,
                                               attributes={"request_id": request.id, "messaging.kafka.offset": message.offset}) as span:
                self.stats.by_kind[request.schema_name] = self.stats.by_kind.get(request.schema_name, 0) + 1
                if await self.store.status(request.id) is not None:
                    self.stats.skipped += 1
                    span.set_attribute("skipped", "already executed")
                    continue
                outcome = await self._execute(request, message.coordinates)
                if isinstance(outcome, Failure):
                    error = outcome.failure()
                    self.stats.failed += 1
                    span.set_status(Status(StatusCode.ERROR, str(error)))
                    self.log.warning("crawl request failed", request_id=request.id, kind=request.schema_name,
                                     error=str(error))
                    await self.store.record(request=request, status="failed", detail=str(error)[:1000],
                                            at_us=self._now_us())
                else:
                    self.stats.executed += 1

    async def _execute(self, request: CrawlRequest, coordinates: SourceCoordinates) -> Result[None, XrpcError]:
        match request:
            case StartSnowball():
                return await self._start_snowball(request, coordinates)
            case ExpandSnowball():
                return await self._expand(request, coordinates)
            case SearchPopular():
                return await self._search(request, coordinates)
            case CollectInteractions():
                return await self._interactions(request, coordinates)
            case RunGrowthActions():
                return await self._growth_actions(request)
        await self.store.record(request=request, status="skipped", detail="unknown kind", at_us=self._now_us())
        return Success(None)

    async def _retrying(self, call: Callable[[], Awaitable[Result[Any, XrpcError]]]) -> Result[Any, XrpcError]:
        """``call()`` again while it fails transiently, waiting the breaker's recovery time or
        an exponential backoff; gives up only after ``max_waits`` waits (None: never)."""
        waits = 0
        while True:
            result = await call()
            if not isinstance(result, Failure) or not result.failure().transient:
                return result
            if self.max_waits is not None and waits >= self.max_waits:
                return result
            error: XrpcError = result.failure()
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(waits, 16))
            if error.retry_after is not None:
                delay = max(delay, error.retry_after)
            waits += 1
            self.stats.waits += 1
            self.log.warning("crawl waiting for the AppView", error=str(error), delay=round(delay, 3), waits=waits)
            await asyncio.sleep(delay)

    async def _send_all(self, events: Iterable[DomainEvent], requests: Iterable[CrawlRequest] = ()) -> None:
        """Send events and follow-up requests; return when Kafka acknowledged them all."""
        acks = []
        for event in events:
            headers = inject_headers([("schema", event.schema_name.encode()), ("source_id", event.source.id.encode())])
            acks.append(await self.events_topic.send(key=partition_key(event), value=encode(event), headers=headers))
        for request in requests:
            acks.append(await send_request(self.crawl_topic, request))
        if acks:
            await asyncio.gather(*acks)

    async def _dead_letter(self, message: CrawlMessage, reason: str, text: str) -> None:
        self.stats.dead_lettered += 1
        self.stats.dlq_reasons[reason] = self.stats.dlq_reasons.get(reason, 0) + 1
        self.log.warning("crawl request dead-lettered", reason=reason, error=text, offset=message.offset)
        if self.dlq_topic is None:
            return
        headers = inject_headers(dead_letter_headers(error_class="Rejection", reason=reason, message=text,
                                                     source="kafka", topic=message.topic, partition=message.partition,
                                                     offset=message.offset))
        await (await self.dlq_topic.send(key=None, value=message.value, headers=headers))

    # -- profile enrichment ---------------------------------------------------------------

    async def _enrich(self, pairs: Sequence[tuple[EnrichProfile, CrawlMessage]]) -> None:
        now = self._now_us()
        coordinates = {request.id: message.coordinates for request, message in pairs}
        requests = [request for request, _ in pairs]
        fetched = await self.store.fetched_at(sorted({r.did for r in requests}))
        todo, declined = profiles_to_fetch(requests, fetched, now, self.config.enrichment)
        self.stats.skipped += len(declined)
        chunks = batches(todo, self.config.enrichment.batch_size)
        await asyncio.gather(*(self._enrich_chunk(chunk, coordinates, now) for chunk in chunks))

    async def _enrich_chunk(self, chunk: Sequence[EnrichProfile], coordinates: Mapping[str, SourceCoordinates],
                            now: int) -> None:
        by_did = {request.did: request for request in chunk}
        result = await self._retrying(lambda: self.appview.get_profiles(list(by_did)))
        match result:
            case Success(out):
                events = [profile_enriched(p, crawl_source(by_did[p.did].id, p.did, now, coordinates[by_did[p.did].id]))
                          for p in out.profiles if p.did in by_did]
                await self._send_all(events)
                self.stats.profiles += len(events)
                self.stats.executed += len(chunk)
            case Failure(error):
                self.stats.failed += len(chunk)
                self.log.warning("profile fetch failed", error=str(error), dids=len(chunk))
        # accounts the AppView does not know are recorded too: asking again would not help
        await self.store.record(fetched=[(r.did, r.id) for r in chunk], at_us=now)

    # -- snowball -------------------------------------------------------------------------

    async def _memory(self, crawl_id: str) -> tuple[set[str], int]:
        memory = self._crawls.get(crawl_id)
        if memory is None:
            memory = await self.store.discovered(crawl_id)
            self._crawls[crawl_id] = memory
            while len(self._crawls) > 16:
                self._crawls.popitem(last=False)
        self._crawls.move_to_end(crawl_id)
        return memory

    def _remember(self, crawl_id: str, discoveries: Sequence[Discovery]) -> None:
        known, kept = self._crawls[crawl_id]
        known.update(d.did for d in discoveries)
        self._crawls[crawl_id] = (known, kept + sum(1 for d in discoveries if d.accepted))

    async def _start_snowball(self, request: StartSnowball, coordinates: SourceCoordinates) -> Result[None, XrpcError]:
        result = await self._retrying(lambda: self.appview.profiles(list(request.seeds)))
        if not isinstance(result, Success):
            return result  # type: ignore[return-value]
        now = self._now_us()
        seeds: list[ProfileViewDetailed] = result.unwrap()
        known, _ = await self._memory(request.id)
        events = [profile_enriched(p, crawl_source(request.id, p.did, now, coordinates)) for p in seeds]
        fresh = [p for p in seeds if p.did not in known]
        expansions = [expansion_request(request.id, p.did, p.handle, 0, p.handle, request.params,
                                        requested_at_us=now, parent_id=request.id) for p in fresh]
        discoveries = [Discovery(did=p.did, degree=0, accepted=False, reason="seed") for p in fresh]
        await self._send_all(events, expansions)
        await self.store.record(request=request, detail=f"{len(seeds)} of {len(request.seeds)} seeds found",
                                fetched=[(p.did, request.id) for p in seeds], crawl_id=request.id,
                                discoveries=discoveries, at_us=now)
        self._remember(request.id, discoveries)
        self.stats.profiles += len(events)
        self.stats.expansions += len(expansions)
        return Success(None)

    async def _expand(self, request: ExpandSnowball, coordinates: SourceCoordinates) -> Result[None, XrpcError]:
        params = request.params
        known, kept = await self._memory(request.crawl_id)
        if kept >= params.max_users:
            await self.store.record(request=request, status="skipped", detail="max_users reached", at_us=self._now_us())
            return Success(None)
        followers = await self._retrying(lambda: collect_pages(self.appview.followers(
            request.did, limit=params.page_size, max_pages=params.pages_per_user)))
        if not isinstance(followers, Success):
            return followers  # type: ignore[return-value]
        follows = await self._retrying(lambda: collect_pages(self.appview.follows(
            request.did, limit=params.page_size, max_pages=params.pages_per_user)))
        if not isinstance(follows, Success):
            return follows  # type: ignore[return-value]
        neighbours = new_neighbours(request.did, _profiles(p.followers for p in followers.unwrap()),
                                    _profiles(p.follows for p in follows.unwrap()), known)
        profiles = await self._retrying(lambda: self.appview.profiles([n.did for n in neighbours]))
        if not isinstance(profiles, Success):
            return profiles  # type: ignore[return-value]
        now = self._now_us()
        source = crawl_source(request.id, request.did, now, coordinates)
        step = snowball_step(request, neighbours, {p.did: p for p in profiles.unwrap()}, kept, source, now)
        await self._send_all([*step.profiles, *step.candidates], step.expansions)
        await self.store.record(request=request, detail=f"{len(step.candidates)} kept of {len(neighbours)} new",
                                fetched=[(p.did, request.id) for p in profiles.unwrap()], crawl_id=request.crawl_id,
                                discoveries=step.discoveries, at_us=now)
        self._remember(request.crawl_id, step.discoveries)
        self.stats.profiles += len(step.profiles)
        self.stats.candidates += len(step.candidates)
        self.stats.expansions += len(step.expansions)
        return Success(None)

    # -- popular search -----------------------------------------------------------------------

    async def _search(self, request: SearchPopular, coordinates: SourceCoordinates) -> Result[None, XrpcError]:
        pages = await self._retrying(lambda: collect_pages(self.appview.search_posts(
            request.query, sort=request.sort, limit=request.page_size, max_pages=request.max_pages)))
        if not isinstance(pages, Success):
            return pages  # type: ignore[return-value]
        now = self._now_us()
        posts = [post for page in pages.unwrap() for post in page.posts]
        decision = popular_search_candidates(request, posts, now)
        candidates = decision.value_or(())
        await self._send_all(candidates)
        detail = f"{len(posts)} posts, {len(candidates)} candidates"
        await self.store.record(request=request, detail=detail, at_us=now)
        self.stats.candidates += len(candidates)
        return Success(None)

    # -- post interactions ----------------------------------------------------------------

    async def _interactions(self, request: CollectInteractions, coordinates: SourceCoordinates) -> Result[None, XrpcError]:
        profile = await self._retrying(lambda: self.appview.get_profiles([request.actor]))
        if not isinstance(profile, Success):
            return profile  # type: ignore[return-value]
        if not profile.unwrap().profiles:
            await self.store.record(request=request, status="failed", detail="actor not found", at_us=self._now_us())
            return Success(None)
        actor = profile.unwrap().profiles[0]
        feed = await self._retrying(lambda: collect_pages(self.appview.author_feed(
            actor.did, filter="posts_no_replies", limit=min(100, max(request.max_posts, 10)), max_pages=5)))
        if not isinstance(feed, Success):
            return feed  # type: ignore[return-value]
        posts = recent_posts([item for page in feed.unwrap() for item in page.feed], actor.did, request.max_posts)
        found: list[Interaction] = []
        for post in posts:
            interactions = await self._post_interactions(request, post)
            if not isinstance(interactions, Success):
                return interactions  # type: ignore[return-value]
            found += interactions.unwrap()
        now = self._now_us()
        decision = interaction_candidates(request, actor.did, found, self.config.interactions, now)
        candidates = decision.value_or(())
        await self._send_all([profile_enriched(actor, crawl_source(request.id, actor.did, now, coordinates)),
                              *candidates])
        await self.store.record(request=request, detail=f"{len(posts)} posts, {len(candidates)} candidates",
                                fetched=[(actor.did, request.id)], at_us=now)
        self.stats.candidates += len(candidates)
        return Success(None)

    async def _post_interactions(self, request: CollectInteractions, post: PostView) -> Result[list[Interaction], XrpcError]:
        pages, size = request.pages_per_post, request.page_size
        likes, reposts, thread = await asyncio.gather(
            self._retrying(lambda: collect_pages(self.appview.likes(post.uri, limit=size, max_pages=pages))),
            self._retrying(lambda: collect_pages(self.appview.reposted_by(post.uri, limit=size, max_pages=pages))),
            self._retrying(lambda: self.appview.get_post_thread(post.uri, depth=request.thread_depth)),
        )
        for result in (likes, reposts, thread):
            if isinstance(result, Failure):
                error: XrpcError = result.failure()
                if error.error == "NotFound":  # deleted meanwhile: nobody to find
                    return Success([])
                return Failure(error)
        found = [Interaction(did=like.actor.did, handle=like.actor.handle, kind="like", post_uri=post.uri)
                 for page in likes.unwrap() for like in page.likes]
        found += [Interaction(did=p.did, handle=p.handle, kind="repost", post_uri=post.uri)
                  for page in reposts.unwrap() for p in page.reposted_by]
        found += [Interaction(did=reply.author.did, handle=reply.author.handle, kind="reply", post_uri=post.uri)
                  for reply in thread_replies(thread.unwrap().thread)]
        return Success(found)

    # -- growth actions -------------------------------------------------------------------

    async def _growth_actions(self, request: RunGrowthActions) -> Result[None, XrpcError]:
        if self.actions is None or not self.actions.config.enabled:
            await self.store.record(request=request, status="skipped", detail="growth actions are off",
                                    at_us=self._now_us())
            return Success(None)
        result = await self._retrying(lambda: self.actions.run(request.actions))  # type: ignore[union-attr]
        if not isinstance(result, Success):
            return result  # type: ignore[return-value]
        report: ActionReport = result.unwrap()
        await self._send_all(report.events)
        await self.store.record(request=request, detail="; ".join(report.lines())[:4000], at_us=self._now_us())
        return Success(None)


# --- enrichment planner ----------------------------------------------------------------------


class EnrichmentPlanner:
    """``UserSeen`` domain events in, :class:`EnrichProfile` requests out (to partition 0 of
    ``growth.crawl``).

    It remembers, in a bounded in-memory LRU, when it last requested each account's profile,
    so a busy account does not flood the crawl topic; the memory may be lost (a restart, a
    rebalance) because the crawler deduplicates again against Postgres before fetching.
    """

    def __init__(self, *, crawl_topic: Sender, config: EnrichmentConfig, capacity: int = 200_000,
                 logger: ContextLogger | None = None) -> None:
        self.crawl_topic = crawl_topic
        self.config = config
        self.capacity = capacity
        self.log = logger or get_logger("crawl.planner")
        self._requested: OrderedDict[str, int] = OrderedDict()
        self.requested = 0

    async def handle(self, value: bytes, headers: Sequence[tuple[str, bytes]] | None = None) -> Awaitable[Any] | None:
        """Consider one ``growth.events`` message; returns the acknowledgement of the request
        it sent, or None. Messages whose ``schema`` header names another event are not decoded."""
        schema = dict(headers or ()).get("schema")
        if schema is not None and schema != b"UserSeen":
            return None
        decoded = decode(value)
        if not isinstance(decoded, Success) or not isinstance(decoded.unwrap(), UserSeen):
            return None
        seen: UserSeen = decoded.unwrap()  # type: ignore[assignment]
        match enrichment_decision(seen, self._requested.get(seen.did), self.config):
            case Success(request):
                self._requested[seen.did] = seen.time_us
                self._requested.move_to_end(seen.did)
                while len(self._requested) > self.capacity:
                    self._requested.popitem(last=False)
                self.requested += 1
                return await send_request(self.crawl_topic, request)
        return None


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
            messages = [CrawlMessage.of(m) for m in fetched.get(partition, [])]
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
    when it starts, closed when it stops."""

    def __init__(self, settings: Settings, config: CrawlConfig, *, events_topic: Sender, crawl_topic: Sender,
                 dlq_topic: Sender | None, schema: str, credentials: SessionCredentials | None,
                 logger: ContextLogger) -> None:
        self.settings = settings
        self.config = config
        self.appview = AppViewClient.from_settings(settings, logger=logger.child("appview"))
        self.store = CrawlStore(settings.database_url, schema)
        self.session: AtprotoSession | None = None
        actions = None
        if credentials is not None:
            pds = XrpcClient(credentials.service, bucket=TokenBucket(max(1.0, settings.atproto_rate_limit / 2), burst=1,
                                                                     name="pds", logger=logger),
                             breaker=CircuitBreaker("pds", BreakerConfig(
                                 failure_threshold=settings.breaker_failure_threshold,
                                 recovery_timeout=settings.breaker_recovery_seconds,
                                 enabled=settings.enable_circuit_breaker),
                                 is_failure=lambda exc: not isinstance(exc, XrpcError) or exc.counts_against_service,
                                 logger=logger),
                             retry=RetryPolicy(), logger=logger.child("pds"))
            self.session = AtprotoSession(pds, credentials.identifier, credentials.password)
            actions = GrowthActions(appview=self.appview, session=self.session, store=self.store,
                                    config=config.actions, logger=logger.child("actions"))
        self.crawler = Crawler(appview=self.appview, store=self.store, events_topic=events_topic,
                               crawl_topic=crawl_topic, dlq_topic=dlq_topic, config=config, actions=actions,
                               logger=logger)
        self.planner = EnrichmentPlanner(crawl_topic=crawl_topic, config=config.enrichment,
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


def register_crawl(app: Any, settings: Settings, *, events_topic: Any, crawl_topic: Any, dlq_topic: Any = None,
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

    ``events_topic``/``crawl_topic``/``dlq_topic`` are the app's raw-bytes topics. Returns the
    runtime (also set as ``app.crawl``).
    """
    config = config or CrawlConfig()
    log = get_logger("crawl")
    runtime = CrawlRuntime(settings, config, events_topic=events_topic, crawl_topic=crawl_topic,
                           dlq_topic=dlq_topic, schema=schema, credentials=credentials, logger=log)
    app.crawl = runtime
    batches: dict[str, Any] = {}

    @app.agent(crawl_topic, name="crawl", concurrency=1)
    async def crawl(stream: Any) -> None:
        await runtime.open()
        # a batch is executed as a whole (profile requests share calls of 25), then acknowledged
        batch = batches["crawl"] = AckBatcher(stream, runtime.crawler.handle_batch, max_events=batch_size,
                                              max_seconds=0.5)
        try:
            async for event in stream.events():
                if batch.add(event, CrawlMessage.of(event.message)):
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
            batch = batches["planner"] = AckBatcher(stream, all_acknowledged, max_events=500, max_seconds=0.5)
            async for event in stream.events():
                ack = await runtime.planner.handle(event.message.value, list(event.message.headers or ()))
                if batch.add(event, [ack] if ack is not None else []):
                    await batch.flush()  # events acknowledged once their requests are

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
            await (await send_request(crawl_topic, request))

    return runtime
