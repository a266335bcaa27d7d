"""Collection: the domain events one Jetstream event stands for.

:func:`collect` is the railway for one parsed event. Every commit of a collected collection
yields ``UserSeen`` and ``ActivityRecorded`` for its author plus the events of its collection
and operation (creates and updates validate the record against its lexicon first; deletes
carry no record and yield a removal event naming the record's at-uri). Commits of collections
the product does not collect are not failures: they yield nothing and say so
(:attr:`Collected.skipped`). Identity events yield ``UserSeen`` and ``HandleChanged``; account
events ``UserSeen`` and ``AccountStatusChanged``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from returns.result import Result, Success

from domain import events as ev
from domain.enrichment import POST_COLLECTION, Enrichment, embed_type, enrich_post
from domain.identity import Source, SourceCoordinates, domain_event_id
from domain.jetstream import AccountEvent, CommitEvent, IdentityEvent, JetstreamEvent
from domain.records import (
    Block,
    FeedGenerator,
    Follow,
    LabelerService,
    Like,
    ListItem,
    ListRecord,
    ListRule,
    Post,
    Profile,
    Record,
    Repost,
    StarterPack,
    Threadgate,
    UnknownRule,
    is_collected,
    parse_record,
)
from domain.rejections import Rejection
from domain.syntax import split_record_uri
from domain.values import value

MICROS_PER_SECOND = 1_000_000


@value
class Collected:
    """The domain events of one source event; ``skipped`` says why there are none, if so."""

    source: Source
    events: tuple[ev.DomainEvent, ...]
    skipped: str | None = None


# --- time ----------------------------------------------------------------------------------


def hour_and_weekday(time_us: int) -> tuple[int, int]:
    """UTC hour of day (0-23) and ISO weekday (1 = Monday .. 7 = Sunday) of ``time_us``."""
    seconds = time_us // MICROS_PER_SECOND
    days = seconds // 86_400
    return (seconds // 3_600) % 24, (days + 3) % 7 + 1  # 1970-01-01 was a Thursday (4)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def datetime_to_us(value: str) -> int | None:
    """Microseconds since the epoch of an ISO 8601 / RFC 3339 datetime, ``None`` if it is not one
    (``createdAt`` is client-supplied and may be anything)."""
    try:  # once per post: a plain try costs less than @safe
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        delta = moment - _EPOCH
    except (ValueError, OverflowError):
        return None
    return (delta.days * 86_400 + delta.seconds) * MICROS_PER_SECOND + delta.microseconds


# --- every event ---------------------------------------------------------------------------


# The events every collected event yields are built directly rather than with
# ``DomainEvent.derive`` (whose keyword packing costs as much as the event): the same id, from
# :func:`event_id`, and ``did`` the source's.


def event_id(source: Source, event_type: type[ev.DomainEvent]) -> str:
    """The id ``event_type.derive(source, ...)`` gives (no discriminator)."""
    return domain_event_id(source.id, event_type.schema_name)


def _seen(source: Source) -> ev.UserSeen:
    return ev.UserSeen(id=event_id(source, ev.UserSeen), source=source, did=source.did, time_us=source.time_us)


def _activity(event: CommitEvent, source: Source) -> ev.ActivityRecorded:
    hour, weekday = hour_and_weekday(event.time_us)
    commit = event.commit
    return ev.ActivityRecorded(
        id=event_id(source, ev.ActivityRecorded),
        source=source,
        did=source.did,
        hour=hour,
        iso_weekday=weekday,
        collection=commit.collection,
        operation=commit.operation,
        time_us=event.time_us,
    )


# --- writes (create and update) per collection -----------------------------------------------

WriteHandler = Callable[[CommitEvent, Source, Record], list[ev.DomainEvent]]


def _post_fields(event: CommitEvent, post: Post, enrichment: Enrichment) -> dict[str, object]:
    reply = post.reply
    return {
        "uri": event.uri,
        "rkey": event.commit.rkey,
        "cid": event.commit.cid,
        "text": post.text,
        "created_at": post.created_at,
        "created_at_us": datetime_to_us(post.created_at),
        "langs": tuple(post.langs),
        "reply_root_uri": reply.root.uri if reply else None,
        "reply_parent_uri": reply.parent.uri if reply else None,
        "quote_uri": enrichment.quote.uri if enrichment.quote else None,
        "embed_type": embed_type(post),
        "labels": tuple(label.val for label in post.labels.values) if post.labels else (),
    }


def on_post(event: CommitEvent, source: Source, post: Post) -> list[ev.DomainEvent]:
    """PostCreated/PostUpdated, PostEnriched, and on create ReplyAdded and QuoteAdded."""
    created = event.commit.operation == "create"
    enrichment = enrich_post(event.did, event.commit.rkey, post)
    written = ev.PostCreated if created else ev.PostUpdated
    uri = event.uri
    out: list[ev.DomainEvent] = [
        written(id=event_id(source, written), source=source, did=source.did, **_post_fields(event, post, enrichment)),
        ev.PostEnriched(
            id=event_id(source, ev.PostEnriched),
            source=source,
            did=source.did,
            uri=uri,
            thread=enrichment.thread,
            mentions=enrichment.mentions,
            hashtags=enrichment.hashtags,
            links=enrichment.links,
            media=enrichment.media,
            quote=enrichment.quote,
            embedded_record=enrichment.embedded_record,
            langs=enrichment.langs,
        ),
    ]
    if created and post.reply is not None:
        thread = enrichment.thread  # the reply's root and parent, their DIDs already split off
        out.append(
            ev.ReplyAdded(
                id=event_id(source, ev.ReplyAdded),
                source=source,
                did=source.did,
                uri=uri,
                parent_uri=thread.parent_uri,
                parent_did=thread.parent_did,
                root_uri=thread.root_uri,
                root_did=thread.root_did,
            )
        )
    if created and enrichment.quote is not None:
        quote = enrichment.quote
        out.append(
            ev.QuoteAdded(
                id=event_id(source, ev.QuoteAdded),
                source=source,
                did=source.did,
                uri=uri,
                subject_uri=quote.uri,
                subject_did=quote.did,
                subject_cid=quote.cid,
            )
        )
    return out


def _engagement(
    event_type: type[ev.LikeAdded | ev.RepostAdded], event: CommitEvent, source: Source, record: Like | Repost
) -> ev.LikeAdded | ev.RepostAdded:
    subject = record.subject
    did, collection, _ = split_record_uri(subject.uri)  # validated as a record at-uri on parse
    return event_type(
        id=event_id(source, event_type),
        source=source,
        did=source.did,
        uri=event.uri,
        rkey=event.commit.rkey,
        subject_uri=subject.uri,
        subject_did=did,
        subject_collection=collection,
        subject_cid=subject.cid,
        via_uri=record.via.uri if record.via else None,
    )


def on_like(event: CommitEvent, source: Source, like: Like) -> list[ev.DomainEvent]:
    """LikeAdded, attributed to the subject record and its author (from the subject at-uri)."""
    return [_engagement(ev.LikeAdded, event, source, like)]


def on_repost(event: CommitEvent, source: Source, repost: Repost) -> list[ev.DomainEvent]:
    """RepostAdded, attributed to the subject post and its author."""
    return [_engagement(ev.RepostAdded, event, source, repost)]


def on_follow(event: CommitEvent, source: Source, follow: Follow) -> list[ev.DomainEvent]:
    return [
        ev.FollowAdded(
            id=event_id(source, ev.FollowAdded),
            source=source,
            did=source.did,
            uri=event.uri,
            rkey=event.commit.rkey,
            subject_did=follow.subject,
        )
    ]


def on_block(event: CommitEvent, source: Source, block: Block) -> list[ev.DomainEvent]:
    return [ev.BlockAdded.derive(source, uri=event.uri, rkey=event.commit.rkey, subject_did=block.subject)]


def _upsert_fields(event: CommitEvent, created_at: str | None) -> dict[str, object]:
    return {"uri": event.uri, "rkey": event.commit.rkey, "created_at": created_at}


def on_list(event: CommitEvent, source: Source, record: ListRecord) -> list[ev.DomainEvent]:
    return [
        ev.ListUpserted.derive(
            source,
            **_upsert_fields(event, record.created_at),
            name=record.name,
            purpose=record.purpose,
            description=record.description,
        )
    ]


def on_list_item(event: CommitEvent, source: Source, record: ListItem) -> list[ev.DomainEvent]:
    return [
        ev.ListItemUpserted.derive(
            source, **_upsert_fields(event, record.created_at), list_uri=record.list, subject_did=record.subject
        )
    ]


def on_starter_pack(event: CommitEvent, source: Source, record: StarterPack) -> list[ev.DomainEvent]:
    return [
        ev.StarterPackUpserted.derive(
            source,
            **_upsert_fields(event, record.created_at),
            name=record.name,
            description=record.description,
            list_uri=record.list,
            feed_uris=tuple(feed.uri for feed in record.feeds),
        )
    ]


def on_feed_generator(event: CommitEvent, source: Source, record: FeedGenerator) -> list[ev.DomainEvent]:
    return [
        ev.FeedGeneratorUpserted.derive(
            source,
            **_upsert_fields(event, record.created_at),
            service_did=record.did,
            display_name=record.display_name,
            description=record.description,
            accepts_interactions=record.accepts_interactions,
            content_mode=record.content_mode,
        )
    ]


def _rule_name(rule: object) -> str:
    if isinstance(rule, ListRule):
        return f"list:{rule.list}"
    if isinstance(rule, UnknownRule):
        return rule.type or "unknown"
    return type(rule).lexicon_type.rsplit("#", 1)[1].removesuffix("Rule")  # type: ignore[attr-defined]


def on_threadgate(event: CommitEvent, source: Source, record: Threadgate) -> list[ev.DomainEvent]:
    return [
        ev.ThreadgateUpserted.derive(
            source,
            **_upsert_fields(event, record.created_at),
            post_uri=record.post,
            allow=None if record.allow is None else tuple(_rule_name(rule) for rule in record.allow),
            hidden_replies=tuple(record.hidden_replies),
        )
    ]


def on_labeler_service(event: CommitEvent, source: Source, record: LabelerService) -> list[ev.DomainEvent]:
    def optional(values: list[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(values)

    return [
        ev.LabelerServiceUpserted.derive(
            source,
            **_upsert_fields(event, record.created_at),
            label_values=tuple(record.policies.label_values),
            reason_types=optional(record.reason_types),
            subject_types=optional(record.subject_types),
            subject_collections=optional(record.subject_collections),
        )
    ]


def on_profile(event: CommitEvent, source: Source, record: Profile) -> list[ev.DomainEvent]:
    return [
        ev.ProfileUpdated.derive(
            source,
            **_upsert_fields(event, record.created_at),
            display_name=record.display_name,
            description=record.description,
            pronouns=record.pronouns,
            website=record.website,
            avatar_cid=record.avatar.content_id if record.avatar else None,
            banner_cid=record.banner.content_id if record.banner else None,
            joined_via_starter_pack_uri=record.joined_via_starter_pack.uri if record.joined_via_starter_pack else None,
            pinned_post_uri=record.pinned_post.uri if record.pinned_post else None,
        )
    ]


ON_WRITE: dict[str, WriteHandler] = {
    POST_COLLECTION: on_post,  # type: ignore[dict-item]
    "app.bsky.feed.like": on_like,  # type: ignore[dict-item]
    "app.bsky.feed.repost": on_repost,  # type: ignore[dict-item]
    "app.bsky.graph.follow": on_follow,  # type: ignore[dict-item]
    "app.bsky.graph.block": on_block,  # type: ignore[dict-item]
    "app.bsky.graph.list": on_list,  # type: ignore[dict-item]
    "app.bsky.graph.listitem": on_list_item,  # type: ignore[dict-item]
    "app.bsky.graph.starterpack": on_starter_pack,  # type: ignore[dict-item]
    "app.bsky.feed.generator": on_feed_generator,  # type: ignore[dict-item]
    "app.bsky.feed.threadgate": on_threadgate,  # type: ignore[dict-item]
    "app.bsky.labeler.service": on_labeler_service,  # type: ignore[dict-item]
    "app.bsky.actor.profile": on_profile,  # type: ignore[dict-item]
}
"""Collection → the events a create or update of one of its records stands for."""

ON_DELETE: dict[str, type[ev.DomainEvent]] = {
    POST_COLLECTION: ev.PostDeleted,
    "app.bsky.feed.like": ev.LikeRemoved,
    "app.bsky.feed.repost": ev.RepostRemoved,
    "app.bsky.graph.follow": ev.FollowRemoved,
    "app.bsky.graph.block": ev.BlockRemoved,
    "app.bsky.graph.list": ev.ListRemoved,
    "app.bsky.graph.listitem": ev.ListItemRemoved,
    "app.bsky.graph.starterpack": ev.StarterPackRemoved,
    "app.bsky.feed.generator": ev.FeedGeneratorRemoved,
    "app.bsky.feed.threadgate": ev.ThreadgateRemoved,
    "app.bsky.labeler.service": ev.LabelerServiceRemoved,
    "app.bsky.actor.profile": ev.ProfileRemoved,
}
"""Collection → the removal event of a delete (named by the record's at-uri)."""


# --- the railway ---------------------------------------------------------------------------


def collect_commit(event: CommitEvent, source: Source) -> Result[Collected, Rejection]:
    """The domain events of a commit; ``invalid_record`` when a written record breaks its lexicon."""
    collection = event.commit.collection
    if not is_collected(collection):
        return Success(Collected(source, (), skipped=f"{collection} is not a collected collection"))
    common = (_seen(source), _activity(event, source))
    if event.commit.operation == "delete":
        removed = ON_DELETE[collection]
        removal = removed(id=event_id(source, removed), source=source, did=source.did, uri=event.uri, rkey=event.commit.rkey)
        return Success(Collected(source, (*common, removal)))
    return parse_record(collection, event.commit.record).map(
        lambda record: Collected(source, (*common, *ON_WRITE[collection](event, source, record)))
    )


def collect_identity(event: IdentityEvent, source: Source) -> Collected:
    """UserSeen and HandleChanged (``handle`` ``None`` when the event carried none)."""
    identity = event.identity
    return Collected(
        source,
        (
            _seen(source),
            ev.HandleChanged.derive(source, handle=identity.handle, seq=identity.seq, time=identity.time),
        ),
    )


def account_status(active: bool, status: str | None) -> str:
    """``active`` for an active account, else its status (``inactive`` when none was given)."""
    if active:
        return "active"
    return status or "inactive"


def collect_account(event: AccountEvent, source: Source) -> Collected:
    """UserSeen and AccountStatusChanged."""
    account = event.account
    return Collected(
        source,
        (
            _seen(source),
            ev.AccountStatusChanged.derive(
                source,
                active=account.active,
                status=account_status(account.active, account.status),
                seq=account.seq,
                time=account.time,
            ),
        ),
    )


def collect(event: JetstreamEvent, coordinates: SourceCoordinates | None = None) -> Result[Collected, Rejection]:
    """The domain events one parsed Jetstream event stands for. Never raises."""
    source = event.source(coordinates)
    if isinstance(event, CommitEvent):
        return collect_commit(event, source)
    if isinstance(event, IdentityEvent):
        return Success(collect_identity(event, source))
    return Success(collect_account(event, source))
