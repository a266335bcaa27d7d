"""The XRPC client against the AppView stand-in: lexicon models, cursor pagination, getProfiles
25 a call, the shared rate limit measured at the server, 429 with ratelimit-reset pausing every
caller, retries of 5xx with backoff, timeouts, and the circuit breaker opening and recovering."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest
from returns.result import Failure, Success

from domain.appview import GetFollowersOutput, ThreadViewPost
from streams.adapters.atproto import CIRCUIT_OPEN, TIMEOUT, AppViewClient, RetryPolicy, collect_pages
from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitState
from streams.adapters.ratelimit import TokenBucket
from tests.integration.crawl_support import crawl_settings, fixture_graph, standin  # noqa: F401 - fixture

GRAPH = fixture_graph()
ALICE = GRAPH.resolve("alice.test")["did"]  # type: ignore[index]


def client(standin, *, rate: float = 500, threshold: int = 5, recovery: float = 30.0,
           retry: RetryPolicy = RetryPolicy(retries=3, base_delay=0.02, max_delay=0.2), timeout: float = 5.0) -> AppViewClient:
    bucket = TokenBucket(rate, burst=1)
    breaker = CircuitBreaker("appview", BreakerConfig(failure_threshold=threshold, recovery_timeout=recovery,
                                                      recovery_jitter=0.0, failure_rate_threshold=None),
                             is_failure=lambda exc: getattr(exc, "counts_against_service", True))
    return AppViewClient(standin.url, bucket=bucket, breaker=breaker, retry=retry, timeout=timeout,
                         rng=random.Random(1))


async def test_followers_are_paged_by_cursor_honouring_limit_and_the_page_bound(standin) -> None:
    async with client(standin) as appview:
        pages = (await collect_pages(appview.followers("alice.test", limit=10, max_pages=10))).unwrap()
        bounded = (await collect_pages(appview.followers("alice.test", limit=10, max_pages=2))).unwrap()
    assert [len(p.followers) for p in pages] == [10, 10, 10, 2]
    assert [f.did for p in pages for f in p.followers] == GRAPH.followers(ALICE)
    assert pages[-1].cursor is None and all(p.subject.did == ALICE for p in pages)
    assert [len(p.followers) for p in bounded] == [10, 10] and bounded[-1].cursor
    sent = standin.requests_for("app.bsky.graph.getFollowers")
    assert [r.params.get("cursor") for r in sent[:4]] == [None, ["c10"], ["c20"], ["c30"]]
    assert all(r.params["limit"] == ["10"] for r in sent)


async def test_every_list_method_parses_into_lexicon_models(standin) -> None:
    hot = max(GRAPH.posts, key=lambda p: len(GRAPH.likes_of.get(p["uri"], [])))
    async with client(standin) as appview:
        follows = (await collect_pages(appview.follows("alice.test", max_pages=5))).unwrap()
        search = (await collect_pages(appview.search_posts("#art", sort="top", limit=3, max_pages=5))).unwrap()
        likes = (await collect_pages(appview.likes(hot["uri"], limit=7, max_pages=10))).unwrap()
        reposts = (await collect_pages(appview.reposted_by(hot["uri"], max_pages=2))).unwrap()
        feed = (await collect_pages(appview.author_feed(hot["author"], limit=2, max_pages=10))).unwrap()
        thread = (await appview.get_post_thread(hot["uri"])).unwrap()
    assert [f.did for p in follows for f in p.follows] == GRAPH.following(ALICE)
    found = [post for page in search for post in page.posts]
    assert len(found) == search[0].hits_total and all("art" in post.record["tags"] if "tags" in post.record
                                                      else "#art" in post.text for post in found)
    assert [post.like_count for post in found] == sorted((post.like_count for post in found), reverse=True)
    assert sum(len(p.likes) for p in likes) == len(GRAPH.likes_of[hot["uri"]]) > 7
    assert {r.did for p in reposts for r in p.reposted_by} == {r["author"] for r in GRAPH.reposts_of.get(hot["uri"], [])}
    assert all(item.post.author.did == hot["author"] or item.is_repost for p in feed for item in p.feed)
    assert isinstance(thread.thread, ThreadViewPost) and thread.thread.post.uri == hot["uri"]


async def test_get_profiles_takes_25_actors_a_call(standin) -> None:
    dids = [u["did"] for u in GRAPH.users]
    async with client(standin) as appview:
        profiles = (await appview.profiles(dids + dids[:10] + ["nobody.test"])).unwrap()
        with pytest.raises(ValueError, match="1-25"):
            await appview.get_profiles(dids[:26])
        refused = await appview.query("app.bsky.actor.getProfiles", GetFollowersOutput, {"actors": dids[:26]})
    assert sorted(p.did for p in profiles) == sorted(dids)
    sizes = sorted(len(r.params["actors"]) for r in standin.requests_for("app.bsky.actor.getProfiles"))
    assert sizes == [1, 25, 25, 26]  # 51 distinct actors: 25 + 25 + 1; and the refused 26
    assert isinstance(refused, Failure) and refused.failure().status == 400
    alice = next(p for p in profiles if p.did == ALICE)
    assert (alice.followers_count, alice.follows_count) == (len(GRAPH.followers(ALICE)), len(GRAPH.following(ALICE)))


async def test_a_response_that_breaks_its_lexicon_is_a_failure_value(standin) -> None:
    async with client(standin) as appview:
        result = await appview.query("app.bsky.actor.getProfiles", GetFollowersOutput, {"actors": ["alice.test"]})
    assert isinstance(result, Failure)
    assert result.failure().error == "InvalidResponse" and "GetFollowersOutput" in result.failure().message
    assert not result.failure().transient


async def test_50_concurrent_callers_never_exceed_the_configured_rate(standin) -> None:
    rate = 20
    settings = crawl_settings("rate", standin, atproto_rate_limit=rate)
    async with AppViewClient.from_settings(settings) as appview:
        started = time.monotonic()
        results = await asyncio.gather(*(appview.get_profiles([u["did"]]) for u in GRAPH.users))
        elapsed = time.monotonic() - started
    assert all(isinstance(r, Success) for r in results)
    times = sorted(r.at for r in standin.requests)
    assert len(times) == 50
    # at most `rate` requests in any one-second window (25 ms of slack for delivery jitter)
    busiest = max(sum(1 for t in times[i:] if t < start + 1.0 - 0.025) for i, start in enumerate(times))
    assert busiest <= rate
    achieved = (len(times) - 1) / (times[-1] - times[0])
    assert 0.8 * rate <= achieved <= rate * 1.02
    assert elapsed < 50 / rate + 1.0


async def test_a_429_with_ratelimit_reset_pauses_every_caller_until_the_reset(standin) -> None:
    async with client(standin, rate=200) as appview:
        assert isinstance(await appview.get_profiles(["alice.test"]), Success)
        standin.rate_limit(times=1, reset_in=1.0)
        results = await asyncio.gather(*(appview.get_profiles([u["did"]]) for u in GRAPH.users[:20]))
    assert all(isinstance(r, Success) for r in results)
    (limited,) = [r for r in standin.requests if r.status == 429]
    reset = math.ceil(limited.wall + 1.0)  # what the stand-in sent in ratelimit-reset
    after = [r for r in standin.requests if r.at > limited.at]
    assert len(after) == 20  # the 19 others and the retry of the refused one
    assert all(r.wall >= reset - 0.05 for r in after)  # nobody called before the reset
    assert min(r.wall for r in after) < reset + 0.5  # and all resumed right after it


async def test_server_errors_are_retried_with_exponential_backoff(standin) -> None:
    async with client(standin, retry=RetryPolicy(retries=3, base_delay=0.1, max_delay=1.0)) as appview:
        standin.fail(500, times=2)
        result = await appview.get_profiles(["alice.test"])
        standin.fail(502, times=10)
        exhausted = await appview.get_profiles(["alice.test"])
    assert isinstance(result, Success)
    first = [r for r in standin.requests[:3]]
    assert [r.status for r in first] == [500, 500, 200]
    gaps = [b.at - a.at for a, b in zip(first, first[1:])]
    assert 0.05 <= gaps[0] <= 0.2 and 0.1 <= gaps[1] <= 0.35  # in [cap/2, cap], the cap doubling
    assert isinstance(exhausted, Failure) and exhausted.failure().status == 502 and exhausted.failure().transient
    assert len(standin.requests) == 3 + 4  # one call and three retries


async def test_a_slow_answer_times_out_and_is_retried(standin) -> None:
    async with client(standin, timeout=0.3) as appview:
        standin.slow(1.0, times=1)
        result = await appview.get_profiles(["alice.test"])
        standin.slow(1.0, times=5)
        gave_up = await appview.get_profiles(["alice.test"])
    assert isinstance(result, Success)
    assert isinstance(gave_up, Failure) and gave_up.failure().error == TIMEOUT


async def test_the_breaker_opens_on_repeated_5xx_fails_fast_and_recovers(standin) -> None:
    appview = client(standin, threshold=3, recovery=0.5, retry=RetryPolicy(retries=1, base_delay=0.01))
    async with appview:
        standin.fail(503, times=1000)
        first = await appview.get_profiles(["alice.test"])  # two attempts
        second = await appview.get_profiles(["alice.test"])  # the third failure opens it
        assert appview.breaker.state is CircuitState.OPEN
        served = len(standin.requests)
        refused = await asyncio.gather(*(appview.get_profiles(["alice.test"]) for _ in range(10)))
        assert len(standin.requests) == served == 3  # failing fast: nothing reached the server
        assert all(r.failure().error == CIRCUIT_OPEN and r.failure().transient for r in refused)
        assert 0 < refused[0].failure().retry_after <= 0.5
        await asyncio.sleep(0.55)
        probe = await appview.get_profiles(["alice.test"])  # half-open: one probe, still failing
        assert appview.breaker.state is CircuitState.OPEN and len(standin.requests) == 4
        standin.clear_faults()
        await asyncio.sleep(0.55)
        healed = await asyncio.gather(*(appview.get_profiles(["alice.test"]) for _ in range(5)))
    assert isinstance(first, Failure) and isinstance(second, Failure) and isinstance(probe, Failure)
    assert appview.breaker.state is CircuitState.CLOSED
    assert isinstance(healed[0], Success)  # the probe closed it...
    assert sum(isinstance(r, Success) for r in healed) >= 1


async def test_client_errors_do_not_count_against_the_service(standin) -> None:
    appview = client(standin, threshold=2)
    async with appview:
        results = [await appview.get_post_thread(f"at://{ALICE}/app.bsky.feed.post/3zzzzzzzzzzzz") for _ in range(5)]
    assert all(r.failure().error == "NotFound" and r.failure().status == 400 for r in results)
    assert appview.breaker.state is CircuitState.CLOSED and len(standin.requests) == 5  # no retries either


async def test_the_stand_in_takes_faults_over_http_and_reports_its_requests(standin) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.post(f"{standin.url}/_standin/fail", json={"status": 502, "times": 1,
                                                                  "method": "app.bsky.graph.getFollows"}) as r:
            assert r.status == 200
        async with http.post(f"{standin.url}/_standin/rate_limit", json={"times": 1, "reset_in": 0.2}) as r:
            assert r.status == 200
        async with http.get(f"{standin.url}/xrpc/app.bsky.actor.getProfiles?actors=alice.test") as r:
            assert r.status == 429 and r.headers["ratelimit-remaining"] == "0" and int(r.headers["ratelimit-reset"]) > 0
            assert (await r.json())["error"] == "RateLimitExceeded"
        async with http.get(f"{standin.url}/xrpc/app.bsky.graph.getFollows?actor=alice.test") as r:
            assert r.status == 502
        async with http.get(f"{standin.url}/xrpc/app.bsky.graph.getFollows?actor=alice.test&limit=101") as r:
            assert r.status == 400 and (await r.json())["error"] == "InvalidRequest"
        async with http.get(f"{standin.url}/xrpc/app.bsky.graph.getFollows?actor=alice.test") as r:
            assert r.status == 200 and int(r.headers["ratelimit-limit"]) == 3000
        async with http.get(f"{standin.url}/_standin/requests") as r:
            seen = await r.json()
    assert [(s["method"], s["status"]) for s in seen] == [
        ("app.bsky.actor.getProfiles", 429), ("app.bsky.graph.getFollows", 502), ("app.bsky.graph.getFollows", 400),
        ("app.bsky.graph.getFollows", 200)]
