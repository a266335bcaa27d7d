"""An async XRPC client for the AT Protocol: the public AppView, and an account's session.

Every call goes through the same three guards, in this order:

1. the outbound :class:`~streams.adapters.ratelimit.TokenBucket` (``await acquire()``), ONE per client and
   shared by all its concurrent callers, so the client never exceeds its rate whatever the
   number of tasks using it; each response is shown to the bucket (``observe``), so the
   server's ``ratelimit-*`` headers and a 429 pause every caller until the server's reset;
2. the :class:`~streams.adapters.breaker.CircuitBreaker`: server errors (5xx), timeouts and network
   errors count against the service; client errors (4xx) and 429 do not; an open breaker fails
   calls fast;
3. retries: a 429 is retried after the pause (up to ``rate_limit_retries`` times); a 5xx, a
   timeout or a network error up to ``retries`` times with exponential backoff and full jitter.
   Each attempt takes a token and passes the breaker, so retries never exceed the rate and
   repeated failures open the breaker.

Answers are parsed into the lexicon models of :mod:`domain.appview`. Nothing raises: a call
returns ``Success(model)`` or ``Failure(XrpcError)`` (an HTTP error with the lexicon's error
name, a timeout, a network error, an open breaker, or a response that breaks its lexicon).
List methods are async iterators of pages (each page a ``Result``) that follow ``cursor`` up to
``max_pages``; iteration stops after the first failed page.

Usage::

    async with AppViewClient.from_settings(settings) as appview:
        profiles = await appview.profiles(["alice.bsky.social", "did:plc:..."])   # 25 a call
        async for page in appview.followers("alice.bsky.social", max_pages=3):
            match page:
                case Success(out): ...
                case Failure(error): ...

One module of about 500 lines: the guards, the session and the typed calls are one client; each call
is a few lines and reads best beside the others.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import aiohttp
import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import SecretStr
from returns.pipeline import is_successful
from returns.result import Failure, Result, Success

import streams
from domain.appview import (
    AppViewObject,
    CreateRecordOutput,
    CreateSessionOutput,
    GetAuthorFeedOutput,
    GetFollowersOutput,
    GetFollowsOutput,
    GetLikesOutput,
    GetPostThreadOutput,
    GetProfilesOutput,
    GetRepostedByOutput,
    GetSessionOutput,
    InvalidResponse,
    ListNotificationsOutput,
    ProfileViewDetailed,
    SearchPostsOutput,
    XrpcErrorBody,
    parse_response,
)
from domain.crawl import MAX_PROFILES_PER_CALL, batches
from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError
from streams.config import Settings
from streams.observability.log import ContextLogger, get_logger
from streams.adapters.ratelimit import TokenBucket

__all__ = [
    "AppViewClient",
    "AtprotoSession",
    "RetryPolicy",
    "XrpcClient",
    "XrpcError",
    "collect_pages",
    "iso_now",
]

M = TypeVar("M", bound=AppViewObject)
Params = Mapping[str, str | int | bool | Sequence[str] | None]

MAX_PAGE_SIZE: Final = 100
NETWORK_ERROR: Final = "NetworkError"
TIMEOUT: Final = "Timeout"
CIRCUIT_OPEN: Final = "CircuitOpen"
INVALID_RESPONSE: Final = "InvalidResponse"

_tracer = trace.get_tracer("bge.atproto")


class XrpcError(Exception):
    """A failed XRPC call (returned in a ``Failure``, never raised to callers).

    ``status`` is the HTTP status, or ``None`` when there was no usable response (network
    error, timeout, open breaker); ``error`` is the lexicon's error name (``InvalidRequest``,
    ``NotFound``, ``RateLimitExceeded``, ``ExpiredToken``, ...) or one of ``NetworkError``,
    ``Timeout``, ``CircuitOpen``, ``InvalidResponse``.
    """

    def __init__(self, method: str, status: int | None, error: str, message: str = "", *,
                 retry_after: float | None = None) -> None:
        self.method = method
        self.status = status
        self.error = error
        self.message = message
        self.retry_after = retry_after
        super().__init__(f"{method}: {status or '-'} {error}: {message}"[:1000])

    @property
    def counts_against_service(self) -> bool:
        """True for what says the service is unwell: 5xx, timeouts, network errors."""
        if self.status is None:
            return self.error in (NETWORK_ERROR, TIMEOUT)
        return self.status >= 500 and self.status != 501  # 501: the method does not exist there

    @property
    def transient(self) -> bool:
        """True when the same call may succeed later (rate limited, service unwell, breaker
        open); False for answers that will not change (4xx, a response breaking its lexicon)."""
        return self.counts_against_service or self.status == 429 or self.error == CIRCUIT_OPEN


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of one call. Attempt ``n`` (from 1) after a server error waits a random time in
    ``[cap / 2, cap]`` with ``cap = min(max_delay, base_delay * 2 ** (n - 1))``."""

    retries: int = 4
    base_delay: float = 0.25
    max_delay: float = 8.0
    rate_limit_retries: int = 10

    def delay(self, attempt: int, rng: random.Random) -> float:
        cap = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return rng.uniform(cap / 2, cap)


def _query(params: Params | None) -> list[tuple[str, str]]:
    """Query parameters as XRPC encodes them: arrays repeat the name, booleans are lowercase."""
    out: list[tuple[str, str]] = []
    for name, value in (params or {}).items():
        if value is None:
            continue
        if isinstance(value, bool):
            out.append((name, "true" if value else "false"))
        elif isinstance(value, str | int):
            out.append((name, str(value)))
        else:
            out.extend((name, str(item)) for item in value)
    return out


def _error_from(method: str, status: int, body: bytes) -> XrpcError:
    match parse_response(XrpcErrorBody, body):
        case Success(error):
            return XrpcError(method, status, error.error, error.message or "")
        case _:
            return XrpcError(method, status, f"HTTP{status}", body[:200].decode(errors="replace"))


def _invalid(method: str, problem: InvalidResponse) -> XrpcError:
    return XrpcError(method, 200, INVALID_RESPONSE, str(problem))


def iso_now(now: float) -> str:
    """``now`` (unix seconds) as the lexicons' datetime: ``2026-07-04T14:38:06.240Z``."""
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class XrpcClient:
    """XRPC queries (GET) and procedures (POST) against one service, paced by ``bucket``,
    guarded by ``breaker`` and retried by ``retry`` (see the module docstring).

    The client owns an ``aiohttp.ClientSession`` opened by :meth:`start` (or ``async with``)
    unless one is passed in. ``sleep`` and ``rng`` are injectable for tests.
    """

    def __init__(
        self,
        service: str,
        *,
        bucket: TokenBucket,
        breaker: CircuitBreaker,
        retry: RetryPolicy = RetryPolicy(),
        timeout: float = 15.0,
        session: aiohttp.ClientSession | None = None,
        logger: ContextLogger | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.service = service.rstrip("/")
        self.bucket = bucket
        self.breaker = breaker
        self.retry = retry
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.log = logger or get_logger("atproto")
        self._session = session
        self._owns_session = session is None
        self._rng = rng or random.Random()
        self.calls = 0
        """HTTP requests sent (attempts, not calls)."""

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers={"User-Agent": f"bluesky-growth-engine/{streams.__version__}", "Accept": "application/json"},
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    async def __aenter__(self) -> XrpcClient:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the two kinds of XRPC call -------------------------------------------------------

    async def query(self, nsid: str, model: type[M], params: Params | None = None, *,
                    headers: Mapping[str, str] | None = None) -> Result[M, XrpcError]:
        """``GET /xrpc/<nsid>?params`` parsed as ``model``."""
        return await self._call("GET", nsid, model, _query(params), None, headers)

    async def procedure(self, nsid: str, model: type[M], body: Mapping[str, Any], *,
                        headers: Mapping[str, str] | None = None) -> Result[M, XrpcError]:
        """``POST /xrpc/<nsid>`` with a JSON body, parsed as ``model``."""
        return await self._call("POST", nsid, model, [], body, headers)

    async def paginate(self, nsid: str, model: type[M], params: Params | None = None, *, max_pages: int,
                       headers: Mapping[str, str] | None = None) -> AsyncIterator[Result[M, XrpcError]]:
        """Pages of a list query, following ``cursor`` until there is none, a page is empty,
        a cursor repeats, ``max_pages`` pages were read, or a page failed (yielded last)."""
        if max_pages < 1:
            raise ValueError(f"max_pages must be >= 1, got {max_pages}")
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(max_pages):
            page = await self.query(nsid, model, {**(params or {}), "cursor": cursor}, headers=headers)
            yield page
            match page:
                case Success(found):
                    cursor = getattr(found, "cursor", None)
                    if not cursor or cursor in seen or not _has_items(found):
                        return
                    seen.add(cursor)
                case _:
                    return

    # -- internals ------------------------------------------------------------------------

    async def _call(self, http_method: str, nsid: str, model: type[M], query: list[tuple[str, str]],
                    body: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> Result[M, XrpcError]:
        failures = limited = 0
        while True:
            await self.bucket.acquire()
            outcome = await self.breaker.call(self._send, http_method, nsid, query, body, headers)
            match outcome:
                case Success(raw):
                    return parse_response(model, raw).alt(lambda problem: _invalid(nsid, problem))
                case Failure(CircuitOpenError() as refused):
                    return Failure(XrpcError(nsid, None, CIRCUIT_OPEN, str(refused), retry_after=refused.retry_after))
                case Failure(XrpcError(status=429) as error) if limited < self.retry.rate_limit_retries:
                    limited += 1
                    self.log.debug("xrpc rate limited, retrying after the pause", method=nsid,
                                   paused_for=round(self.bucket.paused_for, 3))
                case Failure(XrpcError() as error) if error.counts_against_service and failures < self.retry.retries:
                    failures += 1
                    delay = self.retry.delay(failures, self._rng)
                    self.log.debug("xrpc call failed, retrying", method=nsid, attempt=failures,
                                   delay=round(delay, 3), error=str(error))
                    await asyncio.sleep(delay)
                case Failure(XrpcError() as error):
                    if error.transient:
                        self.log.api_error(nsid, str(error), status=error.status, error_name=error.error)
                    else:
                        self.log.warning("xrpc call refused", endpoint=nsid, status=error.status,
                                         error_name=error.error, error_message=error.message)
                    return Failure(error)
                case Failure(other):  # pragma: no cover - _send raises only XrpcError
                    return Failure(XrpcError(nsid, None, NETWORK_ERROR, repr(other)))

    async def _send(self, http_method: str, nsid: str, query: list[tuple[str, str]],
                    body: Mapping[str, Any] | None, headers: Mapping[str, str] | None) -> bytes:
        if self._session is None:
            await self.start()
        assert self._session is not None
        self.calls += 1
        url = f"{self.service}/xrpc/{nsid}"
        with _tracer.start_as_current_span(f"xrpc {nsid}", kind=SpanKind.CLIENT, attributes={
            "rpc.system": "xrpc", "rpc.method": nsid, "http.request.method": http_method, "server.address": self.service,
        }) as span:
            try:
                async with self._session.request(http_method, url, params=query, json=body, headers=headers,
                                                 timeout=self.timeout) as response:
                    data = await response.read()
                    self.bucket.observe(response.status, response.headers)
                    span.set_attribute("http.response.status_code", response.status)
            except TimeoutError as exc:
                span.set_status(Status(StatusCode.ERROR, "timeout"))
                raise XrpcError(nsid, None, TIMEOUT, f"no answer within {self.timeout.total}s") from exc
            except aiohttp.ClientError as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise XrpcError(nsid, None, NETWORK_ERROR, f"{type(exc).__name__}: {exc}") from exc
            if response.status != 200:
                error = _error_from(nsid, response.status, data)
                span.set_status(Status(StatusCode.ERROR, error.error))
                raise error
            return data


def _has_items(page: AppViewObject) -> bool:
    """False when every list field of a page is empty (nothing more to follow)."""
    lists = [value for value in page.__dict__.values() if isinstance(value, list)]
    return not lists or any(lists)


async def collect_pages(pages: AsyncIterator[Result[M, XrpcError]]) -> Result[list[M], XrpcError]:
    """All pages of an iterator, or the first failure."""
    collected: list[M] = []
    async for page in pages:
        match page:
            case Success(value):
                collected.append(value)
            case Failure(error):
                return Failure(error)
    return Success(collected)


def _bounded_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise ValueError(f"limit must be 1-{MAX_PAGE_SIZE}, got {limit}")
    return limit


class AppViewClient(XrpcClient):
    """The public AppView's read methods (``app.bsky.*``), typed."""

    @classmethod
    def from_settings(cls, settings: Settings, *, logger: ContextLogger | None = None, burst: float = 1.0,
                      retry: RetryPolicy = RetryPolicy(), timeout: float = 15.0,
                      service: str | None = None) -> AppViewClient:
        """A client of ``ATPROTO_SERVICE`` paced at ``ATPROTO_RATE_LIMIT`` requests/s (``burst``
        1: evenly spaced, so no one-second window holds more than the rate; with
        ``ENABLE_RATE_LIMIT=false`` only the server's own signals pace it) behind a breaker
        configured by ``BREAKER_*`` / ``ENABLE_CIRCUIT_BREAKER``."""
        log = logger or get_logger("atproto")
        rate = settings.atproto_rate_limit if settings.enable_rate_limit else 1e6
        bucket = TokenBucket(rate, burst=max(1.0, burst), name="atproto", logger=log)
        breaker = CircuitBreaker(
            "atproto",
            BreakerConfig(failure_threshold=settings.breaker_failure_threshold,
                          recovery_timeout=settings.breaker_recovery_seconds,
                          enabled=settings.enable_circuit_breaker),
            is_failure=lambda exc: not isinstance(exc, XrpcError) or exc.counts_against_service,
            logger=log,
        )
        return cls(service or settings.atproto_service, bucket=bucket, breaker=breaker, retry=retry,
                   timeout=timeout, logger=log)

    async def __aenter__(self) -> AppViewClient:
        await self.start()
        return self

    async def get_profiles(self, actors: Sequence[str]) -> Result[GetProfilesOutput, XrpcError]:
        """``app.bsky.actor.getProfiles`` for 1-25 actors (handles or DIDs)."""
        if not 1 <= len(actors) <= MAX_PROFILES_PER_CALL:
            raise ValueError(f"getProfiles takes 1-{MAX_PROFILES_PER_CALL} actors, got {len(actors)}")
        return await self.query("app.bsky.actor.getProfiles", GetProfilesOutput, {"actors": list(actors)})

    async def profiles(self, actors: Sequence[str]) -> Result[list[ProfileViewDetailed], XrpcError]:
        """Profiles of any number of actors, 25 a call (calls run concurrently, paced by the
        bucket); actors the AppView does not know are left out. The first failure wins."""
        unique = list(dict.fromkeys(actors))
        if not unique:
            return Success([])
        pages = await asyncio.gather(*(self.get_profiles(chunk) for chunk in batches(unique, MAX_PROFILES_PER_CALL)))
        found: list[ProfileViewDetailed] = []
        for page in pages:
            match page:
                case Success(out):
                    found.extend(out.profiles)
                case Failure(error):
                    return Failure(error)
        return Success(found)

    def followers(self, actor: str, *, limit: int = MAX_PAGE_SIZE, max_pages: int = 1) -> AsyncIterator[Result[GetFollowersOutput, XrpcError]]:
        """``app.bsky.graph.getFollowers``: who follows ``actor``, newest first."""
        return self.paginate("app.bsky.graph.getFollowers", GetFollowersOutput,
                             {"actor": actor, "limit": _bounded_limit(limit)}, max_pages=max_pages)

    def follows(self, actor: str, *, limit: int = MAX_PAGE_SIZE, max_pages: int = 1) -> AsyncIterator[Result[GetFollowsOutput, XrpcError]]:
        """``app.bsky.graph.getFollows``: whom ``actor`` follows, newest first."""
        return self.paginate("app.bsky.graph.getFollows", GetFollowsOutput,
                             {"actor": actor, "limit": _bounded_limit(limit)}, max_pages=max_pages)

    def search_posts(self, q: str, *, sort: str | None = None, limit: int = 25, max_pages: int = 1,
                     **filters: str | Sequence[str] | None) -> AsyncIterator[Result[SearchPostsOutput, XrpcError]]:
        """``app.bsky.feed.searchPosts`` (``filters``: ``author``, ``mentions``, ``lang``,
        ``since``, ``until``, ``domain``, ``url``, ``tag``)."""
        return self.paginate("app.bsky.feed.searchPosts", SearchPostsOutput,
                             {"q": q, "sort": sort, "limit": _bounded_limit(limit), **filters}, max_pages=max_pages)

    def likes(self, uri: str, *, cid: str | None = None, limit: int = MAX_PAGE_SIZE,
              max_pages: int = 1) -> AsyncIterator[Result[GetLikesOutput, XrpcError]]:
        """``app.bsky.feed.getLikes``: who liked the record ``uri``."""
        return self.paginate("app.bsky.feed.getLikes", GetLikesOutput,
                             {"uri": uri, "cid": cid, "limit": _bounded_limit(limit)}, max_pages=max_pages)

    def reposted_by(self, uri: str, *, cid: str | None = None, limit: int = MAX_PAGE_SIZE,
                    max_pages: int = 1) -> AsyncIterator[Result[GetRepostedByOutput, XrpcError]]:
        """``app.bsky.feed.getRepostedBy``: who reposted the post ``uri``."""
        return self.paginate("app.bsky.feed.getRepostedBy", GetRepostedByOutput,
                             {"uri": uri, "cid": cid, "limit": _bounded_limit(limit)}, max_pages=max_pages)

    async def get_post_thread(self, uri: str, *, depth: int = 6, parent_height: int = 0) -> Result[GetPostThreadOutput, XrpcError]:
        """``app.bsky.feed.getPostThread``: the post ``uri`` with replies ``depth`` levels down."""
        return await self.query("app.bsky.feed.getPostThread", GetPostThreadOutput,
                                {"uri": uri, "depth": depth, "parentHeight": parent_height})

    def author_feed(self, actor: str, *, filter: str = "posts_no_replies", limit: int = 50,
                    max_pages: int = 1) -> AsyncIterator[Result[GetAuthorFeedOutput, XrpcError]]:
        """``app.bsky.feed.getAuthorFeed``: ``actor``'s posts and reposts, newest first."""
        return self.paginate("app.bsky.feed.getAuthorFeed", GetAuthorFeedOutput,
                             {"actor": actor, "filter": filter, "limit": _bounded_limit(limit)}, max_pages=max_pages)


class AtprotoSession:
    """An account's authenticated session on its PDS (or the entryway), opened with an app
    password (``com.atproto.server.createSession``) and renewed with the refresh token when
    the access token expires. The password is kept only as a ``SecretStr``.

    The calls go through ``client`` (its own bucket and breaker: the PDS's limits are not the
    AppView's). Writes use ``com.atproto.repo.createRecord`` in the session's own repo.
    """

    def __init__(self, client: XrpcClient, identifier: str, password: str | SecretStr) -> None:
        self.client = client
        self.identifier = identifier
        self._password = password if isinstance(password, SecretStr) else SecretStr(password)
        self._session: CreateSessionOutput | None = None

    @property
    def did(self) -> str:
        """The account's DID (after :meth:`login`)."""
        if self._session is None:
            raise RuntimeError("not logged in")
        return self._session.did

    @property
    def handle(self) -> str:
        if self._session is None:
            raise RuntimeError("not logged in")
        return self._session.handle

    async def account_did(self) -> Result[str, XrpcError]:
        """The account's DID, logging in first when the session is not open yet."""
        if self._session is not None:
            return Success(self._session.did)
        return (await self.login()).map(lambda out: out.did)

    async def login(self) -> Result[CreateSessionOutput, XrpcError]:
        """``com.atproto.server.createSession`` with the identifier and app password."""
        result = await self.client.procedure(
            "com.atproto.server.createSession", CreateSessionOutput,
            {"identifier": self.identifier, "password": self._password.get_secret_value()},
        )
        match result:
            case Success(session):
                self._session = session
        return result

    async def _refresh(self) -> Result[CreateSessionOutput, XrpcError]:
        assert self._session is not None
        result = await self.client.procedure("com.atproto.server.refreshSession", CreateSessionOutput, {},
                                             headers={"Authorization": f"Bearer {self._session.refresh_jwt}"})
        match result:
            case Success(session):
                self._session = session
                return result
            case _:
                return await self.login()

    async def _authorized(self, call: Any) -> Any:
        """Run ``call(headers)`` with the access token; log in first if needed, and once more
        after renewing the session when the token expired."""
        if self._session is None:
            login = await self.login()
            if not is_successful(login):
                return login
        assert self._session is not None
        result = await call({"Authorization": f"Bearer {self._session.access_jwt}"})
        if isinstance(result, Failure) and result.failure().error in ("ExpiredToken", "InvalidToken"):
            renewed = await self._refresh()
            if not is_successful(renewed):
                return renewed
            result = await call({"Authorization": f"Bearer {self._session.access_jwt}"})
        return result

    async def get_session(self) -> Result[GetSessionOutput, XrpcError]:
        """``com.atproto.server.getSession``: who the session is."""
        return await self._authorized(
            lambda headers: self.client.query("com.atproto.server.getSession", GetSessionOutput, headers=headers))

    async def create_record(self, collection: str, record: Mapping[str, Any]) -> Result[CreateRecordOutput, XrpcError]:
        """``com.atproto.repo.createRecord`` of ``record`` in the session's repo."""
        async def call(headers: Mapping[str, str]) -> Result[CreateRecordOutput, XrpcError]:
            return await self.client.procedure("com.atproto.repo.createRecord", CreateRecordOutput,
                                               {"repo": self.did, "collection": collection, "record": dict(record)},
                                               headers=headers)
        return await self._authorized(call)

    async def follow(self, did: str, *, created_at: str) -> Result[CreateRecordOutput, XrpcError]:
        """Follow ``did`` (an ``app.bsky.graph.follow`` record)."""
        return await self.create_record("app.bsky.graph.follow",
                                        {"$type": "app.bsky.graph.follow", "subject": did, "createdAt": created_at})

    async def like(self, uri: str, cid: str, *, created_at: str) -> Result[CreateRecordOutput, XrpcError]:
        """Like the post ``uri`` (an ``app.bsky.feed.like`` record with a strong reference)."""
        return await self.create_record("app.bsky.feed.like", {"$type": "app.bsky.feed.like",
                                                               "subject": {"uri": uri, "cid": cid},
                                                               "createdAt": created_at})

    async def notifications(self, *, reasons: Sequence[str] = ("mention",), limit: int = 50,
                            max_pages: int = 1) -> Result[list[ListNotificationsOutput], XrpcError]:
        """Pages of ``app.bsky.notification.listNotifications`` filtered by ``reasons``."""
        async def call(headers: Mapping[str, str]) -> Result[list[ListNotificationsOutput], XrpcError]:
            return await collect_pages(self.client.paginate(
                "app.bsky.notification.listNotifications", ListNotificationsOutput,
                {"reasons": list(reasons), "limit": _bounded_limit(limit)}, max_pages=max_pages, headers=headers))
        return await self._authorized(call)
