"""The HTTP API, served by the Faust worker's own web server (aiohttp) on ``API_HOST:API_PORT``.

Routes (all GET; the contract and its OpenAPI document are in :mod:`streams.api.contract`):

| route | answers |
| --- | --- |
| ``/health`` | the health report (200 healthy or degraded, 503 unhealthy) |
| ``/openapi.json`` | the OpenAPI 3.1 document |
| ``/api/trending`` | accounts by net follower gain (``hours``, ``limit``, ``at``) |
| ``/api/growth-velocity`` | accounts by relative follower gain (``hours``, ``min_base``, ``limit``, ``at``) |
| ``/api/engagement-leaders`` | accounts by engagement received (``limit``) |
| ``/api/network-stats`` | network sizes and events per minute (``minutes``, ``at``) |
| ``/api/users`` | a page of accounts (``order``, ``q``, ``strategy``, ``limit``, ``offset``); ``meta.pagination`` says where it sits |
| ``/api/users/{actor}`` | one account by DID or handle (``recent``, ``at``); 404 when never seen |
| ``/api/posts/top`` | posts by engagement (``hours``, ``limit``, ``at``) |
| ``/api/hashtags/trending`` | hashtags by use, per hour (``hours``, ``limit``, ``at``) |
| ``/api/candidates`` | a strategy's candidates (``strategy``, ``limit``, ``min_score``); the strategies without ``strategy`` |
| ``/api/stats/database`` | the API pool's query statistics |
| ``/api/journey`` | one source event from frame to row (``topic``, ``partition``, ``offset``; :mod:`streams.api.journey`) |
| ``/api/journey/record`` | the journey of the raw event that carried a record (``uri``) |
| ``/api/dead-letters`` | dead letters of the last ``minutes`` by topic and reason |
| ``/api/crawls`` | the crawls ``bge crawl`` started and how far they got |
| ``/`` | the dashboard (:mod:`streams.api.dashboard`) |

One aiohttp middleware gives every response its envelope on errors (400, 404, 405, 429, 500,
503: no stack trace ever leaves the process), the ``X-Request-Id`` header (the client's when it
matches ``[A-Za-z0-9._-]{1,128}``, else a fresh one), and, on ``/api/`` paths when
``ENABLE_RATE_LIMIT`` is on, ``X-RateLimit-Limit``/``-Remaining``/``-Reset`` from the
:class:`~streams.adapters.ratelimit.InboundRateLimiter` keyed by the client's address (``Retry-After``
with 429). Each request runs in an OpenTelemetry SERVER span (continuing a ``traceparent`` sent
by the client) with ``http.route``, ``http.response.status_code`` and ``request_id``, and under
the request id as correlation id, so its log lines (one ``request`` line per request, JSON)
carry both. The API only reads, through :mod:`projections.queries` (parameterised SQL) on a pool
whose sessions are read-only (:func:`create_api_pool`). Browsers of the origins in
``API_CORS_ORIGINS`` may read it (``Access-Control-Allow-Origin``).

One module of about 600 lines: the routes' table, their handlers and the one middleware.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import faust
import orjson
import psycopg
from aiohttp import web
from aiokafka.errors import KafkaError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

import streams
from domain.crawl import POPULAR_SEARCH, POST_INTERACTIONS, SNOWBALL
from domain.growth import STRATEGIES
from domain.syntax import (DID_PATTERN, HANDLE_PATTERN, MAX_AT_URI_LENGTH, MAX_DID_LENGTH, RECORD_URI_PATTERN,
                           split_record_uri)
from projections import QueryStats, create_pool, queries
from streams.adapters.breaker import CircuitBreaker
from streams.adapters.ratelimit import InboundRateLimiter
from streams.api import contract as c
from streams.api.contract import ApiError, ErrorCode, Operation, Param
from streams.api.dashboard import install_dashboard
from streams.config import Settings
from streams.health.checks import PROJECTOR, build_registry
from streams.health.report import HealthRegistry, HealthReport, HealthStatus
from streams.kafka.clients import new_reader
from streams.kafka.deadletter import recent_dead_letters
from streams.observability.log import ContextLogger, correlation, get_logger
from streams.topology import Topic

__all__ = ["Api", "create_api_pool", "register_api", "serve_api"]

_WELL_FORMED_ID = re.compile(c.REQUEST_ID_PATTERN.removeprefix("^").removesuffix("$"))
READ_ONLY_OPTIONS = "-c default_transaction_read_only=on -c TimeZone=UTC"
_REQUEST_ID_KEY = web.RequestKey("request_id", str)

KNOWN_STRATEGIES: tuple[str, ...] = (*STRATEGIES, SNOWBALL, POPULAR_SEARCH, POST_INTERACTIONS)
"""Every strategy that finds candidates: the firehose's (domain.growth) and the crawl's."""


def create_api_pool(settings: Settings, *, schema: str | None = None, stats: QueryStats | None = None
                    ) -> AsyncConnectionPool:
    """The API's pool (closed; :func:`register_api` opens it when the web server starts): the
    projections' ``schema`` (default ``DB_SCHEMA``), ``DB_POOL_MIN``/``DB_POOL_MAX``,
    ``DB_STATEMENT_TIMEOUT_MS``, and sessions that are read-only
    (``default_transaction_read_only``) and in UTC. Separate from the projector's pool, so
    readers never take the writer's connections."""
    params = conninfo_to_dict(settings.database_url)
    params["options"] = f"{params.get('options', '')} {READ_ONLY_OPTIONS}".strip()
    return create_pool(make_conninfo(**params), schema or settings.db_schema, min_size=settings.db_pool_min,
                       max_size=settings.db_pool_max, statement_timeout_ms=settings.db_statement_timeout_ms,
                       stats=stats, name="bge-api")


# --- parameters ----------------------------------------------------------------------------

HOURS = Param("hours", "integer", "Window length in hours, ending at `at`.", default=24, minimum=1, maximum=168)
AT = Param("at", "date-time", "End of the window: an RFC 3339 date-time (UTC when it has no offset); times "
           "before 0001-01-09 are read as 0001-01-09. Default: now.")
MINUTES = Param("minutes", "integer", "Window of `events_per_minute`, in minutes ending at `at`.", default=5,
                minimum=1, maximum=1440)
MIN_BASE = Param("min_base", "integer", "Least followers an account had at the window's start.", default=100,
                 minimum=1, maximum=1_000_000_000)
RECENT = Param("recent", "integer", "How many recent activities, actions and posts to include.", default=20,
               minimum=1, maximum=100)
_PATH_DID_PATTERN = DID_PATTERN.replace("%", "")
"""A DID in a URL path: without ``%`` (in a path it starts an escape, decoded before the route sees it)."""
ACTOR = Param("actor", "string", "A DID (`did:plc:...`; no percent-encoded characters) or a handle "
              "(`alice.bsky.social`, `@` allowed).",
              location="path", max_length=MAX_DID_LENGTH, example="bsky.app",
              pattern=f"^(?:{_PATH_DID_PATTERN}|@?{HANDLE_PATTERN})$",
              expectation="must be a DID (did:method:identifier) or a handle (name.example.com)")
STRATEGY = Param("strategy", "string", "A strategy; without it, the strategies that have candidates are listed.",
                 choices=KNOWN_STRATEGIES)
MIN_SCORE = Param("min_score", "number", "Only candidates with at least this score.")


USER_ORDER = Param("order", "string", "How accounts are ordered (each best first; `did` alphabetically).",
                   default="followers", choices=tuple(queries.USER_ORDERS))
USER_QUERY = Param("q", "string", "Only accounts whose handle (`@` allowed) or DID starts with this.",
                   max_length=MAX_DID_LENGTH, pattern="^@?[A-Za-z0-9._:%-]+$",
                   expectation="must be the start of a handle or a DID (letters, digits, . _ : % -)")
USER_STRATEGY = Param("strategy", "string", "Only accounts this strategy selected.", choices=KNOWN_STRATEGIES)
TOPIC = Param("topic", "string", "A topic's full name (with `BGE_TOPIC_PREFIX`), e.g. `jetstream.events`.",
              required=True, max_length=249, pattern=r"^[A-Za-z0-9._-]+$", example="jetstream.events",
              expectation="must be a Kafka topic name (letters, digits, '.', '_', '-')")
PARTITION = Param("partition", "integer", "The partition.", default=0, minimum=0, maximum=10_000)
MESSAGE_OFFSET = Param("offset", "integer", "The message's offset.", required=True, minimum=0, maximum=10**15)
RECORD_URI = Param("uri", "string", "A record's at-uri with a DID authority "
                   "(`at://did:plc:.../app.bsky.feed.post/3k...`).", required=True, max_length=MAX_AT_URI_LENGTH,
                   pattern=f"^{RECORD_URI_PATTERN}$",
                   expectation="must be a record at-uri: at://DID/collection/rkey")
DLQ_MINUTES = Param("minutes", "integer", "Window in minutes, ending now.", default=60, minimum=1, maximum=10_080)
OFFSET = Param("offset", "integer", "How many accounts to skip (the previous page's `meta.pagination.nextOffset`).",
               default=0, minimum=0, maximum=queries.MAX_OFFSET)


def limit(default: int) -> Param:
    return Param("limit", "integer", "How many to return.", default=default, minimum=1, maximum=100)


@dataclass(frozen=True, slots=True)
class Answer:
    """A handler's answer other than a plain success (``/health`` when unhealthy, a page of a
    list with its ``pagination`` for the envelope's ``meta``)."""

    status: int
    data: Any
    error: dict[str, Any] | None
    pagination: dict[str, Any] | None = None


class HealthCache:
    """The latest health report, reused for ``ttl`` seconds; concurrent requests share one run
    of the checks (a burst of probes costs one round of I/O)."""

    def __init__(self, registry: HealthRegistry, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.registry, self.ttl, self._clock = registry, ttl, clock
        self._report: HealthReport | None = None
        self._at = float("-inf")
        self._running: asyncio.Task[HealthReport] | None = None

    async def report(self) -> HealthReport:
        if self._report is not None and self._clock() - self._at < self.ttl:
            return self._report
        if self._running is None:
            self._running = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._running)

    async def _run(self) -> HealthReport:
        try:
            report = await self.registry.run()
            self._report, self._at = report, self._clock()
            return report
        finally:
            self._running = None


# --- the API -------------------------------------------------------------------------------


class Api:
    """The routes, their handlers and the middleware; see the module docstring."""

    def __init__(self, settings: Settings, *, pool: AsyncConnectionPool, registry: HealthRegistry,
                 limiter: InboundRateLimiter, stats: QueryStats | None = None,
                 clock: Callable[[], float] = time.monotonic, pool_timeout: float = 5.0,
                 logger: ContextLogger | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.limiter = limiter
        self.stats = stats
        self.health = HealthCache(registry)
        self.rate_limited = settings.enable_rate_limit
        self._clock = clock
        self._pool_timeout = pool_timeout
        self._log = logger or get_logger("api")
        self._tracer = trace.get_tracer("streams.api.routes", streams.__version__)
        self.operations = self._operations()
        self.document = c.openapi_document(
            self.operations, version=streams.__version__, rate_limited=self.rate_limited,
            rate_limit=f" ({limiter.limit} per {limiter.window_seconds:g} s, per client address)")
        self._document_bytes = orjson.dumps(self.document)

    def _operations(self) -> tuple[Operation, ...]:
        db = (400, 503)
        return (
            Operation("/health", "health", "Health of the worker and its dependencies",
                      "Runs every health check (Kafka, Postgres, Jetstream freshness, consumer lag, dead letters, "
                      "breakers, tracing), at most once a second.", "health", (), HealthReport, False, (),
                      self.get_health, rate_limited=False),
            Operation("/api/trending", "trending", "Trending accounts",
                      "Accounts by net follower gain over the last `hours` hourly buckets up to `at`.", "growth",
                      (HOURS, limit(20), AT), c.TrendingAccount, True, db, self.get_trending),
            Operation("/api/growth-velocity", "growthVelocity", "Fastest-growing accounts",
                      "Accounts by relative follower gain (`net_gain / base`) over the window.", "growth",
                      (HOURS, MIN_BASE, limit(20), AT), c.GrowingAccount, True, db, self.get_growth_velocity),
            Operation("/api/engagement-leaders", "engagementLeaders", "Engagement leaders",
                      "Accounts by likes, reposts, replies and quotes received.", "growth",
                      (limit(20),), c.EngagementLeader, True, db, self.get_engagement_leaders),
            Operation("/api/network-stats", "networkStats", "Network statistics",
                      "Sizes of the network seen so far and collected actions per minute.", "growth",
                      (MINUTES, AT), c.NetworkStats, False, db, self.get_network_stats),
            Operation("/api/users", "users", "Accounts",
                      "A page of the accounts seen, ordered by `order`, optionally only those whose handle or DID "
                      "starts with `q` or that `strategy` selected; `meta.pagination` has the next page's `offset`.",
                      "accounts", (USER_ORDER, USER_QUERY, USER_STRATEGY, limit(50), OFFSET), c.UserSummary, True, db,
                      self.get_users),
            Operation("/api/users/{actor}", "user", "One account",
                      "Profile, status, counts, candidate decisions with their reasons, recent activity, growth "
                      "actions, recent posts and activity pattern of an account, by DID or handle.", "accounts",
                      (ACTOR, RECENT, AT), c.UserDetail, False, (400, 404, 503), self.get_user),
            Operation("/api/posts/top", "topPosts", "Top posts",
                      "Posts first seen in the window, by engagement score.", "content",
                      (HOURS, limit(20), AT), c.TopPost, True, db, self.get_top_posts),
            Operation("/api/hashtags/trending", "trendingHashtags", "Trending hashtags",
                      "Hashtags used most in the window, with their counts per hour.", "content",
                      (HOURS, limit(10), AT), c.HashtagTrend, True, db, self.get_hashtags),
            Operation("/api/candidates", "candidates", "Growth candidates",
                      "The accounts a strategy selected, best first; without `strategy`, the strategies with "
                      "candidates.", "accounts",
                      (STRATEGY, limit(50), MIN_SCORE), (c.CandidateList, c.StrategyList), False, db,
                      self.get_candidates),
            Operation("/api/stats/database", "databaseStats", "Database statistics",
                      "Statements run by this worker's API pool (count, latency, slow ones, errors) and the pool.",
                      "health", (), c.DatabaseStats, False, (), self.get_database_stats),
            Operation("/api/journey", "journey", "An event's journey",
                      "One message (by topic, partition and offset): the event, each strategy's decision and the "
                      "domain events (replayed alone), the rows they are in, its trace's spans, and the `bge replay` "
                      "command that shows it.", "debugging", (TOPIC, PARTITION, MESSAGE_OFFSET), c.Journey, False,
                      (400, 404, 503), self.get_journey),
            Operation("/api/journey/record", "recordJourney", "A record's journey",
                      "The journey of the raw event that carried the record `uri` (its first event: the create), "
                      "found in the account's partition of `jetstream.events`.", "debugging", (RECORD_URI,),
                      c.Journey, False, (400, 404, 503), self.get_record_journey),
            Operation("/api/dead-letters", "deadLetters", "Dead letters by reason",
                      "Dead letters appended to `growth.dlq` and `jetstream.dlq` in the last `minutes`, by topic "
                      "and reason (`bge dlq list` shows them all; `bge dlq redrive` re-drives them).", "health",
                      (DLQ_MINUTES,), c.DeadLetterSummary, False, (400, 503), self.get_dead_letters),
            Operation("/api/crawls", "crawls", "Crawls",
                      "The crawls started with `bge crawl`, latest first, with their progress.", "accounts",
                      (limit(20),), c.CrawlReport, True, db, self.get_crawls),
        )

    # -- registration ------------------------------------------------------------------------

    def install(self, app: faust.App) -> None:
        """Add the views to the Faust app's web server and the middleware to its aiohttp app."""
        for operation in self.operations:
            app.page(operation.path, name=operation.operation_id)(self._view(operation))
        document = self._document_bytes

        async def openapi(view: faust.web.View, request: faust.web.Request) -> web.Response:
            return web.Response(body=document, content_type="application/json")

        app.page("/openapi.json", name="openapi")(type("openapi", (faust.web.View,), {"get": openapi}))
        app.web.web_app.middlewares.append(self.middleware)
        install_dashboard(app.web.web_app)

    def _view(self, operation: Operation) -> type[faust.web.View]:
        api = self

        async def get(view: faust.web.View, request: web.Request, **match: str) -> web.Response:
            return await api.dispatch(operation, request, match)

        return type(f"{operation.operation_id}_view", (faust.web.View,), {"get": get, "__doc__": operation.summary})

    async def dispatch(self, operation: Operation, request: web.Request, match: dict[str, str]) -> web.Response:
        """Parse the parameters, run the handler, write the success envelope."""
        params = {p.name: p.parse(match.get(p.name) if p.location == "path" else request.query.get(p.name))
                  for p in operation.params}
        if "at" in params and params["at"] is None:
            params["at"] = datetime.now(UTC)
        answer = await operation.handler(**params)
        if isinstance(answer, Answer):
            return self._json(answer.status, answer.error is None, answer.data, answer.error, request,
                              pagination=answer.pagination)
        return self._json(200, True, answer, None, request)

    # -- the middleware ----------------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                         ) -> web.StreamResponse:
        started = time.perf_counter()
        given = request.headers.get("X-Request-Id", "")
        request_id = given if _WELL_FORMED_ID.fullmatch(given) else uuid.uuid4().hex
        request[_REQUEST_ID_KEY] = request_id
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else None
        client = request.remote or "unknown"
        attributes = {"http.request.method": request.method, "url.path": request.path, "client.address": client,
                      "request_id": request_id}
        if route is not None:
            attributes["http.route"] = route
        context = propagate.extract(request.headers)
        with correlation(request_id), self._tracer.start_as_current_span(
                f"{request.method} {route or 'unmatched'}", context=context, kind=SpanKind.SERVER,
                attributes=attributes, record_exception=False, set_status_on_exception=False) as span:
            limit_headers: dict[str, str] = {}
            try:
                if self.rate_limited and request.path.startswith("/api/"):
                    limit_headers = self._admit(client, request.path)
                response = await handler(request)
            except ApiError as exc:
                response = self._error(exc.status, exc.code, exc.message, exc.details, request, exc.headers)
            except web.HTTPException as exc:
                response = self._http_error(exc, request)
            except (PoolTimeout, PoolClosed, psycopg.OperationalError) as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._log.warning("database unavailable", error_type=type(exc).__name__, error_message=str(exc),
                                  request_id=request_id, route=route, path=request.path)
                response = self._error(503, ErrorCode.DATABASE_UNAVAILABLE,
                                       "The database is unavailable; retry later.", None, request)
            except Exception as exc:  # noqa: BLE001 - answered as a 500 envelope, logged with context
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                self._log.error("request failed", exc=exc, request_id=request_id, method=request.method,
                                path=request.path, route=route, query=dict(request.query), client=client)
                response = self._error(500, ErrorCode.INTERNAL_ERROR,
                                       f"Internal server error; quote request id {request_id}.", None, request)
            response.headers.update(limit_headers)
            response.headers["X-Request-Id"] = request_id
            origin = request.headers.get("Origin")
            if origin is not None and origin in self.settings.api_cors_origins:
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers["Vary"] = "Origin"
            span.set_attribute("http.response.status_code", response.status)
            self._log.info("request", method=request.method, path=request.path, route=route, status=response.status,
                           duration_ms=round((time.perf_counter() - started) * 1000, 3), client=client,
                           request_id=request_id)
        return response

    def _admit(self, client: str, path: str) -> dict[str, str]:
        """The rate-limit headers for ``client``; :class:`ApiError` 429 when refused."""
        now = self._clock()
        decision = self.limiter.check(client, now)
        headers = {f"X-{name}": value for name, value in decision.headers(now).items()}
        retry = headers.pop("X-Retry-After", None)
        if retry is not None:
            self._log.rate_limit_hit(client, limit=decision.limit, retry_after=decision.retry_after, path=path)
            raise ApiError(429, ErrorCode.RATE_LIMITED,
                           f"Too many requests: at most {decision.limit} per {self.limiter.window_seconds:g} s; "
                           f"retry in {retry} s.",
                           {"limit": decision.limit, "window_seconds": self.limiter.window_seconds,
                            "retry_after": int(retry)}, headers={**headers, "Retry-After": retry})
        return headers

    def _http_error(self, exc: web.HTTPException, request: web.Request) -> web.Response:
        if exc.status == 404:
            return self._error(404, ErrorCode.NOT_FOUND, f"No route {request.method} {request.path}.",
                               {"path": request.path}, request)
        if isinstance(exc, web.HTTPMethodNotAllowed):
            allowed = sorted(exc.allowed_methods)
            return self._error(405, ErrorCode.METHOD_NOT_ALLOWED,
                               f"Method {request.method} is not allowed on {request.path}; "
                               f"allowed: {', '.join(allowed)}.", {"allowed": allowed}, request,
                               {"Allow": ", ".join(allowed)})
        return self._error(exc.status, f"HTTP_{exc.status}", exc.reason, None, request)

    def _error(self, status: int, code: str, message: str, details: dict[str, Any] | None, request: web.Request,
               headers: dict[str, str] | None = None) -> web.Response:
        response = self._json(status, False, None, {"code": code, "message": message, "details": details}, request)
        response.headers.update(headers or {})
        return response

    def _json(self, status: int, success: bool, data: Any, error: dict[str, Any] | None,
              request: web.Request, *, pagination: dict[str, Any] | None = None) -> web.Response:
        now = datetime.now(UTC)
        meta = {"timestamp": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "requestId": request.get(_REQUEST_ID_KEY, ""), "pagination": pagination}
        body = {"success": success, "data": data, "error": error, "meta": meta}
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")

    # -- handlers ----------------------------------------------------------------------------

    def _connection(self) -> Any:
        return self.pool.connection(timeout=self._pool_timeout)

    async def get_health(self) -> Any:
        report = await self.health.report()
        data = report.model_dump(mode="json", by_alias=True)
        if report.status is HealthStatus.UNHEALTHY:
            failing = [r.service for r in report.checks if r.status is HealthStatus.UNHEALTHY]
            message = f"Unhealthy: {', '.join(failing) or 'no check registered'}."
            return Answer(503, data, {"code": ErrorCode.UNHEALTHY, "message": message,
                                      "details": {"unhealthy": failing}})
        return data

    async def get_trending(self, hours: int, limit: int, at: datetime) -> Any:
        async with self._connection() as conn:
            rows = await queries.trending_accounts(conn, now=at, hours=hours, limit=limit)
        return _dump(c.TrendingAccount, rows)

    async def get_growth_velocity(self, hours: int, min_base: int, limit: int, at: datetime) -> Any:
        async with self._connection() as conn:
            rows = await queries.fastest_growing_accounts(conn, now=at, hours=hours, min_base=min_base, limit=limit)
        return _dump(c.GrowingAccount, rows)

    async def get_engagement_leaders(self, limit: int) -> Any:
        async with self._connection() as conn:
            rows = await queries.engagement_leaders(conn, limit=limit)
        return _dump(c.EngagementLeader, rows)

    async def get_network_stats(self, minutes: int, at: datetime) -> Any:
        async with self._connection() as conn:
            stats = await queries.network_stats(conn, now=at, minutes=minutes)
        return c.NetworkStats.model_validate(stats).model_dump(mode="json")

    async def get_users(self, order: str, q: str | None, strategy: str | None, limit: int, offset: int) -> Any:
        async with self._connection() as conn:
            rows = await queries.list_users(conn, order=order, query=q, strategy=strategy, limit=limit, offset=offset)
        page, more = rows[:limit], len(rows) > limit
        pagination = {"limit": limit, "offset": offset, "returned": len(page), "hasMore": more,
                      "nextOffset": offset + len(page) if more else None}
        return Answer(200, _dump(c.UserSummary, page), None, pagination)

    async def get_user(self, actor: str, recent: int, at: datetime) -> Any:
        async with self._connection() as conn:
            user = await queries.user_profile(conn, actor, now=at, recent=recent)
            if user is None:
                raise ApiError(404, ErrorCode.USER_NOT_FOUND, f"No account {actor} has been seen.", {"actor": actor})
            heatmap = await queries.activity_heatmap(conn, user["did"])
        return c.UserDetail.from_rows(user, heatmap).model_dump(mode="json")

    async def get_journey(self, topic: str, partition: int, offset: int) -> Any:
        from streams.api.journey import journey

        async with self._connection() as conn:
            found = await journey(self.settings, conn, topic, partition, offset)
        if found is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"No message at {topic}/{partition}/{offset}.",
                           {"topic": topic, "partition": partition, "offset": offset})
        return c.Journey.model_validate(found).model_dump(mode="json")

    async def get_record_journey(self, uri: str) -> Any:
        from streams.api.journey import find_record, journey

        record = split_record_uri(uri)  # the parameter's pattern checked it
        async with self._connection() as conn:
            try:
                found = await find_record(self.settings, conn, record)
            except KafkaError as exc:
                raise ApiError(503, ErrorCode.KAFKA_UNAVAILABLE, f"Kafka is unavailable: {type(exc).__name__}.") from exc
            answer = await journey(self.settings, conn, *found.coordinates) if found.coordinates else None
        if answer is None:
            raise ApiError(404, ErrorCode.NOT_FOUND, f"No raw event carries {uri}: {found.searched}.",
                           {"uri": uri, "searched": found.searched})
        return c.Journey.model_validate(answer).model_dump(mode="json")

    async def get_dead_letters(self, minutes: int) -> Any:
        since = datetime.now(UTC) - timedelta(minutes=minutes)
        topics = [self.settings.topic(Topic.GROWTH_DLQ), self.settings.topic(Topic.JETSTREAM_DLQ)]
        reader = new_reader(self.settings, client_id="bge-api-dlq")
        try:
            await reader.start()
            recent = await recent_dead_letters(reader, topics, int(since.timestamp() * 1000))
        except KafkaError as exc:
            raise ApiError(503, ErrorCode.KAFKA_UNAVAILABLE, f"Kafka is unavailable: {type(exc).__name__}.") from exc
        finally:
            await reader.stop()
        return c.DeadLetterSummary.model_validate({
            "minutes": minutes, "since": since, "total": recent.total, "counted": recent.counted,
            "by_reason": [{"topic": topic, "reason": reason, "count": count}
                          for (topic, reason), count in recent.by_reason.items()],
        }).model_dump(mode="json")

    async def get_crawls(self, limit: int) -> Any:
        from projections.crawl_store import CRAWL_REPORT, crawl_progress

        async with self._connection() as conn:
            exists = await (await conn.execute("SELECT to_regclass(%s)", (f"{self.settings.crawl_schema}.crawls",))).fetchone()
            if exists is None or exists[0] is None:
                return []
            query = sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(self.settings.crawl_schema))
            async with conn.transaction():
                await conn.execute(query)
                cur = await conn.execute(CRAWL_REPORT + "GROUP BY c.id ORDER BY c.requested_at DESC LIMIT %s", (limit,))
                columns = [column.name for column in cur.description or ()]
                rows = [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
        now = datetime.now(UTC)
        return _dump(c.CrawlReport, [crawl_progress(row, now) for row in rows])

    async def get_top_posts(self, hours: int, limit: int, at: datetime) -> Any:
        async with self._connection() as conn:
            rows = await queries.top_posts(conn, now=at, hours=hours, limit=limit)
        return _dump(c.TopPost, rows)

    async def get_hashtags(self, hours: int, limit: int, at: datetime) -> Any:
        async with self._connection() as conn:
            rows = await queries.hashtag_trends(conn, now=at, hours=hours, limit=limit)
        return _dump(c.HashtagTrend, rows)

    async def get_candidates(self, strategy: str | None, limit: int, min_score: float | None) -> Any:
        async with self._connection() as conn:
            if strategy is None:
                strategies = await queries.candidate_strategies(conn)
                return c.StrategyList.model_validate({"strategies": strategies}).model_dump(mode="json")
            rows = await queries.candidates_by_strategy(conn, strategy, limit=limit, min_score=min_score)
        return c.CandidateList.model_validate({"strategy": strategy, "candidates": rows}).model_dump(mode="json")

    async def get_database_stats(self) -> Any:
        stats = self.stats.snapshot() if self.stats is not None else QueryStats().snapshot()
        pool = self.pool.get_stats()
        return c.DatabaseStats.model_validate({"queries": stats, "pool": {
            "min": pool.get("pool_min", self.pool.min_size), "max": pool.get("pool_max", self.pool.max_size),
            "size": pool.get("pool_size", 0), "available": pool.get("pool_available", 0),
            "waiting": pool.get("requests_waiting", 0)}}).model_dump(mode="json")


def _dump(shape: type[c.Shape], rows: list[dict[str, Any]]) -> list[Any]:
    return [shape.model_validate(row).model_dump(mode="json") for row in rows]


# --- wiring --------------------------------------------------------------------------------


def register_api(app: faust.App, settings: Settings, *, pool: AsyncConnectionPool, registry: HealthRegistry,
                 limiter: InboundRateLimiter, stats: QueryStats | None = None) -> Api:
    """Serve the API from ``app``'s web server. ``pool`` opens when the web server starts
    (without waiting: a worker starts even when Postgres is down, and says so on ``/health``)
    and closes when it stops. ``stats`` is the pool's :class:`~projections.QueryStats`, shown at
    ``/api/stats/database``. Call once per app, before the worker starts; returns the
    :class:`Api` (also ``app.api``)."""
    if getattr(app, "api", None) is not None:
        raise RuntimeError("register_api was already called for this app")
    api = Api(settings, pool=pool, registry=registry, limiter=limiter, stats=stats)
    api.install(app)
    log = get_logger("api")

    async def open_pool(_: web.Application) -> None:
        await pool.open(wait=False)
        log.info("api pool opened", min_size=pool.min_size, max_size=pool.max_size)

    async def close_pool(_: web.Application) -> None:
        if not pool.closed:
            await pool.close()
            log.info("api pool closed")

    app.web.web_app.on_startup.append(open_pool)
    app.web.web_app.on_cleanup.append(close_pool)
    app.api = api  # type: ignore[attr-defined]
    return api


def serve_api(app: faust.App, settings: Settings, *, schema: str | None = None,
              breakers: Iterable[CircuitBreaker] = (),
              consumed: Iterable[Topic] = (Topic.JETSTREAM_EVENTS, Topic.GROWTH_EVENTS), projects: bool = True,
              consumer_group: str | None = None) -> Api:
    """The whole wiring in one call: the API pool on ``schema`` (default ``DB_SCHEMA``, see
    :func:`create_api_pool`) with its query statistics, every health check
    (:func:`streams.health.checks.build_registry`, the ``breakers`` included, lag measured for
    ``consumer_group`` (default ``app``'s) on the ``consumed`` topics, and the projector's when it ``projects``), the inbound limiter (``API_RATE_LIMIT`` per
    ``API_RATE_WINDOW_SECONDS``), then :func:`register_api`. An app that already serves the
    API keeps it: the call returns that :class:`Api`."""
    existing = getattr(app, "api", None)
    if isinstance(existing, Api):
        return existing
    stats = QueryStats(slow_threshold_ms=settings.db_slow_query_ms)
    pool = create_api_pool(settings, schema=schema, stats=stats)
    registry = build_registry(settings, pool=pool, breakers=breakers, consumer_group=consumer_group or app.conf.id, consumed=consumed,
                              projector_consumer=PROJECTOR if projects else None)
    limiter = InboundRateLimiter(settings.api_rate_limit, settings.api_rate_window_seconds)
    return register_api(app, settings, pool=pool, registry=registry, limiter=limiter, stats=stats)
