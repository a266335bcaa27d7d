"""The HTTP API's contract: what each route accepts, the shapes it answers, and the OpenAPI 3.1
document built from the very same declarations.

Every answer is the original engine's envelope::

    {"success": true,  "data": <the route's shape>, "error": null, "meta": {"timestamp": ..., "requestId": ..., "pagination": ...}}
    {"success": false, "data": null, "error": {"code", "message", "details"}, "meta": {...}}

(``/health`` when unhealthy keeps its report in ``data``). A :class:`Param` both parses a request
value (raising :class:`ApiError` 400 with a message naming the parameter) and documents itself;
the response shapes are pydantic models whose JSON Schema goes into the document and whose
``model_dump(mode="json")`` writes the answers, so the two cannot drift apart.

One module of about 600 lines: every route's declaration sits beside the others so the OpenAPI
document and the handlers read one table; most lines are declarations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from streams.health.report import HealthReport

__all__ = [
    "ApiError",
    "ErrorCode",
    "Operation",
    "Param",
    "REQUEST_ID_PATTERN",
    "openapi_document",
]

REQUEST_ID_PATTERN = r"^[A-Za-z0-9._-]{1,128}$"
EARLIEST_AT = datetime(1, 1, 9)
"""The earliest ``at``: windows (up to 168 hours) before it would fall before year 1."""


class ErrorCode:
    """The ``error.code`` values."""

    INVALID_PARAMETER = "INVALID_PARAMETER"
    NOT_FOUND = "NOT_FOUND"
    USER_NOT_FOUND = "USER_NOT_FOUND"
    METHOD_NOT_ALLOWED = "METHOD_NOT_ALLOWED"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_ERROR = "INTERNAL_ERROR"
    DATABASE_UNAVAILABLE = "DATABASE_UNAVAILABLE"
    KAFKA_UNAVAILABLE = "KAFKA_UNAVAILABLE"
    UNHEALTHY = "UNHEALTHY"


class ApiError(Exception):
    """An answer other than success: HTTP ``status``, a stable ``code``, a message for people,
    optional ``details`` (a JSON object) and extra response ``headers``."""

    def __init__(self, status: int, code: str, message: str, details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.headers = dict(headers or {})


# --- parameters ----------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?[0-9]{1,18}")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def invalid(name: str, message: str, value: str | None, **details: Any) -> ApiError:
    """A 400 naming the parameter; ``details`` hold it, the value given (cut at 200 characters)
    and anything more said here."""
    shown = value if value is None or len(value) <= 200 else value[:200] + "..."
    return ApiError(400, ErrorCode.INVALID_PARAMETER, f"{name} {message}",
                    {"parameter": name, "value": shown, **details})


@dataclass(frozen=True, slots=True)
class Param:
    """One query or path parameter: how it is parsed and how it is documented."""

    name: str
    kind: Literal["integer", "number", "date-time", "string"]
    description: str
    default: Any = None
    minimum: int | None = None
    maximum: int | None = None
    pattern: str | None = None
    max_length: int | None = None
    location: Literal["query", "path"] = "query"
    choices: tuple[str, ...] | None = None
    example: str | None = None
    expectation: str = ""
    """What a string must look like, said for people (default: the pattern)."""
    required: bool = False
    """A query parameter without a default (path parameters always are)."""

    def parse(self, raw: str | None) -> Any:
        """The value of ``raw`` (the default when absent), or :class:`ApiError` 400."""
        if raw is None:
            if self.required:
                raise invalid(self.name, "is required", None)
            return self.default
        if self.kind == "integer":
            return self._integer(raw)
        if self.kind == "number":
            if not _NUMBER.fullmatch(raw) or not math.isfinite(value := float(raw)):
                raise invalid(self.name, "must be a finite number", raw)
            return value
        if self.kind == "date-time":
            return parse_moment(self.name, raw)
        if self.max_length is not None and len(raw) > self.max_length:
            raise invalid(self.name, f"must be at most {self.max_length} characters", raw)
        if self.pattern is not None and not re.fullmatch(self.pattern.removeprefix("^").removesuffix("$"), raw):
            raise invalid(self.name, self.expectation or f"must match {self.pattern}", raw)
        if self.choices is not None and raw not in self.choices:
            raise invalid(self.name, f"must be one of {', '.join(self.choices)}", raw, allowed=list(self.choices))
        return raw

    def _integer(self, raw: str) -> int:
        bounds = f"from {self.minimum} to {self.maximum}"
        if not _INTEGER.fullmatch(raw):
            raise invalid(self.name, f"must be an integer {bounds}", raw)
        value = int(raw)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise invalid(self.name, f"must be an integer {bounds}", raw)
        return value

    def schema(self) -> dict[str, Any]:
        if self.kind == "integer":
            schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
        elif self.kind == "number":
            schema = {"type": "number"}
        elif self.kind == "date-time":
            schema = {"type": "string", "format": "date-time"}
        elif self.choices is not None:
            schema = {"type": "string", "enum": list(self.choices)}
        else:
            schema = {"type": "string", "minLength": 1}
            if self.pattern is not None:
                schema["pattern"] = self.pattern
            if self.max_length is not None:
                schema["maxLength"] = self.max_length
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def openapi(self) -> dict[str, Any]:
        spec = {"name": self.name, "in": self.location, "required": self.location == "path" or self.required,
                "description": self.description, "schema": self.schema()}
        if self.example is not None:
            spec["example"] = self.example
        return spec


def parse_moment(name: str, raw: str) -> datetime:
    """An RFC 3339 / ISO 8601 date-time (``Z`` or an offset; without one it is UTC). Times
    before :data:`EARLIEST_AT` are read as it, so that no window reaches before year 1."""
    text = raw.strip().upper()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise invalid(name, "must be an ISO 8601 date-time such as 2026-07-04T15:00:00Z", raw) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    if moment.replace(tzinfo=None) < EARLIEST_AT:  # compared as wall times: no overflow near year 1
        moment = EARLIEST_AT.replace(tzinfo=moment.tzinfo)
    return moment


# --- response shapes -----------------------------------------------------------------------


class Shape(BaseModel):
    """A response shape: fields not declared are left out of the answer."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class TrendingAccount(Shape):
    """An account and its follower gain over the window (``gained - lost = net_gain``).
    ``follower_count`` counts the follows observed in the firehose; ``appview_followers_count`` is
    the AppView's total when the account was crawled; ``followers`` is that total, else the observed."""

    did: str
    handle: str | None
    display_name: str | None
    follower_count: int
    appview_followers_count: int | None
    followers: int
    gained: int
    lost: int
    net_gain: int


class GrowingAccount(TrendingAccount):
    """A trending account with its relative gain: ``net_gain / base``, ``base`` being its
    followers at the window's start."""

    base: int
    relative_gain: float


class UserSummary(Shape):
    did: str
    handle: str | None
    display_name: str | None
    active: bool | None
    follower_count: int
    follow_count: int
    post_count: int
    engagement: int
    first_seen_at: datetime | None
    last_seen_at: datetime | None
    strategies: list[str]


class EngagementLeader(Shape):
    did: str
    handle: str | None
    display_name: str | None
    follower_count: int
    likes_received: int
    reposts_received: int
    replies_received: int
    quotes_received: int
    engagement: int


class TopPost(Shape):
    """A post and its engagement; ``score = likes + 2 reposts + 3 replies + 2 quotes``."""

    uri: str
    did: str
    handle: str | None
    text: str
    created_at: datetime | None
    indexed_at: datetime
    langs: list[str]
    embed_kind: str | None
    like_count: int
    repost_count: int
    reply_count: int
    quote_count: int
    score: int


class HourlyCount(Shape):
    hour: datetime
    count: int


class HashtagTrend(Shape):
    tag: str
    total: int
    hourly: list[HourlyCount]


class MinuteCount(Shape):
    minute: datetime
    count: int


class NetworkStats(Shape):
    """Sizes of the network seen so far (tables named in ``approximate`` are the planner's
    estimates) and collected actions per minute over the last ``window_minutes``."""

    users: int
    follows: int
    posts: int
    likes: int
    reposts: int
    blocks: int
    events_per_minute: float
    window_minutes: int
    per_minute: list[MinuteCount] = []
    """Collected actions in each minute of the window that has some."""
    approximate: list[str]


class Profile(Shape):
    display_name: str | None
    description: str | None
    pronouns: str | None
    website: str | None
    avatar_url: str | None
    banner_url: str | None
    avatar_cid: str | None
    banner_cid: str | None
    joined_via_starter_pack_uri: str | None
    pinned_post_uri: str | None
    profile_created_at: datetime | None
    profile_updated_at: datetime | None
    account_created_at: datetime | None


class AccountStatus(Shape):
    active: bool | None
    status: str | None
    first_seen_at: datetime | None
    last_seen_at: datetime | None


class ObservedCounts(Shape):
    """Counted from the firehose since collection started."""

    followers: int
    follows: int
    posts: int
    likes_received: int
    reposts_received: int
    replies_received: int
    quotes_received: int


class AppViewCounts(Shape):
    """The AppView's own totals at ``fetched_at`` (the latest crawl of the account)."""

    followers: int | None
    follows: int | None
    posts: int | None
    labels: list[str] | None
    fetched_at: datetime


class GraphCounts(Shape):
    """Distinct accounts in the graph this engine knows: follows the firehose showed being made,
    and edges a crawl observed (``bge crawl graph``, snowball pages)."""

    followers: int
    follows: int


class Counts(Shape):
    observed: ObservedCounts
    appview: AppViewCounts | None
    graph: GraphCounts


class CandidateDecision(Shape):
    strategy: str
    score: float
    reasons: list[str]
    subject_uri: str | None
    source_did: str
    first_seen_at: datetime
    last_seen_at: datetime
    source_topic: str | None = None
    """Where the deciding source event was read (``bge replay``, the dashboard's event journey)."""
    source_partition: int | None = None
    source_offset: int | None = None


class FollowerGain(Shape):
    gained: int
    lost: int
    net: int


class ActivityItem(Shape):
    occurred_at: datetime
    collection: str
    operation: str


class GrowthActionItem(Shape):
    action: str
    record_uri: str
    subject_uri: str | None
    reason: str
    occurred_at: datetime


class RecentPost(Shape):
    uri: str
    text: str
    created_at: datetime | None
    indexed_at: datetime
    like_count: int
    repost_count: int
    reply_count: int
    quote_count: int


class ActivityPeak(Shape):
    iso_weekday: int = Field(ge=1, le=7)
    hour: int = Field(ge=0, le=23)
    events: int


class ActivityPattern(Shape):
    """Actions by ISO weekday (row 0 = Monday) and UTC hour (column)."""

    total: int
    grid: Annotated[list[Annotated[list[int], Field(min_length=24, max_length=24)]], Field(min_length=7, max_length=7)]
    peak: ActivityPeak | None


class UserDetail(Shape):
    """One account: profile, status, counts, why strategies chose it, and what it did lately."""

    did: str
    handle: str | None
    profile: Profile
    status: AccountStatus
    counts: Counts
    strategies: list[str]
    candidates: list[CandidateDecision]
    follower_gain_24h: FollowerGain
    follower_gains: list[GainPoint]
    """Follows and unfollows per hour over the last 72 hours (hours with some)."""
    recent_activity: list[ActivityItem]
    growth_actions: list[GrowthActionItem]
    recent_posts: list[RecentPost]
    activity_pattern: ActivityPattern

    @classmethod
    def from_rows(cls, user: Mapping[str, Any], heatmap: Mapping[str, Any]) -> UserDetail:
        """From :func:`projections.queries.user_profile` and :func:`~projections.queries.activity_heatmap`."""
        appview = None
        if user.get("appview_fetched_at") is not None:
            appview = {"followers": user["appview_followers_count"], "follows": user["appview_follows_count"],
                       "posts": user["appview_posts_count"], "labels": user["appview_labels"],
                       "fetched_at": user["appview_fetched_at"]}
        observed = {"followers": user["follower_count"], "follows": user["follow_count"], "posts": user["post_count"],
                    **{k: user[k] for k in ("likes_received", "reposts_received", "replies_received", "quotes_received")}}
        return cls.model_validate({
            **user,
            "profile": user,
            "status": user,
            "counts": {"observed": observed, "appview": appview, "graph": user["graph"]},
            "activity_pattern": heatmap,
        })


class GainPoint(Shape):
    hour: datetime
    gained: int
    lost: int


class JourneySpan(Shape):
    name: str
    service: str
    start_us: int
    duration_us: int
    span_id: str


class Journey(Shape):
    """One source event from frame to row (see :mod:`streams.api.journey`)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str
    headers: dict[str, str]
    event: Any
    explanation: dict[str, Any]
    """What the domain makes of a raw event, replayed alone: ``decisions`` per strategy, ``events``."""
    rows: dict[str, list[dict[str, Any]]]
    trace_id: str | None
    spans: list[JourneySpan]
    jaeger_url: str | None
    replay_command: str


class DeadLetterCount(Shape):
    topic: str
    reason: str
    """The dead letter's ``error_reason`` header (``invalid_record``, ``oversized``, ...)."""
    count: int


class DeadLetterSummary(Shape):
    """Dead letters appended to the dead-letter topics in the last ``minutes``: ``total`` exactly
    (by offsets), ``by_reason`` from the headers of the newest ``counted`` of them."""

    minutes: int
    since: datetime
    total: int
    counted: int
    by_reason: list[DeadLetterCount]


class CrawlReport(Shape):
    """A crawl started by ``bge crawl`` and how far it got (see ``bge crawl status``)."""

    id: str
    kind: str
    state: str
    args: dict[str, Any]
    requested_at: datetime
    requests: int
    finished: int
    failed: int
    skipped: int
    accounts_found: int
    pages: int
    rate_per_min: float | None
    eta_s: int | None
    errors: list[str]


class CandidateEntry(Shape):
    did: str
    handle: str | None
    display_name: str | None
    follower_count: int
    strategy: str
    score: float
    reasons: list[str]
    subject_uri: str | None
    first_seen_at: datetime
    last_seen_at: datetime
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None


class CandidateList(Shape):
    """The accounts ``strategy`` selected, best score first."""

    strategy: str
    candidates: list[CandidateEntry]


class StrategySummary(Shape):
    strategy: str
    candidates: int
    last_seen_at: datetime


class StrategyList(Shape):
    """Without ``strategy``: each strategy that has candidates."""

    strategies: list[StrategySummary]


class SlowQuery(Shape):
    statement: str
    duration_ms: float
    failed: bool


class QueryStatsShape(Shape):
    total_queries: int
    total_errors: int
    avg_duration_ms: float
    max_duration_ms: float
    slow_queries: int
    slow_threshold_ms: float
    slow_by_statement: dict[str, int]
    error_rate: float
    recent_slow: list[SlowQuery]


class PoolStats(Shape):
    min: int
    max: int
    size: int
    available: int
    waiting: int


class DatabaseStats(Shape):
    """Statements run by this worker's API pool (queries and health checks) and the pool's state."""

    queries: QueryStatsShape
    pool: PoolStats


class ErrorBody(Shape):
    code: str
    message: str
    details: dict[str, Any] | None


class Pagination(Shape):
    """Where a page of a list sits: ``nextOffset`` is the ``offset`` of the next page (null on the last)."""

    limit: int
    offset: int
    returned: int
    hasMore: bool  # noqa: N815 - the envelope's camelCase
    nextOffset: int | None  # noqa: N815


class Meta(Shape):
    timestamp: datetime
    requestId: str = Field(pattern=REQUEST_ID_PATTERN)  # noqa: N815 - the original envelope's name
    pagination: Pagination | None = None


# --- operations and the document -----------------------------------------------------------

Data = type[Shape] | type[HealthReport] | tuple[type[Shape], ...]
"""A route's ``data``: one shape, or a tuple of shapes the answer is exactly one of (``oneOf``)."""


@dataclass(frozen=True, slots=True)
class Operation:
    """A GET route: its path (aiohttp syntax), its parameters, its data (a list of it when
    ``many``) and its statuses besides 200, 429 (when rate limited) and 500."""

    path: str
    operation_id: str
    summary: str
    description: str
    tag: str
    params: tuple[Param, ...]
    data: Data
    many: bool
    statuses: tuple[int, ...]
    handler: Callable[..., Awaitable[Any]] = field(compare=False)
    rate_limited: bool = True


_DESCRIPTIONS = {
    400: "A parameter is invalid; `error.details.parameter` names it.",
    404: "Not found.",
    429: "Too many requests from this client; retry after `Retry-After` seconds.",
    500: "An unexpected error; the details are in the server's log under the request id.",
    503: "A dependency is unavailable (the database; Kafka for dead letters and journeys); retry later.",
}


def _data_schema(operation: Operation) -> dict[str, Any]:
    shapes = operation.data if isinstance(operation.data, tuple) else (operation.data,)
    refs = [{"$ref": f"#/components/schemas/{shape.__name__}"} for shape in shapes]
    if operation.many:
        return {"type": "array", "items": refs[0]}
    return refs[0] if len(refs) == 1 else {"oneOf": refs}


def _envelope(data: dict[str, Any], success: bool) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["success", "data", "error", "meta"],
        "additionalProperties": False,
        "properties": {
            "success": {"const": success},
            "data": data,
            "error": {"type": "null"} if success else {"$ref": "#/components/schemas/ErrorBody"},
            "meta": {"$ref": "#/components/schemas/Meta"},
        },
    }


def _headers(rate_limited: bool, retry: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {"X-Request-Id": {"$ref": "#/components/headers/X-Request-Id"}}
    if rate_limited:
        for name in ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"):
            headers[name] = {"$ref": f"#/components/headers/{name}"}
    if retry:
        headers["Retry-After"] = {"$ref": "#/components/headers/Retry-After"}
    return headers


def _response(description: str, schema: dict[str, Any], headers: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "headers": headers, "content": {"application/json": {"schema": schema}}}


def _strict(schema: dict[str, Any]) -> dict[str, Any]:
    """Every object shape closed and every field required: answers always carry every field."""
    if schema.get("type") == "object" and "properties" in schema:
        schema["additionalProperties"] = False
        schema["required"] = list(schema["properties"])
    for value in schema.values():
        if isinstance(value, dict):
            _strict(value)
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    _strict(item)
    return schema


def component_schemas(operations: Sequence[Operation]) -> dict[str, Any]:
    shapes: list[type[BaseModel]] = [ErrorBody, Meta, Pagination]
    for operation in operations:
        for shape in operation.data if isinstance(operation.data, tuple) else (operation.data,):
            if shape not in shapes:
                shapes.append(shape)
    _, schema = models_json_schema([(shape, "serialization") for shape in shapes],
                                   ref_template="#/components/schemas/{model}")
    defs = schema.get("$defs", {})
    for definition in defs.values():
        _strict(definition)
    # ``details`` is a free-form object: it stays open.
    defs["ErrorBody"]["properties"]["details"] = {"anyOf": [{"type": "object"}, {"type": "null"}],
                                                  "description": "What the error is about (parameter, value, ...)."}
    return defs


def openapi_document(operations: Sequence[Operation], *, version: str, rate_limited: bool,
                     rate_limit: str = "") -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``operations``, plus ``/openapi.json`` itself."""
    paths: dict[str, Any] = {}
    for op in operations:
        limited = rate_limited and op.rate_limited
        responses: dict[str, Any] = {}
        if op.path == "/health":
            responses["200"] = _response("Healthy or degraded: the service answers.",
                                         _envelope(_data_schema(op), True), _headers(False))
            responses["503"] = _response("Unhealthy: a dependency failed; the report says which.",
                                         _envelope(_data_schema(op), False), _headers(False))
        else:
            responses["200"] = _response(op.summary, _envelope(_data_schema(op), True), _headers(limited))
        error = _envelope({"type": "null"}, False)
        for status in (*op.statuses, *((429,) if limited else ()), 500):
            responses[str(status)] = _response(_DESCRIPTIONS[status], error, _headers(limited, retry=status == 429))
        parameters = [p.openapi() for p in op.params]
        paths[_openapi_path(op.path)] = {"get": {
            "operationId": op.operation_id, "summary": op.summary, "description": op.description,
            "tags": [op.tag], **({"parameters": parameters} if parameters else {}), "responses": responses,
        }}
    paths["/openapi.json"] = {"get": {
        "operationId": "openapi", "summary": "This document", "tags": ["meta"],
        "responses": {"200": {"description": "The OpenAPI document.", "headers": _headers(False),
                              "content": {"application/json": {"schema": {"type": "object"}}}}},
    }}
    integer = {"schema": {"type": "integer", "minimum": 0}}
    headers = {
        "X-Request-Id": {"required": True,
                         "description": "The request's id: the client's when well-formed, else generated; also "
                                        "`meta.requestId` and the logs' `request_id`.",
                         "schema": {"type": "string", "pattern": REQUEST_ID_PATTERN}},
        "X-RateLimit-Limit": {"required": True, "description": f"Requests allowed per window{rate_limit}.", **integer},
        "X-RateLimit-Remaining": {"required": True, "description": "Requests this client may still make now.", **integer},
        "X-RateLimit-Reset": {"required": True, "description": "Seconds until the client's full allowance is back.",
                              **integer},
        "Retry-After": {"required": True, "description": "Seconds to wait before the next request.",
                        "schema": {"type": "integer", "minimum": 1}},
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Bluesky Growth Engine API",
            "version": version,
            "description": "Growth analytics over the projections, and the worker's health. Every answer is an "
                           "envelope `{success, data, error, meta}`; times are ISO 8601 in UTC. Analytics windows end "
                           "at `at` (default: now).",
        },
        "paths": paths,
        "components": {"schemas": component_schemas(operations), "headers": headers},
    }


def _openapi_path(path: str) -> str:
    return re.sub(r"\{(\w+)(?::[^}]*)?\}", r"{\1}", path)
