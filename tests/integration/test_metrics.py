"""Metrics over OTLP: the ingest and worker processes export them, Jaeger's metrics pipeline
receives them, and its Prometheus endpoint (``METRICS_URL``) serves what operators scrape."""

from __future__ import annotations

import asyncio
import os
import time
import urllib.request
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from streams.app import app_id
from streams.topology import Topic
from streams.local import corpus
from streams.local.jetstream_server import JetstreamServer
from tests.integration.worker_support import (
    drop, free_port, scratch_schema, start_traced, wait_projected, worker_settings,
)

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(service: str) -> Samples:
    """The samples of ``service`` served by the metrics endpoint, by sample name."""
    with urllib.request.urlopen(os.environ["METRICS_URL"], timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service_name") == service:
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sum of the samples of ``name`` whose labels include ``labels`` (None when there is none)."""
    found = [v for sample_labels, v in samples.get(name, []) if labels.items() <= sample_labels.items()]
    return sum(found) if found else None


async def wait_for_metrics(service: str, done: Callable[[Samples], bool], timeout: float) -> Samples:
    deadline = time.monotonic() + timeout
    samples: Samples = {}
    while time.monotonic() < deadline:
        samples = scrape(service)
        if done(samples):
            return samples
        await asyncio.sleep(1)
    raise AssertionError(f"metrics of {service} incomplete after {timeout}s: {sorted(samples)}")


async def test_ingest_and_worker_export_stage_counts_lag_breakers_and_batch_latency(unique, tmp_path) -> None:
    schema = f"metrics_{unique}"
    ingest_service, worker_service = f"bge-ingest-{unique}", f"bge-worker-{unique}"
    events = list(corpus.generate(300, seed=11, accounts=40))
    exporting = {"OTEL_METRIC_EXPORT_INTERVAL": "1000", "OTEL_TRACES_SAMPLER": "always_off"}
    async with JetstreamServer(events, rate=2000) as server:
        settings = worker_settings(unique, tmp_path, db_schema=schema).model_copy(
            update={"jetstream_endpoint": [server.url], "api_port": free_port()})
        await scratch_schema(settings, schema)
        ingest = start_traced(["ingest"], settings, str(tmp_path / "ingest.log"),
                              OTEL_SERVICE_NAME=ingest_service, **exporting)
        worker = start_traced(["worker", "-l", "info"], settings, str(tmp_path / "worker.log"),
                              OTEL_SERVICE_NAME=worker_service, **exporting)
        try:
            await server.wait_connected()
            server.send_malformed()
            await wait_projected(settings, schema, 120)

            def ingest_done(s: Samples) -> bool:
                return ((value(s, "bge_events_out_total", stage="ingest") or 0) >= len(events)
                        and value(s, "bge_dead_letters_total", stage="ingest", reason="invalid_json") == 1)

            ingested = await wait_for_metrics(ingest_service, ingest_done, 30)
            # frames in: every event and the bad frame, plus re-deliveries after a reconnect, which
            # are not produced again
            assert (value(ingested, "bge_events_in_total", stage="ingest") or 0) >= len(events) + 1
            assert value(ingested, "bge_events_out_total", stage="ingest") == len(events)
            assert value(ingested, "bge_breaker_state", breaker=f"jetstream:{server.url}") == 0
            assert value(ingested, "bge_ingest_cursor_age_seconds") is not None

            group = app_id(settings)

            def worker_done(s: Samples) -> bool:
                return ((value(s, "bge_events_in_total", stage="collect") or 0) >= len(events)
                        and value(s, "bge_consumer_lag", consumer="projector") == 0
                        and value(s, "bge_consumer_lag", consumer=group, topic=settings.topic(Topic.JETSTREAM_EVENTS)) == 0)

            worked = await wait_for_metrics(worker_service, worker_done, 60)
        finally:
            ingest.terminate()
            worker.terminate()
            ingest.wait(30)
            worker.wait(60)
    try:
        assert value(worked, "bge_events_in_total", stage="collect") == len(events)
        emitted = value(worked, "bge_events_out_total", stage="collect")
        projected = value(worked, "bge_events_in_total", stage="project")
        # messages in: a raw event's domain events reach the projector as one message
        assert emitted and projected and 0 < projected <= emitted
        assert (value(worked, "bge_events_out_total", stage="project") or 0) > 0  # rows written
        assert (value(worked, "bge_projection_batch_duration_seconds_count", outcome="applied") or 0) >= 1
        assert value(worked, "bge_breaker_state", breaker="postgres") == 0
        assert value(worked, "bge_breaker_opened_total", breaker="postgres") == 0
    finally:
        await drop(settings, schema)
