"""Helpers for the replay and dead-letter tool tests against the real Kafka.

Every test has its own topic prefix. Raw events are produced the way the ingest produces them
(key = repo DID, headers kind/time_us/collection/operation), domain events the way the collect
agent does (the pipeline's events, encoded, keyed by their partition key), so the tools read
exactly what they read in production.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from domain.events import encode, partition_key
from domain.growth import StrategyConfig, StrategyState
from domain.identity import SourceCoordinates
from domain.pipeline import process
from streams.cli import dlq
from streams.cli import replay
from streams.config import Settings, load_settings
from streams.topology import Topic
from streams.ingest.frames import BadFrame, read_facts
from streams.kafka.clients import ensure_topics, new_producer
from tests.conftest import SAMPLE_JSONL
from tests.integration.ingest_support import read_all

SAMPLE_LINES = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]
TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def tool_settings(unique: str, **overrides: Any) -> Settings:
    """Settings of one test: its own topic prefix, 4 partitions."""
    return load_settings(env_file=None, bge_topic_prefix=f"t{unique}.", bge_topic_partitions=4, **overrides)


def ingest_headers(line: bytes) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """Key and headers the ingest gives a raw event (a non-event gets none)."""
    try:
        facts = read_facts(line)
    except BadFrame:
        return None, []
    headers = [("kind", facts.kind.encode()), ("time_us", str(facts.time_us).encode())]
    if facts.collection:
        headers += [("collection", facts.collection.encode()), ("operation", facts.operation.encode())]
    return facts.did.encode(), headers


async def produce(
    settings: Settings,
    topic: Topic | str,
    items: Sequence[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
    timestamps_ms: Sequence[int] | None = None,
) -> list[Any]:
    """Send ``(key, value, headers)`` items in order; return their RecordMetadata."""
    await ensure_topics(settings)
    producer: AIOKafkaProducer = new_producer(settings)
    await producer.start()
    name = settings.topic(topic)
    try:
        futures = []
        for i, (key, value, headers) in enumerate(items):
            stamp = timestamps_ms[i] if timestamps_ms is not None else None
            futures.append(await producer.send(name, value=value, key=key, headers=headers, timestamp_ms=stamp))
        return [await future for future in futures]
    finally:
        await producer.stop()


async def produce_raw(settings: Settings, lines: Sequence[bytes], timestamps_ms: Sequence[int] | None = None,
                      traceparent: bool = False) -> list[Any]:
    items = []
    for line in lines:
        key, headers = ingest_headers(line)
        if traceparent:
            headers.append(("traceparent", TRACEPARENT))
        items.append((key, line, headers))
    return await produce(settings, Topic.JETSTREAM_EVENTS, items, timestamps_ms)


async def produce_domain(settings: Settings, config: StrategyConfig | None = None) -> list[Any]:
    """Run the raw topic's events through the pipeline, as the collect agent does (same
    configuration, state carried), and put their domain events in growth.events, each with the
    timestamp of its raw event. Returns the raw messages read."""
    from streams.cli.explain import as_collected

    config = as_collected(config or StrategyConfig())
    raw = await read_all(settings, Topic.JETSTREAM_EVENTS)
    state = StrategyState()
    items, stamps = [], []
    for message in raw:
        result = process(message.value, config=config, state=state,
                         coordinates=SourceCoordinates(message.topic, message.partition, message.offset))
        outcome = result.value_or(None)
        if outcome is None:
            continue
        state = state.apply(outcome.state_changes)
        for event in outcome.all_events:
            items.append((partition_key(event), encode(event), [("schema", event.schema_name.encode())]))
            stamps.append(message.timestamp)
    await produce(settings, Topic.GROWTH_EVENTS, items, stamps)
    return raw


@dataclass
class Ran:
    code: int
    out: str
    err: str

    @property
    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.splitlines() if line.strip()]


async def run_replay(settings: Settings, *argv: str, **kwargs: Any) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    code = await replay.run(list(argv), settings=settings, stdout=out, stderr=err, **kwargs)
    return Ran(code, out.getvalue(), err.getvalue())


async def run_dlq(settings: Settings, *argv: str) -> Ran:
    out, err = io.StringIO(), io.StringIO()
    code = await dlq.run(list(argv), settings=settings, stdout=out, stderr=err)
    return Ran(code, out.getvalue(), err.getvalue())


def coordinates(lines: list[dict[str, Any]]) -> set[tuple[int, int]]:
    return {(line["partition"], line["offset"]) for line in lines}


def coordinates_of(messages: Sequence[Any]) -> set[tuple[int, int]]:
    return {(m.partition, m.offset) for m in messages}
