"""Domain events: what the product learned from one source event, as versioned JSON.

Every event has

- ``schema_name`` / ``schema_version`` (class attributes, written as ``"schema"`` and
  ``"version"`` in the JSON) so consumers dispatch on them and old bytes stay decodable;
- ``id``: deterministic, see :func:`domain.identity.domain_event_id` (the source event's id,
  the schema name and, when one source yields several events of one type, a discriminator);
- ``source``: the source event's identity, ``time_us`` and Kafka coordinates;
- ``did``: the account the event is about. **Partition key rule**: ``key`` is ``did``. For
  everything derived from a repository, identity or account event that is the acting repo's
  DID, as on the raw topic, so one account's events (a like and its deletion, a follow and its
  unfollow) stay in order. For :class:`CandidateFound` it is the candidate's DID, so the
  decisions about one candidate stay in order.

Removals (``*Removed``, :class:`PostDeleted`) come from delete commits, which carry no record:
they name the removed record by ``uri`` (``at://did/collection/rkey``) and projections find
the row, and what it counted, through it.

:func:`encode` writes one JSON form with orjson; :func:`decode` reads it back as a ``Result``.
:func:`encode_group` writes the events of one source event with one key as one value, the source
written once (``{"schema": "DomainEvents", "version": 1, "source": ..., "events": [...]}``): what
collect sends to ``growth.events``, one message per raw event and key (:func:`by_partition_key`).
:func:`decode_all` reads either form.

One module of about 800 lines: one frozen dataclass per domain event, their schema registry and
codec; most lines are the event declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any, ClassVar, Literal, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError
from returns.result import Failure, Result, Success, safe

from domain.identity import Source, domain_event_id
from domain.rejections import Rejection, RejectionCode, describe_validation_error
from domain.values import value

# Domain events and their values are frozen, slotted dataclasses: cheap to build on the hot
# path (see domain.values), serialised natively by orjson, validated by pydantic only when decoded.
_frozen = value(kw_only=True)

E = TypeVar("E", bound="DomainEvent")


@_frozen
class DomainEvent:
    """Base of all domain events. Subclasses set ``schema_name`` and ``schema_version``."""

    schema_name: ClassVar[str]
    schema_version: ClassVar[int] = 1

    id: str
    source: Source
    did: str

    @property
    def key(self) -> str:
        """The Kafka partition key (see the module docstring): ``did``."""
        return self.did

    @classmethod
    def derive(cls: type[E], source: Source, discriminator: str = "", **fields: Any) -> E:
        """Build the event of this type derived from ``source`` with its deterministic id.

        ``did`` defaults to the source event's DID (the acting account).
        """
        fields.setdefault("did", source.did)
        return cls(id=domain_event_id(source.id, cls.schema_name, discriminator), source=source, **fields)


# --- accounts ------------------------------------------------------------------------------


@_frozen
class UserSeen(DomainEvent):
    """The account ``did`` acted (any collected commit) or changed identity or status."""

    schema_name: ClassVar[str] = "UserSeen"
    time_us: int


@_frozen
class ActivityRecorded(DomainEvent):
    """One action by ``did``, at ``hour`` (0-23, UTC) of ``iso_weekday`` (1 = Monday .. 7).

    Projections add it to per-author counters (never overwrite them).
    """

    schema_name: ClassVar[str] = "ActivityRecorded"
    hour: int
    iso_weekday: int
    collection: str
    operation: str
    time_us: int


@_frozen
class HandleChanged(DomainEvent):
    """An identity event for ``did``. ``handle`` is ``None`` when the event carried none
    (the DID document changed, or the handle must be resolved again)."""

    schema_name: ClassVar[str] = "HandleChanged"
    handle: str | None
    seq: int
    time: str


@_frozen
class AccountStatusChanged(DomainEvent):
    """Hosting status of ``did``: ``active``, or why not (takendown, suspended, deleted,
    deactivated, desynchronized, throttled, or ``inactive`` when no status was given)."""

    schema_name: ClassVar[str] = "AccountStatusChanged"
    active: bool
    status: str
    seq: int
    time: str


# --- posts ---------------------------------------------------------------------------------


@_frozen
class RecordRef:
    """A reference to a record: its at-uri, repository DID, collection and CID."""

    uri: str
    did: str
    collection: str
    cid: str | None = None


@_frozen
class Thread:
    """Where a post sits in its thread. A top-level post is its own root at depth 0; a direct
    reply to the root has depth 1; deeper depths are unknown (``None``) from one record."""

    root_uri: str
    root_did: str
    parent_uri: str | None = None
    parent_did: str | None = None
    depth: int | None = None


@_frozen
class Link:
    """A link in a post: the full URI and its host (lowercase, without ``www.``)."""

    uri: str
    domain: str | None = None


MediaKind = Literal["image", "video", "external", "other"]


@_frozen
class Media:
    """One media item of a post's embed. ``embed_type`` is the lexicon it came from."""

    kind: MediaKind
    embed_type: str
    cid: str | None = None
    mime_type: str | None = None
    size: int | None = None
    alt: str | None = None
    width: int | None = None
    height: int | None = None
    uri: str | None = None
    domain: str | None = None
    title: str | None = None


@_frozen
class _PostFields(DomainEvent):
    uri: str
    rkey: str
    cid: str | None
    text: str
    created_at: str
    """As the client wrote it (may be anything)."""
    created_at_us: int | None
    """``created_at`` parsed as microseconds since the epoch, when it is a valid datetime."""
    langs: tuple[str, ...] = ()
    reply_root_uri: str | None = None
    reply_parent_uri: str | None = None
    quote_uri: str | None = None
    embed_type: str | None = None
    labels: tuple[str, ...] = ()


@_frozen
class PostCreated(_PostFields):
    schema_name: ClassVar[str] = "PostCreated"


@_frozen
class PostUpdated(_PostFields):
    schema_name: ClassVar[str] = "PostUpdated"


@_frozen
class _Removal(DomainEvent):
    """A delete commit: the record ``uri`` of ``did`` is gone."""

    uri: str
    rkey: str


@_frozen
class PostDeleted(_Removal):
    """Undo the post ``uri``: its row, and its reply and quote contributions to other posts."""

    schema_name: ClassVar[str] = "PostDeleted"


@_frozen
class PostEnriched(DomainEvent):
    """What a post's record says beyond its text (emitted on create and update)."""

    schema_name: ClassVar[str] = "PostEnriched"
    uri: str
    thread: Thread
    mentions: tuple[str, ...] = ()
    """DIDs of ``#mention`` facets, in order, without duplicates."""
    hashtags: tuple[str, ...] = ()
    """From ``#tag`` facets, the text and the record's ``tags``: lowercase NFC, no duplicates."""
    links: tuple[Link, ...] = ()
    media: tuple[Media, ...] = ()
    quote: RecordRef | None = None
    """The quoted post (``app.bsky.embed.record`` / ``recordWithMedia`` of a post)."""
    embedded_record: RecordRef | None = None
    """A non-post record shown as a card (feed generator, list, starter pack, labeler)."""
    langs: tuple[str, ...] = ()


# --- engagement ----------------------------------------------------------------------------


@_frozen
class _Engagement(DomainEvent):
    """``did`` engaged with the record ``subject_uri`` of ``subject_did`` via record ``uri``."""

    uri: str
    rkey: str
    subject_uri: str
    subject_did: str
    subject_collection: str
    subject_cid: str | None = None
    via_uri: str | None = None


@_frozen
class LikeAdded(_Engagement):
    schema_name: ClassVar[str] = "LikeAdded"


@_frozen
class LikeRemoved(_Removal):
    """Undo the like ``uri`` (projections find its subject through the like's row)."""

    schema_name: ClassVar[str] = "LikeRemoved"


@_frozen
class RepostAdded(_Engagement):
    schema_name: ClassVar[str] = "RepostAdded"


@_frozen
class RepostRemoved(_Removal):
    """Undo the repost ``uri`` (projections find its subject through the repost's row)."""

    schema_name: ClassVar[str] = "RepostRemoved"


@_frozen
class ReplyAdded(DomainEvent):
    """The post ``uri`` by ``did`` replies to ``parent_uri`` in the thread of ``root_uri``.
    Undone by :class:`PostDeleted` of ``uri``. Emitted on create only."""

    schema_name: ClassVar[str] = "ReplyAdded"
    uri: str
    parent_uri: str
    parent_did: str
    root_uri: str
    root_did: str


@_frozen
class QuoteAdded(DomainEvent):
    """The post ``uri`` by ``did`` quotes the post ``subject_uri`` of ``subject_did``.
    Undone by :class:`PostDeleted` of ``uri``. Emitted on create only."""

    schema_name: ClassVar[str] = "QuoteAdded"
    uri: str
    subject_uri: str
    subject_did: str
    subject_cid: str | None = None


# --- social graph --------------------------------------------------------------------------


@_frozen
class FollowAdded(DomainEvent):
    schema_name: ClassVar[str] = "FollowAdded"
    uri: str
    rkey: str
    subject_did: str


@_frozen
class FollowRemoved(_Removal):
    """Undo the follow ``uri`` (projections find the followed DID through its row)."""

    schema_name: ClassVar[str] = "FollowRemoved"


@_frozen
class BlockAdded(DomainEvent):
    schema_name: ClassVar[str] = "BlockAdded"
    uri: str
    rkey: str
    subject_did: str


@_frozen
class BlockRemoved(_Removal):
    schema_name: ClassVar[str] = "BlockRemoved"


# --- lists, starter packs, feeds, threadgates, labelers, profiles ----------------------------


@_frozen
class _Upsert(DomainEvent):
    """A create or update commit of record ``uri``; the latest one wins."""

    uri: str
    rkey: str
    created_at: str | None = None


@_frozen
class ListUpserted(_Upsert):
    schema_name: ClassVar[str] = "ListUpserted"
    name: str
    purpose: str
    description: str | None = None


@_frozen
class ListRemoved(_Removal):
    schema_name: ClassVar[str] = "ListRemoved"


@_frozen
class ListItemUpserted(_Upsert):
    schema_name: ClassVar[str] = "ListItemUpserted"
    list_uri: str
    subject_did: str


@_frozen
class ListItemRemoved(_Removal):
    schema_name: ClassVar[str] = "ListItemRemoved"


@_frozen
class StarterPackUpserted(_Upsert):
    schema_name: ClassVar[str] = "StarterPackUpserted"
    name: str
    description: str | None = None
    list_uri: str
    feed_uris: tuple[str, ...] = ()


@_frozen
class StarterPackRemoved(_Removal):
    schema_name: ClassVar[str] = "StarterPackRemoved"


@_frozen
class FeedGeneratorUpserted(_Upsert):
    schema_name: ClassVar[str] = "FeedGeneratorUpserted"
    service_did: str
    display_name: str
    description: str | None = None
    accepts_interactions: bool | None = None
    content_mode: str | None = None


@_frozen
class FeedGeneratorRemoved(_Removal):
    schema_name: ClassVar[str] = "FeedGeneratorRemoved"


@_frozen
class ThreadgateUpserted(_Upsert):
    """Reply controls of ``post_uri``. ``allow`` is ``None`` when everyone may reply, ``()``
    when nobody may; entries are ``mention``, ``follower``, ``following``, ``list:<at-uri>``
    or the ``$type`` of a rule this code does not know."""

    schema_name: ClassVar[str] = "ThreadgateUpserted"
    post_uri: str
    allow: tuple[str, ...] | None = None
    hidden_replies: tuple[str, ...] = ()


@_frozen
class ThreadgateRemoved(_Removal):
    schema_name: ClassVar[str] = "ThreadgateRemoved"


@_frozen
class LabelerServiceUpserted(_Upsert):
    schema_name: ClassVar[str] = "LabelerServiceUpserted"
    label_values: tuple[str, ...] = ()
    reason_types: tuple[str, ...] | None = None
    subject_types: tuple[str, ...] | None = None
    subject_collections: tuple[str, ...] | None = None


@_frozen
class LabelerServiceRemoved(_Removal):
    schema_name: ClassVar[str] = "LabelerServiceRemoved"


@_frozen
class ProfileUpdated(_Upsert):
    """The profile of ``did`` (record ``self``). ``source.operation == "create"`` marks the
    first profile write of an account."""

    schema_name: ClassVar[str] = "ProfileUpdated"
    display_name: str | None = None
    description: str | None = None
    pronouns: str | None = None
    website: str | None = None
    avatar_cid: str | None = None
    banner_cid: str | None = None
    joined_via_starter_pack_uri: str | None = None
    pinned_post_uri: str | None = None


@_frozen
class ProfileRemoved(_Removal):
    schema_name: ClassVar[str] = "ProfileRemoved"


# --- growth --------------------------------------------------------------------------------


@_frozen
class CandidateFound(DomainEvent):
    """Strategy ``strategy`` found the account ``did`` worth growing towards.

    ``score`` is the strategy's own scale (higher is better); ``reasons`` say why, for people;
    ``subject_uri`` names the record that triggered it, when there is one. The actor of the
    source event is ``source.did``.
    """

    schema_name: ClassVar[str] = "CandidateFound"
    strategy: str
    score: float
    reasons: tuple[str, ...]
    subject_uri: str | None = None


# --- AT Protocol crawl (the AppView's answers, see domain.crawl) ---------------------------


@_frozen
class ProfileEnriched(DomainEvent):
    """The AppView's view of the account ``did`` (``app.bsky.actor.getProfiles``) when the
    crawl fetched it, at ``source.time_us``. ``source`` is the crawl request (its ``id`` starts
    with ``crawl|``). The counts are the AppView's own totals at that time (not deltas): the
    latest fetch replaces earlier ones. ``avatar``/``banner`` are image URLs."""

    schema_name: ClassVar[str] = "ProfileEnriched"
    handle: str
    display_name: str | None = None
    description: str | None = None
    avatar: str | None = None
    banner: str | None = None
    followers_count: int | None = None
    follows_count: int | None = None
    posts_count: int | None = None
    created_at: str | None = None
    indexed_at: str | None = None
    labels: tuple[str, ...] = ()


@_frozen
class FollowObserved(DomainEvent):
    """A crawl saw ``did`` follow ``subject_did`` on the AppView (a follower or follow page), at
    ``source.time_us``, the first time the crawl saw this edge. The follow record itself (its
    uri, its time) is unknown: an observation is no gain, it gives the graph a base."""

    schema_name: ClassVar[str] = "FollowObserved"
    subject_did: str


@_frozen
class FollowLost(DomainEvent):
    """A crawl read the whole list (every page) that held the edge ``did`` → ``subject_did``
    before, and the edge is gone: an unfollow, at the latest at ``source.time_us``."""

    schema_name: ClassVar[str] = "FollowLost"
    subject_did: str


@_frozen
class GrowthActionTaken(DomainEvent):
    """The engine's own account ``did`` acted on Bluesky: ``action`` (``follow`` or ``like``)
    towards ``subject_did`` (and the post ``subject_uri`` for a like), creating the record
    ``record_uri``. ``reason`` says why, for people."""

    schema_name: ClassVar[str] = "GrowthActionTaken"
    action: str
    subject_did: str
    record_uri: str
    reason: str
    subject_uri: str | None = None


EVENT_TYPES: tuple[type[DomainEvent], ...] = (
    UserSeen,
    ActivityRecorded,
    HandleChanged,
    AccountStatusChanged,
    PostCreated,
    PostUpdated,
    PostDeleted,
    PostEnriched,
    LikeAdded,
    LikeRemoved,
    RepostAdded,
    RepostRemoved,
    ReplyAdded,
    QuoteAdded,
    FollowAdded,
    FollowRemoved,
    BlockAdded,
    BlockRemoved,
    ListUpserted,
    ListRemoved,
    ListItemUpserted,
    ListItemRemoved,
    StarterPackUpserted,
    StarterPackRemoved,
    FeedGeneratorUpserted,
    FeedGeneratorRemoved,
    ThreadgateUpserted,
    ThreadgateRemoved,
    LabelerServiceUpserted,
    LabelerServiceRemoved,
    ProfileUpdated,
    ProfileRemoved,
    CandidateFound,
    ProfileEnriched,
    FollowObserved,
    FollowLost,
    GrowthActionTaken,
)

SCHEMAS: dict[tuple[str, int], type[DomainEvent]] = {
    (event_type.schema_name, event_type.schema_version): event_type for event_type in EVENT_TYPES
}
"""(schema name, version) → class; :func:`decode` dispatches on it."""


# --- serialisation -------------------------------------------------------------------------


@lru_cache(maxsize=None)
def _prefix(event_type: type[DomainEvent]) -> bytes:
    return orjson.dumps({"schema": event_type.schema_name, "version": event_type.schema_version})[:-1] + b","


def encode(event: DomainEvent) -> bytes:
    """Serialise ``event`` to JSON bytes: ``{"schema": ..., "version": ..., <fields>}`` (orjson;
    the one wire form of domain events)."""
    return _prefix(type(event)) + orjson.dumps(event)[1:]


def to_json_dict(event: DomainEvent) -> dict[str, Any]:
    """The JSON object :func:`encode` writes, as a dict of JSON values."""
    return orjson.loads(encode(event))  # type: ignore[no-any-return]


def partition_key(event: DomainEvent) -> bytes:
    """The Kafka message key of ``event`` (UTF-8 of ``event.key``)."""
    return event.key.encode()


@lru_cache(maxsize=None)
def adapter(event_type: type[E]) -> TypeAdapter[E]:
    """The pydantic validator of ``event_type`` (lists become tuples, types are checked)."""
    return TypeAdapter(event_type)


@safe(exceptions=(orjson.JSONDecodeError, TypeError))
def _loads(raw: bytes) -> Any:
    return orjson.loads(raw)


def _invalid_json(error: Exception) -> Rejection:
    return Rejection(RejectionCode.INVALID_JSON, f"not JSON: {error}")


def _select_schema(data: Any) -> Result[tuple[type[DomainEvent], dict[str, Any]], Rejection]:
    if not isinstance(data, dict):
        return Failure(Rejection(RejectionCode.INVALID_JSON, "a domain event is a JSON object"))
    schema, version = data.pop("schema", None), data.pop("version", None)
    event_type = SCHEMAS.get((schema, version)) if isinstance(schema, str) and type(version) is int else None
    if event_type is None:
        return Failure(
            Rejection(RejectionCode.UNKNOWN_SCHEMA, f"unknown schema {str(schema)[:80]!r} version {str(version)[:20]}")
        )
    return Success((event_type, data))


@safe(exceptions=(ValidationError,))
def _validate(selected: tuple[type[DomainEvent], dict[str, Any]]) -> DomainEvent:
    event_type, data = selected
    return adapter(event_type).validate_python(data)


def _invalid_domain_event(error: ValidationError) -> Rejection:
    return Rejection(RejectionCode.INVALID_DOMAIN_EVENT, describe_validation_error(error))


@lru_cache(maxsize=1)
def _canonical_validators() -> dict[bytes, Callable[[bytes], DomainEvent]]:
    """Each event type's ``validate_json`` by the bytes :func:`encode` begins its events with."""
    return {_prefix(event_type): adapter(event_type).validator.validate_json for event_type in EVENT_TYPES}


def _decode_canonical(raw: bytes) -> DomainEvent | None:
    """The common case, fast: bytes that begin as :func:`encode` writes them name their type up
    front (``{"schema":"...","version":N,``, up to the second comma: a schema name holds none),
    and pydantic validates the JSON in one pass, without building a dict first (the ``schema``
    and ``version`` fields are not the event's and are ignored). None when the bytes are not like
    that or not valid: the general path then says why."""
    validate = _canonical_validators().get(raw[:raw.find(b",", raw.find(b",") + 1) + 1])
    if validate is None:
        return None
    try:
        return validate(raw)
    except ValidationError:
        return None


def decode(raw: bytes) -> Result[DomainEvent, Rejection]:
    """Read bytes written by :func:`encode`, dispatching on schema name and version.

    Failures: ``invalid_json``, ``unknown_schema``, ``invalid_domain_event``. Never raises.
    """
    event = _decode_canonical(raw)
    if event is not None:
        return Success(event)
    return (
        _loads(raw)
        .alt(_invalid_json)
        .bind(_select_schema)
        .bind(lambda selected: _validate(selected).alt(_invalid_domain_event))
    )


# --- groups: the events of one source event with one key, their source written once ---------

GROUP_SCHEMA = "DomainEvents"
GROUP_VERSION = 1
_GROUP_PREFIX = orjson.dumps({"schema": GROUP_SCHEMA, "version": GROUP_VERSION, "source": None})[:-5]


@lru_cache(maxsize=None)
def _fields_without_source(event_type: type[DomainEvent]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(event_type) if f.name != "source")


@lru_cache(maxsize=None)
def _head(event_type: type[DomainEvent]) -> dict[str, Any]:
    return {"schema": event_type.schema_name, "version": event_type.schema_version}


def _without_source(event: DomainEvent) -> dict[str, Any]:
    return {**_head(type(event)), **{name: getattr(event, name) for name in _fields_without_source(type(event))}}


def encode_group(events: Sequence[DomainEvent]) -> bytes:
    """Serialise events derived from one source event as one JSON value, the source written once:
    ``{"schema": "DomainEvents", "version": 1, "source": {...}, "events": [{"schema": ...,
    "version": ..., <fields but source>}, ...]}``. Raises ``ValueError`` for no events or
    events of different sources (a caller's mistake, never data)."""
    if not events:
        raise ValueError("a group holds at least one domain event")
    source = events[0].source
    if any(event.source is not source and event.source != source for event in events):
        raise ValueError("the events of a group derive from one source event")
    return _GROUP_PREFIX + orjson.dumps({"source": source, "events": [_without_source(e) for e in events]})[10:]


def by_partition_key(events: Sequence[DomainEvent]) -> dict[bytes, list[DomainEvent]]:
    """``events`` by their Kafka key (:func:`partition_key`), in order: the groups one source
    event's domain events are sent in (:func:`encode_group`), so each key's events stay in order."""
    groups: dict[bytes, list[DomainEvent]] = {}
    for event in events:
        groups.setdefault(partition_key(event), []).append(event)
    return groups


def _invalid_group(reason: str) -> Failure[Rejection]:
    return Failure(Rejection(RejectionCode.INVALID_DOMAIN_EVENT, f"group of domain events: {reason}"))


def _group_member(item: Any, source: Source, index: int) -> Result[DomainEvent, Rejection]:
    if not isinstance(item, dict) or "source" in item:
        return _invalid_group(f"event {index} is not an object without a source")
    return _select_schema(item).bind(
        lambda selected: _validate((selected[0], {**selected[1], "source": source}))
        .alt(lambda error: Rejection(RejectionCode.INVALID_DOMAIN_EVENT,
                                     f"group of domain events: event {index}: {describe_validation_error(error)}"))
    )


def _decode_group(data: dict[str, Any]) -> Result[tuple[DomainEvent, ...], Rejection]:
    """A group's events, or why not (the general path: each event's own reason)."""
    events = data.get("events")
    if not isinstance(events, list) or not events:
        return _invalid_group("'events' is not a list of domain events")
    try:
        source = adapter(Source).validate_python(data.get("source"))
    except ValidationError as error:
        return _invalid_group(f"source: {describe_validation_error(error)}")
    decoded: list[DomainEvent] = []
    for index, item in enumerate(events):
        match _group_member(item, source, index):
            case Success(event):
                decoded.append(event)
            case failure:
                return failure  # type: ignore[return-value]
    return Success(tuple(decoded))


@lru_cache(maxsize=1)
def _group_validators() -> tuple[Any, dict[tuple[str, int], Any]]:
    """pydantic-core's validators themselves for the fast path, the source's and each schema's
    (``TypeAdapter.validate_python`` adds a Python call with its keyword checks to each); built on
    first use, not at import."""
    return adapter(Source).validator, {schema: adapter(event_type).validator for schema, event_type in SCHEMAS.items()}


def _decode_group_fast(raw: bytes) -> tuple[DomainEvent, ...] | None:
    """The common case of a group, fast: one ``orjson.loads``, the source validated once and
    each event validated from its dict with that source; None for anything else, and then
    :func:`_decode_group` says why."""
    try:
        data = orjson.loads(raw)
        source_validator, validators = _group_validators()
        source = source_validator.validate_python(data["source"])
        decoded = []
        for item in data["events"]:
            validator = validators[(item.pop("schema"), item.pop("version"))]
            if "source" in item:
                return None
            item["source"] = source
            decoded.append(validator.validate_python(item))
    except (orjson.JSONDecodeError, ValidationError, TypeError, KeyError, AttributeError):
        return None
    return tuple(decoded) or None


def _decode_document(data: Any) -> Result[tuple[DomainEvent, ...], Rejection]:
    if isinstance(data, dict) and data.get("schema") == GROUP_SCHEMA and data.get("version") == GROUP_VERSION:
        return _decode_group(data)
    return (
        _select_schema(data)
        .bind(lambda selected: _validate(selected).alt(_invalid_domain_event))
        .map(lambda event: (event,))
    )


def decode_all(raw: bytes) -> Result[tuple[DomainEvent, ...], Rejection]:
    """The domain events of one message: a group (:func:`encode_group`) or one event
    (:func:`encode`), in any JSON layout. A group is read whole or refused whole.

    Failures: ``invalid_json``, ``unknown_schema``, ``invalid_domain_event``. Never raises.
    """
    if raw.startswith(_GROUP_PREFIX):
        events = _decode_group_fast(raw)
        if events is not None:
            return Success(events)
    else:
        event = _decode_canonical(raw)
        if event is not None:
            return Success((event,))
    return _loads(raw).alt(_invalid_json).bind(_decode_document)
