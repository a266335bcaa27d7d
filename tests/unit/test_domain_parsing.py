"""Parsing Jetstream events and lexicon records: strict where the product relies on a field,
tolerant of everything else, and never raising."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from returns.pipeline import is_successful
from returns.result import Failure

from domain import syntax
from domain.jetstream import AccountEvent, CommitEvent, IdentityEvent, parse_event
from domain.records import (
    COLLECTED_COLLECTIONS,
    FeedGenerator,
    LabelerService,
    ListItem,
    ListRecord,
    ListRule,
    Post,
    Profile,
    StarterPack,
    Threadgate,
    UnknownEmbed,
    UnknownFeature,
    UnknownRule,
    parse_record,
)
from domain.rejections import Rejection, RejectionCode
from tests.unit import domain_builders as b


def rejection(result: Any) -> Rejection:
    assert isinstance(result, Failure), result
    return result.failure()


# --- identifiers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["did:plc:wq4aajammjtxdomz3e23667t", "did:web:example.com", "did:web:localhost%3A8080", "did:key:zQ3sh"]
)
def test_valid_dids(value: str) -> None:
    assert syntax.is_did(value)


@pytest.mark.parametrize("value", ["", "did:", "did:plc:", "DID:plc:abc", "did:PLC:abc", "did:plc:abc:", "did:plc:a b", "plc:abc"])
def test_invalid_dids(value: str) -> None:
    assert not syntax.is_did(value)


@pytest.mark.parametrize("value", ["3mptbyplj5d2a", "self", "a.b-c_d:e~f", "..."])
def test_valid_record_keys(value: str) -> None:
    assert syntax.is_record_key(value)


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "a b", "x" * 513, "é"])
def test_invalid_record_keys(value: str) -> None:
    assert not syntax.is_record_key(value)


@pytest.mark.parametrize("value", ["app.bsky.feed.post", "fm.teal.alpha.actor.status", "com.example.fooBar"])
def test_valid_nsids(value: str) -> None:
    assert syntax.is_nsid(value)


@pytest.mark.parametrize("value", ["app", "app.bsky", "app.bsky.feed.", ".app.bsky.post", "app.bsky.feed.po-st", "app.bsky.1post"])
def test_invalid_nsids(value: str) -> None:
    assert not syntax.is_nsid(value)


def test_tids_and_record_uris() -> None:
    assert syntax.is_tid("3mptbypluud2a") and not syntax.is_tid("3mptbypluud2") and not syntax.is_tid("kmptbypluud2a")
    parts = syntax.parse_record_uri("at://did:plc:abc/app.bsky.feed.post/3mpt")
    assert parts == ("did:plc:abc", "app.bsky.feed.post", "3mpt")
    assert str(parts) == "at://did:plc:abc/app.bsky.feed.post/3mpt"
    assert syntax.parse_record_uri("at://alice.bsky.social/app.bsky.feed.post/3mpt") is None
    assert syntax.parse_record_uri("at://did:plc:abc/app.bsky.feed.post") is None
    assert syntax.parse_record_uri("https://did:plc:abc/app.bsky.feed.post/3mpt") is None
    assert syntax.is_at_uri("at://alice.bsky.social") and syntax.is_at_uri("at://did:plc:abc/app.bsky.graph.list/x")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=40), st.from_regex(syntax.DID_PATTERN, fullmatch=True)))
def test_pydantic_did_type_agrees_with_is_did(value: str) -> None:
    adapter = TypeAdapter(syntax.Did)
    try:
        adapter.validate_python(value)
        valid = True
    except ValidationError:
        valid = False
    assert valid == syntax.is_did(value)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=20), st.from_regex(syntax.RKEY_PATTERN, fullmatch=True)))
def test_pydantic_record_key_type_agrees_with_is_record_key(value: str) -> None:
    adapter = TypeAdapter(syntax.RecordKey)
    try:
        adapter.validate_python(value)
        valid = True
    except ValidationError:
        valid = False
    assert valid == syntax.is_record_key(value)


# --- Jetstream events -----------------------------------------------------------------------


def test_every_real_event_parses() -> None:
    kinds: Counter[str] = Counter()
    for line in b.SAMPLE_LINES:
        event = parse_event(line).unwrap()
        kinds[type(event).__name__] += 1
    assert kinds == {"CommitEvent": 150, "IdentityEvent": 1, "AccountEvent": 1}


def test_real_commit_fields() -> None:
    event = parse_event(b.SAMPLE_LINES[0]).unwrap()
    assert isinstance(event, CommitEvent)
    assert event.did == "did:plc:wq4aajammjtxdomz3e23667t"
    assert event.time_us == 1783175888085434
    assert event.commit.operation == "create" and event.commit.collection == "app.bsky.feed.like"
    assert event.uri == "at://did:plc:wq4aajammjtxdomz3e23667t/app.bsky.feed.like/3mptbyplj5d2a"
    source = event.source()
    assert source.id == "commit|did:plc:wq4aajammjtxdomz3e23667t|3mptbypluud2a|app.bsky.feed.like|3mptbyplj5d2a|create"


def test_real_identity_and_account_events() -> None:
    identity = parse_event(b.SAMPLE_LINES[-2]).unwrap()
    account = parse_event(b.SAMPLE_LINES[-1]).unwrap()
    assert isinstance(identity, IdentityEvent) and identity.identity.handle is None
    assert identity.source().id == "identity|did:plc:hqvhxrowqbemo5e4wjnj6zao|31527015470"
    assert isinstance(account, AccountEvent) and account.account.active is True
    assert account.source().id == "account|did:plc:hqvhxrowqbemo5e4wjnj6zao|31527015471"


def test_the_2026_cursor_field_is_ignored() -> None:
    event = b.commit(b.ALICE, "app.bsky.feed.like", b.like_record(b.strong_ref(b.BOB)), cursor=True)
    assert isinstance(parse_event(b.raw(event)).unwrap(), CommitEvent)


def test_deletes_carry_no_record() -> None:
    event = parse_event(b.raw(b.commit(b.ALICE, "app.bsky.graph.follow", operation="delete", rkey="3m3q3ut7jsm2m"))).unwrap()
    assert isinstance(event, CommitEvent) and event.commit.record is None and event.commit.cid is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", RejectionCode.INVALID_JSON),
        (b"\xff\xfe", RejectionCode.INVALID_JSON),
        (b"{not json", RejectionCode.INVALID_JSON),
        (b"[1, 2]", RejectionCode.INVALID_JSON),
        (b'"a string"', RejectionCode.INVALID_JSON),
        (b"{}", RejectionCode.NOT_AN_EVENT),
        (b'{"did": "did:plc:abc", "time_us": 1}', RejectionCode.NOT_AN_EVENT),
        (b'{"did": "did:plc:abc", "time_us": 1, "kind": "sync"}', RejectionCode.NOT_AN_EVENT),
        (b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit"}', RejectionCode.NOT_AN_EVENT),
        (b'{"type": "options_update", "payload": {}}', RejectionCode.NOT_AN_EVENT),
    ],
)
def test_frames_that_are_not_events_are_rejected_with_a_reason(raw: bytes, code: RejectionCode) -> None:
    reason = rejection(parse_event(raw))
    assert reason.code is code and reason.message


def _broken(**changes: Any) -> bytes:
    event = b.commit(b.ALICE, "app.bsky.feed.like", b.like_record(b.strong_ref(b.BOB)))
    for path, value in changes.items():
        target = event
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return b.raw(event)


@pytest.mark.parametrize(
    "changes",
    [
        {"did": "alice"},
        {"did": "did:plc:"},
        {"time_us": "1783175888085434"},
        {"time_us": -1},
        {"time_us": 1.5},
        {"commit__rev": "not-a-tid"},
        {"commit__rkey": ".."},
        {"commit__rkey": "a/b"},
        {"commit__collection": "not an nsid"},
        {"commit__operation": "upsert"},
        {"commit__record": None},
        {"commit__record": [1, 2]},
    ],
)
def test_events_breaking_the_protocol_are_rejected(changes: dict[str, Any]) -> None:
    assert rejection(parse_event(_broken(**changes))).code is RejectionCode.INVALID_EVENT


def test_identity_handle_must_be_a_handle() -> None:
    assert is_successful(parse_event(b.raw(b.identity(b.ALICE, 7, "alice.bsky.social"))))
    bad = b.identity(b.ALICE, 7, "not a handle")
    assert rejection(parse_event(b.raw(bad))).code is RejectionCode.INVALID_EVENT


JSON, EVENTISH = b.JSON, b.EVENTISH


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_parsing_arbitrary_bytes_never_raises(raw: bytes) -> None:
    result = parse_event(raw)
    assert is_successful(result) or isinstance(result.failure(), Rejection)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, EVENTISH))
def test_parsing_arbitrary_json_never_raises(value: Any) -> None:
    result = parse_event(json.dumps(value).encode())  # stdlib: also writes integers orjson refuses
    assert is_successful(result) or isinstance(result.failure(), Rejection)


# --- records --------------------------------------------------------------------------------


def test_every_real_record_of_a_collected_collection_validates() -> None:
    parsed: Counter[str] = Counter()
    for line in b.SAMPLE_LINES:
        event = orjson.loads(line)
        commit = event.get("commit")
        if commit and "record" in commit and commit["collection"] in COLLECTED_COLLECTIONS:
            parsed[type(parse_record(commit["collection"], commit["record"]).unwrap()).__name__] += 1
    assert parsed == {"Like": 105, "Post": 17, "Repost": 15, "Follow": 6, "Block": 1}


def test_collected_collections() -> None:
    assert COLLECTED_COLLECTIONS == {
        "app.bsky.feed.post",
        "app.bsky.feed.like",
        "app.bsky.feed.repost",
        "app.bsky.graph.follow",
        "app.bsky.graph.block",
        "app.bsky.graph.list",
        "app.bsky.graph.listitem",
        "app.bsky.feed.generator",
        "app.bsky.feed.threadgate",
        "app.bsky.graph.starterpack",
        "app.bsky.labeler.service",
        "app.bsky.actor.profile",
    }


def test_unsupported_collection() -> None:
    reason = rejection(parse_record("app.bsky.actor.status", {"status": "live"}))
    assert reason.code is RejectionCode.UNSUPPORTED_COLLECTION


def test_lexicon_records_of_every_kind_parse() -> None:
    list_uri = b.uri(b.ALICE, "app.bsky.graph.list", "3mlist")
    post_uri = b.uri(b.ALICE, "app.bsky.feed.post", "3mpost")
    lst = parse_record("app.bsky.graph.list", b.list_record()).unwrap()
    assert isinstance(lst, ListRecord) and lst.purpose == "app.bsky.graph.defs#curatelist"
    item = parse_record("app.bsky.graph.listitem", b.list_item_record(b.BOB, list_uri)).unwrap()
    assert isinstance(item, ListItem) and item.subject == b.BOB and item.list == list_uri
    pack = parse_record("app.bsky.graph.starterpack", b.starter_pack_record(list_uri, [b.uri(b.CAROL, "app.bsky.feed.generator", "cats")])).unwrap()
    assert isinstance(pack, StarterPack) and pack.feeds[0].uri.endswith("/cats")
    gen = parse_record("app.bsky.feed.generator", b.generator_record()).unwrap()
    assert isinstance(gen, FeedGenerator) and gen.did == b.FEED_SERVICE and gen.accepts_interactions is True
    gate = parse_record(
        "app.bsky.feed.threadgate",
        b.threadgate_record(
            post_uri,
            [
                {"$type": "app.bsky.feed.threadgate#mentionRule"},
                {"$type": "app.bsky.feed.threadgate#listRule", "list": list_uri},
                {"$type": "app.bsky.feed.threadgate#futureRule", "x": 1},
            ],
        ),
    ).unwrap()
    assert isinstance(gate, Threadgate)
    assert isinstance(gate.allow[1], ListRule) and isinstance(gate.allow[2], UnknownRule)  # type: ignore[index]
    labeler = parse_record("app.bsky.labeler.service", b.labeler_record()).unwrap()
    assert isinstance(labeler, LabelerService) and labeler.policies.label_values == ["spam", "rude"]
    profile = parse_record("app.bsky.actor.profile", b.profile_record()).unwrap()
    assert isinstance(profile, Profile) and profile.avatar is not None and profile.avatar.content_id == b.BLOB_CID
    assert isinstance(parse_record("app.bsky.actor.profile", {}).unwrap(), Profile)  # every field optional


def test_unknown_fields_and_open_union_members_are_tolerated() -> None:
    record = b.post_record(
        "hi",
        embed={"$type": "app.bsky.embed.poll", "options": ["a", "b"]},
        facets=[b.facet(0, 2, {"$type": "app.bsky.richtext.facet#bold"})],
        futureField={"anything": True},
    )
    post = parse_record("app.bsky.feed.post", record).unwrap()
    assert isinstance(post, Post)
    assert isinstance(post.embed, UnknownEmbed) and post.embed.type == "app.bsky.embed.poll"
    assert isinstance(post.facets[0].features[0], UnknownFeature)


def _without(record: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    ("collection", "record"),
    [
        ("app.bsky.feed.post", _without(b.post_record(), "createdAt")),
        ("app.bsky.feed.post", _without(b.post_record(), "text")),
        ("app.bsky.feed.post", b.post_record(createdAt=1783175888)),
        ("app.bsky.feed.post", b.post_record(facets=[b.facet(0, 1, b.mention("@alice"))])),
        ("app.bsky.feed.post", b.post_record(reply={"root": b.strong_ref(b.BOB)})),
        ("app.bsky.feed.post", b.post_record(embed=b.record_embed({"uri": "https://example.com", "cid": b.CID}))),
        ("app.bsky.feed.like", {"createdAt": b.CREATED_AT}),
        ("app.bsky.feed.like", b.like_record({"uri": "at://alice.bsky.social/app.bsky.feed.post/3mpt", "cid": b.CID})),
        ("app.bsky.feed.like", b.like_record({"uri": f"at://{b.BOB}/app.bsky.feed.post", "cid": b.CID})),
        ("app.bsky.feed.repost", b.like_record({"cid": b.CID})),
        ("app.bsky.graph.follow", b.follow_record("alice.bsky.social")),
        ("app.bsky.graph.block", {"subject": b.BOB}),
        ("app.bsky.graph.list", b.list_record(name="")),
        ("app.bsky.graph.listitem", b.list_item_record(b.BOB, "not-an-at-uri")),
        ("app.bsky.feed.generator", _without(b.generator_record(), "did")),
        ("app.bsky.feed.threadgate", b.threadgate_record("https://example.com")),
        ("app.bsky.graph.starterpack", _without(b.starter_pack_record(b.uri(b.ALICE, "app.bsky.graph.list", "x")), "list")),
        ("app.bsky.labeler.service", {"createdAt": b.CREATED_AT}),
        ("app.bsky.actor.profile", {"displayName": 42}),
        ("app.bsky.feed.like", "not an object"),
    ],
)
def test_records_breaking_relied_upon_fields_are_invalid(collection: str, record: Any) -> None:
    reason = rejection(parse_record(collection, record))
    assert reason.code is RejectionCode.INVALID_RECORD
    assert collection in reason.message


@pytest.mark.parametrize("kind", [{}, [], ["app.bsky.embed.images"], 7, None])
def test_an_open_union_member_whose_type_is_not_a_string_is_invalid_not_a_crash(kind: Any) -> None:
    for collection, record in (
        ("app.bsky.feed.post", b.post_record(embed={"$type": kind, "images": []})),
        ("app.bsky.feed.post", b.post_record(facets=[b.facet(0, 1, {"$type": kind})])),
        ("app.bsky.feed.threadgate", b.threadgate_record(b.POST_URI, [{"$type": kind}])),
    ):
        result = parse_record(collection, record)
        assert is_successful(result) or result.failure().code is RejectionCode.INVALID_RECORD


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(COLLECTED_COLLECTIONS)), st.one_of(JSON, EVENTISH))
def test_record_parsing_never_raises(collection: str, value: Any) -> None:
    result = parse_record(collection, value)
    assert is_successful(result) or result.failure().code is RejectionCode.INVALID_RECORD
