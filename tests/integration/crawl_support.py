"""Fixtures shared by the AT Protocol tests (``test_atproto_*.py``): the AppView stand-in over the
fixture graph, settings with a unique topic prefix, the crawl's Postgres store in a scratch
schema, a started Kafka sender, and an independent breadth-first search over the fixture graph."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from domain.crawl import CrawlConfig
from domain.events import UserSeen
from domain.identity import sequence_source
from streams.local.appview import AppViewStandIn, Graph
from streams.adapters.atproto import AppViewClient, RetryPolicy
from streams.cli.explain import stored_events
from streams.config import Settings, load_settings
from streams.topology import Topic
from projections.crawl_store import CrawlStore
from streams.kafka.clients import Sender, delivered, ensure_topics
from streams.stages.crawler import Crawler, CrawlTopics
from tests.integration.ingest_support import read_all

GRAPH_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "appview" / "graph.json"
PASSWORD = "app-pass-1234-abcd"


def fixture_graph() -> Graph:
    """A fresh copy of the fixture graph (the stand-in's writes change its graph)."""
    return Graph.load(GRAPH_FILE)


@pytest.fixture
async def standin() -> AsyncIterator[AppViewStandIn]:
    async with AppViewStandIn(fixture_graph(), accounts={"alice.test": PASSWORD}) as server:
        yield server


def crawl_settings(unique: str, standin: AppViewStandIn, **overrides: Any) -> Settings:
    return load_settings(env_file=None, bge_topic_prefix=f"t{unique}.", bge_topic_partitions=2,
                         atproto_service=standin.url, atproto_rate_limit=overrides.pop("atproto_rate_limit", 200),
                         **overrides)


@pytest.fixture
async def settings(unique: str, standin: AppViewStandIn) -> Settings:
    value = crawl_settings(unique, standin)
    await ensure_topics(value, [Topic.GROWTH_EVENTS, Topic.GROWTH_CRAWL, Topic.GROWTH_DLQ])
    return value


@pytest.fixture
async def store_factory(database_url: str, unique: str) -> AsyncIterator[Callable[[], CrawlStore]]:
    """``store_factory()`` → a new :class:`CrawlStore` (same scratch schema each time: a
    restart); all are closed and the schema dropped afterwards."""
    schema = f"crawl_{unique}"
    made: list[CrawlStore] = []

    def make() -> CrawlStore:
        store = CrawlStore(database_url, schema)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
async def sender(settings: Settings) -> AsyncIterator[Sender]:
    value = Sender(settings)
    await value.start()
    await value.open(*CrawlTopics.of(settings).names)
    yield value
    await value.stop()


async def send(sender: Sender, topic: str, value: bytes, *, key: bytes | None = None,
               headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> None:
    """Send one raw message and wait for Kafka's acknowledgement."""
    outbox = sender.outbox()
    outbox.add(topic, key, value, headers or [], partition=partition)
    await delivered(sender.submit(outbox))


def appview_client(settings: Settings, **kwargs: Any) -> AppViewClient:
    kwargs.setdefault("retry", RetryPolicy(retries=3, base_delay=0.02, max_delay=0.2))
    return AppViewClient.from_settings(settings, **kwargs)


async def new_crawler(settings: Settings, sender: Sender, store: CrawlStore, appview: AppViewClient,
                      config: CrawlConfig | None = None, **kwargs: Any) -> Crawler:
    await store.open()
    await appview.start()
    return Crawler(appview=appview, store=store, sender=sender, topics=CrawlTopics.of(settings), config=config,
                   retry_delay=0.05, max_retry_delay=0.5, **kwargs)


async def growth_events(settings: Settings) -> list[dict[str, Any]]:
    """Every domain event in growth.events, decoded as JSON (source included, also for the
    events of a group), with its Kafka key."""
    return [{**event, "_key": m.key}
            for m in await read_all(settings, Topic.GROWTH_EVENTS) for _, event in stored_events(m.value)]


def of_schema(events: list[dict[str, Any]], schema: str, strategy: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if e["schema"] == schema and (strategy is None or e.get("strategy") == strategy)]


def expected_snowball(graph: Graph, seeds: list[str], *, max_degree: int, min_followers: int,
                      max_followers: int | None, max_users: int, page_size: int, pages_per_user: int) -> tuple[list[str], set[str]]:
    """An independent breadth-first search over the graph file: (kept accounts in order, every
    account judged including the seeds)."""
    followers_count = {u["did"]: len(graph.followers_of[u["did"]]) for u in graph.users}
    seed_dids = [graph.resolve(s)["did"] for s in seeds]  # type: ignore[index]
    judged = set(seed_dids)
    queue = [(did, 0) for did in seed_dids]
    kept: list[str] = []
    bound = page_size * pages_per_user
    while queue:
        did, degree = queue.pop(0)
        if degree >= max_degree:
            continue
        neighbours = graph.followers(did)[:bound] + graph.following(did)[:bound]
        for other in dict.fromkeys(neighbours):
            if other in judged or other == did:
                continue
            judged.add(other)
            count = followers_count[other]
            if len(kept) < max_users and count >= min_followers and (max_followers is None or count <= max_followers):
                kept.append(other)
                queue.append((other, degree + 1))
    return kept, judged


NOW = 1_783_175_888.0  # 2026-07-04T14:38:08Z: the crawl tests' clock


def user_seen(did: str, time_us: int, seq: int = 1) -> UserSeen:
    """A UserSeen of ``did`` (as the collect stage derives it from an account event)."""
    return UserSeen.derive(sequence_source(did, "account", seq, time_us), time_us=time_us)
