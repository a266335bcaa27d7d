"""The crawl against the AppView stand-in, with the real Kafka and Postgres: enrichment batched 25 a
call and deduplicated across restarts, a snowball crawl of the fixture graph to degree 2 (also
stopped and restarted midway, also killed midway), popular search, post interactions, the
projection of the results, and dead-lettered requests."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, NamedTuple

import orjson
import psycopg
import pytest
from psycopg import sql

from domain.crawl import (
    POPULAR_SEARCH,
    POST_INTERACTIONS,
    SNOWBALL,
    CrawlConfig,
    SearchConfig,
    SnowballConfig,
    enrichment_decision,
    interactions_request,
    search_requests,
    snowball_request,
)
from domain.events import encode
from streams.topology import Topic
from streams.stages.crawl import request_crawl, run_crawl
from streams.stages.crawler import CrawlTopics, send_requests
from streams.stages.enrichment import EnrichmentPlanner
from tests.integration.crawl_support import (
    NOW,
    user_seen,
    appview_client,
    expected_snowball,
    fixture_graph,
    growth_events,
    new_crawler,
    of_schema,
    sender,  # noqa: F401 - fixture
    settings,  # noqa: F401 - fixture
    standin,  # noqa: F401 - fixture
    store_factory,  # noqa: F401 - fixture
    send,
)
from tests.integration.ingest_support import read_all

class Record(NamedTuple):
    """A consumed record (``streams.kafka.clients.Received``) made by hand."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    headers: list[tuple[str, bytes]]


SEED = "judy.test"
BOUNDS = {"max_degree": 2, "min_followers": 1, "max_followers": 10, "max_users": 1000, "page_size": 3,
          "pages_per_user": 20}


async def test_enrichment_fetches_profiles_25_a_call_once_per_account_even_across_restarts(
        settings, standin, sender, store_factory, unique) -> None:
    graph = fixture_graph()
    dids = [u["did"] for u in graph.users]
    config = CrawlConfig()
    crawl_topic = CrawlTopics.of(settings).crawl
    planner = EnrichmentPlanner(sender=sender, crawl_topic=crawl_topic, config=config.enrichment)
    seen = [Record("growth.events", 0, seq, encode(user_seen(did, int(NOW * 1e6), seq)), [("schema", b"UserSeen")])
            for seq, did in enumerate(dids + dids[:10])]  # ten accounts seen twice
    assert await planner.handle_batch(seen[:30]) + await planner.handle_batch(seen[30:]) == 50
    assert planner.requested == 50
    # the same sightings replayed into a planner that forgot everything (a restart): the same request ids
    replayed = [enrichment_decision(user_seen(did, int(NOW * 1e6)), None, config.enrichment).unwrap() for did in dids[:10]]
    await send_requests(sender, crawl_topic, replayed)

    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW)
    handled = await run_crawl(settings, crawler, group_id=f"g{unique}", idle_seconds=1.0)
    await crawler.appview.close()
    assert handled == 60
    calls = standin.requests_for("app.bsky.actor.getProfiles")
    assert sorted(len(c.params["actors"]) for c in calls) == [25, 25]
    events = of_schema(await growth_events(settings), "ProfileEnriched")
    assert sorted(e["did"] for e in events) == sorted(dids)
    alice = next(e for e in events if e["handle"] == "alice.test")
    assert alice["followers_count"] == len(graph.followers_of[alice["did"]]) == 32
    assert alice["display_name"] == "Alice" and alice["avatar"].startswith("https://")
    assert alice["_key"] == alice["did"].encode() and alice["source"]["id"].startswith("crawl|")

    # a restart: new crawler, new store, same schema; the same accounts asked again are fresh
    await request_crawl(settings, replayed)
    again = await new_crawler(settings, sender, store_factory(), appview_client(settings), config,
                              clock=lambda: NOW + 3600)
    assert await run_crawl(settings, again, group_id=f"g{unique}", idle_seconds=1.0) == 10
    await again.appview.close()
    assert len(standin.requests_for("app.bsky.actor.getProfiles")) == 2
    assert again.stats.skipped == 10


async def _run_snowball(settings, sender, store_factory, unique, *, stop_after: int | None = None,
                        crawler_kwargs: dict[str, Any] | None = None) -> None:
    config = CrawlConfig(snowball=SnowballConfig(**BOUNDS))
    await request_crawl(settings, [snowball_request([SEED], config.snowball, label="t", requested_at_us=int(NOW * 1e6))])
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW,
                                **(crawler_kwargs or {}))
    try:
        await run_crawl(settings, crawler, group_id=f"g{unique}", max_messages=stop_after,
                        idle_seconds=None if stop_after else 1.5, batch_size=2)
    finally:
        await crawler.appview.close()


def _check_snowball(events: list[dict[str, Any]], *, exact_once: bool) -> None:
    graph = fixture_graph()
    kept, judged = expected_snowball(graph, [SEED], **BOUNDS)
    assert 8 <= len(kept) < len(graph.users) - 10  # the bounds and degrees matter in this graph
    candidates = of_schema(events, "CandidateFound", SNOWBALL)
    profiles = of_schema(events, "ProfileEnriched")
    assert set(Counter(e["did"] for e in candidates)) == set(kept)
    assert set(Counter(e["did"] for e in profiles)) == judged
    ids_per_did = {did: {e["id"] for e in candidates if e["did"] == did} for did in kept}
    assert all(len(ids) == 1 for ids in ids_per_did.values())  # a repeat, if any, is the same event
    if exact_once:
        assert len(candidates) == len(kept) and len(profiles) == len(judged)
    by_did = {u["did"]: u for u in graph.users}
    for event in candidates:
        assert event["reasons"][1].startswith(("degree 1 ", "degree 2 "))
        count = len(graph.followers_of[event["did"]])
        assert f"{count} followers (bounds 1-10)" == event["reasons"][2]
        assert by_did[event["did"]]["handle"]


async def test_a_snowball_crawl_to_degree_2_yields_exactly_the_expected_users_once_each(
        settings, standin, sender, store_factory, unique) -> None:
    await _run_snowball(settings, sender, store_factory, unique)
    events = await growth_events(settings)
    _check_snowball(events, exact_once=True)
    # follower and follow lists were paged (page size 3) and bounded per user
    pages = standin.requests_for("app.bsky.graph.getFollowers")
    assert any("cursor" in r.params for r in pages) and all(r.params["limit"] == ["3"] for r in pages)
    assert all(len(r.params["actors"]) <= 25 for r in standin.requests_for("app.bsky.actor.getProfiles"))


async def test_a_snowball_crawl_stopped_and_restarted_midway_yields_the_same_users_once_each(
        settings, standin, sender, store_factory, unique) -> None:
    await _run_snowball(settings, sender, store_factory, unique, stop_after=3)
    first = of_schema(await growth_events(settings), "CandidateFound", SNOWBALL)
    assert first  # it was midway: some found, not all
    await _run_snowball(settings, sender, store_factory, unique)  # same request again: idempotent
    _check_snowball(await growth_events(settings), exact_once=True)


async def test_a_snowball_crawl_killed_midway_repeats_nothing_but_identical_events(
        settings, standin, sender, store_factory, unique) -> None:
    config = CrawlConfig(snowball=SnowballConfig(**BOUNDS))
    await request_crawl(settings, [snowball_request([SEED], config.snowball, label="t", requested_at_us=int(NOW * 1e6))])
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW)
    task = asyncio.create_task(run_crawl(settings, crawler, group_id=f"g{unique}", batch_size=1))
    while len(standin.requests) < 12:
        await asyncio.sleep(0.005)
    task.cancel()  # mid-request: nothing of the batch in flight is committed
    with pytest.raises(asyncio.CancelledError):
        await task
    await crawler.appview.close()
    await _run_snowball(settings, sender, store_factory, unique)
    _check_snowball(await growth_events(settings), exact_once=False)


async def test_the_snowball_results_project_into_postgres(settings, standin, sender, store_factory, unique,
                                                          database_url) -> None:
    writer = pytest.importorskip("projections.writer")
    from projections import connect, migrate

    await _run_snowball(settings, sender, store_factory, unique)
    kept, _ = expected_snowball(fixture_graph(), [SEED], **BOUNDS)
    schema = f"proj_{unique}_crawl"
    await migrate(database_url, schema)
    try:
        conn = await connect(database_url, schema)
        try:
            messages = await read_all(settings, Topic.GROWTH_EVENTS)
            result = await writer.apply_batch(conn, "projector", messages)
            assert result.dead_lettered == 0
            cur = await conn.execute("SELECT did FROM candidates WHERE strategy = %s", (SNOWBALL,))
            assert {row[0] for row in await cur.fetchall()} == set(kept)
            cur = await conn.execute("SELECT count(*) FROM users WHERE %s = ANY(strategies)", (SNOWBALL,))
            assert (await cur.fetchone())[0] == len(kept)
        finally:
            await conn.close()
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def test_popular_search_makes_authors_of_posts_with_enough_likes_candidates(
        settings, standin, sender, store_factory, unique) -> None:
    graph = fixture_graph()
    config = CrawlConfig(search=SearchConfig(queries=("#art", "#tech", "#nothing"), min_likes=10, max_pages=3,
                                             page_size=2))
    requests = search_requests(config.search, label="t", requested_at_us=int(NOW * 1e6))
    await request_crawl(settings, [*requests, requests[0]])  # the first one twice: executed once
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW)
    await run_crawl(settings, crawler, group_id=f"g{unique}", idle_seconds=1.0)
    await crawler.appview.close()

    def popular(tag: str) -> set[str]:
        posts = sorted((p for p in graph.posts if tag in p["tags"]),
                       key=lambda p: (-len(graph.likes_of.get(p["uri"], [])),))  # pages are "top" first
        return {p["author"] for p in posts[:6] if len(graph.likes_of.get(p["uri"], [])) >= 10}

    expected = popular("art") | popular("tech")
    assert expected
    candidates = of_schema(await growth_events(settings), "CandidateFound", POPULAR_SEARCH)
    assert {e["did"] for e in candidates} == expected
    assert all(e["subject_uri"].startswith("at://") and "likes" in e["reasons"][0] for e in candidates)
    searches = standin.requests_for("app.bsky.feed.searchPosts")
    assert Counter(r.params["q"][0] for r in searches)["#art"] <= 3  # pages bounded, and run once
    assert crawler.stats.skipped == 1


async def test_post_interactions_make_likers_reposters_and_repliers_candidates(
        settings, standin, sender, store_factory, unique) -> None:
    graph = fixture_graph()
    author = max(graph.users, key=lambda u: sum(len(graph.likes_of.get(p["uri"], []))
                                                for p in graph.posts_of[u["did"]] if not p.get("reply")))
    posts = [p for p in graph.posts_of[author["did"]] if not p.get("reply")]
    expected: set[str] = set()
    for post in posts:
        expected |= {like["author"] for like in graph.likes_of.get(post["uri"], [])}
        expected |= {r["author"] for r in graph.reposts_of.get(post["uri"], [])}
        pending = list(graph.replies_to.get(post["uri"], []))
        while pending:
            reply = pending.pop()
            expected.add(reply["author"])
            pending += graph.replies_to.get(reply["uri"], [])
    expected.discard(author["did"])
    config = CrawlConfig()
    await request_crawl(settings, [interactions_request(author["handle"], config.interactions, label="t",
                                                        requested_at_us=int(NOW * 1e6))])
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW)
    await run_crawl(settings, crawler, group_id=f"g{unique}", idle_seconds=1.0)
    await crawler.appview.close()
    candidates = of_schema(await growth_events(settings), "CandidateFound", POST_INTERACTIONS)
    assert {e["did"] for e in candidates} == expected and len(candidates) == len(expected)
    assert all(e["source"]["did"] == author["did"] for e in candidates)
    assert any(r.startswith("liked at://") for e in candidates for r in e["reasons"])


async def test_a_request_that_does_not_decode_is_dead_lettered_and_the_crawl_goes_on(
        settings, standin, sender, store_factory, unique) -> None:
    await send(sender, CrawlTopics.of(settings).crawl, b'{"schema": "Nope", "version": 1}', key=b"crawl", partition=0)
    config = CrawlConfig(search=SearchConfig(queries=("#art",)))
    await request_crawl(settings, search_requests(config.search, label="t", requested_at_us=int(NOW * 1e6)))
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings), config, clock=lambda: NOW)
    await run_crawl(settings, crawler, group_id=f"g{unique}", idle_seconds=1.0)
    await crawler.appview.close()
    (dead,) = await read_all(settings, Topic.GROWTH_DLQ)
    headers = dict(dead.headers)
    assert headers["error_reason"] == b"unknown_schema" and dead.value == b'{"schema": "Nope", "version": 1}'
    assert crawler.stats.executed == 1
    assert orjson.loads((await read_all(settings, Topic.GROWTH_CRAWL))[1].value)["schema"] == "SearchPopular"
