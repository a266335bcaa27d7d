"""The crawler: executes the requests of ``growth.crawl`` against the AppView (see
:mod:`streams.stages.crawl` for the topology, the single partition and the bookkeeping).

Everything it sends goes through the worker's :class:`~streams.kafka.clients.Sender`, an
:class:`~streams.kafka.clients.Outbox` per unit of work, and is awaited until Kafka
acknowledged it. AppView calls answer a ``Result`` (:mod:`streams.adapters.atproto` turns the
exceptions into ``XrpcError`` failures); the steps below ``match`` on them. The follower and
follow lists a step reads also become edge events (``FollowObserved``, ``FollowLost``), diffed
against the lists the crawl read before (``crawl_edges``).

One module of about 530 lines: the crawler's steps (snowball, search, interactions, graph,
profiles, growth actions) share its retrying, sending and bookkeeping.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from returns.result import Failure, Result, Success

from domain.appview import GetFollowersOutput, GetFollowsOutput, PostView, thread_replies
from domain.crawl import (
    FOLLOWERS,
    FOLLOWS,
    CollectGraph,
    CollectInteractions,
    CrawlConfig,
    CrawlRequest,
    Discovery,
    EnrichProfile,
    ExpandSnowball,
    Interaction,
    RunGrowthActions,
    SearchPopular,
    StartSnowball,
    batches,
    crawl_source,
    decode_request,
    encode_request,
    expansion_request,
    interaction_candidates,
    new_neighbours,
    observed_graph,
    popular_search_candidates,
    profile_enriched,
    profiles_to_fetch,
    recent_posts,
    snowball_step,
)
from domain.events import DomainEvent, encode, partition_key
from domain.identity import Source, SourceCoordinates
from domain.rejections import RejectionCode
from projections.crawl_store import CrawlStore, EdgeRead
from streams.adapters.atproto import AppViewClient, XrpcError, collect_pages
from streams.config import Settings
from streams.topology import Header, Topic
from streams.kafka.clients import Outbox, Received, Sender, delivered
from streams.kafka.deadletter import dead_letter_headers
from streams.observability.log import ContextLogger, get_logger
from streams.observability.tracing import extract_context, inject_headers
from streams.stages.actions import GrowthActions

__all__ = [
    "CRAWL_KEY",
    "CRAWL_PARTITION",
    "CrawlStats",
    "CrawlTopics",
    "Crawler",
    "add_request",
    "coordinates_of",
    "send_requests",
]

CRAWL_PARTITION = 0
"""The one partition of ``growth.crawl`` that carries requests (see :mod:`streams.stages.crawl`)."""
CRAWL_KEY = b"crawl"

T = TypeVar("T")
Done = Result[None, XrpcError]
"""A request step: executed (and recorded), or the AppView's error."""

_tracer = trace.get_tracer("bge.crawl")


# --- sending ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrawlTopics:
    """The full names of the topics the crawl sends to (``dlq`` None: rejects are only logged)."""

    events: str
    crawl: str
    dlq: str | None = None

    @classmethod
    def of(cls, settings: Settings) -> CrawlTopics:
        """The deployment's ``growth.events``, ``growth.crawl`` and ``growth.dlq``."""
        return cls(settings.topic(Topic.GROWTH_EVENTS), settings.topic(Topic.GROWTH_CRAWL),
                   settings.topic(Topic.GROWTH_DLQ))

    @property
    def names(self) -> tuple[str, ...]:
        return (self.events, self.crawl) if self.dlq is None else (self.events, self.crawl, self.dlq)


def add_request(outbox: Outbox, topic: str, request: CrawlRequest) -> None:
    """Queue a crawl request for partition 0 of ``topic`` (``growth.crawl``), key ``crawl``."""
    headers = inject_headers([(Header.SCHEMA, request.schema_name.encode()), (Header.REQUEST_ID, request.id.encode())])
    outbox.add(topic, CRAWL_KEY, encode_request(request), headers, partition=CRAWL_PARTITION)


async def send_requests(sender: Sender, topic: str, requests: Iterable[CrawlRequest]) -> int:
    """Send crawl requests to ``topic`` (``growth.crawl``); returns how many, once Kafka
    acknowledged them all."""
    outbox = sender.outbox()
    count = 0
    for request in requests:
        add_request(outbox, topic, request)
        count += 1
    await delivered(sender.submit(outbox))
    return count


# --- the crawler -----------------------------------------------------------------------------


def coordinates_of(message: Received) -> SourceCoordinates:
    """Where a ``growth.crawl`` message was read: the source of what its request finds."""
    return SourceCoordinates(message.topic, message.partition, message.offset)


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
    ``failed``. ``sender`` must be started; the crawler opens its topics on it.
    """

    def __init__(self, *, appview: AppViewClient, store: CrawlStore, sender: Sender, topics: CrawlTopics,
                 config: CrawlConfig | None = None, actions: GrowthActions | None = None,
                 clock: Callable[[], float] = time.time, logger: ContextLogger | None = None,
                 retry_delay: float = 1.0, max_retry_delay: float = 60.0, max_waits: int | None = None) -> None:
        self.appview = appview
        self.store = store
        self.sender = sender
        self.topics = topics
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

    async def handle_batch(self, messages: Sequence[Received]) -> None:
        """Execute the requests of ``messages`` (see the class docstring)."""
        enrich: list[tuple[EnrichProfile, Received]] = []
        others: list[tuple[CrawlRequest, Received]] = []
        for message in messages:
            self.stats.requests += 1
            match decode_request(message.value or b""):
                case Success(EnrichProfile() as request):
                    enrich.append((request, message))
                case Success(request):
                    others.append((request, message))
                case Failure(rejection):
                    await self._dead_letter(message, str(rejection.code.value), rejection.message)
        cancelled = await self.store.cancelled([request.id for request, _ in (*enrich, *others)])
        if cancelled:
            self.stats.skipped += len(cancelled)
            enrich = [(request, message) for request, message in enrich if request.id not in cancelled]
        if enrich:
            await self._enrich(enrich)
        for request, message in others:
            if request.id in cancelled:
                await self._finish(request, "skipped", "crawl cancelled")
                continue
            with _tracer.start_as_current_span(f"crawl {request.schema_name}", context=extract_context(message.headers),
                                               kind=SpanKind.CONSUMER,
                                               attributes={"request_id": request.id, "messaging.kafka.offset": message.offset}) as span:
                await self._handle(request, message, span)

    async def _handle(self, request: CrawlRequest, message: Received, span: Span) -> None:
        self.stats.by_kind[request.schema_name] = self.stats.by_kind.get(request.schema_name, 0) + 1
        if await self.store.status(request.id) not in (None, "failed"):  # a failed one may be redriven
            self.stats.skipped += 1
            span.set_attribute("skipped", "already executed")
            return
        match await self._execute(request, coordinates_of(message)):
            case Success():
                self.stats.executed += 1
            case Failure(error):
                self.stats.failed += 1
                span.set_status(Status(StatusCode.ERROR, str(error)))
                self.log.warning("crawl request failed", request_id=request.id, kind=request.schema_name,
                                 error=str(error))
                await self._finish(request, "failed", str(error)[:1000])
                await self._dead_letter(message, RejectionCode.SERVICE_REFUSED.value, str(error)[:1000], "XrpcError")

    async def _execute(self, request: CrawlRequest, coordinates: SourceCoordinates) -> Done:
        match request:
            case StartSnowball():
                return await self._start_snowball(request, coordinates)
            case ExpandSnowball():
                return await self._expand(request, coordinates)
            case SearchPopular():
                return await self._search(request)
            case CollectInteractions():
                return await self._interactions(request, coordinates)
            case CollectGraph():
                return await self._collect_graph(request, coordinates)
            case RunGrowthActions():
                return await self._growth_actions(request)
        return await self._finish(request, "skipped", "unknown kind")

    async def _finish(self, request: CrawlRequest, status: str, detail: str) -> Done:
        """Record how ``request`` ended without anything fetched."""
        await self.store.record(request=request, status=status, detail=detail, at_us=self._now_us())
        return Success(None)

    async def _retrying(self, call: Callable[[], Awaitable[Result[T, XrpcError]]]) -> Result[T, XrpcError]:
        """``call()`` again while it fails transiently, waiting the breaker's recovery time or
        an exponential backoff; gives up only after ``max_waits`` waits (None: never)."""
        waits = 0
        while True:
            result = await call()
            match result:
                case Failure(error) if error.transient and (self.max_waits is None or waits < self.max_waits):
                    delay = self._backoff(error, waits)
                case _:
                    return result
            waits += 1
            self.stats.waits += 1
            self.log.warning("crawl waiting for the AppView", error=str(error), delay=round(delay, 3), waits=waits)
            await asyncio.sleep(delay)

    def _backoff(self, error: XrpcError, waits: int) -> float:
        """Seconds to wait after ``waits`` waits: exponential, at least what the service asked."""
        delay = min(self.max_retry_delay, self.retry_delay * 2 ** min(waits, 16))
        return delay if error.retry_after is None else max(delay, error.retry_after)

    async def _send_all(self, events: Iterable[DomainEvent], requests: Iterable[CrawlRequest] = ()) -> None:
        """Send events and follow-up requests; return when Kafka acknowledged them all."""
        outbox = await self._outbox()
        for event in events:
            headers = inject_headers([(Header.SCHEMA, event.schema_name.encode()), (Header.SOURCE_ID, event.source.id.encode())])
            outbox.add(self.topics.events, partition_key(event), encode(event), headers)
        for request in requests:
            add_request(outbox, self.topics.crawl, request)
        await delivered(self.sender.submit(outbox))

    async def _outbox(self) -> Outbox:
        await self.sender.open(*self.topics.names)  # a metadata request the first time only
        return self.sender.outbox()

    async def _dead_letter(self, message: Received, reason: str, text: str, error_class: str = "Rejection") -> None:
        self.stats.dead_lettered += 1
        self.stats.dlq_reasons[reason] = self.stats.dlq_reasons.get(reason, 0) + 1
        self.log.warning("crawl request dead-lettered", reason=reason, error=text, offset=message.offset)
        if self.topics.dlq is None:
            return
        headers = inject_headers(dead_letter_headers(error_class=error_class, reason=reason, message=text,
                                                     source="kafka", topic=message.topic, partition=message.partition,
                                                     offset=message.offset))
        outbox = await self._outbox()
        outbox.add(self.topics.dlq, None, message.value, headers)
        await delivered(self.sender.submit(outbox))

    # -- profile enrichment ---------------------------------------------------------------

    async def _enrich(self, pairs: Sequence[tuple[EnrichProfile, Received]]) -> None:
        now = self._now_us()
        coordinates = {request.id: coordinates_of(message) for request, message in pairs}
        requests = [request for request, _ in pairs]
        fetched = await self.store.fetched_at(sorted({r.did for r in requests}))
        todo, declined = profiles_to_fetch(requests, fetched, now, self.config.enrichment)
        self.stats.skipped += len(declined)
        chunks = batches(todo, self.config.enrichment.batch_size)
        await asyncio.gather(*(self._enrich_chunk(chunk, coordinates, now) for chunk in chunks))

    async def _enrich_chunk(self, chunk: Sequence[EnrichProfile], coordinates: Mapping[str, SourceCoordinates],
                            now: int) -> None:
        by_did = {request.did: request for request in chunk}
        match await self._retrying(lambda: self.appview.get_profiles(list(by_did))):
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

    async def _start_snowball(self, request: StartSnowball, coordinates: SourceCoordinates) -> Done:
        match await self._retrying(lambda: self.appview.profiles(list(request.seeds))):
            case Failure() as failed:
                return failed
            case Success(seeds):
                pass
        now = self._now_us()
        known, _ = await self._memory(request.id)
        events = [profile_enriched(p, crawl_source(request.id, p.did, now, coordinates)) for p in seeds]
        fresh = [p for p in seeds if p.did not in known]
        expansions = [expansion_request(request.id, p.did, p.handle, 0, p.handle, request.params,
                                        requested_at_us=now, parent_id=request.id) for p in fresh]
        discoveries = [Discovery(did=p.did, degree=0, accepted=False, reason="seed") for p in fresh]
        await self._send_all(events, expansions)
        await self.store.record(request=request, detail=f"{len(seeds)} of {len(request.seeds)} seeds found",
                                fetched=[(p.did, request.id) for p in seeds], crawl_id=request.id,
                                discoveries=discoveries, follow_ups=[e.id for e in expansions],
                                pages=-(-len(request.seeds) // 25), at_us=now)
        self._remember(request.id, discoveries)
        self.stats.profiles += len(events)
        self.stats.expansions += len(expansions)
        return Success(None)

    async def _expand(self, request: ExpandSnowball, coordinates: SourceCoordinates) -> Done:
        params = request.params
        known, kept = await self._memory(request.crawl_id)
        if kept >= params.max_users:
            return await self._finish(request, "skipped", "max_users reached")
        match await self._lists(request.did, params.pages_per_user, params.page_size):
            case Failure() as failed:
                return failed
            case Success((follower_pages, follow_pages)):
                neighbours = new_neighbours(request.did, [p for page in follower_pages for p in page.followers],
                                            [p for page in follow_pages for p in page.follows], known)
                pages = len(follower_pages) + len(follow_pages)
        match await self._retrying(lambda: self.appview.profiles([n.did for n in neighbours])):
            case Failure() as failed:
                return failed
            case Success(profiles):
                pass
        now = self._now_us()
        source = crawl_source(request.id, request.did, now, coordinates)
        step = snowball_step(request, neighbours, {p.did: p for p in profiles}, kept, source, now)
        edges, reads = await self._graph(request.did, follower_pages, follow_pages, source)
        await self._send_all([*step.profiles, *step.candidates, *edges], step.expansions)
        await self.store.record(request=request, detail=f"{len(step.candidates)} kept of {len(neighbours)} new",
                                fetched=[(p.did, request.id) for p in profiles], crawl_id=request.crawl_id,
                                discoveries=step.discoveries, follow_ups=[e.id for e in step.expansions],
                                found=len(step.candidates), pages=pages + -(-len(neighbours) // 25), edges=reads,
                                at_us=now)
        self._remember(request.crawl_id, step.discoveries)
        self.stats.profiles += len(step.profiles)
        self.stats.candidates += len(step.candidates)
        self.stats.expansions += len(step.expansions)
        return Success(None)

    async def _lists(self, did: str, max_pages: int,
                     page_size: int) -> Result[tuple[list[GetFollowersOutput], list[GetFollowsOutput]], XrpcError]:
        """The pages of ``did``'s follower list, then of its follow list."""
        match await self._retrying(lambda: collect_pages(self.appview.followers(did, limit=page_size, max_pages=max_pages))):
            case Failure() as failed:
                return failed
            case Success(follower_pages):
                pass
        follows = await self._retrying(lambda: collect_pages(self.appview.follows(did, limit=page_size, max_pages=max_pages)))
        return follows.map(lambda follow_pages: (follower_pages, follow_pages))

    async def _graph(self, owner: str, follower_pages: Sequence[GetFollowersOutput],
                     follow_pages: Sequence[GetFollowsOutput], source: Source) -> tuple[list[DomainEvent], list[EdgeRead]]:
        """The edge events of ``owner``'s two lists as read now, against what the crawl saw
        before (:func:`domain.crawl.observed_graph`), and the reads to remember."""
        events: list[DomainEvent] = []
        reads: list[EdgeRead] = []
        for direction, pages in ((FOLLOWERS, follower_pages), (FOLLOWS, follow_pages)):
            listed = frozenset(p.did for page in pages for p in (page.followers if direction == FOLLOWERS else page.follows))
            last = pages[-1] if pages else None
            complete = last is None or last.cursor is None or not (last.followers if direction == FOLLOWERS else last.follows)
            change = observed_graph(owner, direction, listed, complete, await self.store.known_edges(owner, direction),
                                    source)
            events += change.events
            reads.append(EdgeRead(owner, direction, listed, complete))
        return events, reads

    async def _collect_graph(self, request: CollectGraph, coordinates: SourceCoordinates) -> Done:
        match await self._lists(request.did, request.max_pages, request.page_size):
            case Failure() as failed:
                return failed
            case Success((follower_pages, follow_pages)):
                pass
        now = self._now_us()
        owner = follower_pages[0].subject.did if follower_pages else request.did  # the request may name a handle
        edges, reads = await self._graph(owner, follower_pages, follow_pages, crawl_source(request.id, owner, now, coordinates))
        await self._send_all(edges)
        listed = sum(len(read.listed) for read in reads)
        await self.store.record(request=request, detail=f"{listed} edges read, {len(edges)} new or gone",
                                found=listed, pages=len(follower_pages) + len(follow_pages), edges=reads, at_us=now)
        return Success(None)

    # -- popular search -----------------------------------------------------------------------

    async def _search(self, request: SearchPopular) -> Done:
        match await self._retrying(lambda: collect_pages(self.appview.search_posts(
                request.query, sort=request.sort, limit=request.page_size, max_pages=request.max_pages))):
            case Failure() as failed:
                return failed
            case Success(pages):
                pass
        now = self._now_us()
        posts = [post for page in pages for post in page.posts]
        candidates = popular_search_candidates(request, posts, now).value_or(())
        await self._send_all(candidates)
        await self.store.record(request=request, detail=f"{len(posts)} posts, {len(candidates)} candidates",
                                found=len(candidates), pages=len(pages), at_us=now)
        self.stats.candidates += len(candidates)
        return Success(None)

    # -- post interactions ----------------------------------------------------------------

    async def _interactions(self, request: CollectInteractions, coordinates: SourceCoordinates) -> Done:
        match await self._retrying(lambda: self.appview.get_profiles([request.actor])):
            case Failure() as failed:
                return failed
            case Success(out) if not out.profiles:
                return await self._finish(request, "failed", "actor not found")
            case Success(out):
                actor = out.profiles[0]
        match await self._retrying(lambda: collect_pages(self.appview.author_feed(
                actor.did, filter="posts_no_replies", limit=min(100, max(request.max_posts, 10)), max_pages=5))):
            case Failure() as failed:
                return failed
            case Success(feed):
                posts = recent_posts([item for page in feed for item in page.feed], actor.did, request.max_posts)
        found: list[Interaction] = []
        for post in posts:
            match await self._post_interactions(request, post):
                case Failure() as failed:
                    return failed
                case Success(interactions):
                    found += interactions
        now = self._now_us()
        candidates = interaction_candidates(request, actor.did, found, self.config.interactions, now).value_or(())
        await self._send_all([profile_enriched(actor, crawl_source(request.id, actor.did, now, coordinates)),
                              *candidates])
        await self.store.record(request=request, detail=f"{len(posts)} posts, {len(candidates)} candidates",
                                fetched=[(actor.did, request.id)], found=len(candidates), pages=1 + len(feed),
                                at_us=now)
        self.stats.candidates += len(candidates)
        return Success(None)

    async def _post_interactions(self, request: CollectInteractions, post: PostView) -> Result[list[Interaction], XrpcError]:
        pages, size = request.pages_per_post, request.page_size
        likes, reposts, thread = await asyncio.gather(
            self._retrying(lambda: collect_pages(self.appview.likes(post.uri, limit=size, max_pages=pages))),
            self._retrying(lambda: collect_pages(self.appview.reposted_by(post.uri, limit=size, max_pages=pages))),
            self._retrying(lambda: self.appview.get_post_thread(post.uri, depth=request.thread_depth)),
        )
        match likes, reposts, thread:
            case (Failure(error), _, _) | (_, Failure(error), _) | (_, _, Failure(error)):
                return Success([]) if error.error == "NotFound" else Failure(error)  # NotFound: deleted meanwhile
            case Success(like_pages), Success(repost_pages), Success(out):
                pass
        found = [Interaction(did=like.actor.did, handle=like.actor.handle, kind="like", post_uri=post.uri)
                 for page in like_pages for like in page.likes]
        found += [Interaction(did=p.did, handle=p.handle, kind="repost", post_uri=post.uri)
                  for page in repost_pages for p in page.reposted_by]
        found += [Interaction(did=reply.author.did, handle=reply.author.handle, kind="reply", post_uri=post.uri)
                  for reply in thread_replies(out.thread)]
        return Success(found)

    # -- growth actions -------------------------------------------------------------------

    async def _growth_actions(self, request: RunGrowthActions) -> Done:
        actions = self.actions
        if actions is None or not actions.config.enabled:
            return await self._finish(request, "skipped", "growth actions are off")
        match await self._retrying(lambda: actions.run(request.actions)):
            case Failure() as failed:
                return failed
            case Success(report):
                pass
        await self._send_all(report.events)
        return await self._finish(request, "done", "; ".join(report.lines())[:4000])
