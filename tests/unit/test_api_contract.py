"""The API's contract: parameters parse or answer 400 naming themselves, and the OpenAPI document
describes exactly the shapes the handlers write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import jsonschema
import pytest

from projections import QueryStats
from streams.api.routes import ACTOR, AT, HOURS, MIN_SCORE, STRATEGY, Api, create_api_pool, limit
from streams.api.contract import ApiError, UserDetail
from streams.config import load_settings
from streams.health.report import HealthRegistry
from streams.adapters.ratelimit import InboundRateLimiter


def rejection(param: Any, raw: str) -> dict[str, Any]:
    with pytest.raises(ApiError) as refused:
        param.parse(raw)
    assert refused.value.status == 400 and refused.value.code == "INVALID_PARAMETER"
    assert refused.value.message.startswith(f"{param.name} ")
    return refused.value.details or {}


def test_integers_are_parsed_within_their_bounds() -> None:
    assert HOURS.parse(None) == 24 and HOURS.parse("1") == 1 and HOURS.parse("168") == 168 and HOURS.parse("+5") == 5
    for raw in ("0", "169", "-1", "1.5", "ten", " 5", "5\n", "", "9" * 40):
        assert rejection(HOURS, raw) == {"parameter": "hours", "value": raw}
    assert limit(50).parse(None) == 50


def test_numbers_must_be_finite() -> None:
    assert MIN_SCORE.parse(None) is None and MIN_SCORE.parse("0.5") == 0.5 and MIN_SCORE.parse("-1e3") == -1000.0
    for raw in ("nan", "inf", "1e999", "0x10", "1,5"):
        rejection(MIN_SCORE, raw)


def test_moments_are_iso_8601_in_utc_unless_an_offset_is_given() -> None:
    assert AT.parse("2026-07-04T15:00:00Z") == datetime(2026, 7, 4, 15, tzinfo=UTC)
    assert AT.parse("2026-07-04T15:00:00") == datetime(2026, 7, 4, 15, tzinfo=UTC)
    assert AT.parse("2026-07-04t17:00:00+02:00") == datetime(2026, 7, 4, 15, tzinfo=UTC)
    assert AT.parse("0001-01-01T00:00:00Z") == datetime(1, 1, 9, tzinfo=UTC)  # no window before year 1
    early = AT.parse("0001-01-02T00:00:00+14:00")
    assert early.replace(tzinfo=None) == datetime(1, 1, 9) and early.utcoffset() == timedelta(hours=14)
    assert AT.parse("9999-12-31T23:59:59-23:59").tzinfo == timezone(-timedelta(hours=23, minutes=59))
    for raw in ("yesterday", "2026-02-30T00:00:00Z", "2026-07-04T24:00:00Z"):
        rejection(AT, raw)


def test_actors_are_dids_or_handles_and_strategies_are_known() -> None:
    for actor in ("did:plc:z72i7hdynmk6r22z27h6tvur", "did:web:example.com", "bsky.app", "@alice.bsky.social"):
        assert ACTOR.parse(actor) == actor
    for actor in ("alice", "did:plc:", "not a did", "did:PLC:x", "x" * 2049):
        rejection(ACTOR, actor)
    assert STRATEGY.parse("interests") == "interests"
    details = rejection(STRATEGY, "bogus")
    assert "interests" in details["allowed"] and "snowball" in details["allowed"]


@pytest.fixture
def document() -> dict[str, Any]:
    settings = load_settings(None)
    api = Api(settings, pool=create_api_pool(settings), registry=HealthRegistry(),
              limiter=InboundRateLimiter(100, 60), stats=QueryStats())
    return api.document


def validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def test_every_object_in_the_document_is_closed_and_fully_required(document: dict[str, Any]) -> None:
    def objects(node: Any) -> Any:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                yield node
            for value in node.values():
                yield from objects(value)
        elif isinstance(node, list):
            for item in node:
                yield from objects(item)

    found = list(objects(document["components"]["schemas"]))
    assert len(found) > 20
    for schema in found:
        assert schema["additionalProperties"] is False and set(schema["required"]) == set(schema["properties"])


def test_a_user_answer_conforms_to_its_documented_shape(document: dict[str, Any]) -> None:
    when = datetime(2026, 7, 4, 14, tzinfo=UTC)
    user = {column: None for column in ("handle", "display_name", "description", "pronouns", "website", "avatar_url",
                                        "banner_url", "avatar_cid", "banner_cid", "joined_via_starter_pack_uri",
                                        "pinned_post_uri", "profile_created_at", "profile_updated_at",
                                        "account_created_at", "active", "status", "first_seen_at", "last_seen_at",
                                        "appview_fetched_at")}
    user |= {"did": "did:plc:x", "follower_count": 1, "follow_count": 2, "post_count": 3, "likes_received": 4,
             "reposts_received": 0, "replies_received": 0, "quotes_received": 0, "strategies": ["interests"],
             "candidates": [{"strategy": "interests", "score": 1.0, "reasons": ["r"], "subject_uri": None,
                             "source_did": "did:plc:y", "first_seen_at": when, "last_seen_at": when}],
             "follower_gain_24h": {"gained": 1, "lost": 0, "net": 1}, "graph": {"followers": 1, "follows": 2},
             "follower_gains": [],
             "recent_activity": [], "growth_actions": [],
             "recent_posts": [], "an_unknown_column": "left out"}
    heatmap = {"did": "did:plc:x", "total": 0, "grid": [[0] * 24 for _ in range(7)], "peak": None}
    answer = UserDetail.from_rows(user, heatmap).model_dump(mode="json")
    assert "an_unknown_column" not in answer and answer["counts"]["appview"] is None
    validator(document, "UserDetail").validate(answer)
    answer["activity_pattern"]["grid"].pop()
    with pytest.raises(jsonschema.ValidationError):
        validator(document, "UserDetail").validate(answer)


def test_each_route_documents_its_statuses_and_headers(document: dict[str, Any]) -> None:
    trending = document["paths"]["/api/trending"]["get"]
    assert set(trending["responses"]) == {"200", "400", "429", "500", "503"}
    assert set(trending["responses"]["429"]["headers"]) == {"X-Request-Id", "X-RateLimit-Limit",
                                                            "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After"}
    assert set(document["paths"]["/health"]["get"]["responses"]["200"]["headers"]) == {"X-Request-Id"}
    assert document["paths"]["/api/stats/database"]["get"]["responses"].keys() == {"200", "429", "500"}
    candidates = document["paths"]["/api/candidates"]["get"]["responses"]["200"]["content"]["application/json"]
    assert candidates["schema"]["properties"]["data"] == {"oneOf": [{"$ref": "#/components/schemas/CandidateList"},
                                                                    {"$ref": "#/components/schemas/StrategyList"}]}


def test_without_rate_limiting_no_limit_is_documented() -> None:
    settings = load_settings(None, enable_rate_limit=False)
    api = Api(settings, pool=create_api_pool(settings), registry=HealthRegistry(), limiter=InboundRateLimiter(1, 1))
    responses = api.document["paths"]["/api/trending"]["get"]["responses"]
    assert "429" not in responses and set(responses["200"]["headers"]) == {"X-Request-Id"}
