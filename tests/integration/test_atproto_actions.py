"""Growth actions against the authenticated stand-in and the real Postgres: a dry run reports the
exact actions and does nothing; a real run follows back every follower not followed (all pages)
and likes recent mentions, each once across restarts, within daily caps; a refused action may be
retried, an unanswered one never; a run requested on the crawl topic emits GrowthActionTaken."""

from __future__ import annotations

from datetime import UTC, datetime

from returns.result import Success

from domain.crawl import CrawlConfig, GrowthActionsConfig, growth_actions_request
from streams.local.appview import AppViewStandIn
from streams.adapters.atproto import AtprotoSession, RetryPolicy, XrpcClient
from streams.adapters.breaker import CircuitBreaker
from streams.stages.actions import GrowthActions
from streams.stages.crawl import request_crawl, run_crawl
from streams.adapters.ratelimit import TokenBucket
from tests.integration.crawl_support import (
    PASSWORD,
    appview_client,
    crawl_settings,
    fixture_graph,
    growth_events,
    new_crawler,
    of_schema,
    sender,  # noqa: F401 - fixture
    settings,  # noqa: F401 - fixture
    standin,  # noqa: F401 - fixture
    store_factory,  # noqa: F401 - fixture
)

NOW = datetime(2026, 7, 3, 3, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0
GRAPH = fixture_graph()
ALICE = GRAPH.resolve("alice.test")["did"]  # type: ignore[index]


def expected_follows() -> list[str]:
    followed = set(GRAPH.following(ALICE))
    return [did for did in GRAPH.followers(ALICE) if did not in followed and did != ALICE]


def expected_likes(now: float = NOW, max_age: float = DAY) -> list[str]:
    mentions = [p for p in GRAPH.posts if ALICE in p["mentions"] and p["author"] != ALICE]
    recent = [p for p in mentions
              if now - datetime.fromisoformat(p["createdAt"].replace("Z", "+00:00")).timestamp() <= max_age]
    return [p["uri"] for p in sorted(recent, key=lambda p: p["createdAt"], reverse=True)]


def session(standin: AppViewStandIn, password: str = PASSWORD) -> AtprotoSession:
    pds = XrpcClient(standin.url, bucket=TokenBucket(500, burst=1), breaker=CircuitBreaker("pds"),
                     retry=RetryPolicy(retries=1, base_delay=0.01))
    return AtprotoSession(pds, "alice.test", password)


async def actions(standin, store_factory, *, now: float = NOW, **config: object) -> GrowthActions:
    options = {"enabled": True, "dry_run": False, "page_size": 5, "mention_max_age_us": int(DAY * 1e6), **config}
    store = store_factory()
    await store.open()
    appview = appview_client(crawl_settings("actions", standin))
    await appview.start()
    return GrowthActions(appview=appview, session=session(standin), store=store,
                         config=GrowthActionsConfig(**options), clock=lambda: now)


async def close(runner: GrowthActions) -> None:
    await runner.appview.close()
    await runner.session.client.close()


def created(standin: AppViewStandIn, collection: str) -> list[str]:
    key = "subject"
    return [r["record"][key] if collection.endswith("follow") else r["record"][key]["uri"]
            for r in standin.created if r["collection"] == collection]


async def test_a_dry_run_reports_exactly_what_it_would_do_and_does_nothing(standin, store_factory) -> None:
    assert len(expected_follows()) > 5 * 2  # more than two pages of 5: all pages must be read
    runner = await actions(standin, store_factory, dry_run=True)
    report = (await runner.run()).unwrap()
    await close(runner)
    assert report.dry_run
    assert [a.subject for a in report.planned if a.action == "follow"] == expected_follows()
    assert [a.subject for a in report.planned if a.action == "like"] == expected_likes()
    assert 0 < len(expected_likes()) < len([p for p in GRAPH.posts if ALICE in p["mentions"]])  # the age matters
    handles = {u["did"]: u["handle"] for u in GRAPH.users}
    lines = report.lines()
    assert lines[0] == f"would follow {expected_follows()[0]} ({handles[expected_follows()[0]]} follows us and we do not follow them)"
    assert sum(line.startswith("would like at://") for line in lines) == len(expected_likes())
    assert standin.created == [] and report.taken == [] and await runner.store.actions() == []
    followers_pages = standin.requests_for("app.bsky.graph.getFollowers")
    assert len(followers_pages) == -(-len(GRAPH.followers(ALICE)) // 5)  # every page


async def test_growth_actions_take_each_action_once_across_restarts(standin, store_factory) -> None:
    first = await actions(standin, store_factory)
    report = (await first.run()).unwrap()
    await close(first)
    assert created(standin, "app.bsky.graph.follow") == expected_follows()
    assert created(standin, "app.bsky.feed.like") == expected_likes()
    assert len(report.taken) == len(report.events) == len(expected_follows()) + len(expected_likes())
    assert {e.did for e in report.events} == {ALICE}
    # a restart: new store, new session (and the old tokens expired), same database
    standin.expire_tokens()
    second = await actions(standin, store_factory, now=NOW + 60)
    again = (await second.run()).unwrap()
    await close(second)
    assert again.planned == [] and again.taken == []
    assert len(standin.created) == len(expected_follows()) + len(expected_likes())
    rows = await second.store.actions()
    assert len(rows) == len(standin.created) and {r["status"] for r in rows} == {"done"}
    assert {r["record_uri"] for r in rows} == {r["uri"] for r in standin.created}


async def test_daily_caps_hold_across_restarts_and_reset_the_next_day(standin, store_factory) -> None:
    caps = {"max_follows_per_day": 4, "max_likes_per_day": 2}
    for now, follows, likes in ((NOW, 4, 2), (NOW + 3600, 4, 2), (NOW + DAY, 8, 4)):
        runner = await actions(standin, store_factory, now=now, mention_max_age_us=int(3 * DAY * 1e6), **caps)
        assert isinstance(await runner.run(), Success)
        await close(runner)
        assert len(created(standin, "app.bsky.graph.follow")) == follows
        assert len(created(standin, "app.bsky.feed.like")) == likes
    assert created(standin, "app.bsky.graph.follow") == expected_follows()[:8]


async def test_a_refused_action_is_retried_but_an_unanswered_one_never(standin, store_factory) -> None:
    follows = expected_follows()

    async def run(cap: int) -> None:
        runner = await actions(standin, store_factory, like_mentions=False, max_follows_per_day=cap)
        assert isinstance(await runner.run(), Success)
        await close(runner)

    standin.fail(400, times=1, method="com.atproto.repo.createRecord")
    await run(2)  # the first follow is refused, the second taken
    await run(3)  # the refused one is retried, and one more taken
    standin.fail(503, times=10, method="com.atproto.repo.createRecord")
    await run(4)  # the fourth gets no answer (after its retry): it may or may not have happened
    standin.clear_faults()
    await run(10)
    store = store_factory()
    await store.open()
    rows = {r["subject"]: r for r in await store.actions()}
    assert (rows[follows[0]]["status"], rows[follows[0]]["attempts"]) == ("done", 2)
    assert rows[follows[3]]["status"] == "unknown"
    assert created(standin, "app.bsky.graph.follow") == [follows[1], follows[0], follows[2], *follows[4:10]]


async def test_a_growth_action_run_requested_on_the_crawl_topic_emits_growth_action_taken(
        settings, standin, sender, store_factory, unique) -> None:
    runner = await actions(standin, store_factory, like_mentions=False, max_follows_per_day=3)
    config = CrawlConfig(actions=runner.config)
    request = growth_actions_request(["follow_back", "like_mentions"], run="2026-07-03T03",
                                     requested_at_us=int(NOW * 1e6))
    await request_crawl(settings, [request, request])
    crawler = await new_crawler(settings, sender, runner.store, runner.appview, config, actions=runner,
                                clock=lambda: NOW)
    await run_crawl(settings, crawler, group_id=f"g{unique}", idle_seconds=1.0)
    await close(runner)
    taken = of_schema(await growth_events(settings), "GrowthActionTaken")
    assert [e["subject_did"] for e in taken] == expected_follows()[:3]
    assert all(e["did"] == ALICE and e["action"] == "follow" and e["record_uri"].startswith(f"at://{ALICE}/")
               for e in taken)
    assert len(standin.created) == 3 and crawler.stats.skipped == 1


async def test_an_expired_session_is_renewed_with_its_refresh_token(standin) -> None:
    account = session(standin)
    async with account.client:
        assert (await account.login()).unwrap().did == ALICE
        standin.expire_tokens()
        assert (await account.get_session()).unwrap().did == ALICE
        wrong = session(standin, password="not-the-password")
        refused = await wrong.login()
        await wrong.client.close()
    assert [r.method.rsplit(".", 1)[1] for r in standin.requests] == [
        "createSession", "getSession", "refreshSession", "getSession", "createSession"]
    assert refused.failure().status == 401 and not refused.failure().transient
