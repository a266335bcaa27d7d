"""What the tests of the Faust worker share: starting a worker (plain or traced), putting raw
events in its input topic, waiting for its domain events and for its projector to catch up, and
the scratch Postgres schemas it projects into."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg import sql

from domain.growth import StrategyConfig
from projections import connect, migrate
from streams.bench.harness import free_port
from streams.cli.explain import stored_events
from streams.config import Settings
from streams.ingest.frames import read_facts
from streams.kafka.clients import ensure_topics, new_producer
from streams.topology import Topic
from tests.conftest import ROOT, SAMPLE_JSONL
from tests.integration.ingest_support import (
    end_offsets_total,
    read_all,
    env_for,
    ingest_settings,
    start_bge,
    wait_until,
)
from tests.integration.projection_support import scalar

SAMPLE_LINES = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]


# --- processes ------------------------------------------------------------------------------


def worker_settings(unique: str, tmp_path, **overrides: object) -> Settings:
    return ingest_settings(unique, ["ws://127.0.0.1:1"], bge_state_dir=tmp_path, **overrides)


def start_worker(settings: Settings, log: str, **env: str) -> subprocess.Popen:
    return start_bge(["worker", "-l", "info"], settings.model_copy(update={"api_port": free_port()}), log, **env)


def start_traced(args: list[str], settings, log_path: str, **env: str) -> subprocess.Popen:
    """``bge <args>`` with OpenTelemetry on (spans exported every 200 ms), plus ``env``; run by the
    interpreter running the tests, as ``start_bge`` does (a worktree has no ``.venv`` of its own)."""
    environment = env_for(settings)
    environment.update({"OTEL_SDK_DISABLED": "false", "OTEL_BSP_SCHEDULE_DELAY": "200", **env})
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "streams.cli.main", *args], env=environment,
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


# --- Kafka ----------------------------------------------------------------------------------


async def produce_raw(settings: Settings, lines: list[bytes]) -> None:
    """Put raw events in the raw topic as the ingest does (key = repo DID, same headers)."""
    await ensure_topics(settings)
    producer: AIOKafkaProducer = new_producer(settings)
    await producer.start()
    try:
        for line in lines:
            try:
                facts = read_facts(line)
                key, headers = facts.did.encode(), [("kind", facts.kind.encode()), ("time_us", str(facts.time_us).encode())]
            except Exception:  # noqa: BLE001 - a malformed event on purpose
                key, headers = b"did:plc:malformed", []
            await producer.send(settings.topic(Topic.JETSTREAM_EVENTS), value=line, key=key, headers=headers)
        await producer.flush()
    finally:
        await producer.stop()


def events_in(messages: list) -> list[dict]:
    """The domain events of ``growth.events`` messages as JSON, source included (a message holds
    one event, or a group of one source event's events: :func:`streams.cli.explain.stored_events`)."""
    return [event for m in messages for _, event in stored_events(m.value)]


def ids(messages: list) -> Counter[str]:
    """How many times each domain event id occurs in ``messages``."""
    return Counter(event["id"] for event in events_in(messages))


async def growth_count(settings: Settings) -> int:
    """Messages in ``growth.events`` (a raw event's domain events are about one message)."""
    return await end_offsets_total(settings, Topic.GROWTH_EVENTS)


async def growth_at_least(settings: Settings, n: int) -> bool:
    return await growth_count(settings) >= n


async def growth_events_at_least(settings: Settings, n: int) -> bool:
    """Whether ``growth.events`` holds ``n`` domain events (reads the topic: for small ones)."""
    return len(events_in(await read_all(settings, Topic.GROWTH_EVENTS))) >= n


async def expected_ids(lines: list[bytes]) -> Counter[str]:
    """The ids of the domain events the domain makes of ``lines`` (default strategies, fresh state)."""
    from domain.growth import StrategyState
    from domain.identity import SourceCoordinates
    from domain.pipeline import process

    expected: Counter[str] = Counter()
    for line in lines:
        outcome = process(line, config=StrategyConfig(), state=StrategyState(),
                          coordinates=SourceCoordinates("x", 0, 0)).unwrap()
        expected.update(e.id for e in outcome.events)
    return expected


# --- Postgres -------------------------------------------------------------------------------


async def scratch_schema(settings: Settings, name: str) -> str:
    await migrate(settings.database_url, name)
    return name


async def drop(settings: Settings, *schemas: str) -> None:
    async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True) as conn:
        for schema in schemas:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def projected_offsets(settings: Settings, schema: str) -> int:
    async with await connect(settings.database_url, schema) as conn:
        return int(await scalar(conn, "SELECT coalesce(sum(next_offset), 0) FROM projection_offsets") or 0)


async def wait_projected(settings: Settings, schema: str, timeout: float) -> None:
    """Until every message of growth.events is applied (the stored marks reach the end offsets)
    and nothing new arrives for a moment."""
    async def caught_up() -> bool:
        end = await end_offsets_total(settings, Topic.GROWTH_EVENTS)
        return end > 0 and await projected_offsets(settings, schema) == end

    await wait_until(caught_up, timeout, "projected", interval=1)
    await asyncio.sleep(3)
    await wait_until(caught_up, timeout, "projected (settled)", interval=1)
