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

A record's at-uri leads to the raw event that carried it (:func:`find_record`): raw events are
keyed by their repo's DID, so the record's event is in one partition, the one Kafka's default
partitioner gives the DID; the search starts a little before the firehose time of the record's
row when there is one (Kafka timestamps are set when the ingest sends, never before the event's
``time_us``), else at the partition's beginning, and reads at most :data:`SCAN_LIMIT` messages.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp
import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streams.config import Settings
from domain.syntax import RecordUri
from streams.kafka.clients import KeyPartitioner, new_reader, topic_partitions
from streams.topology import Header, Topic

__all__ = ["FoundRecord", "fetch_message", "find_record", "journey", "trace_spans"]

_RECORD_TABLES = {
    "app.bsky.feed.post": ("posts", "indexed_at"),
    "app.bsky.feed.like": ("likes", "created_at"),
    "app.bsky.feed.repost": ("reposts", "created_at"),
    "app.bsky.graph.follow": ("follows", "created_at"),
    "app.bsky.graph.block": ("blocks", "created_at"),
}
"""Record tables by collection, keyed by ``uri``, with the column holding the firehose time."""

SCAN_LIMIT = 500_000
"""The most messages :func:`find_record` reads in the account's partition."""
CLOCK_MARGIN_MS = 300_000
"""How far before the row's firehose time the search starts (clock skew between Jetstream and us)."""


async def fetch_message(settings: Settings, topic: str, partition: int, offset: int, *, timeout: float = 5.0) -> Any | None:
    """The Kafka record at ``topic``/``partition``/``offset`` (None: no such message)."""
    reader = new_reader(settings, client_id="bge-journey")
    await reader.start()
    try:
        tp = TopicPartition(topic, partition)
        if partition not in (reader.partitions_for_topic(topic) or await topic_partitions(reader, topic)):
            return None
        reader.assign([tp])
        reader.seek(tp, offset)
        batch = await reader.getmany(tp, timeout_ms=int(timeout * 1000), max_records=1)
        records = batch.get(tp, [])
        return records[0] if records and records[0].offset == offset else None
    finally:
        await reader.stop()


@dataclass(frozen=True, slots=True)
class FoundRecord:
    """Where the raw event carrying a record is (``coordinates``: topic, partition, offset; None
    when not found) and what was searched, in words."""

    coordinates: tuple[str, int, int] | None
    searched: str


async def find_record(settings: Settings, conn: Any, record: RecordUri, *, limit: int = SCAN_LIMIT,
                      timeout: float = 15.0) -> FoundRecord:
    """The first raw event of ``jetstream.events`` whose commit is ``record`` (see the module docstring)."""
    topic = settings.topic(Topic.JETSTREAM_EVENTS)
    key = record.did.encode()
    since_ms = await _record_time_ms(conn, record)
    reader = new_reader(settings, client_id="bge-journey")
    await reader.start()
    try:
        partitions = await topic_partitions(reader, topic)
        if not partitions:
            return FoundRecord(None, f"topic {topic} does not exist")
        tp = TopicPartition(topic, KeyPartitioner()(key, partitions, partitions))
        begin, end = (await reader.beginning_offsets([tp]))[tp], (await reader.end_offsets([tp]))[tp]
        start = begin
        if since_ms is not None:
            found = (await reader.offsets_for_times({tp: max(since_ms - CLOCK_MARGIN_MS, 0)}))[tp]
            start = found.offset if found is not None else end
        stop = min(end, start + limit)
        searched = f"{topic} partition {tp.partition}, offsets {start} to {stop - 1}"
        reader.assign([tp])
        reader.seek(tp, start)
        rkey = record.rkey.encode()
        deadline = asyncio.get_running_loop().time() + timeout
        position = start
        while position < stop and asyncio.get_running_loop().time() < deadline:
            for message in (await reader.getmany(tp, timeout_ms=500, max_records=10_000)).get(tp, ()):
                position = message.offset + 1
                if message.offset >= stop:
                    break
                if message.key == key and rkey in (message.value or b"") and _carries(message.value, record):
                    return FoundRecord((topic, tp.partition, message.offset), searched)
        if position < stop:
            searched += f" (stopped at {position} after {timeout:g} s)"
        return FoundRecord(None, searched)
    finally:
        await reader.stop()


def _carries(value: bytes, record: RecordUri) -> bool:
    try:
        commit = orjson.loads(value).get("commit") or {}
    except (orjson.JSONDecodeError, AttributeError):
        return False
    return commit.get("collection") == record.collection and commit.get("rkey") == record.rkey


async def _record_time_ms(conn: Any, record: RecordUri) -> int | None:
    """The firehose time of the record's row, in epoch milliseconds (None: no such row)."""
    table = _RECORD_TABLES.get(record.collection)
    if table is None:
        return None
    cur = await conn.execute(f"SELECT {table[1]} FROM {table[0]} WHERE uri = %s", (str(record),))  # noqa: S608 - fixed names
    row = await cur.fetchone()
    return int(row[0].timestamp() * 1000) if row and isinstance(row[0], datetime) else None


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
                await cur.execute(f"SELECT * FROM {table[0]} WHERE uri = %s", (uri,))  # noqa: S608 - fixed names
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
