"""Domain events: one JSON form, decoded by schema name and version, with deterministic ids."""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.pipeline import is_successful
from returns.result import Failure

from domain import events as ev
from domain.collection import collect
from domain.growth import candidate
from domain.identity import DOMAIN_EVENT_NAMESPACE, SourceCoordinates, commit_source, domain_event_id, uuid5_string
from domain.jetstream import parse_event
from domain.rejections import RejectionCode
from tests.unit import domain_builders as b


def raws_of_every_kind() -> list[bytes]:
    """The real sample plus lexicon-conformant events: together, every domain event type."""
    raws = list(b.SAMPLE_LINES)
    for collection, record, _, _ in b.COLLECTION_CASES:
        create = b.commit(b.ALICE, collection, record)
        raws += [b.raw(create), b.raw(b.delete_of(create))]
    quoted = b.strong_ref(b.BOB)
    raws.append(b.raw(b.commit(b.ALICE, "app.bsky.feed.post", b.post_record(embed=b.record_with_media_embed(quoted, b.video_embed())))))
    raws.append(b.raw(b.commit(b.ALICE, "app.bsky.feed.post", b.post_record(), operation="update")))
    return raws


RAWS = raws_of_every_kind()


def every_kind_of_event(raws: list[bytes] = RAWS) -> list[ev.DomainEvent]:
    coordinates = SourceCoordinates("prefix.jetstream.events", 1, 7)
    found = [event for raw in raws for event in parse_event(raw).bind(lambda e: collect(e, coordinates)).unwrap().events]
    found.append(candidate(found[0].source, "newcomers", b.BOB, 0.5, ("posted #newhere",), None))
    found += crawl_events()
    return found


def crawl_events() -> list[ev.DomainEvent]:
    """The events of the AppView crawl (domain.crawl), which no Jetstream event yields."""
    from domain.appview import ProfileViewDetailed
    from domain.crawl import FOLLOWERS, PlannedAction, crawl_source, growth_action_event, observed_graph, profile_enriched

    profile = ProfileViewDetailed(did=b.BOB, handle="bob.test", display_name="Bob", followers_count=3,
                                  follows_count=2, posts_count=9)
    follow = PlannedAction(action="follow", subject=b.BOB, subject_did=b.BOB, reason="bob follows us")
    graph = observed_graph(b.BOB, FOLLOWERS, [b.ALICE], True, {b.CAROL}, crawl_source("req-2", b.BOB, b.TIME_US))
    return [profile_enriched(profile, crawl_source("req-1", b.BOB, b.TIME_US)),
            growth_action_event(follow, b.ALICE, f"at://{b.ALICE}/app.bsky.graph.follow/3mptbypluud2a", b.TIME_US),
            *graph.events]


EVENTS = every_kind_of_event()


def test_every_event_type_is_covered() -> None:
    assert {type(event) for event in EVENTS} == set(ev.EVENT_TYPES)


def test_schemas_are_unique() -> None:
    assert len(ev.SCHEMAS) == len(ev.EVENT_TYPES)
    assert all(version == 1 for _, version in ev.SCHEMAS)


ONE_OF_EACH = list({type(event): event for event in reversed(EVENTS)}.values())


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: type(e).__name__)
def test_encode_then_decode_gives_the_same_event(event: ev.DomainEvent) -> None:
    raw = ev.encode(event)
    data = orjson.loads(raw)
    assert data["schema"] == event.schema_name and data["version"] == event.schema_version
    assert data["id"] == event.id and data["did"] == event.did
    assert ev.decode(raw).unwrap() == event
    assert ev.to_json_dict(event) == data


def test_every_event_round_trips() -> None:
    assert [ev.decode(ev.encode(event)).unwrap() for event in EVENTS] == EVENTS


def test_encoding_is_stable() -> None:
    assert [ev.encode(e) for e in EVENTS] == [ev.encode(e) for e in every_kind_of_event()]


def test_ids_are_uuid5_of_source_id_schema_and_discriminator() -> None:
    like = next(e for e in EVENTS if isinstance(e, ev.LikeAdded))
    expected = uuid.uuid5(DOMAIN_EVENT_NAMESPACE, f"{like.source.id}|LikeAdded|")
    assert like.id == str(expected) == domain_event_id(like.source.id, "LikeAdded")
    assert uuid.UUID(like.id).version == 5


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=100))
def test_fast_uuid5_equals_the_standard_one(name: str) -> None:
    assert uuid5_string(name) == str(uuid.uuid5(DOMAIN_EVENT_NAMESPACE, name))


def test_ids_differ_by_type_source_and_discriminator() -> None:
    source = commit_source(b.ALICE, "3mptbypluud2a", "app.bsky.feed.like", "3mpt", "create", 1)
    other = commit_source(b.ALICE, "3mptbypluud2a", "app.bsky.feed.like", "3mpt", "delete", 1)
    ids = {
        domain_event_id(source.id, "LikeAdded"),
        domain_event_id(source.id, "UserSeen"),
        domain_event_id(other.id, "LikeAdded"),
        domain_event_id(source.id, "CandidateFound", "a"),
        domain_event_id(source.id, "CandidateFound", "b"),
    }
    assert len(ids) == 5
    # time_us and coordinates are not part of the identity
    moved = commit_source(b.ALICE, "3mptbypluud2a", "app.bsky.feed.like", "3mpt", "create", 999, SourceCoordinates("t", 2, 3))
    assert domain_event_id(moved.id, "LikeAdded") == domain_event_id(source.id, "LikeAdded")


def test_partition_key_is_the_did() -> None:
    for event in EVENTS:
        assert event.key == event.did and ev.partition_key(event) == event.did.encode()
    found = next(e for e in EVENTS if isinstance(e, ev.CandidateFound))
    assert found.key == b.BOB != found.source.did


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x00", RejectionCode.INVALID_JSON),
        (b"[]", RejectionCode.INVALID_JSON),
        (b'{"schema": "LikeAdded"}', RejectionCode.UNKNOWN_SCHEMA),
        (b'{"schema": "LikeAdded", "version": 99}', RejectionCode.UNKNOWN_SCHEMA),
        (b'{"schema": "LikeAdded", "version": "1"}', RejectionCode.UNKNOWN_SCHEMA),
        (b'{"schema": "NoSuchEvent", "version": 1}', RejectionCode.UNKNOWN_SCHEMA),
        (b'{"schema": "LikeAdded", "version": 1, "id": "x"}', RejectionCode.INVALID_DOMAIN_EVENT),
    ],
)
def test_decode_failures_are_typed(raw: bytes, code: RejectionCode) -> None:
    result = ev.decode(raw)
    assert isinstance(result, Failure) and result.failure().code is code


def test_decode_rejects_wrong_field_types() -> None:
    data: dict[str, Any] = orjson.loads(ev.encode(EVENTS[0]))
    data["source"]["time_us"] = "soon"
    result = ev.decode(orjson.dumps(data))
    assert isinstance(result, Failure) and result.failure().code is RejectionCode.INVALID_DOMAIN_EVENT


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda d: orjson.dumps(d), st.dictionaries(st.sampled_from(["schema", "version", "id", "did", "source"]), st.none() | st.integers(-5, 5) | st.sampled_from(["LikeAdded", "UserSeen", "x"]))))
def test_decoding_never_raises(raw: bytes) -> None:
    result = ev.decode(raw)
    assert is_successful(result) or result.failure().code in RejectionCode


def test_events_in_any_json_layout_decode_like_the_canonical_bytes() -> None:
    # encode's bytes take a fast path (type read from the prefix, JSON validated in one pass);
    # other layouts of the same JSON take the general one: both must give the same event
    for event in EVENTS:
        data = orjson.loads(ev.encode(event))
        reordered = {key: data[key] for key in reversed(list(data))}  # schema and version last
        for raw in (orjson.dumps(reordered), orjson.dumps(reordered, option=orjson.OPT_INDENT_2)):
            assert ev.decode(raw).unwrap() == event == ev.decode(ev.encode(event)).unwrap()


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b'{"schema":"LikeAdded","version":1,"id":"x"}', RejectionCode.INVALID_DOMAIN_EVENT),
        (b'{"schema":"LikeAdded","version":1,"id":', RejectionCode.INVALID_JSON),
        (b'{"schema":"LikeAdded","version":7,"id":"x"}', RejectionCode.UNKNOWN_SCHEMA),
    ],
)
def test_canonical_looking_bytes_that_are_not_valid_are_rejected_with_the_general_reason(
        raw: bytes, code: RejectionCode) -> None:
    result = ev.decode(raw)
    assert isinstance(result, Failure) and result.failure().code is code


# --- groups: one source event's events with one key, the source written once ----------------


def groups_of(events: list[ev.DomainEvent]) -> list[list[ev.DomainEvent]]:
    """``events`` by source event, then by key, as collect sends them."""
    by_source: dict[str, list[ev.DomainEvent]] = {}
    for event in events:
        by_source.setdefault(event.source.id, []).append(event)
    return [group for same in by_source.values() for group in ev.by_partition_key(same).values()]


def test_every_source_events_round_trip_as_groups() -> None:
    groups = groups_of(EVENTS)
    assert any(len(group) > 1 for group in groups)
    for group in groups:
        assert ev.decode_all(ev.encode_group(group)).unwrap() == tuple(group)


def test_a_group_writes_its_source_once_and_each_event_without_it() -> None:
    group = max(groups_of(EVENTS), key=len)
    data = orjson.loads(ev.encode_group(group))
    assert list(data) == ["schema", "version", "source", "events"]
    assert (data["schema"], data["version"]) == (ev.GROUP_SCHEMA, ev.GROUP_VERSION)
    assert data["source"] == ev.to_json_dict(group[0])["source"]
    singles = [ev.to_json_dict(event) for event in group]
    assert data["events"] == [{key: value for key, value in single.items() if key != "source"} for single in singles]
    assert len(ev.encode_group(group)) < sum(len(ev.encode(event)) for event in group)


def test_decode_all_reads_one_event_as_a_group_of_one_in_any_layout() -> None:
    for event in EVENTS[:50]:
        data = orjson.loads(ev.encode(event))
        assert ev.decode_all(ev.encode(event)).unwrap() == (event,)
        assert ev.decode_all(orjson.dumps(dict(reversed(list(data.items()))))).unwrap() == (event,)


def test_a_group_in_another_json_layout_decodes_like_the_canonical_bytes() -> None:
    for group in groups_of(EVENTS)[:50]:
        data = orjson.loads(ev.encode_group(group))
        reordered = {key: data[key] for key in reversed(list(data))}
        for raw in (orjson.dumps(reordered), orjson.dumps(data, option=orjson.OPT_INDENT_2)):
            assert ev.decode_all(raw).unwrap() == tuple(group)


def test_by_partition_key_keeps_each_keys_events_in_order() -> None:
    source = commit_source(b.ALICE, "rev1", "app.bsky.feed.post", "rkey1", "create", 1_700_000_000_000_000)
    seen = ev.UserSeen.derive(source, time_us=source.time_us)
    found = candidate(source, "newcomers", b.BOB, 0.5, ("new",))
    activity = ev.ActivityRecorded.derive(source, hour=1, iso_weekday=2, collection="app.bsky.feed.post",
                                          operation="create", time_us=source.time_us)
    groups = ev.by_partition_key([seen, found, activity])
    assert groups == {b.ALICE.encode(): [seen, activity], b.BOB.encode(): [found]}


def test_encode_group_refuses_no_events_and_events_of_several_sources() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ev.encode_group([])
    first = EVENTS[0]
    second = next(event for event in EVENTS if event.source != first.source)
    with pytest.raises(ValueError, match="one source event"):
        ev.encode_group([first, second])


def _group_with(change: Any) -> bytes:
    data = orjson.loads(ev.encode_group(max(groups_of(EVENTS), key=len)))
    change(data)
    return orjson.dumps(data)


@pytest.mark.parametrize(
    ("raw", "code", "says"),
    [
        (ev.encode_group(groups_of(EVENTS)[0])[:-2], RejectionCode.INVALID_JSON, "not JSON"),
        (_group_with(lambda d: d.update(events=[])), RejectionCode.INVALID_DOMAIN_EVENT, "'events'"),
        (_group_with(lambda d: d.update(events={})), RejectionCode.INVALID_DOMAIN_EVENT, "'events'"),
        (_group_with(lambda d: d["source"].update(time_us="soon")), RejectionCode.INVALID_DOMAIN_EVENT, "source: time_us"),
        (_group_with(lambda d: d.pop("source")), RejectionCode.INVALID_DOMAIN_EVENT, "source"),
        (_group_with(lambda d: d["events"][1].update(schema="NoSuchEvent")), RejectionCode.UNKNOWN_SCHEMA, "NoSuchEvent"),
        (_group_with(lambda d: d["events"][1].pop("id")), RejectionCode.INVALID_DOMAIN_EVENT, "event 1: id"),
        (_group_with(lambda d: d["events"][0].update(source={})), RejectionCode.INVALID_DOMAIN_EVENT, "event 0"),
        (_group_with(lambda d: d["events"].append(7)), RejectionCode.INVALID_DOMAIN_EVENT, "not an object"),
    ],
)
def test_a_group_is_refused_whole_with_the_reason(raw: bytes, code: RejectionCode, says: str) -> None:
    result = ev.decode_all(raw)
    assert isinstance(result, Failure) and result.failure().code is code
    assert says in result.failure().message


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200).map(lambda tail: ev.encode_group(groups_of(EVENTS)[0])[:48] + tail)
       | st.builds(lambda d: orjson.dumps({"schema": "DomainEvents", "version": 1, **d}),
                   st.dictionaries(st.sampled_from(["source", "events"]),
                                   st.none() | st.integers(-5, 5) | st.lists(st.dictionaries(st.sampled_from(["schema", "version", "id"]), st.integers(0, 2)), max_size=2))))
def test_decoding_a_group_never_raises(raw: bytes) -> None:
    result = ev.decode_all(raw)
    assert is_successful(result) or result.failure().code in RejectionCode
