"""The crawl inside a real Faust worker (``register_crawl`` on the product's app), against the real
Kafka and Postgres and the AppView stand-in: users seen in growth.events get enriched 25 a call,
a snowball request yields the expected candidates, every request travelled on partition 0, and
the worker's projector writes the AppView's profiles and the candidates into Postgres."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections import Counter

import psycopg
from psycopg import sql

from domain.crawl import SNOWBALL, SnowballConfig, snowball_request
from domain.events import encode, partition_key
from projections import connect, migrate
from streams.topology import Topic
from streams.stages.crawler import CrawlTopics, send_requests
from tests.conftest import ROOT
from tests.integration.crawl_support import (
    NOW,
    user_seen,
    expected_snowball,
    fixture_graph,
    growth_events,
    of_schema,
    sender,  # noqa: F401 - fixture
    settings,  # noqa: F401 - fixture
    standin,  # noqa: F401 - fixture
    store_factory,  # noqa: F401 - fixture (drops the crawl schema afterwards)
    send,
)
from tests.integration.ingest_support import env_for, read_all, wait_until
from tests.integration.worker_support import free_port


async def test_a_faust_worker_enriches_seen_users_and_runs_a_snowball_crawl(
        settings, standin, sender, store_factory, unique, tmp_path, database_url) -> None:
    projection = f"proj_{unique}_w"
    await migrate(database_url, projection)
    try:
        await _run_worker(settings, standin, sender, unique, tmp_path, database_url, projection)
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(projection)))


async def _projected(database_url: str, schema: str, query: str) -> int:
    conn = await connect(database_url, schema)
    try:
        return int((await (await conn.execute(query)).fetchone())[0])
    finally:
        await conn.close()


async def _run_worker(settings, standin, sender, unique, tmp_path, database_url, projection) -> None:
    graph = fixture_graph()
    dids = [u["did"] for u in graph.users]
    sinks = CrawlTopics.of(settings)
    for seq, did in enumerate(dids):
        event = user_seen(did, int(NOW * 1e6), seq)
        await send(sender, sinks.events, encode(event), key=partition_key(event), headers=[("schema", b"UserSeen")])
    bounds = SnowballConfig(max_followers=10, min_followers=1, page_size=3, pages_per_user=20)
    await send_requests(sender, sinks.crawl, [snowball_request(["judy.test"], bounds, label="w",
                                                               requested_at_us=int(NOW * 1e6))])

    env = env_for(settings.model_copy(update={"api_port": free_port(), "bge_state_dir": tmp_path,
                                              "db_schema": projection}))
    env["BGE_TEST_CRAWL_SCHEMA"] = f"crawl_{unique}"
    with open(tmp_path / "worker.log", "ab") as log:
        worker = subprocess.Popen([sys.executable, "-m", "faust", "-A", "tests.integration.crawl_worker_app", "worker",
                                   "-l", "warn"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    kept, _ = expected_snowball(graph, ["judy.test"], max_degree=2, min_followers=1, max_followers=10,
                                max_users=1000, page_size=3, pages_per_user=20)

    async def done() -> bool:
        events = await growth_events(settings)
        enriched = {e["did"] for e in of_schema(events, "ProfileEnriched")}
        found = {e["did"] for e in of_schema(events, "CandidateFound", SNOWBALL)}
        if not (enriched >= set(dids) and found >= set(kept)):
            return False
        fetched = await _projected(database_url, projection,
                                   "SELECT count(*) FROM users WHERE appview_fetched_at IS NOT NULL")
        kept_rows = await _projected(database_url, projection,
                                     f"SELECT count(*) FROM candidates WHERE strategy = '{SNOWBALL}'")
        return fetched == len(dids) and kept_rows == len(kept)

    try:
        await wait_until(done, 90, "enrichment and snowball done by the worker")
        await asyncio.sleep(1.0)  # nothing more arrives
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    events = await growth_events(settings)
    candidates = Counter(e["did"] for e in of_schema(events, "CandidateFound", SNOWBALL))
    assert set(candidates) == set(kept) and set(candidates.values()) == {1}
    requests = await read_all(settings, Topic.GROWTH_CRAWL)
    assert {m.partition for m in requests} == {0} and {m.key for m in requests} == {b"crawl"}
    kinds = Counter(m.headers[0][1] for m in requests)
    assert kinds[b"EnrichProfile"] == 50 and kinds[b"StartSnowball"] == 1
    assert all(len(r.params["actors"]) <= 25 for r in standin.requests_for("app.bsky.actor.getProfiles"))
    alice = graph.resolve("alice.test")
    conn = await connect(database_url, projection)
    try:
        row = await (await conn.execute("SELECT handle, display_name, appview_followers_count FROM users WHERE did = %s",
                                        (alice["did"],))).fetchone()
    finally:
        await conn.close()
    assert row == ("alice.test", "Alice", len(graph.followers_of[alice["did"]]))
