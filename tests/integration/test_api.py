"""The HTTP API of a running Faust worker, over the real sample projected into a scratch schema
(plus hand-built follows, posts and candidates): every route's answers, the envelope, the
request id and rate-limit headers, the 400, 404, 405, 429 and 503 answers, and a schemathesis
run proving that no generated request gets a server error or an answer the OpenAPI document
does not describe."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings

from projections import latest_version
from streams.config import load_settings
from tests.integration.api_support import (
    api_worker,
    AT,
    FANS,
    RISER,
    RISER_HANDLE,
    SAMPLE_AT,
    STAR,
    STAR_HANDLE,
    Reply,
    Worker,
    api_in_process,
    client,
    free_port,
    get,
    produce_raw_event,
)

RATE_LIMIT = 300
"""Per client address and minute: schemathesis sends each operation's cases from an address of its own."""
HEX32 = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with api_worker("api", tmp_path_factory.mktemp("api"), rate_limit=RATE_LIMIT) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client() as session:
        yield session


async def api(http: aiohttp.ClientSession, worker: Worker, path: str, **params: Any) -> Reply:
    return await get(http, f"{worker.base_url}{path}", params={k: str(v) for k, v in params.items()})


def assert_success(reply: Reply) -> Any:
    assert reply.status == 200, reply.body
    assert reply.body["success"] is True and reply.body["error"] is None
    assert set(reply.body) == {"success", "data", "error", "meta"}
    assert reply.body["meta"]["requestId"] == reply.headers["X-Request-Id"]
    return reply.data


def assert_error(reply: Reply, status: int, code: str) -> dict[str, Any]:
    assert reply.status == status, reply.body
    assert reply.body["success"] is False and reply.body["data"] is None
    assert reply.error is not None and reply.error["code"] == code
    assert reply.body["meta"]["requestId"] == reply.headers["X-Request-Id"]
    return reply.error


# --- analytics -----------------------------------------------------------------------------


async def test_trending_ranks_accounts_by_net_follower_gain(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/trending", at=AT, limit=2))
    assert data == [
        {"did": STAR, "handle": STAR_HANDLE, "display_name": "Star", "follower_count": 5,
         "appview_followers_count": 150, "followers": 150, "gained": 5, "lost": 0, "net_gain": 5},
        {"did": RISER, "handle": RISER_HANDLE, "display_name": None, "follower_count": 2,
         "appview_followers_count": 102, "followers": 102, "gained": 3, "lost": 1, "net_gain": 2},
    ]
    everyone = assert_success(await api(http, worker, "/api/trending", at=AT, limit=100))
    assert len(everyone) == 2 + 6  # and the six accounts the sample's follows followed, +1 each
    assert all(row["net_gain"] == 1 for row in everyone[2:])
    # an hour's window before the hand-built follows, and "now" (months later) find nothing
    assert assert_success(await api(http, worker, "/api/trending", at="2026-07-04T13:59:59Z", hours=1)) == []
    assert assert_success(await api(http, worker, "/api/trending")) == []


async def test_growth_velocity_divides_the_gain_by_the_followers_at_the_start(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/growth-velocity", at=AT))
    assert [(row["did"], row["base"], row["relative_gain"]) for row in data] == [(STAR, 145, 5 / 145), (RISER, 100, 0.02)]
    only_star = assert_success(await api(http, worker, "/api/growth-velocity", at=AT, min_base=101))
    assert [row["did"] for row in only_star] == [STAR]


async def test_engagement_leaders_rank_by_engagement_received(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/engagement-leaders", limit=100))
    assert len(data) == 100  # 128 accounts received engagement
    assert data[0] | {"did": STAR} == {"did": STAR, "handle": STAR_HANDLE, "display_name": "Star", "follower_count": 5,
                                       "likes_received": 3, "reposts_received": 1, "replies_received": 0,
                                       "quotes_received": 0, "engagement": 4}
    engagement = [row["engagement"] for row in data]
    assert engagement == sorted(engagement, reverse=True)
    assert all(row["engagement"] == row["likes_received"] + row["reposts_received"] + row["replies_received"]
               + row["quotes_received"] for row in data)


async def test_network_stats_count_the_sample_and_the_hand_built_events(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/network-stats", at=SAMPLE_AT, minutes=5))
    assert {k: data[k] for k in ("posts", "follows", "likes", "reposts", "blocks")} == {
        "posts": 17 + 2, "follows": 6 + 8 - 1, "likes": 105 + 4, "reposts": 15 + 1, "blocks": 1}
    assert data["events_per_minute"] == 148 / 5  # the sample's collected commits, 14:38
    assert sum(point["count"] for point in data["per_minute"]) == 148
    assert data["window_minutes"] == 5 and data["approximate"] == []


async def test_a_user_is_found_by_did_or_handle_with_counts_reasons_and_activity(
        worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, f"/api/users/{STAR}", at=AT))
    assert data["did"] == STAR and data["handle"] == STAR_HANDLE
    assert data["profile"]["display_name"] == "Star"
    assert data["counts"]["observed"] == {"followers": 5, "follows": 0, "posts": 1, "likes_received": 3,
                                          "reposts_received": 1, "replies_received": 0, "quotes_received": 0}
    assert data["counts"]["appview"] | {"fetched_at": None} == {"followers": 150, "follows": None, "posts": None,
                                                                 "labels": [], "fetched_at": None}
    assert data["counts"]["graph"] == {"followers": 5, "follows": 0}  # no crawl observed more
    assert data["strategies"] == ["interests"]
    assert [(c["strategy"], c["score"], c["reasons"], c["source_did"]) for c in data["candidates"]] == [
        ("interests", 0.9, ["posts about #growth"], FANS[0])]
    assert data["follower_gain_24h"] == {"gained": 5, "lost": 0, "net": 5}
    assert data["recent_activity"] == [{"occurred_at": "2026-07-04T14:10:00Z", "collection": "app.bsky.feed.post",
                                        "operation": "create"}]
    assert [(a["action"], a["reason"]) for a in data["growth_actions"]] == [("follow", "follows back accounts that grow")]
    assert [(p["text"], p["like_count"], p["repost_count"]) for p in data["recent_posts"]] == [("Hello #growth #bluesky", 3, 1)]
    assert data["activity_pattern"]["total"] == 1
    assert data["activity_pattern"]["peak"] == {"iso_weekday": 6, "hour": 14, "events": 1}  # a Saturday, 14h UTC
    for handle in (STAR_HANDLE, f"@{STAR_HANDLE}", STAR_HANDLE.upper()):
        assert assert_success(await api(http, worker, f"/api/users/{handle}", at=AT)) == data


async def test_the_users_list_pages_orders_and_filters_accounts_with_paging_metadata(
        worker: Worker, http: aiohttp.ClientSession) -> None:
    first = await api(http, worker, "/api/users", limit=2)
    page = assert_success(first)
    assert len(page) == 2 and first.body["meta"]["pagination"] == {
        "limit": 2, "offset": 0, "returned": 2, "hasMore": True, "nextOffset": 2}
    assert [u["follower_count"] for u in page] == sorted((u["follower_count"] for u in page), reverse=True)
    assert page[0]["did"] == STAR  # 5 observed followers: the most here
    # walking the pages by nextOffset visits every account once, in the order, ending without a next page
    seen, offset = [], 0
    while offset is not None:
        reply = await api(http, worker, "/api/users", order="did", limit=50, offset=offset)
        seen += [u["did"] for u in assert_success(reply)]
        offset = reply.body["meta"]["pagination"]["nextOffset"]
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and STAR in seen and RISER in seen
    assert reply.body["meta"]["pagination"]["hasMore"] is False
    # filters: a handle prefix (with or without @, any case), a DID prefix, a strategy
    for q in ("star.", "@STAR.EX", STAR[:20]):
        assert [u["did"] for u in assert_success(await api(http, worker, "/api/users", q=q))] == [STAR], q
    selected = assert_success(await api(http, worker, "/api/users", strategy="interests"))
    assert STAR in {u["did"] for u in selected} and all("interests" in u["strategies"] for u in selected)
    assert assert_success(await api(http, worker, "/api/users", q="no-such-handle%")) == []
    engaged = assert_success(await api(http, worker, "/api/users", order="engagement", limit=3))
    assert [u["engagement"] for u in engaged] == sorted((u["engagement"] for u in engaged), reverse=True)
    refused = assert_error(await api(http, worker, "/api/users", order="random"), 400, "INVALID_PARAMETER")
    assert refused["details"]["parameter"] == "order" and "followers" in refused["details"]["allowed"]
    # the envelope of routes that are not pages has pagination null
    assert (await api(http, worker, "/api/engagement-leaders")).body["meta"]["pagination"] is None


async def test_an_unknown_user_is_a_404_and_a_malformed_one_a_400(worker: Worker, http: aiohttp.ClientSession) -> None:
    error = assert_error(await api(http, worker, "/api/users/did:plc:neverseen22222222222222"), 404, "USER_NOT_FOUND")
    assert error["details"] == {"actor": "did:plc:neverseen22222222222222"}
    error = assert_error(await api(http, worker, "/api/users/not a did"), 400, "INVALID_PARAMETER")
    assert error["details"]["parameter"] == "actor" and error["message"].startswith("actor must be a DID")


async def test_top_posts_rank_by_engagement_score(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/posts/top", at=AT))
    assert [row["score"] for row in data] == [5, 3, 3, 1]  # STAR's, two sample posts, RISER's
    best = data[0]
    assert (best["did"], best["text"], best["like_count"], best["repost_count"]) == (STAR, "Hello #growth #bluesky", 3, 1)
    assert (data[-1]["did"], data[-1]["handle"], data[-1]["like_count"]) == (RISER, RISER_HANDLE, 1)


async def test_hashtags_trend_with_their_hourly_counts(worker: Worker, http: aiohttp.ClientSession) -> None:
    data = assert_success(await api(http, worker, "/api/hashtags/trending", at=AT))
    assert data[0] == {"tag": "growth", "total": 2, "hourly": [{"hour": "2026-07-04T14:00:00Z", "count": 2}]}
    assert {"tag": "bluesky", "total": 1, "hourly": [{"hour": "2026-07-04T14:00:00Z", "count": 1}]} in data
    # (13:15, 14:15]: only STAR's post of 14:10
    early = assert_success(await api(http, worker, "/api/hashtags/trending", at="2026-07-04T14:15:00Z", hours=1))
    assert [(row["tag"], row["total"]) for row in early] == [("bluesky", 1), ("growth", 1)]


async def test_candidates_of_a_strategy_and_the_list_of_strategies(worker: Worker, http: aiohttp.ClientSession) -> None:
    listed = assert_success(await api(http, worker, "/api/candidates"))
    assert listed == {"strategies": [{"strategy": "interests", "candidates": 2, "last_seen_at": "2026-07-04T14:51:00Z"}]}
    chosen = assert_success(await api(http, worker, "/api/candidates", strategy="interests"))
    assert chosen["strategy"] == "interests"
    assert [(c["did"], c["handle"], c["score"]) for c in chosen["candidates"]] == [(STAR, STAR_HANDLE, 0.9),
                                                                                  (RISER, RISER_HANDLE, 0.5)]
    best = assert_success(await api(http, worker, "/api/candidates", strategy="interests", min_score=0.6))
    assert [c["did"] for c in best["candidates"]] == [STAR]
    assert assert_success(await api(http, worker, "/api/candidates", strategy="newcomers")) == {
        "strategy": "newcomers", "candidates": []}
    error = assert_error(await api(http, worker, "/api/candidates", strategy="bogus"), 400, "INVALID_PARAMETER")
    assert error["details"]["parameter"] == "strategy" and "interests" in error["details"]["allowed"]


# --- errors, headers, limits ---------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "parameter"), [
    ("/api/trending", {"limit": "0"}, "limit"),
    ("/api/trending", {"limit": "101"}, "limit"),
    ("/api/trending", {"limit": "ten"}, "limit"),
    ("/api/trending", {"hours": "169"}, "hours"),
    ("/api/posts/top", {"hours": "0"}, "hours"),
    ("/api/hashtags/trending", {"at": "yesterday"}, "at"),
    ("/api/network-stats", {"minutes": "1441"}, "minutes"),
    ("/api/growth-velocity", {"min_base": "0"}, "min_base"),
    ("/api/candidates", {"strategy": "interests", "min_score": "nan"}, "min_score"),
    ("/api/users/did:plc:x", {"recent": "101"}, "recent"),
    ("/api/users", {"offset": "-1"}, "offset"),
])
async def test_an_invalid_parameter_is_a_400_naming_it(worker: Worker, http: aiohttp.ClientSession, path: str,
                                                       params: dict[str, str], parameter: str) -> None:
    error = assert_error(await api(http, worker, path, **params), 400, "INVALID_PARAMETER")
    assert error["message"].startswith(f"{parameter} must")
    assert error["details"] == {"parameter": parameter, "value": params[parameter]}


async def test_unknown_routes_are_404_and_wrong_methods_405_in_the_envelope(worker: Worker, http: aiohttp.ClientSession) -> None:
    assert_error(await api(http, worker, "/api/nothing-here"), 404, "NOT_FOUND")
    assert_error(await api(http, worker, "/nothing-here"), 404, "NOT_FOUND")
    async with http.post(f"{worker.base_url}/api/trending") as response:
        body = await response.json()
        assert response.status == 405 and response.headers["Allow"] == "GET, HEAD"
        assert body["error"]["code"] == "METHOD_NOT_ALLOWED" and body["data"] is None


async def test_every_response_carries_a_request_id_taken_from_the_client_when_well_formed(
        worker: Worker, http: aiohttp.ClientSession) -> None:
    given = await get(http, f"{worker.base_url}/api/trending", headers={"X-Request-Id": "client-id_1.2"})
    assert given.headers["X-Request-Id"] == given.body["meta"]["requestId"] == "client-id_1.2"
    for bad in ("has space", "x" * 129, "semi;colon"):
        replaced = await get(http, f"{worker.base_url}/api/trending", headers={"X-Request-Id": bad})
        assert HEX32.match(replaced.headers["X-Request-Id"])
    for path in ("/health", "/openapi.json", "/api/nothing-here", "/api/users/did:plc:nobody"):
        async with http.get(f"{worker.base_url}{path}") as response:
            assert HEX32.match(response.headers["X-Request-Id"]), path


async def test_api_responses_carry_rate_limit_headers_and_the_limit_answers_429(worker: Worker) -> None:
    async with client("127.0.0.7") as http:
        started = time.monotonic()  # the allowance refills from the first request on
        first = await get(http, f"{worker.base_url}/api/stats/database")
        assert first.headers["X-RateLimit-Limit"] == str(RATE_LIMIT)
        assert first.headers["X-RateLimit-Remaining"] == str(RATE_LIMIT - 1)
        # Reset is a delay in whole seconds (at most the window), not an epoch time
        assert 1 <= int(first.headers["X-RateLimit-Reset"]) <= 60
        for path in ("/api/nothing-here", "/api/trending?limit=0"):  # errors under /api/ count and say so too
            assert "X-RateLimit-Remaining" in (await get(http, f"{worker.base_url}{path}")).headers
        health = await get(http, f"{worker.base_url}/health")
        assert "X-RateLimit-Limit" not in health.headers  # probes are not limited
        burst = await asyncio.gather(*(get(http, f"{worker.base_url}/api/stats/database") for _ in range(RATE_LIMIT + 20)))
        refilled = (time.monotonic() - started) / (60 / RATE_LIMIT)  # GCRA: one more every window / limit
        allowed = sum(r.status == 200 for r in burst)
        assert RATE_LIMIT - 3 <= allowed <= RATE_LIMIT - 3 + refilled + 1  # 3 were spent above
        refused = next(r for r in burst if r.status != 200)
        error = assert_error(refused, 429, "RATE_LIMITED")
        assert refused.headers["X-RateLimit-Remaining"] == "0"
        assert int(refused.headers["Retry-After"]) == error["details"]["retry_after"] >= 1
        assert int(refused.headers["Retry-After"]) <= int(refused.headers["X-RateLimit-Reset"]) <= 60
    async with client("127.0.0.8") as other:  # another client is not affected
        assert_success(await get(other, f"{worker.base_url}/api/stats/database"))


async def test_health_is_healthy_when_fresh_events_flow(worker: Worker, http: aiohttp.ClientSession) -> None:
    await produce_raw_event(worker.env)
    await asyncio.sleep(1.1)  # past the report cache
    reply = await get(http, f"{worker.base_url}/health")
    report = assert_success(reply)
    # the original engine's shape: overall, services[] (service, status, responseTime in ms, timestamp), timestamp
    assert set(report) == {"overall", "services", "timestamp"}
    checks = {check["service"]: check for check in report["services"]}
    assert set(checks) >= {"kafka", "postgres", "jetstream", "lag.collect", "lag.growth-events", "lag.projector",
                           "dead-letters", "breaker.postgres", "tracing"}
    assert all(set(check) == {"service", "status", "responseTime", "timestamp", "message"}
               and check["responseTime"] >= 0 for check in checks.values())
    assert report["overall"] == "healthy", checks
    assert re.match(r"newest raw event is \d+\.\ds old", checks["jetstream"]["message"])
    assert checks["postgres"]["message"].startswith(f"schema version {latest_version()};")


async def test_a_dead_database_is_a_503_on_health_and_on_queries(tmp_path: Path) -> None:
    settings = load_settings(None, api_port=free_port(), database_url="postgresql://bge:bge@127.0.0.1:1/bge",
                             bge_topic_prefix=f"api{uuid.uuid4().hex[:8]}.", bge_state_dir=tmp_path)
    async with api_in_process(settings) as base_url, client() as http:
        health = await get(http, f"{base_url}/health")
        assert health.status == 503 and health.body["success"] is False
        assert health.data["overall"] == "unhealthy"
        assert health.error is not None and "postgres" in health.error["details"]["unhealthy"]
        postgres = next(c for c in health.data["services"] if c["service"] == "postgres")
        assert postgres["status"] == "unhealthy" and "refused" in postgres["message"].lower()
        error = assert_error(await get(http, f"{base_url}/api/trending"), 503, "DATABASE_UNAVAILABLE")
        assert "retry" in error["message"]


# --- the document --------------------------------------------------------------------------


async def test_the_openapi_document_describes_every_route(worker: Worker, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{worker.base_url}/openapi.json") as response:
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert set(document["paths"]) == {
        "/health", "/openapi.json", "/api/trending", "/api/growth-velocity", "/api/engagement-leaders",
        "/api/network-stats", "/api/users", "/api/users/{actor}", "/api/posts/top", "/api/hashtags/trending",
        "/api/candidates", "/api/stats/database", "/api/journey", "/api/journey/record", "/api/dead-letters",
        "/api/crawls"}
    trending = document["paths"]["/api/trending"]["get"]
    assert set(trending["responses"]) == {"200", "400", "429", "500", "503"}
    limit = next(p for p in trending["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    assert set(document["paths"]["/api/users/{actor}"]["get"]["responses"]) == {"200", "400", "404", "429", "500", "503"}
    assert set(document["paths"]["/health"]["get"]["responses"]) == {"200", "503", "500"}


class SourceAddress(requests.adapters.HTTPAdapter):
    """Connections from one loopback address: one client of the rate limiter."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def test_no_generated_request_gets_a_server_error_or_an_undocumented_answer(worker: Worker) -> None:
    """Schemathesis generates requests from the served document (50 per operation, each
    operation from its own client address) and checks every answer against it: no 5xx, only
    documented statuses, content types and headers, and bodies matching their schemas."""
    schema = schemathesis.openapi.from_url(f"{worker.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # (loaded from its URL, schemathesis leaves out the operation serving the document itself)
    assert {operation.path for operation in operations} == set(schema.raw_schema["paths"]) - {"/openapi.json"}
    for number, operation in enumerate(operations, start=1):
        session = requests.Session()
        session.mount("http://", SourceAddress(f"127.0.1.{number}"))

        @given(case=operation.as_strategy())
        @settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def answers_as_documented(case: Any) -> None:
            case.call_and_validate(base_url=worker.base_url, session=session)

        answers_as_documented()
