"""``bge crawl`` and ``bge actions`` against the AppView stand-in, Kafka and Postgres: a command
records the crawl and puts its requests on ``growth.crawl``, the crawler executes them,
``bge crawl status`` reports what happened (JSON when piped), ``bge crawl cancel`` makes the
rest be skipped, and ``bge actions`` is a dry run unless ``--apply``, once per subject."""

from __future__ import annotations

import io
import json
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from domain.crawl import CrawlConfig, SnowballConfig
from projections import apply_batch, connect, migrate
from streams.cli import crawl as crawl_cli
from streams.config import Settings
from streams.kafka.clients import ensure_topics
from streams.stages.crawl import run_crawl
from streams.topology import Topic
from tests.integration.crawl_support import (
    PASSWORD,
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
)
from tests.integration.ingest_support import kill, read_all, start_bge, wait_until
from tests.integration.worker_support import free_port

SEED = "judy.test"
BOUNDS = {"max_followers": 10, "min_followers": 1, "page_size": 3, "pages_per_user": 20}


@pytest.fixture
async def projection(database_url: str, unique: str) -> AsyncIterator[str]:
    """A migrated projection schema of the test's own, dropped afterwards."""
    schema = f"proj_{unique}"
    await migrate(database_url, schema)
    yield schema
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def cli_settings(settings: Settings, unique: str, tmp_path: Any, **update: Any) -> Settings:
    """The command's settings: the tests' crawl schema, and the crawl bounds as a config file."""
    config = tmp_path / "crawl.json"
    config.write_text(CrawlConfig(snowball=SnowballConfig(**BOUNDS)).model_dump_json())
    return settings.model_copy(update={"crawl_schema": f"crawl_{unique}", "crawl_config_file": config, **update})


async def bge_crawl(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()  # not a terminal: no live progress, JSON status
    code = await crawl_cli.run(list(argv), settings=settings, out=out)
    return code, out.getvalue()


async def bge_actions(settings: Settings, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await crawl_cli.run_actions_command(list(argv), settings=settings, out=out)
    return code, out.getvalue()


def crawl_id_of(output: str) -> str:
    return output.split()[1].rstrip(":")


async def status_of(settings: Settings, crawl_id: str) -> dict[str, Any]:
    code, output = await bge_crawl(settings, "status", crawl_id)
    assert code == 0, output
    return json.loads(output)


async def execute(settings: Settings, sender, store_factory, unique: str, **kwargs: Any) -> None:
    """Run the crawler (as the worker's crawl agent does) until ``growth.crawl`` is idle."""
    crawler = await new_crawler(settings, sender, store_factory(), appview_client(settings),
                                CrawlConfig(snowball=SnowballConfig(**BOUNDS)))
    try:
        await run_crawl(settings, crawler, group_id=f"g{unique}", batch_size=2, **kwargs)
    finally:
        await crawler.appview.close()


async def test_bge_crawl_snowball_runs_the_crawl_and_status_reports_it(
        settings, standin, sender, store_factory, unique, tmp_path) -> None:
    cli = cli_settings(settings, unique, tmp_path)
    code, output = await bge_crawl(cli, "snowball", "--seed", SEED, "--degrees", "2", "--max-users", "1000", "--label", "t")
    assert code == 0 and "1 request sent" in output and "bge crawl status" in output, output
    crawl_id = crawl_id_of(output)
    queued = await status_of(cli, crawl_id)
    assert queued["state"] == "queued" and queued["requests"] == 1 and queued["finished"] == 0
    assert queued["args"]["seeds"] == [SEED] and queued["args"]["degrees"] == 2

    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    kept, _ = expected_snowball(fixture_graph(), [SEED], max_degree=2, max_users=1000, **BOUNDS)
    candidates = of_schema(await growth_events(cli), "CandidateFound", "snowball")
    assert {e["did"] for e in candidates} == set(kept)
    done = await status_of(cli, crawl_id)
    assert done["state"] == "done" and done["failed"] == 0
    # the start, the seed's expansion, and one per account kept at degree 1 (degree 2 is the last)
    expanded = sum(1 for e in candidates if e["reasons"][1].startswith("degree 1 "))
    assert done["finished"] == done["requests"] == 2 + expanded
    assert done["accounts_found"] == len(kept) and done["pages"] > done["requests"]
    assert done["rate_per_min"] and done["eta_s"] is None

    # the same command again: the same crawl, nothing executed twice
    code, again = await bge_crawl(cli, "snowball", "--seed", SEED, "--degrees", "2", "--max-users", "1000", "--label", "t")
    assert code == 0 and crawl_id_of(again) == crawl_id and "started before" in again
    calls = len(standin.requests)
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    assert len(standin.requests) == calls
    code, listing = await bge_crawl(cli, "status")
    assert [c["id"] for c in json.loads(listing)] == [crawl_id]


async def test_a_cancelled_crawl_skips_what_it_had_not_done(
        settings, standin, sender, store_factory, unique, tmp_path) -> None:
    cli = cli_settings(settings, unique, tmp_path)
    code, output = await bge_crawl(cli, "snowball", "--seed", SEED, "--label", "c")
    crawl_id = crawl_id_of(output)
    await execute(cli, sender, store_factory, unique, max_messages=1)  # the start: expansions are queued
    assert (await status_of(cli, crawl_id))["state"] == "running"
    code, output = await bge_crawl(cli, "cancel", crawl_id[:8])  # an id's first characters are enough
    assert code == 0 and f"crawl {crawl_id} cancelled" in output
    assert (await bge_crawl(cli, "cancel", crawl_id))[0] == 1  # not running any more
    calls = len(standin.requests)
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    assert len(standin.requests) == calls  # nothing fetched after the cancel
    cancelled = await status_of(cli, crawl_id)
    assert cancelled["state"] == "cancelled" and cancelled["skipped"] == cancelled["requests"] - 1 > 0
    assert not of_schema(await growth_events(cli), "CandidateFound", "snowball")
    assert (await bge_crawl(cli, "status", "no-such-crawl"))[0] == 1


async def test_bge_crawl_profiles_fetches_the_stale_profiles_of_known_accounts(
        settings, standin, sender, store_factory, unique, tmp_path, database_url, projection) -> None:
    graph = fixture_graph()
    known = [u["did"] for u in graph.users[:30]]
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(projection)))
        for did in known:
            await conn.execute("INSERT INTO users (did) VALUES (%s)", (did,))
    cli = cli_settings(settings, unique, tmp_path, db_schema=projection)
    store = store_factory()
    await store.open()
    await store.record(fetched=[(did, "earlier") for did in known[:10]], at_us=time.time_ns() // 1000)

    code, output = await bge_crawl(cli, "profiles", "--stale-after", "1h", "--label", "p")
    assert code == 0 and "20 requests sent" in output, output  # ten were fetched within the hour
    crawl_id = crawl_id_of(output)
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    enriched = {e["did"] for e in of_schema(await growth_events(cli), "ProfileEnriched")}
    assert enriched == set(known[10:])
    done = await status_of(cli, crawl_id)
    assert done["state"] == "done" and done["finished"] == done["requests"] == 20 and done["accounts_found"] == 20
    code, output = await bge_crawl(cli, "profiles", "--stale-after", "1h", "--label", "q")
    assert code == 0 and "nothing to crawl" in output


async def test_bge_crawl_search_and_interactions_report_their_candidates(
        settings, standin, sender, store_factory, unique, tmp_path) -> None:
    cli = cli_settings(settings, unique, tmp_path)
    code, output = await bge_crawl(cli, "search", "#art", "#tech", "--min-likes", "10", "--pages", "2", "--label", "s")
    assert code == 0 and "2 requests sent" in output, output
    search_id = crawl_id_of(output)
    code, output = await bge_crawl(cli, "interactions", "--actor", "alice.test", "--posts", "3", "--label", "i")
    interactions_id = crawl_id_of(output)
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    events = await growth_events(cli)
    for crawl_id, strategy in ((search_id, "popular_search"), (interactions_id, "post_interactions")):
        report = await status_of(cli, crawl_id)
        candidates = of_schema(events, "CandidateFound", strategy)
        assert report["state"] == "done" and report["accounts_found"] == len(candidates) > 0, (strategy, report)


async def test_bge_actions_is_a_dry_run_unless_applied_and_acts_once_per_subject(
        settings, standin, store_factory, unique, tmp_path) -> None:
    cli = cli_settings(settings, unique, tmp_path, atproto_pds=standin.url, atproto_identifier="alice.test",
                       atproto_app_password=SecretStr(PASSWORD))
    code, output = await bge_actions(cli, "follow-back")
    planned = [line for line in output.splitlines() if line.startswith("would follow ")]
    assert code == 0 and len(planned) > 2 and "dry run: nothing was done" in output, output
    assert not standin.created
    code, output = await bge_actions(cli, "follow-back", "--apply", "--limit", "2")
    follows = [r["record"]["subject"] for r in standin.created if r["collection"] == "app.bsky.graph.follow"]
    assert code == 0 and len(follows) == 2 and output.count("took: follow") == 2, output
    code, output = await bge_actions(cli, "follow-back", "--apply", "--limit", "3")
    follows = [r["record"]["subject"] for r in standin.created if r["collection"] == "app.bsky.graph.follow"]
    assert code == 0 and len(follows) == 3 and len(set(follows)) == 3, output  # the cap counts the day: one more
    unset = cli.model_copy(update={"atproto_identifier": None})
    assert (await bge_actions(unset, "like-mentions"))[0] == 2


async def test_bge_crawl_graph_turns_edges_into_events_and_a_later_read_finds_an_unfollow(
        settings, standin, sender, store_factory, unique, tmp_path, database_url, projection) -> None:
    graph = standin.graph
    alice = graph.resolve("alice.test")
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# accounts to map\nalice.test\n")
    cli = cli_settings(settings, unique, tmp_path)
    code, output = await bge_crawl(cli, "graph", "--accounts", str(accounts), "--pages", "50", "--label", "g1")
    assert code == 0 and "1 request sent" in output, output
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    expected = {(f, alice["did"]) for f in graph.followers(alice["did"])} | {(alice["did"], s) for s in graph.following(alice["did"])}
    events = await growth_events(cli)
    assert {(x["did"], x["subject_did"]) for x in of_schema(events, "FollowObserved")} == expected
    assert (await status_of(cli, crawl_id_of(output)))["accounts_found"] == len(expected)

    # a follower unfollows alice; the next read of the whole list finds it gone
    gone = graph.followers(alice["did"])[0]
    graph.follows = [edge for edge in graph.follows if not (edge["author"] == gone and edge["subject"] == alice["did"])]
    graph.reindex()
    code, output = await bge_crawl(cli, "graph", "--accounts", str(accounts), "--pages", "50", "--label", "g2")
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    events = await growth_events(cli)
    assert [(x["did"], x["subject_did"]) for x in of_schema(events, "FollowLost")] == [(gone, alice["did"])]
    assert len(of_schema(events, "FollowObserved")) == len(expected)  # nothing new was observed twice

    async with await connect(database_url, projection) as conn:
        await apply_batch(conn, "projector", await read_all(cli, Topic.GROWTH_EVENTS))
        edges = set(await (await conn.execute("SELECT did, subject_did FROM observed_follows")).fetchall())
        assert edges == expected - {(gone, alice["did"])}
        unfollows = await (await conn.execute("SELECT did, subject_did, kind FROM follow_events")).fetchall()
        assert unfollows == [(gone, alice["did"], "unfollow")]


async def test_a_request_the_appview_refuses_is_a_failure_in_status_and_a_dead_letter_with_its_reason(
        settings, standin, sender, store_factory, unique, tmp_path) -> None:
    cli = cli_settings(settings, unique, tmp_path)
    standin.fail(status=400, times=1, method="app.bsky.feed.searchPosts")
    code, output = await bge_crawl(cli, "search", "#art", "--label", "refused")
    crawl_id = crawl_id_of(output)
    await execute(cli, sender, store_factory, unique, idle_seconds=1.5)
    report = await status_of(cli, crawl_id)
    assert report["state"] == "done" and report["failed"] == 1 and "400" in report["errors"][0], report
    (dead,) = await read_all(cli, Topic.GROWTH_DLQ)
    headers = {name: value.decode() for name, value in dead.headers}
    assert headers["error_reason"] == "service_refused" and headers["error_class"] == "XrpcError", headers
    assert "400" in headers["error_message"]
    assert json.loads(dead.value)["query"] == "#art"  # the request itself, to redrive


async def test_a_crawl_survives_kill_9_of_the_worker_and_resumes_without_repeating_finished_pages(
        settings, standin, store_factory, unique, tmp_path, projection) -> None:
    await ensure_topics(settings)
    cli = cli_settings(settings, unique, tmp_path, db_schema=projection, crawl_enabled=True,
                       atproto_rate_limit=8.0, bge_state_dir=tmp_path)
    code, output = await bge_crawl(cli, "snowball", "--seed", SEED, "--label", "kill")
    crawl_id = crawl_id_of(output)
    store = store_factory()
    await store.open()

    async def expansions_done() -> int:
        return (await store.crawl_reports(crawl_id))[0]["finished"]

    log = str(tmp_path / "worker.log")
    worker = start_bge(["worker", "-l", "warn"], cli.model_copy(update={"api_port": free_port()}), log)
    try:
        # two of the crawl's five requests: the rest still to do when the kill lands, even on a
        # busy machine (waiting for four once saw the fifth finish before the kill)
        await wait_until(lambda: _at_least(expansions_done, 2), 120, "two requests of the crawl done",
                         interval=0.1)
        kill(worker)
        halfway = await expansions_done()
        worker = start_bge(["worker", "-l", "warn"], cli.model_copy(update={"api_port": free_port()}), log)

        async def finished() -> bool:
            return (await status_of(cli, crawl_id))["state"] == "done"

        await wait_until(finished, 180, "the crawl done after the restart")
    finally:
        kill(worker, signal.SIGTERM)
    kept, _ = expected_snowball(fixture_graph(), [SEED], max_degree=2, max_users=1000, **BOUNDS)
    report = await status_of(cli, crawl_id)
    assert report["accounts_found"] == len(kept) and report["failed"] == 0 and halfway < report["requests"]
    candidates = of_schema(await growth_events(cli), "CandidateFound", "snowball")
    assert {e["did"] for e in candidates} == set(kept)
    # every account's follower list was read from its first page once, but at most the one
    # request in flight when the worker was killed
    first_pages = Counter(r.params["actor"][0] for r in standin.requests_for("app.bsky.graph.getFollowers")
                          if "cursor" not in r.params)
    repeated = {actor: n for actor, n in first_pages.items() if n > 1}
    assert len(repeated) <= 1 and all(n == 2 for n in repeated.values()), repeated


async def _at_least(count: Any, n: int) -> bool:
    return await count() >= n
