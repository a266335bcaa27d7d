"""Crawl requests: versioned JSON, deterministic ids (a request made twice is the same request),
typed decoding failures; the AppView models tolerate what the lexicons allow."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from returns.pipeline import is_successful
from returns.result import Failure

from domain.appview import (
    GetPostThreadOutput,
    GetProfilesOutput,
    NotFoundPost,
    ThreadViewPost,
    UnknownThreadItem,
    parse_response,
    thread_replies,
)
from domain.crawl import (
    REQUEST_TYPES,
    CrawlConfig,
    EnrichmentConfig,
    InteractionsConfig,
    SearchConfig,
    SnowballConfig,
    decode_request,
    encode_request,
    enrichment_decision,
    expansion_request,
    graph_requests,
    growth_actions_request,
    interactions_request,
    profile_requests,
    search_requests,
    snowball_params,
    snowball_request,
)
from domain.events import UserSeen
from domain.identity import sequence_source
from domain.rejections import RejectionCode

ALICE = "did:plc:alice4vbx7k2t3nc5ydhyqwq"
T = 1_783_175_888_085_434


def every_kind_of_request() -> list:
    snowball = snowball_request(["Alice.test", "@bob.test", ALICE], SnowballConfig(), label="run-1", requested_at_us=T)
    seen = UserSeen.derive(sequence_source(ALICE, "account", 1, T), time_us=T)
    return [
        enrichment_decision(seen, None, EnrichmentConfig()).unwrap(),
        snowball,
        expansion_request(snowball.id, ALICE, "alice.test", 0, "alice.test", snowball.params, requested_at_us=T,
                          parent_id=snowball.id),
        *search_requests(SearchConfig(), label="run-1", requested_at_us=T),
        interactions_request("alice.test", InteractionsConfig(), label="run-1", requested_at_us=T),
        growth_actions_request(["like_mentions", "follow_back"], run="2026-07-04", requested_at_us=T),
        *graph_requests([ALICE], label="run-1", max_pages=5, page_size=100, requested_at_us=T),
        *profile_requests([ALICE], label="run-1", refresh_after_us=3_600_000_000, requested_at_us=T),
    ]


def test_every_request_kind_round_trips_through_its_json() -> None:
    requests = every_kind_of_request()
    assert {type(r) for r in requests} == set(REQUEST_TYPES)
    for request in requests:
        raw = encode_request(request)
        data = orjson.loads(raw)
        assert (data["schema"], data["version"], data["id"]) == (request.schema_name, 1, request.id)
        assert decode_request(raw).unwrap() == request


def test_a_request_made_twice_has_the_same_id_whenever_it_is_made() -> None:
    first, later = every_kind_of_request(), [r for r in every_kind_of_request()]
    assert [r.id for r in first] == [r.id for r in later]
    again = snowball_request(["alice.test", "bob.test", ALICE], SnowballConfig(), label="run-1", requested_at_us=T + 99)
    assert again.id == first[1].id and again.seeds == ("alice.test", "bob.test", ALICE)
    other_label = snowball_request(["alice.test"], SnowballConfig(), label="run-2", requested_at_us=T)
    other_bounds = snowball_request(["alice.test"], SnowballConfig(max_degree=3), label="run-1", requested_at_us=T)
    assert len({first[1].id, other_label.id, other_bounds.id}) == 3
    assert len({r.id for r in first}) == len(first)


def test_search_makes_one_request_per_default_query() -> None:
    requests = search_requests(SearchConfig(), label="x", requested_at_us=T)
    assert [r.query for r in requests] == ["#introduction", "#newhere", "#art", "#photography", "#tech", "#politics"]
    assert {r.min_likes for r in requests} == {10}


def test_unknown_growth_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown growth actions: retweet"):
        growth_actions_request(["retweet"], run="x", requested_at_us=T)


@pytest.mark.parametrize(("raw", "code"), [
    (b"{", RejectionCode.INVALID_JSON),
    (b"[1]", RejectionCode.INVALID_JSON),
    (b'{"schema": "EnrichProfile", "version": 2}', RejectionCode.UNKNOWN_SCHEMA),
    (b'{"schema": "Nope", "version": 1}', RejectionCode.UNKNOWN_SCHEMA),
    (b'{"schema": "EnrichProfile", "version": 1, "id": "x"}', RejectionCode.INVALID_DOMAIN_EVENT),
])
def test_decoding_failures_are_typed_values(raw: bytes, code: RejectionCode) -> None:
    result = decode_request(raw)
    assert isinstance(result, Failure) and result.failure().code is code


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=120) | st.builds(orjson.dumps, st.dictionaries(
    st.sampled_from(["schema", "version", "id", "did", "requested_at_us", "origin"]),
    st.none() | st.integers(-3, 3) | st.sampled_from(["EnrichProfile", "StartSnowball", "x"]))))
def test_decoding_never_raises(raw: bytes) -> None:
    result = decode_request(raw)
    assert is_successful(result) or result.failure().code in RejectionCode


def test_configuration_is_validated() -> None:
    with pytest.raises(ValidationError, match="max_followers must be >= min_followers"):
        SnowballConfig(min_followers=10, max_followers=5)
    with pytest.raises(ValidationError):
        EnrichmentConfig(batch_size=26)  # getProfiles takes 25
    with pytest.raises(ValidationError):
        CrawlConfig.model_validate({"snowball": {"max_degreee": 2}})  # a typo is an error
    assert CrawlConfig().actions.enabled is False and CrawlConfig().actions.dry_run is True
    assert snowball_params(SnowballConfig()).max_degree == 2


# --- the AppView's answers ----------------------------------------------------------------------


def post(uri: str, did: str, **extra: object) -> dict:
    return {"uri": uri, "cid": "bafyreib", "author": {"did": did, "handle": "a.test"}, "record": {"text": "hi"},
            "indexedAt": "2026-07-04T00:00:00.000Z", **extra}


def test_views_ignore_fields_the_code_does_not_know() -> None:
    raw = orjson.dumps({"profiles": [{"did": ALICE, "handle": "alice.test", "followersCount": 3, "verification": {"x": 1},
                                      "status": {"$type": "app.bsky.actor.defs#statusView"}, "newField": [1, 2]}],
                        "extra": True})
    (profile,) = parse_response(GetProfilesOutput, raw).unwrap().profiles
    assert (profile.did, profile.followers_count, profile.follows_count) == (ALICE, 3, None)


def test_a_view_breaking_the_lexicon_is_a_failure_value() -> None:
    result = parse_response(GetProfilesOutput, orjson.dumps({"profiles": [{"did": "not-a-did", "handle": "a.test"}]}))
    assert isinstance(result, Failure) and "profiles.0.did" in result.failure().message
    wrong_type = parse_response(GetProfilesOutput, orjson.dumps({"profiles": [{"did": ALICE, "handle": "a.test",
                                                                               "followersCount": "3"}]}))
    assert isinstance(wrong_type, Failure)
    assert isinstance(parse_response(GetProfilesOutput, b"not json"), Failure)


def test_threads_parse_an_open_union_and_replies_flatten_depth_first() -> None:
    a, b = ALICE, "did:plc:bob2xq3yvq2ruc4ks6l7o3ja"
    tvp = "app.bsky.feed.defs#threadViewPost"
    thread = {"thread": {"$type": tvp, "post": post(f"at://{a}/app.bsky.feed.post/1", a), "replies": [
        {"$type": tvp, "post": post(f"at://{b}/app.bsky.feed.post/2", b), "replies": [
            {"$type": tvp, "post": post(f"at://{a}/app.bsky.feed.post/3", a), "replies": []}]},
        {"$type": "app.bsky.feed.defs#notFoundPost", "uri": f"at://{b}/app.bsky.feed.post/4", "notFound": True},
        {"$type": "app.bsky.feed.defs#somethingNew", "uri": "x"},
        {"$type": tvp, "post": post(f"at://{b}/app.bsky.feed.post/5", b)},
    ]}}
    parsed = parse_response(GetPostThreadOutput, orjson.dumps(thread)).unwrap()
    assert isinstance(parsed.thread, ThreadViewPost)
    kinds = [type(item) for item in parsed.thread.replies]
    assert kinds == [ThreadViewPost, NotFoundPost, UnknownThreadItem, ThreadViewPost]
    assert [p.uri[-1] for p in thread_replies(parsed.thread)] == ["2", "3", "5"]
    assert thread_replies(parsed.thread.replies[1]) == []
