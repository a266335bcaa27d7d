"""Crawls of the AT Protocol AppView: the requests, and the strategies deciding which requests to
make and what the answers mean.

A crawl request is a command on the ``growth.crawl`` topic (:class:`CrawlRequest` and its
kinds, versioned JSON like the domain events). Its ``id`` is deterministic: the same request
made twice (a re-sent command, a replayed ``UserSeen``) has the same id, so the runtime
executes it once. What an answer means becomes domain events (:class:`ProfileEnriched`,
:class:`CandidateFound`, :class:`GrowthActionTaken`) whose ids derive from the request's id,
so re-executing a request after a crash yields the same events.

Strategies (pure: the runtime passes the AppView's answers, its memory and the time in):

- **profile enrichment**: an account seen in the firehose (``UserSeen``) gets its profile
  fetched, 25 a call, unless fetched within ``refresh_after_us``.
- **snowball**: breadth-first over followers and follows from seed accounts, up to
  ``max_degree`` and ``max_users``, a bounded number of list pages per account; accounts are
  kept only when their REAL follower count (from ``getProfiles``; the lists carry none) lies
  within the bounds, and only kept accounts are expanded further.
- **popular search**: authors of posts found by ``searchPosts`` (default queries below, all
  pages up to a bound) with at least ``min_likes`` likes.
- **post interactions**: everyone who liked, reposted or replied to a source account's
  recent posts.
- **growth actions** (off by default): follow back the followers not followed yet (all pages
  of both lists), like recent mentions, within daily caps, never twice.

One module of about 750 lines: the crawl requests and the strategies that make and read them are one
vocabulary; each strategy is a small pure function.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator
from returns.result import Failure, Result, Success

from domain.appview import FeedViewPost, Notification, PostView, ProfileView, ProfileViewDetailed
from domain.events import (
    CandidateFound,
    DomainEvent,
    FollowLost,
    FollowObserved,
    GrowthActionTaken,
    ProfileEnriched,
    UserSeen,
)
from domain.growth import Declined, candidate
from domain.identity import Source, SourceCoordinates, SourceKind, uuid5_string
from domain.rejections import Rejection, RejectionCode, describe_validation_error

__all__ = [
    "CRAWL_SOURCE_KIND",
    "DEFAULT_SEARCH_QUERIES",
    "FOLLOWERS",
    "FOLLOWS",
    "MAX_PROFILES_PER_CALL",
    "POPULAR_SEARCH",
    "POST_INTERACTIONS",
    "PROFILE_ENRICHMENT",
    "REQUEST_TYPES",
    "SNOWBALL",
    "CollectGraph",
    "CollectInteractions",
    "CrawlConfig",
    "CrawlRequest",
    "Discovery",
    "EnrichProfile",
    "EnrichmentConfig",
    "ExpandSnowball",
    "GraphChange",
    "GrowthActionsConfig",
    "Interaction",
    "InteractionsConfig",
    "Neighbour",
    "PlannedAction",
    "RunGrowthActions",
    "SearchConfig",
    "SearchPopular",
    "SnowballConfig",
    "SnowballParams",
    "SnowballStep",
    "StartSnowball",
    "batches",
    "crawl_request_id",
    "crawl_source",
    "day_start_us",
    "decode_request",
    "encode_request",
    "enrichment_decision",
    "expansion_request",
    "follower_bounds",
    "graph_requests",
    "growth_action_event",
    "growth_actions_request",
    "interaction_candidates",
    "interactions_request",
    "is_fresh",
    "new_neighbours",
    "observed_graph",
    "plan_follow_back",
    "plan_like_mentions",
    "popular_search_candidates",
    "profile_enriched",
    "profile_requests",
    "profiles_to_fetch",
    "recent_posts",
    "search_requests",
    "snowball_request",
    "snowball_step",
]

PROFILE_ENRICHMENT = "profile_enrichment"
SNOWBALL = "snowball"
POPULAR_SEARCH = "popular_search"
POST_INTERACTIONS = "post_interactions"
FOLLOW_BACK = "follow_back"
LIKE_MENTIONS = "like_mentions"

MAX_PROFILES_PER_CALL = 25
"""``app.bsky.actor.getProfiles`` takes at most 25 actors."""

DEFAULT_SEARCH_QUERIES: tuple[str, ...] = ("#introduction", "#newhere", "#art", "#photography", "#tech", "#politics")

CRAWL_SOURCE_KIND: SourceKind = "account"
"""The ``Source.kind`` of events derived from crawl requests. ``domain.identity.SourceKind``
knows only the Jetstream kinds, so crawl sources use ``account`` (the nearest: a fact about an
account that is not a commit) and are told apart by their id prefix ``crawl|``; when
``SourceKind`` gains ``"crawl"`` this constant is the one place to change."""

DAY_US = 86_400_000_000
_frozen = dataclass(frozen=True, slots=True, kw_only=True)


# --- configuration -------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EnrichmentConfig(_Config):
    """Profile enrichment of accounts seen in the firehose."""

    enabled: bool = True
    refresh_after_us: int = Field(default=7 * DAY_US, gt=0)
    """A profile fetched more recently than this is not fetched again."""
    batch_size: int = Field(default=MAX_PROFILES_PER_CALL, ge=1, le=MAX_PROFILES_PER_CALL)


class SnowballConfig(_Config):
    """Breadth-first crawl from seeds. ``max_followers=None``: no upper bound."""

    max_degree: int = Field(default=2, ge=1, le=6)
    max_users: int = Field(default=1000, ge=1)
    min_followers: int = Field(default=0, ge=0)
    max_followers: int | None = Field(default=100_000, ge=0)
    pages_per_user: int = Field(default=3, ge=1)
    page_size: int = Field(default=100, ge=1, le=100)

    @model_validator(mode="after")
    def _bounds_in_order(self) -> SnowballConfig:
        if self.max_followers is not None and self.max_followers < self.min_followers:
            raise ValueError("max_followers must be >= min_followers")
        return self


class SearchConfig(_Config):
    """Popular content search: queries, the likes a post needs, pages per query."""

    queries: tuple[str, ...] = DEFAULT_SEARCH_QUERIES
    min_likes: int = Field(default=10, ge=0)
    max_pages: int = Field(default=5, ge=1)
    page_size: int = Field(default=100, ge=1, le=100)
    sort: Literal["top", "latest"] = "top"


class InteractionsConfig(_Config):
    """Post interactions: how many recent posts, pages per list, and the weight of each kind."""

    max_posts: int = Field(default=10, ge=1, le=100)
    pages_per_post: int = Field(default=5, ge=1)
    page_size: int = Field(default=100, ge=1, le=100)
    thread_depth: int = Field(default=6, ge=1, le=1000)
    like_weight: float = 1.0
    repost_weight: float = 2.0
    reply_weight: float = 3.0


class GrowthActionsConfig(_Config):
    """Actions on Bluesky for the engine's own account. Off by default; when enabled, still a
    dry run (report only) until ``dry_run`` is turned off."""

    enabled: bool = False
    dry_run: bool = True
    follow_back: bool = True
    like_mentions: bool = True
    max_follows_per_day: int = Field(default=50, ge=0)
    max_likes_per_day: int = Field(default=100, ge=0)
    mention_max_age_us: int = Field(default=2 * DAY_US, gt=0)
    max_pages: int = Field(default=1000, ge=1)
    """A safety bound on "all pages" of the follower and follow lists."""
    page_size: int = Field(default=100, ge=1, le=100)


class CrawlConfig(_Config):
    """Configuration of every crawl strategy and of the growth actions."""

    enrichment: EnrichmentConfig = EnrichmentConfig()
    snowball: SnowballConfig = SnowballConfig()
    search: SearchConfig = SearchConfig()
    interactions: InteractionsConfig = InteractionsConfig()
    actions: GrowthActionsConfig = GrowthActionsConfig()


# --- requests ------------------------------------------------------------------------------


def crawl_request_id(kind: str, *parts: str) -> str:
    """The deterministic id of a crawl request: a uuid5 of its kind and defining parts."""
    return uuid5_string("crawl-request|" + "|".join((kind, *parts)))


@_frozen
class CrawlRequest:
    """Base of the crawl requests. ``requested_at_us`` and ``origin`` (why it was made, for
    people) are not part of the id."""

    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1

    id: str
    requested_at_us: int
    origin: str


@_frozen
class EnrichProfile(CrawlRequest):
    """Fetch the profile of ``did`` (the runtime batches these 25 a call). ``refresh_after_us``:
    how old a fetched profile may be before it is fetched again, when the request says
    (``bge crawl profiles --stale-after``); else the configuration's."""

    schema_name: ClassVar[str] = "EnrichProfile"
    did: str
    refresh_after_us: int | None = None


@_frozen
class SnowballParams:
    """The bounds of one snowball crawl, fixed when it starts (see :class:`SnowballConfig`)."""

    max_degree: int
    max_users: int
    min_followers: int
    max_followers: int | None
    pages_per_user: int
    page_size: int


@_frozen
class StartSnowball(CrawlRequest):
    """Start a snowball crawl from ``seeds`` (handles or DIDs); its id is the crawl's id."""

    schema_name: ClassVar[str] = "StartSnowball"
    seeds: tuple[str, ...]
    params: SnowballParams


@_frozen
class ExpandSnowball(CrawlRequest):
    """One breadth-first step of crawl ``crawl_id``: list the followers and follows of ``did``
    (at ``degree`` from ``seed``) and judge the accounts not seen yet in this crawl."""

    schema_name: ClassVar[str] = "ExpandSnowball"
    crawl_id: str
    did: str
    handle: str
    degree: int
    seed: str
    params: SnowballParams


@_frozen
class SearchPopular(CrawlRequest):
    """Search posts for ``query`` (up to ``max_pages`` pages); authors of posts with at least
    ``min_likes`` likes are candidates."""

    schema_name: ClassVar[str] = "SearchPopular"
    query: str
    min_likes: int
    max_pages: int
    page_size: int
    sort: str


@_frozen
class CollectInteractions(CrawlRequest):
    """Everyone who liked, reposted or replied to the recent posts of ``actor``."""

    schema_name: ClassVar[str] = "CollectInteractions"
    actor: str
    max_posts: int
    pages_per_post: int
    page_size: int
    thread_depth: int


@_frozen
class CollectGraph(CrawlRequest):
    """Read the follower and follow lists of ``did`` (up to ``max_pages`` pages each) and turn
    the edges into events (:func:`observed_graph`): the graph's base for accounts the firehose
    has not shown following or being followed."""

    schema_name: ClassVar[str] = "CollectGraph"
    did: str
    max_pages: int
    page_size: int


@_frozen
class RunGrowthActions(CrawlRequest):
    """Run the growth actions named (``follow_back``, ``like_mentions``) once for ``run``
    (a label such as the day)."""

    schema_name: ClassVar[str] = "RunGrowthActions"
    actions: tuple[str, ...]
    run: str


REQUEST_TYPES: tuple[type[CrawlRequest], ...] = (
    EnrichProfile,
    StartSnowball,
    ExpandSnowball,
    SearchPopular,
    CollectInteractions,
    CollectGraph,
    RunGrowthActions,
)
_REQUEST_SCHEMAS = {(t.schema_name, t.schema_version): t for t in REQUEST_TYPES}
R = TypeVar("R", bound=CrawlRequest)


def encode_request(request: CrawlRequest) -> bytes:
    """JSON bytes ``{"schema": ..., "version": ..., <fields>}`` of a crawl request."""
    head = orjson.dumps({"schema": request.schema_name, "version": request.schema_version})
    return head[:-1] + b"," + orjson.dumps(request)[1:]


@lru_cache(maxsize=None)
def _adapter(request_type: type[R]) -> TypeAdapter[R]:
    return TypeAdapter(request_type)


def decode_request(raw: bytes) -> Result[CrawlRequest, Rejection]:
    """Read bytes written by :func:`encode_request`. Failures: ``invalid_json``,
    ``unknown_schema``, ``invalid_domain_event`` (fields that do not validate). Never raises."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        return Failure(Rejection(RejectionCode.INVALID_JSON, f"not JSON: {error}"))
    if not isinstance(data, dict):
        return Failure(Rejection(RejectionCode.INVALID_JSON, "a crawl request is a JSON object"))
    schema, version = data.pop("schema", None), data.pop("version", None)
    request_type = _REQUEST_SCHEMAS.get((schema, version)) if isinstance(schema, str) and type(version) is int else None
    if request_type is None:
        return Failure(Rejection(RejectionCode.UNKNOWN_SCHEMA,
                                 f"unknown crawl request {str(schema)[:80]!r} version {str(version)[:20]}"))
    try:
        return Success(_adapter(request_type).validate_python(data))
    except ValidationError as error:
        return Failure(Rejection(RejectionCode.INVALID_DOMAIN_EVENT,
                                 f"crawl request {schema}: {describe_validation_error(error)}"))


def _params_key(params: Any) -> str:
    return orjson.dumps(params, option=orjson.OPT_SORT_KEYS).decode()


def snowball_params(config: SnowballConfig) -> SnowballParams:
    return SnowballParams(**config.model_dump())


def snowball_request(seeds: Iterable[str], config: SnowballConfig, *, label: str, requested_at_us: int,
                     origin: str = "operator") -> StartSnowball:
    """A snowball crawl from ``seeds``; the same seeds, bounds and ``label`` give the same crawl."""
    unique = tuple(dict.fromkeys(seed.strip().lstrip("@").lower() if not seed.startswith("did:") else seed
                                 for seed in seeds if seed.strip()))
    params = snowball_params(config)
    return StartSnowball(id=crawl_request_id("StartSnowball", label, ",".join(unique), _params_key(params)),
                         requested_at_us=requested_at_us, origin=origin, seeds=unique, params=params)


def expansion_request(crawl_id: str, did: str, handle: str, degree: int, seed: str, params: SnowballParams, *,
                      requested_at_us: int, parent_id: str) -> ExpandSnowball:
    """The step expanding ``did`` in crawl ``crawl_id``: one per account per crawl."""
    return ExpandSnowball(id=crawl_request_id("ExpandSnowball", crawl_id, did), requested_at_us=requested_at_us,
                          origin=f"crawl {parent_id}", crawl_id=crawl_id, did=did, handle=handle, degree=degree,
                          seed=seed, params=params)


def search_requests(config: SearchConfig, *, label: str, requested_at_us: int,
                    origin: str = "operator") -> tuple[SearchPopular, ...]:
    """One search request per configured query."""
    return tuple(
        SearchPopular(id=crawl_request_id("SearchPopular", label, query, str(config.min_likes), str(config.max_pages),
                                          str(config.page_size), config.sort),
                      requested_at_us=requested_at_us, origin=origin, query=query, min_likes=config.min_likes,
                      max_pages=config.max_pages, page_size=config.page_size, sort=config.sort)
        for query in dict.fromkeys(config.queries)
    )


def interactions_request(actor: str, config: InteractionsConfig, *, label: str, requested_at_us: int,
                         origin: str = "operator") -> CollectInteractions:
    """Collect the interactions with the recent posts of ``actor`` (handle or DID)."""
    params = (config.max_posts, config.pages_per_post, config.page_size, config.thread_depth)
    return CollectInteractions(id=crawl_request_id("CollectInteractions", label, actor, *map(str, params)),
                               requested_at_us=requested_at_us, origin=origin, actor=actor,
                               max_posts=config.max_posts, pages_per_post=config.pages_per_post,
                               page_size=config.page_size, thread_depth=config.thread_depth)


def profile_requests(dids: Iterable[str], *, label: str, refresh_after_us: int, requested_at_us: int,
                     origin: str = "operator") -> tuple[EnrichProfile, ...]:
    """Fetch the profiles of ``dids`` that are older than ``refresh_after_us`` (``bge crawl
    profiles``); the same accounts and ``label`` give the same requests."""
    return tuple(EnrichProfile(id=crawl_request_id("EnrichProfile", did, f"label:{label}"), requested_at_us=requested_at_us,
                               origin=origin, did=did, refresh_after_us=refresh_after_us)
                 for did in dict.fromkeys(dids))


def graph_requests(dids: Iterable[str], *, label: str, max_pages: int, page_size: int, requested_at_us: int,
                   origin: str = "operator") -> tuple[CollectGraph, ...]:
    """Read the follower and follow lists of each of ``dids`` (``bge crawl graph``)."""
    return tuple(CollectGraph(id=crawl_request_id("CollectGraph", did, label, str(max_pages), str(page_size)),
                              requested_at_us=requested_at_us, origin=origin, did=did, max_pages=max_pages,
                              page_size=page_size)
                 for did in dict.fromkeys(dids))


def growth_actions_request(actions: Iterable[str], *, run: str, requested_at_us: int,
                           origin: str = "operator") -> RunGrowthActions:
    """Run ``actions`` once for ``run`` (e.g. ``2026-07-04`` for a daily run)."""
    names = tuple(sorted(set(actions)))
    unknown = set(names) - {FOLLOW_BACK, LIKE_MENTIONS}
    if unknown:
        raise ValueError(f"unknown growth actions: {', '.join(sorted(unknown))}")
    return RunGrowthActions(id=crawl_request_id("RunGrowthActions", run, *names), requested_at_us=requested_at_us,
                            origin=origin, actions=names, run=run)


# --- results as domain events ----------------------------------------------------------------


def crawl_source(request_id: str, did: str, time_us: int, coordinates: SourceCoordinates | None = None) -> Source:
    """The :class:`Source` of events derived from crawl request ``request_id`` about ``did``,
    fetched at ``time_us``. The id (``crawl|<request id>``) excludes the time, so events
    re-derived when a request is executed again keep their ids."""
    return Source(
        id=f"crawl|{request_id}",
        kind=CRAWL_SOURCE_KIND,
        did=did,
        time_us=time_us,
        topic=coordinates.topic if coordinates else None,
        partition=coordinates.partition if coordinates else None,
        offset=coordinates.offset if coordinates else None,
    )


def profile_enriched(profile: ProfileViewDetailed, source: Source) -> ProfileEnriched:
    """The :class:`ProfileEnriched` of ``profile`` fetched for the request of ``source``."""
    return ProfileEnriched.derive(
        source,
        discriminator=profile.did,
        did=profile.did,
        handle=profile.handle,
        display_name=profile.display_name,
        description=profile.description,
        avatar=profile.avatar,
        banner=profile.banner,
        followers_count=profile.followers_count,
        follows_count=profile.follows_count,
        posts_count=profile.posts_count,
        created_at=profile.created_at,
        indexed_at=profile.indexed_at,
        labels=tuple(dict.fromkeys(label.val for label in profile.labels if not label.neg)),
    )


T = TypeVar("T")


def batches(items: Sequence[T], size: int = MAX_PROFILES_PER_CALL) -> list[tuple[T, ...]]:
    """``items`` in consecutive chunks of at most ``size``."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    return [tuple(items[i:i + size]) for i in range(0, len(items), size)]


# --- profile enrichment --------------------------------------------------------------------


def is_fresh(fetched_at_us: int | None, now_us: int, config: EnrichmentConfig, refresh_after_us: int | None = None) -> bool:
    """True when a profile fetched at ``fetched_at_us`` needs no fetch at ``now_us`` (fresher
    than ``refresh_after_us``, or the configuration's period)."""
    period = config.refresh_after_us if refresh_after_us is None else refresh_after_us
    return fetched_at_us is not None and now_us - fetched_at_us < period


def enrichment_decision(seen: UserSeen, requested_at_us: int | None,
                        config: EnrichmentConfig) -> Result[EnrichProfile, Declined]:
    """Whether a sighting of an account calls for a profile fetch: not when enrichment is off
    or a fetch was requested within ``refresh_after_us`` of the sighting. The request's id
    depends on the account and the refresh period of the sighting, so sightings within one
    period (and replays of them) make the same request."""
    if not config.enabled:
        return Failure(Declined(PROFILE_ENRICHMENT, "disabled", "profile enrichment is off"))
    if is_fresh(requested_at_us, seen.time_us, config):
        return Failure(Declined(PROFILE_ENRICHMENT, "fresh", f"requested at {requested_at_us}"))
    period = seen.time_us // config.refresh_after_us
    return Success(EnrichProfile(id=crawl_request_id("EnrichProfile", seen.did, str(period)),
                                 requested_at_us=seen.time_us, origin=f"UserSeen {seen.id}", did=seen.did))


def profiles_to_fetch(requests: Sequence[EnrichProfile], fetched: Mapping[str, int], now_us: int,
                      config: EnrichmentConfig) -> tuple[tuple[EnrichProfile, ...], tuple[tuple[EnrichProfile, Declined], ...]]:
    """The requests to execute now (the first per account whose profile is not fresh) and
    the others with why not. ``fetched``: when each account's profile was last fetched."""
    chosen: dict[str, EnrichProfile] = {}
    declined: list[tuple[EnrichProfile, Declined]] = []
    for request in requests:
        if request.did in chosen:
            declined.append((request, Declined(PROFILE_ENRICHMENT, "duplicate", "already in this batch")))
        elif is_fresh(fetched.get(request.did), now_us, config, request.refresh_after_us):
            declined.append((request, Declined(PROFILE_ENRICHMENT, "fresh", f"fetched at {fetched[request.did]}")))
        else:
            chosen[request.did] = request
    return tuple(chosen.values()), tuple(declined)


# --- snowball --------------------------------------------------------------------------------


@_frozen
class Neighbour:
    """An account found in the follower or follow list of the account being expanded."""

    did: str
    handle: str
    follows_parent: bool = False
    """It is in the parent's follower list (it follows the parent)."""
    followed_by_parent: bool = False
    """It is in the parent's follow list."""


def new_neighbours(parent_did: str, followers: Iterable[ProfileView], follows: Iterable[ProfileView],
                   known: Set[str]) -> list[Neighbour]:
    """Followers then follows of the parent, each account once (in first-seen order), without
    the parent and the accounts this crawl already judged (``known``)."""
    found: dict[str, Neighbour] = {}
    for profile in followers:
        if profile.did != parent_did and profile.did not in known:
            current = found.get(profile.did) or Neighbour(did=profile.did, handle=profile.handle)
            found[profile.did] = Neighbour(did=current.did, handle=current.handle, follows_parent=True,
                                           followed_by_parent=current.followed_by_parent)
    for profile in follows:
        if profile.did != parent_did and profile.did not in known:
            current = found.get(profile.did) or Neighbour(did=profile.did, handle=profile.handle)
            found[profile.did] = Neighbour(did=current.did, handle=current.handle,
                                           follows_parent=current.follows_parent, followed_by_parent=True)
    return list(found.values())


def follower_bounds(profile: ProfileViewDetailed, params: SnowballParams) -> Result[ProfileViewDetailed, Declined]:
    """Keep an account whose real follower count lies within ``[min_followers, max_followers]``."""
    count = profile.followers_count
    if count is None:
        return Failure(Declined(SNOWBALL, "no_count", f"{profile.handle}: the AppView gave no follower count"))
    if count < params.min_followers:
        return Failure(Declined(SNOWBALL, "too_few_followers", f"{profile.handle}: {count} < {params.min_followers}"))
    if params.max_followers is not None and count > params.max_followers:
        return Failure(Declined(SNOWBALL, "too_many_followers", f"{profile.handle}: {count} > {params.max_followers}"))
    return Success(profile)


FOLLOWERS, FOLLOWS = "followers", "follows"
"""The two lists of an account a crawl reads: who follows it, whom it follows."""


@_frozen
class GraphChange:
    """What one read of an account's list changed in the crawl's memory of it: the edges seen
    for the first time (``FollowObserved``) and those gone from a list read whole (``FollowLost``)."""

    observed: tuple[FollowObserved, ...]
    lost: tuple[FollowLost, ...]

    @property
    def events(self) -> tuple[DomainEvent, ...]:
        return (*self.observed, *self.lost)


def observed_graph(owner: str, direction: str, listed: Iterable[str], complete: bool, known: Set[str],
                   source: Source) -> GraphChange:
    """The edges of ``owner``'s list ``direction`` (:data:`FOLLOWERS` or :data:`FOLLOWS`) read
    now (``listed``: the other accounts) against those the crawl saw before (``known``). Only a
    ``complete`` read (every page) can tell an edge is gone. Each edge is ``follower →
    followed``: a follower list's edges end at ``owner``, a follow list's start there."""
    if direction not in (FOLLOWERS, FOLLOWS):
        raise ValueError(f"direction must be {FOLLOWERS!r} or {FOLLOWS!r}, got {direction!r}")
    now = set(listed) - {owner}

    def edge(other: str) -> tuple[str, str]:
        return (other, owner) if direction == FOLLOWERS else (owner, other)

    observed = tuple(FollowObserved.derive(source, f"{follower}>{followed}", did=follower, subject_did=followed)
                     for follower, followed in map(edge, sorted(now - known)))
    lost = tuple(FollowLost.derive(source, f"{follower}>{followed}", did=follower, subject_did=followed)
                 for follower, followed in map(edge, sorted(known - now))) if complete else ()
    return GraphChange(observed=observed, lost=lost)


@_frozen
class Discovery:
    """What a crawl decided about one account it reached: kept (a candidate) or not."""

    did: str
    degree: int
    accepted: bool
    reason: str


@_frozen
class SnowballStep:
    """What one expansion decided: candidates, the next expansions, every account judged
    (to remember, so no account is judged twice in a crawl), and the profiles' events."""

    candidates: tuple[CandidateFound, ...]
    expansions: tuple[ExpandSnowball, ...]
    discoveries: tuple[Discovery, ...]
    profiles: tuple[ProfileEnriched, ...]


def _relation(neighbour: Neighbour, parent_handle: str) -> str:
    if neighbour.follows_parent and neighbour.followed_by_parent:
        return f"follows and is followed by {parent_handle}"
    return f"follows {parent_handle}" if neighbour.follows_parent else f"followed by {parent_handle}"


def snowball_step(request: ExpandSnowball, neighbours: Sequence[Neighbour],
                  profiles: Mapping[str, ProfileViewDetailed], accepted_so_far: int, source: Source,
                  now_us: int) -> SnowballStep:
    """Judge the new ``neighbours`` of ``request.did`` (at ``degree + 1``) with their profiles.

    In order, each is kept while the crawl has kept fewer than ``max_users`` and its real
    follower count passes :func:`follower_bounds`; a kept account becomes a ``snowball``
    candidate (score ``1 / degree``) and, below ``max_degree``, is expanded next. An account
    without a profile (deleted, taken down) is not kept. ``source`` names the request (its
    ``did`` the parent account)."""
    params, degree = request.params, request.degree + 1
    candidates: list[CandidateFound] = []
    expansions: list[ExpandSnowball] = []
    discoveries: list[Discovery] = []
    enriched: list[ProfileEnriched] = []
    kept = accepted_so_far
    for neighbour in neighbours:
        profile = profiles.get(neighbour.did)
        if profile is None:
            discoveries.append(Discovery(did=neighbour.did, degree=degree, accepted=False, reason="no_profile"))
            continue
        enriched.append(profile_enriched(profile, source))
        if kept >= params.max_users:
            discoveries.append(Discovery(did=neighbour.did, degree=degree, accepted=False, reason="max_users"))
            continue
        match follower_bounds(profile, params):
            case Failure(declined):
                discoveries.append(Discovery(did=neighbour.did, degree=degree, accepted=False, reason=declined.code))
                continue
        kept += 1
        discoveries.append(Discovery(did=neighbour.did, degree=degree, accepted=True, reason="kept"))
        bounds = f"{params.min_followers}-{params.max_followers if params.max_followers is not None else 'any'}"
        reasons = (
            _relation(neighbour, request.handle),
            f"degree {degree} of the snowball from {request.seed}",
            f"{profile.followers_count} followers (bounds {bounds})",
        )
        candidates.append(candidate(source, SNOWBALL, profile.did, 1.0 / degree, reasons))
        if degree < params.max_degree:
            expansions.append(expansion_request(request.crawl_id, profile.did, profile.handle, degree, request.seed,
                                                params, requested_at_us=now_us, parent_id=request.id))
    return SnowballStep(candidates=tuple(candidates), expansions=tuple(expansions),
                        discoveries=tuple(discoveries), profiles=tuple(enriched))


# --- popular search ------------------------------------------------------------------------


def popular_search_candidates(request: SearchPopular, posts: Iterable[PostView],
                              time_us: int) -> Result[tuple[CandidateFound, ...], Declined]:
    """Authors of posts with at least ``min_likes`` likes, one candidate per author: scored by
    their most-liked post (the candidate's ``subject_uri``), with every such post as a reason."""
    seen: set[str] = set()
    popular: dict[str, list[PostView]] = {}
    for post in posts:
        if post.uri in seen:
            continue
        seen.add(post.uri)
        if (post.like_count or 0) >= request.min_likes:
            popular.setdefault(post.author.did, []).append(post)
    if not popular:
        return Failure(Declined(POPULAR_SEARCH, "below_threshold",
                                f"no post of {len(seen)} for {request.query!r} has {request.min_likes} likes"))
    found = []
    for did, author_posts in popular.items():
        author_posts.sort(key=lambda p: (-(p.like_count or 0), p.uri))
        best = author_posts[0]
        reasons = tuple(
            f"{p.uri}: {p.like_count or 0} likes, {p.repost_count or 0} reposts (search {request.query!r})"
            for p in author_posts[:5]
        )
        source = crawl_source(request.id, did, time_us)
        found.append(candidate(source, POPULAR_SEARCH, did, float(best.like_count or 0), reasons, best.uri))
    return Success(tuple(found))


# --- post interactions -----------------------------------------------------------------------


def recent_posts(feed: Iterable[FeedViewPost], actor_did: str, max_posts: int) -> list[PostView]:
    """The actor's own posts in its author feed (not its reposts of others), each once, at most
    ``max_posts``, in feed order (newest first, a pinned post where the feed put it)."""
    posts: dict[str, PostView] = {}
    for item in feed:
        if item.is_repost or item.post.author.did != actor_did or item.post.uri in posts:
            continue
        posts[item.post.uri] = item.post
        if len(posts) >= max_posts:
            break
    return list(posts.values())


InteractionKind = Literal["like", "repost", "reply"]


@_frozen
class Interaction:
    """``did`` (``handle``) liked, reposted or replied to the post ``post_uri``."""

    did: str
    handle: str
    kind: InteractionKind
    post_uri: str


_VERB = {"like": "liked", "repost": "reposted", "reply": "replied to"}


def interaction_candidates(request: CollectInteractions, actor_did: str, interactions: Iterable[Interaction],
                           config: InteractionsConfig, time_us: int) -> Result[tuple[CandidateFound, ...], Declined]:
    """Everyone who interacted with the actor's posts (the actor excepted), one candidate per
    account scored by the weighted sum of its interactions, each interaction a reason."""
    weights = {"like": config.like_weight, "repost": config.repost_weight, "reply": config.reply_weight}
    by_did: dict[str, list[Interaction]] = {}
    keys: set[tuple[str, str, str]] = set()
    for item in interactions:
        key = (item.did, item.kind, item.post_uri)
        if item.did == actor_did or key in keys:
            continue
        keys.add(key)
        by_did.setdefault(item.did, []).append(item)
    if not by_did:
        return Failure(Declined(POST_INTERACTIONS, "no_interaction", f"nobody interacted with {request.actor}'s posts"))
    source = crawl_source(request.id, actor_did, time_us)
    return Success(tuple(
        candidate(source, POST_INTERACTIONS, did, sum(weights[i.kind] for i in items),
                  tuple(f"{_VERB[i.kind]} {i.post_uri}" for i in items), items[0].post_uri)
        for did, items in by_did.items()
    ))


# --- growth actions --------------------------------------------------------------------------


ActionName = Literal["follow", "like"]


@_frozen
class PlannedAction:
    """One action to take: ``follow`` the account ``subject`` (a DID) or ``like`` the post
    ``subject`` (an at-uri, with its ``subject_cid``). ``(action, subject)`` is unique: the
    runtime records it and never takes it twice."""

    action: ActionName
    subject: str
    subject_did: str
    reason: str
    subject_cid: str | None = None


def day_start_us(now_us: int) -> int:
    """The start (00:00 UTC) of the day of ``now_us``: daily caps count from there."""
    return now_us - now_us % DAY_US


def plan_follow_back(self_did: str, followers: Iterable[ProfileView], follows: Iterable[ProfileView],
                     done: Set[str], remaining: int) -> tuple[PlannedAction, ...]:
    """Follow back the followers not followed yet: not in ``follows`` (ALL its pages), not
    followed per the viewer state, not blocked either way, not ourselves, not already
    recorded (``done``), at most ``remaining`` (what the daily cap leaves), in list order."""
    followed = {profile.did for profile in follows}
    planned: dict[str, PlannedAction] = {}
    for profile in followers:
        if len(planned) >= remaining:
            break
        viewer = profile.viewer
        if (profile.did == self_did or profile.did in followed or profile.did in done or profile.did in planned
                or (viewer is not None and (viewer.following or viewer.blocking or viewer.blocked_by))):
            continue
        planned[profile.did] = PlannedAction(action="follow", subject=profile.did, subject_did=profile.did,
                                             reason=f"{profile.handle} follows us and we do not follow them")
    return tuple(planned.values())


def _time_us(iso: str) -> int | None:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def plan_like_mentions(self_did: str, notifications: Iterable[Notification], done: Set[str], remaining: int,
                       now_us: int, max_age_us: int) -> tuple[PlannedAction, ...]:
    """Like the posts mentioning us that are at most ``max_age_us`` old (by ``indexedAt``),
    not by ourselves, not already recorded (``done``), at most ``remaining``, newest first."""
    planned: dict[str, PlannedAction] = {}
    for item in notifications:
        if len(planned) >= remaining:
            break
        if item.reason != "mention" or item.author.did == self_did or item.uri in done or item.uri in planned:
            continue
        indexed = _time_us(item.indexed_at)
        if indexed is None or now_us - indexed > max_age_us:
            continue
        planned[item.uri] = PlannedAction(action="like", subject=item.uri, subject_did=item.author.did,
                                          subject_cid=item.cid, reason=f"{item.author.handle} mentioned us")
    return tuple(planned.values())


def growth_action_event(action: PlannedAction, self_did: str, record_uri: str, time_us: int) -> GrowthActionTaken:
    """The :class:`GrowthActionTaken` of an action taken (its id: the action and subject)."""
    source = Source(id=f"crawl|action|{action.action}|{action.subject}", kind=CRAWL_SOURCE_KIND, did=self_did,
                    time_us=time_us)
    return GrowthActionTaken.derive(source, action=action.action, subject_did=action.subject_did,
                                    subject_uri=action.subject if action.action == "like" else None,
                                    record_uri=record_uri, reason=action.reason)
