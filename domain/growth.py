"""Growth strategies: which accounts are worth growing towards, and why.

Each strategy is a pure function of the domain events of one source event (a
:class:`~domain.collection.Collected`), its configuration and, for the stateful ones, the part
of the state it needs; time enters as ``now_us``. It answers with a :data:`Decision`:
``Success((CandidateFound, ...))`` or ``Failure(Declined(...))`` saying why it found nobody
(a value for the replay tool to show, not an error).

- ``engagement_with_targets``: the actor liked, reposted, replied to, quoted, mentioned or
  followed one of the configured target accounts.
- ``newcomers``: the actor introduced themselves (``#introduction``, ``#newhere``, ...), created
  their profile, or was seen for the first time. Stateful: :class:`AccountMemory` per actor DID.
- ``interests``: a post matching configured keywords or hashtags (optionally in configured
  languages) makes its author a candidate.
- ``popular_content``: a post whose weighted engagement within a sliding window passes a
  threshold makes its author a candidate. Stateful: :class:`EngagementWindow` per post at-uri.

State is keyed so the runtime can keep it in key-value tables: the strategies read what they
need and return only what changed (:class:`StateChanges`); each value is bounded in size.
``AccountMemory`` is keyed like the raw topic (the actor DID), so it is co-partitioned with it.
``EngagementWindow`` is keyed by post: a runtime consuming the raw topic partitioned by actor
sees, per partition, only that partition's share of a post's engagement, so it should either
hold the windows where all of a post's engagement meets (re-key by ``subject_uri``) or scale
``threshold`` to its partition count. Removals (unlike, un-repost, deleted reply) are not
subtracted from windows: their delete commits do not say which post they concerned.

One module of about 700 lines: the strategies share their configuration, state and decision types;
each strategy is one function of a few dozen lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import field
from datetime import UTC, datetime
from functools import lru_cache, partial
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator
from returns.result import Failure, Result, Success, safe

from domain.collection import Collected
from domain.enrichment import POST_COLLECTION, normalise_hashtag, primary_language
from domain.events import (
    AccountStatusChanged,
    CandidateFound,
    FollowAdded,
    LikeAdded,
    PostCreated,
    PostEnriched,
    ProfileUpdated,
    QuoteAdded,
    ReplyAdded,
    RepostAdded,
    UserSeen,
)
from domain.identity import Source
from domain.rejections import Rejection, RejectionCode, describe_validation_error
from domain.syntax import Did
from domain.values import value

ENGAGEMENT_WITH_TARGETS = "engagement_with_targets"
NEWCOMERS = "newcomers"
INTERESTS = "interests"
POPULAR_CONTENT = "popular_content"
STRATEGIES: tuple[str, ...] = (ENGAGEMENT_WITH_TARGETS, NEWCOMERS, INTERESTS, POPULAR_CONTENT)


@value
class Declined:
    """Why a strategy found no candidate in an event: a stable ``code`` and a message."""

    strategy: str
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.strategy} declined ({self.code}): {self.message}"


Decision = Result[tuple[CandidateFound, ...], Declined]
"""``Success`` with the candidates found (at least one), or ``Failure`` with the reason."""


def candidate(source: Source, strategy: str, did: str, score: float, reasons: tuple[str, ...], subject_uri: str | None = None) -> CandidateFound:
    """The ``CandidateFound`` of ``strategy`` for ``did``; its id is unique per source event,
    strategy, candidate and subject."""
    return CandidateFound.derive(
        source,
        discriminator=f"{strategy}|{did}|{subject_uri or ''}",
        did=did,
        strategy=strategy,
        score=round(score, 6),
        reasons=reasons,
        subject_uri=subject_uri,
    )


# --- configuration -------------------------------------------------------------------------


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _normalised_tags(values: frozenset[str]) -> frozenset[str]:
    return frozenset(tag for tag in (normalise_hashtag(value) for value in values) if tag)


def normalise_text(text: str) -> str:
    """Text as keywords are matched against it: NFC, case-folded."""
    return unicodedata.normalize("NFC", text).casefold()


class EngagementWithTargetsConfig(_Config):
    """Who the targets are and how much each kind of interaction with them weighs."""

    enabled: bool = True
    targets: frozenset[Did] = frozenset()
    like_weight: float = 1.0
    repost_weight: float = 2.0
    reply_weight: float = 3.0
    quote_weight: float = 3.0
    mention_weight: float = 2.0
    follow_weight: float = 4.0


DEFAULT_INTRO_HASHTAGS = frozenset(
    {"introduction", "introductions", "introducingmyself", "newhere", "newtobluesky", "newtobsky", "hellobluesky", "firstpost"}
)


class NewcomersConfig(_Config):
    """Signals of a new account and their scores.

    Bare first sightings are reported only for events at or after ``first_seen_from_us``
    (``None``: never), because right after the memory starts every account looks new; set it
    to the time the runtime's account memory started plus the warm-up you trust.
    """

    enabled: bool = True
    intro_hashtags: frozenset[str] = DEFAULT_INTRO_HASHTAGS
    intro_score: float = 1.0
    profile_created_score: float = 0.6
    first_seen_score: float = 0.3
    first_seen_from_us: int | None = None

    _normalise_tags = field_validator("intro_hashtags")(_normalised_tags)


class InterestsConfig(_Config):
    """Keywords (matched as whole words, case-insensitively) and hashtags of interest;
    ``languages`` (primary subtags such as ``en``), when not empty, restricts to posts in them."""

    enabled: bool = True
    keywords: tuple[str, ...] = ()
    hashtags: frozenset[str] = frozenset()
    languages: frozenset[str] = frozenset()
    keyword_score: float = 1.0
    hashtag_score: float = 1.0

    _normalise_tags = field_validator("hashtags")(_normalised_tags)

    @field_validator("keywords")
    @classmethod
    def _normalise_keywords(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(word for word in (normalise_text(v).strip() for v in values) if word))

    @field_validator("languages")
    @classmethod
    def _normalise_languages(cls, values: frozenset[str]) -> frozenset[str]:
        return frozenset(lang for lang in (primary_language(v) for v in values) if lang)


class PopularContentConfig(_Config):
    """Sliding window (``window_us`` in ``bucket_us`` steps) and the weighted engagement a post
    must reach within it. Self-engagement does not count."""

    enabled: bool = True
    window_us: int = Field(default=3_600_000_000, gt=0)
    bucket_us: int = Field(default=300_000_000, gt=0)
    threshold: float = Field(default=50.0, gt=0)
    like_weight: float = 1.0
    repost_weight: float = 2.0
    reply_weight: float = 2.0
    quote_weight: float = 3.0

    @model_validator(mode="after")
    def _bucket_fits_window(self) -> PopularContentConfig:
        if self.bucket_us > self.window_us:
            raise ValueError("bucket_us must not exceed window_us")
        return self


class StrategyConfig(_Config):
    """Configuration of every growth strategy (a disabled strategy is not run)."""

    engagement_with_targets: EngagementWithTargetsConfig = EngagementWithTargetsConfig()
    newcomers: NewcomersConfig = NewcomersConfig()
    interests: InterestsConfig = InterestsConfig()
    popular_content: PopularContentConfig = PopularContentConfig()


# --- state ---------------------------------------------------------------------------------


_state = value(kw_only=True)


@_state
class AccountMemory:
    """What ``newcomers`` remembers of one account (key: its DID). Constant size; written only
    when an account is first seen or reported, not on every event."""

    first_seen_us: int
    reported_score: float = 0.0
    """The best newcomer score reported for this account so far (0: never reported)."""


@_state
class EngagementBucket:
    """Engagement counts of one post in ``[start_us, start_us + bucket_us)``."""

    start_us: int
    likes: int = 0
    reposts: int = 0
    replies: int = 0
    quotes: int = 0


EngagementKind = Literal["likes", "reposts", "replies", "quotes"]


@_state
class EngagementWindow:
    """What ``popular_content`` remembers of one post (key: its at-uri): engagement counts in
    time buckets covering at most one window (so at most ``window_us / bucket_us + 1`` buckets)."""

    author_did: str
    buckets: tuple[EngagementBucket, ...] = ()
    reported_at_us: int | None = None


def encode_state(value: AccountMemory | EngagementWindow) -> bytes:
    """JSON bytes of a state value, for the runtime's tables (which keep them for as long as the
    key lives). The bytes are copied out of orjson's result: orjson 3.13 returns a bytes object
    that keeps its whole 4 KiB output buffer, so a table of 100-byte values held 40x their size
    (a collect worker grew by 200 MB over 300k events)."""
    return memoryview(orjson.dumps(value)).tobytes()


_ACCOUNT_MEMORY = TypeAdapter(AccountMemory).validator
_ENGAGEMENT_WINDOW = TypeAdapter(EngagementWindow).validator
"""pydantic-core's validators themselves: a state value is read on every event that touches its
key, and ``TypeAdapter.validate_json`` adds a Python call with its keyword checks to each."""


@safe(exceptions=(ValidationError,))
def _validate_state(validator: Any, raw: bytes) -> Any:
    return validator.validate_json(raw)


def _invalid_state(error: ValidationError) -> Rejection:
    return Rejection(RejectionCode.INVALID_STATE, describe_validation_error(error))


def decode_account_memory(raw: bytes) -> Result[AccountMemory, Rejection]:
    """Read an :class:`AccountMemory` written by :func:`encode_state`."""
    return _validate_state(_ACCOUNT_MEMORY, raw).alt(_invalid_state)


def decode_engagement_window(raw: bytes) -> Result[EngagementWindow, Rejection]:
    """Read an :class:`EngagementWindow` written by :func:`encode_state`."""
    return _validate_state(_ENGAGEMENT_WINDOW, raw).alt(_invalid_state)


@value
class StrategyState:
    """Read-only view of the strategies' keyed state.

    ``accounts``: :class:`AccountMemory` by actor DID (the raw topic's key, so co-partitioned).
    ``posts``: :class:`EngagementWindow` by post at-uri. Any ``Mapping`` works (a dict, a
    Faust table); the strategies never mutate it.
    """

    accounts: Mapping[str, AccountMemory] = field(default_factory=dict)
    posts: Mapping[str, EngagementWindow] = field(default_factory=dict)

    def apply(self, changes: StateChanges) -> StrategyState:
        """A new state with ``changes`` applied (copies: for replays and tests; a runtime
        updates its tables in place with the same changes)."""
        posts = {**self.posts, **changes.posts}
        return StrategyState(
            accounts={**self.accounts, **changes.accounts},
            posts={uri: window for uri, window in posts.items() if window is not None},
        )


@value
class StateChanges:
    """What one event changed: values to store by key (``None`` in ``posts``: forget the key)."""

    accounts: Mapping[str, AccountMemory] = field(default_factory=dict)
    posts: Mapping[str, EngagementWindow | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.accounts) or bool(self.posts)


NO_CHANGES = StateChanges()


# --- engagement_with_targets ---------------------------------------------------------------


@value
class Interaction:
    """One interaction of the actor with a target: its weight and a reason for people."""

    target: str
    weight: float
    reason: str


_INTERACTION_EVENTS = (LikeAdded, RepostAdded, ReplyAdded, QuoteAdded, PostEnriched, FollowAdded)


def interactions_with_targets(collected: Collected, config: EngagementWithTargetsConfig) -> list[Interaction]:
    """Every like, repost, reply, quote, mention and follow of a target in the event (an
    account engaging with itself does not count)."""
    targets, actor = config.targets, collected.source.did
    found: list[Interaction] = []
    for event in collected.events:
        if not isinstance(event, _INTERACTION_EVENTS):  # most events: one check instead of six
            continue
        if isinstance(event, LikeAdded):
            if event.subject_did in targets:
                found.append(Interaction(event.subject_did, config.like_weight, f"liked {event.subject_uri}"))
        elif isinstance(event, RepostAdded):
            if event.subject_did in targets:
                found.append(Interaction(event.subject_did, config.repost_weight, f"reposted {event.subject_uri}"))
        elif isinstance(event, ReplyAdded):
            if event.parent_did in targets:
                found.append(Interaction(event.parent_did, config.reply_weight, f"replied to {event.parent_uri}"))
            elif event.root_did in targets:
                found.append(Interaction(event.root_did, config.reply_weight, f"replied in the thread of {event.root_uri}"))
        elif isinstance(event, QuoteAdded) and event.subject_did in targets:
            found.append(Interaction(event.subject_did, config.quote_weight, f"quoted {event.subject_uri}"))
        elif isinstance(event, PostEnriched):
            found.extend(
                Interaction(did, config.mention_weight, f"mentioned {did} in {event.uri}")
                for did in event.mentions
                if did in targets
            )
        elif isinstance(event, FollowAdded) and event.subject_did in targets:
            found.append(Interaction(event.subject_did, config.follow_weight, f"followed {event.subject_did}"))
    if not found:
        return found
    return [interaction for interaction in found if interaction.target != actor]


_NO_TARGETS = Failure(Declined(ENGAGEMENT_WITH_TARGETS, "no_targets", "no target accounts configured"))
_ACTOR_IS_TARGET = Failure(Declined(ENGAGEMENT_WITH_TARGETS, "actor_is_target", "the actor is a target"))
_NO_INTERACTION = Failure(Declined(ENGAGEMENT_WITH_TARGETS, "no_interaction", "no interaction with a target"))


def require_targets(collected: Collected, config: EngagementWithTargetsConfig) -> Result[Collected, Declined]:
    """Decline when no targets are configured or the actor is one of them."""
    if not config.targets:
        return _NO_TARGETS
    if collected.source.did in config.targets:
        return _ACTOR_IS_TARGET
    return Success(collected)


def require_interactions(config: EngagementWithTargetsConfig, collected: Collected) -> Result[list[Interaction], Declined]:
    """Decline unless the actor interacted with a target."""
    found = interactions_with_targets(collected, config)
    return Success(found) if found else _NO_INTERACTION


def engagement_with_targets(collected: Collected, config: EngagementWithTargetsConfig) -> Decision:
    """The actor is a candidate, scored by the summed weights of its interactions with targets."""
    return (
        require_targets(collected, config)
        .bind(partial(require_interactions, config))
        .map(
            lambda found: (
                candidate(
                    collected.source,
                    ENGAGEMENT_WITH_TARGETS,
                    collected.source.did,
                    sum(i.weight for i in found),
                    tuple(f"{i.reason} (target {i.target})" for i in found),
                ),
            )
        )
    )


# --- interests -----------------------------------------------------------------------------


@value
class PostView:
    """The parts of a new post the content strategies read."""

    created: PostCreated
    enriched: PostEnriched


_NOT_A_NEW_POST = Failure(Declined(INTERESTS, "not_a_post", "not a new post"))
_NO_INTERESTS = Failure(Declined(INTERESTS, "no_interests", "no keywords or hashtags configured"))
_NO_LANGUAGE = Failure(Declined(INTERESTS, "language", "the post declares no language"))
_NO_MATCH = Failure(Declined(INTERESTS, "no_match", "no configured keyword or hashtag in the post"))


def find_new_post(collected: Collected) -> PostView | None:
    """The PostCreated and PostEnriched of the event, if it created a post."""
    created = enriched = None
    for event in collected.events:
        if isinstance(event, PostCreated):
            created = event
        elif isinstance(event, PostEnriched):
            enriched = event
    return PostView(created, enriched) if created is not None and enriched is not None else None


def require_new_post(collected: Collected, config: InterestsConfig) -> Result[PostView, Declined]:
    """Decline unless interests are configured and the event created a post."""
    if not config.keywords and not config.hashtags:
        return _NO_INTERESTS
    post = find_new_post(collected)
    return Success(post) if post is not None else _NOT_A_NEW_POST


def require_language(config: InterestsConfig, post: PostView) -> Result[PostView, Declined]:
    """Decline a post in none of the configured languages (any language when none are)."""
    if not config.languages:
        return Success(post)
    if not post.created.langs:
        return _NO_LANGUAGE
    if any(primary_language(lang) in config.languages for lang in post.created.langs):
        return Success(post)
    return Failure(Declined(INTERESTS, "language", f"languages {', '.join(post.created.langs)} not wanted"))


@lru_cache(maxsize=64)
def keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    """One regex finding any of ``keywords`` as whole words (in normalised text)."""
    alternatives = "|".join(re.escape(word) for word in sorted(keywords, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


@value
class InterestMatch:
    post: PostView
    keywords: tuple[str, ...]
    hashtags: tuple[str, ...]


def match_interests(config: InterestsConfig, post: PostView) -> Result[InterestMatch, Declined]:
    """The configured keywords in the text and hashtags on the post; decline when none."""
    keywords: tuple[str, ...] = ()
    if config.keywords:
        keywords = tuple(dict.fromkeys(keyword_pattern(config.keywords).findall(normalise_text(post.created.text))))
    hashtags = tuple(tag for tag in post.enriched.hashtags if tag in config.hashtags)
    if not keywords and not hashtags:
        return _NO_MATCH
    return Success(InterestMatch(post, keywords, hashtags))


def interest_candidate(source: Source, config: InterestsConfig, match: InterestMatch) -> tuple[CandidateFound, ...]:
    reasons = tuple(f"wrote {word!r} in {match.post.created.uri}" for word in match.keywords) + tuple(
        f"tagged #{tag} in {match.post.created.uri}" for tag in match.hashtags
    )
    score = config.keyword_score * len(match.keywords) + config.hashtag_score * len(match.hashtags)
    return (candidate(source, INTERESTS, match.post.created.did, score, reasons, match.post.created.uri),)


def interests(collected: Collected, config: InterestsConfig) -> Decision:
    """The author of a post matching configured keywords or hashtags is a candidate."""
    post = require_new_post(collected, config)
    if isinstance(post, Failure):
        return post  # most events create no post: declined before the rest of the railway is built
    return (
        post.bind(partial(require_language, config))
        .bind(partial(match_interests, config))
        .map(partial(interest_candidate, collected.source, config))
    )


# --- newcomers -----------------------------------------------------------------------------


_NO_ACTOR = Failure(Declined(NEWCOMERS, "not_applicable", "the event names no account"))
_INACTIVE = Failure(Declined(NEWCOMERS, "inactive", "the account is not active"))
_NO_SIGNAL = Failure(Declined(NEWCOMERS, "no_signal", "no sign of a new account"))


@value
class Signal:
    score: float
    reason: str


def _iso(time_us: int) -> str:
    return datetime.fromtimestamp(time_us // 1_000_000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_NEWCOMER_EVENTS = (PostEnriched, ProfileUpdated)


def newcomer_signals(collected: Collected, first_sighting: bool, config: NewcomersConfig) -> list[Signal]:
    """Introduction hashtags, a first profile write, and (after warm-up) a first sighting."""
    signals: list[Signal] = []
    for event in collected.events:
        if not isinstance(event, _NEWCOMER_EVENTS):
            continue
        if isinstance(event, PostEnriched):
            signals.extend(
                Signal(config.intro_score, f"posted #{tag} ({event.uri})")
                for tag in event.hashtags
                if tag in config.intro_hashtags
            )
        elif isinstance(event, ProfileUpdated) and event.source.operation == "create":
            signals.append(Signal(config.profile_created_score, "created their profile"))
    start = config.first_seen_from_us
    time_us = collected.source.time_us
    if first_sighting and start is not None and time_us >= start:
        signals.append(Signal(config.first_seen_score, f"first seen at {_iso(time_us)}"))
    return signals


def first_sighting(collected: Collected) -> UserSeen | None:
    """The event's ``UserSeen`` (``None`` when it names no account)."""
    for event in collected.events:
        if isinstance(event, UserSeen):
            return event
    return None


def is_inactive(collected: Collected) -> bool:
    """True for an account event saying the account is not active."""
    for event in collected.events:
        if isinstance(event, AccountStatusChanged) and not event.active:
            return True
    return False


def require_stronger_signal(memory: AccountMemory, signals: list[Signal]) -> Result[list[Signal], Declined]:
    """Decline without signals, or when the account was already reported with this score."""
    if not signals:
        return _NO_SIGNAL
    if max(signal.score for signal in signals) <= memory.reported_score:
        return Failure(Declined(NEWCOMERS, "already_reported", f"already reported with score {memory.reported_score}"))
    return Success(signals)


def newcomer_candidate(source: Source, signals: list[Signal]) -> tuple[CandidateFound, ...]:
    """The actor as a newcomer, scored by its strongest signal, with every signal as a reason."""
    score = max(signal.score for signal in signals)
    return (candidate(source, NEWCOMERS, source.did, score, tuple(signal.reason for signal in signals)),)


def newcomers(
    memory: AccountMemory | None, collected: Collected, config: NewcomersConfig
) -> tuple[AccountMemory | None, Decision]:
    """``(memory, event) → (new memory, decision)`` for the actor of ``collected``.

    The new memory is ``memory`` itself (the same object) when nothing changed, so the runtime
    writes only first sightings and reports.
    """
    seen = first_sighting(collected)
    if seen is None:
        return memory, _NO_ACTOR
    current = memory if memory is not None else AccountMemory(first_seen_us=seen.time_us)
    if is_inactive(collected):
        return current, _INACTIVE
    signals = newcomer_signals(collected, memory is None, config)
    decision = require_stronger_signal(current, signals)
    if isinstance(decision, Failure):
        return current, decision
    found = newcomer_candidate(collected.source, decision.unwrap())
    return AccountMemory(first_seen_us=current.first_seen_us, reported_score=found[0].score), Success(found)


# --- popular_content -----------------------------------------------------------------------


@value
class Engagement:
    """One engagement with a post: the post, its author and the kind of engagement."""

    post_uri: str
    author_did: str
    kind: EngagementKind


_NOT_ENGAGEMENT = Failure(Declined(POPULAR_CONTENT, "not_engagement", "no engagement with a post"))


_ENGAGEMENT_EVENTS = (LikeAdded, RepostAdded, ReplyAdded, QuoteAdded)


def engagements_of(collected: Collected) -> list[Engagement]:
    """Likes and reposts of posts, replies (to the parent) and quotes, except an account's
    engagement with its own posts."""
    actor = collected.source.did
    found: list[Engagement] = []
    for event in collected.events:
        if not isinstance(event, _ENGAGEMENT_EVENTS):
            continue
        if isinstance(event, (LikeAdded, RepostAdded)):
            if event.subject_collection == POST_COLLECTION:
                kind: EngagementKind = "likes" if isinstance(event, LikeAdded) else "reposts"
                found.append(Engagement(event.subject_uri, event.subject_did, kind))
        elif isinstance(event, ReplyAdded):
            found.append(Engagement(event.parent_uri, event.parent_did, "replies"))
        elif isinstance(event, QuoteAdded):
            found.append(Engagement(event.subject_uri, event.subject_did, "quotes"))
    return [engagement for engagement in found if engagement.author_did != actor]


def window_score(window: EngagementWindow, config: PopularContentConfig) -> float:
    """The weighted engagement of the window's buckets."""
    return sum(
        b.likes * config.like_weight
        + b.reposts * config.repost_weight
        + b.replies * config.reply_weight
        + b.quotes * config.quote_weight
        for b in window.buckets
    )


def add_engagement(
    window: EngagementWindow, kind: EngagementKind, time_us: int, now_us: int, config: PopularContentConfig
) -> EngagementWindow:
    """``window`` with one engagement of ``kind`` at ``time_us`` added and the buckets that
    ended before ``now_us - window_us`` dropped (an engagement that old is not added)."""
    horizon = now_us - config.window_us
    kept = [b for b in window.buckets if b.start_us + config.bucket_us > horizon]
    start = time_us - time_us % config.bucket_us
    if start + config.bucket_us > horizon:
        for index, bucket in enumerate(kept):
            if bucket.start_us == start:
                kept[index] = counted(bucket, kind)
                break
        else:
            kept.append(EngagementBucket(start_us=start, **{kind: 1}))
            kept.sort(key=lambda b: b.start_us)
    return EngagementWindow(author_did=window.author_did, buckets=tuple(kept), reported_at_us=window.reported_at_us)


def expired_windows(posts: Mapping[str, EngagementWindow], now_us: int, config: PopularContentConfig) -> list[str]:
    """The posts whose windows can be forgotten at ``now_us``: every bucket ended before the
    window's horizon and the last report (if any) is as old, so a window started afresh decides
    exactly as the old one would (:func:`add_engagement` would drop those buckets, and the report
    no longer holds back another). A value that does not decode (absent from ``posts.get``) goes too."""
    horizon = now_us - config.window_us
    gone = []
    for uri in posts:
        window = posts.get(uri)
        if window is None or (
            all(bucket.start_us + config.bucket_us <= horizon for bucket in window.buckets)
            and (window.reported_at_us is None or window.reported_at_us <= horizon)
        ):
            gone.append(uri)
    return gone


def counted(bucket: EngagementBucket, kind: EngagementKind) -> EngagementBucket:
    """``bucket`` with one more engagement of ``kind``."""
    counts = {"likes": bucket.likes, "reposts": bucket.reposts, "replies": bucket.replies, "quotes": bucket.quotes}
    counts[kind] += 1
    return EngagementBucket(start_us=bucket.start_us, **counts)


def _describe(window: EngagementWindow, config: PopularContentConfig) -> str:
    totals = {
        kind: sum(getattr(b, kind) for b in window.buckets) for kind in ("likes", "reposts", "replies", "quotes")
    }
    counts = ", ".join(f"{count} {kind}" for kind, count in totals.items() if count)
    return f"{counts} within {config.window_us // 60_000_000} min"


def popular_content(
    posts: Mapping[str, EngagementWindow], collected: Collected, now_us: int, config: PopularContentConfig
) -> tuple[dict[str, EngagementWindow], Decision]:
    """``(windows, event, now) → (changed windows, decision)``.

    Adds the event's engagements to the windows of the posts they concern; a post whose
    weighted engagement within the window reaches ``threshold`` makes its author a candidate,
    reported again at most once per window.
    """
    engagements = engagements_of(collected)
    if not engagements:
        return {}, _NOT_ENGAGEMENT
    changed: dict[str, EngagementWindow] = {}
    scores: dict[str, float] = {}
    found: list[CandidateFound] = []
    time_us = collected.source.time_us
    for engagement in engagements:
        uri = engagement.post_uri
        window = changed.get(uri) or posts.get(uri) or EngagementWindow(author_did=engagement.author_did)
        window = add_engagement(window, engagement.kind, time_us, now_us, config)
        score = window_score(window, config)
        recently_reported = window.reported_at_us is not None and now_us - window.reported_at_us < config.window_us
        if score >= config.threshold and not recently_reported:
            window = EngagementWindow(author_did=window.author_did, buckets=window.buckets, reported_at_us=now_us)
            reason = f"{uri}: {_describe(window, config)} (score {score:g} >= {config.threshold:g})"
            found.append(candidate(collected.source, POPULAR_CONTENT, window.author_did, score, (reason,), uri))
        changed[uri] = window
        scores[uri] = score  # the score of the window kept: the same buckets
    if found:
        return changed, Success(tuple(found))
    best = max(scores.values())
    return changed, Failure(
        Declined(POPULAR_CONTENT, "below_threshold", f"engagement score {best:g} below {config.threshold:g} or already reported")
    )


def expired_posts(posts: Mapping[str, EngagementWindow], now_us: int, config: PopularContentConfig) -> list[str]:
    """Keys of windows with no bucket left inside the window at ``now_us``: the runtime may
    forget them (their next engagement starts a fresh window)."""
    horizon = now_us - config.window_us
    return [
        uri
        for uri, window in posts.items()
        if all(b.start_us + config.bucket_us <= horizon for b in window.buckets)
    ]
