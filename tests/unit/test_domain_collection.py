"""Collection: the domain events each Jetstream event stands for, their ids and keys, and the
symmetry of creates and deletes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from returns.result import Failure

from domain import events as ev
from domain.collection import Collected, account_status, collect, datetime_to_us, hour_and_weekday
from domain.identity import SourceCoordinates
from domain.jetstream import parse_event
from domain.rejections import RejectionCode
from tests.unit import domain_builders as b


def collected(event: dict[str, Any] | bytes, coordinates: SourceCoordinates | None = None) -> Collected:
    raw = event if isinstance(event, bytes) else b.raw(event)
    return parse_event(raw).bind(lambda parsed: collect(parsed, coordinates)).unwrap()


def only(result: Collected, event_type: type[ev.DomainEvent]) -> Any:
    (found,) = [event for event in result.events if isinstance(event, event_type)]
    return found


def test_whole_sample() -> None:
    counts: Counter[str] = Counter()
    skipped = []
    for line in b.SAMPLE_LINES:
        result = collected(line)
        if result.skipped:
            skipped.append(result.skipped)
        counts.update(type(event).__name__ for event in result.events)
    assert counts["LikeAdded"] == 105
    assert counts["PostCreated"] == 17 and counts["PostEnriched"] == 17
    assert counts["RepostAdded"] == 15
    assert counts["FollowAdded"] == 6 and counts["FollowRemoved"] == 3
    assert counts["BlockAdded"] == 1 and counts["PostDeleted"] == 1
    assert counts["HandleChanged"] == 1 and counts["AccountStatusChanged"] == 1
    assert counts["ReplyAdded"] == 8 and counts["QuoteAdded"] == 0
    assert counts["UserSeen"] == 150  # every event but the two skipped status updates
    assert counts["ActivityRecorded"] == 148  # every collected commit
    assert sorted(skipped) == [
        "app.bsky.actor.status is not a collected collection",
        "fm.teal.alpha.actor.status is not a collected collection",
    ]


def test_every_domain_event_of_the_sample_has_a_unique_id() -> None:
    ids = [event.id for line in b.SAMPLE_LINES for event in collected(line).events]
    assert len(ids) == len(set(ids))


def test_real_like_is_attributed_to_the_subject_post_and_its_author() -> None:
    result = collected(b.SAMPLE_LINES[0])
    like = only(result, ev.LikeAdded)
    assert like.did == like.key == "did:plc:wq4aajammjtxdomz3e23667t"
    assert like.uri == "at://did:plc:wq4aajammjtxdomz3e23667t/app.bsky.feed.like/3mptbyplj5d2a"
    assert like.subject_uri == "at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"
    assert like.subject_did == "did:plc:r2zybk6op3ymzpz6jhqpkoy5"
    assert like.subject_collection == "app.bsky.feed.post"
    assert like.source.collection == "app.bsky.feed.like" and like.source.operation == "create"


def test_real_repost_via() -> None:
    line = next(line for line in b.SAMPLE_LINES if b'"via"' in line and b'"collection":"app.bsky.feed.repost"' in line)
    repost = only(collected(line), ev.RepostAdded)
    assert repost.via_uri and "/app.bsky.feed.repost/" in repost.via_uri


def test_real_follow_delete_names_the_follow_record() -> None:
    line = next(line for line in b.SAMPLE_LINES if b"3m3q3ut7jsm2m" in line)
    removed = only(collected(line), ev.FollowRemoved)
    assert removed.uri == "at://did:plc:ux2eeflheratfrvp3xfbp4zi/app.bsky.graph.follow/3m3q3ut7jsm2m"
    assert removed.rkey == "3m3q3ut7jsm2m" and removed.key == "did:plc:ux2eeflheratfrvp3xfbp4zi"


def test_real_identity_without_handle_and_active_account() -> None:
    handle = only(collected(b.SAMPLE_LINES[-2]), ev.HandleChanged)
    assert handle.handle is None and handle.seq == 31527015470
    status = only(collected(b.SAMPLE_LINES[-1]), ev.AccountStatusChanged)
    assert status.active is True and status.status == "active"


def test_identity_with_handle() -> None:
    result = collected(b.identity(b.ALICE, 99, "alice.bsky.social"))
    assert only(result, ev.HandleChanged).handle == "alice.bsky.social"
    assert only(result, ev.UserSeen).did == b.ALICE


@pytest.mark.parametrize("status", ["takendown", "suspended", "deleted", "deactivated", "desynchronized", "throttled"])
def test_account_statuses(status: str) -> None:
    changed = only(collected(b.account(b.ALICE, 5, active=False, status=status)), ev.AccountStatusChanged)
    assert (changed.active, changed.status) == (False, status)


def test_account_status_mapping() -> None:
    assert account_status(True, None) == "active"
    assert account_status(True, "deactivated") == "active"
    assert account_status(False, None) == "inactive"


def test_activity_is_recorded_in_utc_hour_and_iso_weekday() -> None:
    assert hour_and_weekday(b.TIME_US) == (14, 6)  # 2026-07-04 14:38 UTC, a Saturday
    assert hour_and_weekday(0) == (0, 4)  # 1970-01-01 was a Thursday
    activity = only(collected(b.SAMPLE_LINES[0]), ev.ActivityRecorded)
    assert (activity.hour, activity.iso_weekday) == (14, 6)
    assert (activity.collection, activity.operation) == ("app.bsky.feed.like", "create")


def test_created_at_is_parsed_when_it_is_a_datetime() -> None:
    assert datetime_to_us("1970-01-01T00:00:01Z") == 1_000_000
    assert datetime_to_us("2026-07-04T14:38:02+00:00") == datetime_to_us("2026-07-04T14:38:02.000Z")
    assert datetime_to_us("yesterday") is None and datetime_to_us("") is None
    created = only(collected(b.commit(b.ALICE, "app.bsky.feed.post", b.post_record(createdAt="whenever"))), ev.PostCreated)
    assert created.created_at == "whenever" and created.created_at_us is None


def test_coordinates_are_carried_into_every_source() -> None:
    coordinates = SourceCoordinates(topic="bge.jetstream.events", partition=3, offset=42)
    result = collected(b.SAMPLE_LINES[0], coordinates)
    assert {(e.source.topic, e.source.partition, e.source.offset) for e in result.events} == {("bge.jetstream.events", 3, 42)}
    # ids do not depend on where the event was read
    assert [e.id for e in result.events] == [e.id for e in collected(b.SAMPLE_LINES[0]).events]


def test_invalid_record_of_a_collected_collection_is_rejected() -> None:
    bad = b.commit(b.ALICE, "app.bsky.feed.like", {"createdAt": b.CREATED_AT})
    result = parse_event(b.raw(bad)).bind(collect)
    assert isinstance(result, Failure) and result.failure().code is RejectionCode.INVALID_RECORD


def test_records_of_collections_not_collected_are_skipped_whatever_they_hold() -> None:
    result = collected(b.commit(b.ALICE, "com.example.whatever", {"anything": [1, 2, 3]}))
    assert result.events == () and result.skipped == "com.example.whatever is not a collected collection"
    deleted = collected(b.commit(b.ALICE, "com.example.whatever", operation="delete"))
    assert deleted.events == () and deleted.skipped


# --- posts ----------------------------------------------------------------------------------


def test_post_created_enriched_reply_and_quote() -> None:
    root = b.strong_ref(b.BOB, rkey="3mroot")
    quoted = b.strong_ref(b.CAROL, rkey="3mquoted")
    text = "agreed @carol.example.com #Rust"
    s, e = b.byte_range(text, "@carol.example.com")
    record = b.post_record(
        text,
        reply=b.reply(root),
        embed=b.record_with_media_embed(quoted, b.images_embed(1)),
        facets=[b.facet(s, e, b.mention(b.CAROL))],
        langs=["en"],
        labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]},
    )
    result = collected(b.commit(b.ALICE, "app.bsky.feed.post", record, rkey="3mreply"))
    uri = f"at://{b.ALICE}/app.bsky.feed.post/3mreply"
    created = only(result, ev.PostCreated)
    assert (created.uri, created.text, created.langs) == (uri, text, ("en",))
    assert created.reply_root_uri == created.reply_parent_uri == root["uri"]
    assert created.quote_uri == quoted["uri"] and created.embed_type == "app.bsky.embed.recordWithMedia"
    assert created.labels == ("nudity",)
    enriched = only(result, ev.PostEnriched)
    assert enriched.mentions == (b.CAROL,) and enriched.hashtags == ("rust",)
    assert enriched.thread.depth == 1 and enriched.quote is not None and len(enriched.media) == 1
    replied = only(result, ev.ReplyAdded)
    assert (replied.uri, replied.parent_did, replied.root_did) == (uri, b.BOB, b.BOB)
    quote = only(result, ev.QuoteAdded)
    assert (quote.uri, quote.subject_uri, quote.subject_did) == (uri, quoted["uri"], b.CAROL)
    assert {event.key for event in result.events} == {b.ALICE}


def test_post_update_is_enriched_again_but_not_counted_again() -> None:
    record = b.post_record("edited #rust", reply=b.reply(b.strong_ref(b.BOB)))
    result = collected(b.commit(b.ALICE, "app.bsky.feed.post", record, operation="update"))
    names = [type(event).__name__ for event in result.events]
    assert names == ["UserSeen", "ActivityRecorded", "PostUpdated", "PostEnriched"]


# --- create then delete, for every collection -----------------------------------------------

LIST_URI, POST_URI, CASES = b.LIST_URI, b.POST_URI, b.COLLECTION_CASES


@pytest.mark.parametrize(("collection", "record", "added", "removed"), CASES, ids=[case[0] for case in CASES])
def test_create_then_delete_name_the_same_record_under_the_same_key(
    collection: str, record: dict[str, Any], added: type[ev.DomainEvent], removed: type[ev.DomainEvent]
) -> None:
    create = b.commit(b.ALICE, collection, record, rkey="self" if "profile" in collection else None)
    created = only(collected(create), added)
    deleted = only(collected(b.delete_of(create)), removed)
    assert created.uri == deleted.uri == b.uri(b.ALICE, collection, create["commit"]["rkey"])  # type: ignore[attr-defined]
    assert created.key == deleted.key == b.ALICE
    assert created.id != deleted.id
    assert deleted.source.operation == "delete"


def test_list_item_starter_pack_generator_threadgate_labeler_profile_fields() -> None:
    item = only(collected(b.commit(b.ALICE, "app.bsky.graph.listitem", b.list_item_record(b.BOB, LIST_URI))), ev.ListItemUpserted)
    assert (item.list_uri, item.subject_did) == (LIST_URI, b.BOB)
    feed = b.uri(b.CAROL, "app.bsky.feed.generator", "cats")
    pack = only(collected(b.commit(b.ALICE, "app.bsky.graph.starterpack", b.starter_pack_record(LIST_URI, [feed]))), ev.StarterPackUpserted)
    assert (pack.name, pack.list_uri, pack.feed_uris) == ("Start here", LIST_URI, (feed,))
    gen = only(collected(b.commit(b.ALICE, "app.bsky.feed.generator", b.generator_record(), rkey="cats")), ev.FeedGeneratorUpserted)
    assert (gen.service_did, gen.display_name, gen.accepts_interactions) == (b.FEED_SERVICE, "Cat pictures", True)
    rules = [
        {"$type": "app.bsky.feed.threadgate#mentionRule"},
        {"$type": "app.bsky.feed.threadgate#followingRule"},
        {"$type": "app.bsky.feed.threadgate#followerRule"},
        {"$type": "app.bsky.feed.threadgate#listRule", "list": LIST_URI},
        {"$type": "app.bsky.feed.threadgate#futureRule"},
    ]
    gate = only(collected(b.commit(b.ALICE, "app.bsky.feed.threadgate", b.threadgate_record(POST_URI, rules))), ev.ThreadgateUpserted)
    assert gate.post_uri == POST_URI
    assert gate.allow == ("mention", "following", "follower", f"list:{LIST_URI}", "app.bsky.feed.threadgate#futureRule")
    nobody = only(collected(b.commit(b.ALICE, "app.bsky.feed.threadgate", b.threadgate_record(POST_URI, []))), ev.ThreadgateUpserted)
    everyone = only(collected(b.commit(b.ALICE, "app.bsky.feed.threadgate", b.threadgate_record(POST_URI))), ev.ThreadgateUpserted)
    assert nobody.allow == () and everyone.allow is None
    labeler = only(collected(b.commit(b.ALICE, "app.bsky.labeler.service", b.labeler_record(), rkey="self")), ev.LabelerServiceUpserted)
    assert labeler.label_values == ("spam", "rude") and labeler.subject_types == ("account", "record")
    pinned = b.strong_ref(b.ALICE, rkey="3mpinned")
    profile = only(
        collected(b.commit(b.ALICE, "app.bsky.actor.profile", b.profile_record(pinnedPost=pinned, pronouns="she/her"), rkey="self")),
        ev.ProfileUpdated,
    )
    assert (profile.display_name, profile.pronouns, profile.avatar_cid, profile.pinned_post_uri) == ("Alice", "she/her", b.BLOB_CID, pinned["uri"])
    assert profile.source.operation == "create"
