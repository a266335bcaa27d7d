"""An event's journey, for the dashboard and ``GET /api/journey``: one source event from frame to row.

For the message at ``topic``/``partition``/``offset`` (a raw Jetstream event of
``jetstream.events``, as a candidate's ``source_*`` columns point to it):

- the message itself (key, headers, the event as JSON);
- what the domain makes of it, replayed alone (:class:`streams.stages.explain.Explainer`, fresh
  strategy state, the worker's strategy configuration): each strategy's decision with its reasons
  and the domain events derived;
- the rows those events are in now (the record by its uri, the account's candidate rows);
- its trace, when the message carries a ``traceparent``: the spans with their durations from
  Jaeger's query API (``JAEGER_QUERY_URL``), and a link to the Jaeger UI when ``JAEGER_UI_URL``
  is set;
- the ``bge replay`` command that shows the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streams.config import Settings
from streams.kafka.clients import new_reader
from streams.topology import Header, Topic

__all__ = ["fetch_message", "journey", "trace_spans"]

_RECORD_TABLES = {
    "app.bsky.feed.post": ("posts", "uri"),
    "app.bsky.feed.like": ("likes", "uri"),
    "app.bsky.feed.repost": ("reposts", "uri"),
    "app.bsky.graph.follow": ("follows", "uri"),
    "app.bsky.graph.block": ("blocks", "uri"),
}


async def fetch_message(settings: Settings, topic: str, partition: int, offset: int, *, timeout: float = 5.0) -> Any | None:
    """The Kafka record at ``topic``/``partition``/``offset`` (None: no such message)."""
    reader = new_reader(settings, client_id="bge-journey")
    await reader.start()
    try:
        tp = TopicPartition(topic, partition)
        if partition not in (reader.partitions_for_topic(topic) or await _partitions(reader, topic)):
            return None
        reader.assign([tp])
        reader.seek(tp, offset)
        batch = await reader.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
        records = batch.get(tp, [])
        return records[0] if records and records[0].offset == offset else None
    finally:
        await reader.stop()


async def _partitions(reader: Any, topic: str) -> set[int]:
    cluster = await reader._client.fetch_all_metadata()  # noqa: SLF001 - asks, creates nothing
    return set(cluster.partitions_for_topic(topic) or ())


def _trace_id(headers: list[tuple[str, bytes]]) -> str | None:
    for name, value in headers:
        if name == Header.TRACEPARENT:
            parts = value.decode("latin-1").split("-")
            if len(parts) == 4 and len(parts[1]) == 32:
                return parts[1]
    return None


async def trace_spans(settings: Settings, trace_id: str, *, timeout: float = 3.0) -> list[dict[str, Any]] | None:
    """The spans of trace ``trace_id`` from Jaeger's query API, by start time (None: Jaeger did
    not answer, or has no such trace yet)."""
    url = f"{settings.jaeger_query_url.rstrip('/')}/api/traces/{trace_id}"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.get(url) as response:
            if response.status != 200:
                return None
            body = await response.json()
    except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
        return None
    spans: list[dict[str, Any]] = []
    for found in body.get("data") or ():
        processes = found.get("processes", {})
        for span in found.get("spans", ()):
            service = processes.get(span.get("processID"), {}).get("serviceName", "")
            spans.append({"name": span.get("operationName", ""), "service": service,
                          "start_us": int(span.get("startTime", 0)), "duration_us": int(span.get("duration", 0)),
                          "span_id": span.get("spanID", "")})
    spans.sort(key=lambda s: s["start_us"])
    return spans or None


async def _rows(conn: Any, explanation: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The rows the explained event's domain events are in now."""
    from psycopg.rows import dict_row

    rows: dict[str, list[dict[str, Any]]] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        for event in explanation.get("events", ()):
            source = event.get("source", {})
            table = _RECORD_TABLES.get(source.get("collection") or "")
            uri = event.get("uri")
            if table is not None and uri and table[0] not in rows:
                await cur.execute(f"SELECT * FROM {table[0]} WHERE {table[1]} = %s", (uri,))  # noqa: S608 - fixed names
                rows[table[0]] = await cur.fetchall()
            if event.get("schema") == "CandidateFound" and "candidates" not in rows:
                await cur.execute("SELECT did, strategy, score, reasons, subject_uri, first_seen_at, last_seen_at "
                                  "FROM candidates WHERE did = %s", (event.get("did"),))
                rows["candidates"] = await cur.fetchall()
    return rows


def replay_command(settings: Settings, topic: str, partition: int, offset: int) -> str:
    """The ``bge replay`` command showing what the domain makes of this message."""
    short = next((t.value for t in Topic if settings.topic(t) == topic), topic)
    alias = {Topic.JETSTREAM_EVENTS.value: "raw", Topic.GROWTH_EVENTS.value: "events"}.get(short, short)
    through = " --through strategies" if alias == "raw" else ""
    return f"bge replay {alias} --partition {partition} --from-offset {offset} --to-offset {offset}{through}"


async def journey(settings: Settings, conn: Any, topic: str, partition: int, offset: int) -> dict[str, Any] | None:
    """The journey of the message at ``topic``/``partition``/``offset`` (None: no such message)."""
    from domain.identity import SourceCoordinates
    from streams.stages.collect import load_strategy_config
    from streams.stages.explain import Explainer, as_collected

    try:
        message = await fetch_message(settings, topic, partition, offset)
    except KafkaError:
        message = None
    if message is None:
        return None
    headers = [(name, value) for name, value in (message.headers or ())]
    try:
        event: Any = orjson.loads(message.value or b"null")
    except orjson.JSONDecodeError:
        event = (message.value or b"").decode("utf-8", "replace")
    explanation: dict[str, Any] = {}
    if topic == settings.topic(Topic.JETSTREAM_EVENTS):
        config = as_collected(load_strategy_config(settings.bge_strategies_file))
        explained = Explainer(config).explain(message.value or b"", SourceCoordinates(topic, partition, offset))
        explanation = orjson.loads(orjson.dumps(explained.to_json(), default=str))
    trace_id = _trace_id(headers)
    spans = await trace_spans(settings, trace_id) if trace_id else None
    ui = settings.jaeger_ui_url
    return {
        "topic": topic, "partition": partition, "offset": offset,
        "timestamp_ms": message.timestamp, "key": (message.key or b"").decode("utf-8", "replace"),
        "headers": {name: value.decode("utf-8", "replace") for name, value in headers},
        "event": event, "explanation": explanation,
        "rows": await _rows(conn, explanation) if explanation else {},
        "trace_id": trace_id, "spans": spans or [],
        "jaeger_url": f"{ui.rstrip('/')}/trace/{trace_id}" if ui and trace_id else None,
        "replay_command": replay_command(settings, topic, partition, offset),
    }
