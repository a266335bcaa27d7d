"""One event's journey is one trace in Jaeger: websocket frame → Kafka → collect → strategies → Postgres."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.parse
import urllib.request

import orjson

from streams.local.jetstream_server import JetstreamServer
from tests.integration.ingest_support import ROOT, kill
from tests.integration.worker_support import (
    SAMPLE_LINES, drop, free_port, scratch_schema, start_traced, wait_projected, worker_settings,
)

POST = next(line for line in SAMPLE_LINES if b'"collection":"app.bsky.feed.post"' in line and b'"operation":"create"' in line)
POST_DID = orjson.loads(POST)["did"]


def jaeger(path: str, **params: str) -> dict:
    url = f"{os.environ['JAEGER_QUERY_URL']}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def traces_with(service: str, tags: dict[str, str]) -> list[dict]:
    return jaeger("/api/traces", service=service, tags=json.dumps(tags), limit="20", lookback="1h").get("data") or []


def span_tags(span: dict) -> dict[str, object]:
    return {tag["key"]: tag["value"] for tag in span.get("tags", [])}


async def test_one_trace_follows_a_recorded_post_from_the_frame_to_its_database_row(unique, tmp_path) -> None:
    schema = f"trace_{unique}"
    ingest_service, worker_service = f"bge-ingest-{unique}", f"bge-worker-{unique}"
    async with JetstreamServer([POST]) as server:
        settings = worker_settings(unique, tmp_path, db_schema=schema).model_copy(
            update={"jetstream_endpoint": [server.url], "api_port": free_port()})
        await scratch_schema(settings, schema)
        ingest = start_traced(["ingest"], settings, str(tmp_path / "ingest.log"), OTEL_SERVICE_NAME=ingest_service)
        worker = start_traced(["worker", "-l", "info"], settings, str(tmp_path / "worker.log"),
                              OTEL_SERVICE_NAME=worker_service, LOG_LEVEL="DEBUG")
        try:
            await wait_projected(settings, schema, 120)
        finally:
            kill(ingest, subprocess.signal.SIGTERM)
            kill(worker, subprocess.signal.SIGTERM)
    try:
        deadline = time.monotonic() + 30
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = traces_with(worker_service, {"did": POST_DID})
            names = {s["operationName"] for t in found for s in t["spans"]}
            if {"ingest jetstream.frame", "collect jetstream.event", "project growth.event"} <= names:
                break
            await asyncio.sleep(1)
        (trace,) = [t for t in found if any(s["operationName"] == "ingest jetstream.frame" for s in t["spans"])]
        services = {p["serviceName"] for p in trace["processes"].values()}
        assert {ingest_service, worker_service} <= services
        spans = {s["operationName"]: s for s in trace["spans"]}
        assert {"ingest jetstream.frame", "collect jetstream.event", "project growth.event"} <= set(spans)
        for name in ("ingest jetstream.frame", "collect jetstream.event"):
            tags = span_tags(spans[name])
            assert tags["did"] == POST_DID and tags["collection"] == "app.bsky.feed.post", name
        # each strategy's decision is on the collect span; the post's domain events share one project span
        decisions = {key: value for key, value in span_tags(spans["collect jetstream.event"]).items()
                     if key.startswith("strategy.") and key.count(".") == 1}
        assert decisions and set(decisions.values()) <= {"candidate", "declined"}, decisions
        assert [s["operationName"] for s in trace["spans"]].count("project growth.event") == 1
        project = span_tags(spans["project growth.event"])
        # (a raw event's domain events go as one message, or one per key)
        assert project["messaging.batch.message_count"] >= 1 and project["outcome"] == "applied"
        assert project["db.rows.posts"] >= 1  # the batch's rows by table
        # ... linked to the batch span that holds the statements
        assert any(ref.get("refType") == "FOLLOWS_FROM" or ref.get("refType") == "CHILD_OF"
                   for ref in spans["project growth.event"].get("references", []))
        # the fields of the log call made while collecting are on the collect span, as attributes and as an event
        collect = spans["collect jetstream.event"]
        assert span_tags(collect)["source_id"].startswith(f"commit|{POST_DID}|")
        logged = [log for log in collect.get("logs", []) if any(f["value"] == "event collected" for f in log["fields"])]
        assert logged, collect.get("logs")
        fields = {f["key"]: f["value"] for f in logged[0]["fields"]}
        assert fields["did"] == POST_DID and "PostCreated" in fields["schemas"]
        # ... and the JSON log line written during that processing carries the same trace id
        lines = [orjson.loads(line) for line in (tmp_path / "worker.log").read_bytes().splitlines()
                 if line.startswith(b"{") and b'"event collected"' in line]
        (line,) = [entry for entry in lines if entry.get("did") == POST_DID]
        assert line["trace_id"] == trace["traceID"]
    finally:
        await drop(settings, schema)


async def test_with_jaeger_stopped_the_pipeline_runs_and_trace_and_metric_export_failures_are_logged(unique, tmp_path) -> None:
    schema = f"trace_{unique}"
    subprocess.run([str(ROOT / "infra/stack"), "down", "jaeger"], check=True)
    try:
        async with JetstreamServer(SAMPLE_LINES) as server:
            settings = worker_settings(unique, tmp_path, db_schema=schema).model_copy(
                update={"jetstream_endpoint": [server.url], "api_port": free_port()})
            await scratch_schema(settings, schema)
            ingest = start_traced(["ingest"], settings, str(tmp_path / "ingest.log"), OTEL_METRIC_EXPORT_INTERVAL="1000")
            worker = start_traced(["worker", "-l", "info"], settings, str(tmp_path / "worker.log"),
                                  OTEL_METRIC_EXPORT_INTERVAL="1000")
            try:
                await wait_projected(settings, schema, 120)
                await asyncio.sleep(3)  # let the exporters try and fail
                assert ingest.poll() is None and worker.poll() is None
            finally:
                assert kill(ingest, subprocess.signal.SIGTERM) == 0
                kill(worker, subprocess.signal.SIGTERM)
        logs = (tmp_path / "ingest.log").read_text() + (tmp_path / "worker.log").read_text()
        assert "Failed to export" in logs or "StatusCode.UNAVAILABLE" in logs, logs[-2000:]
        assert "exporting metrics" in logs or "Failed to export metrics" in logs, logs[-2000:]
        assert "Traceback" not in (tmp_path / "ingest.log").read_text()
    finally:
        subprocess.run([str(ROOT / "infra/stack"), "up", "jaeger"], check=True)
        await drop(settings, schema)
