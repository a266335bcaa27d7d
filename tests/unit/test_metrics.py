"""Metrics: observable instruments fed by the counters the stages keep, read by an in-memory reader."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from streams.kafka.acking import AckBatcher, all_acknowledged
from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitState
from streams.observability.metrics import PipelineMetrics, export_interval_seconds, metrics_enabled


@pytest.fixture
def reader_and_meter() -> Iterator[tuple[InMemoryMetricReader, Any]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield reader, provider.get_meter("test")
    provider.shutdown()


def points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], float]]]:
    """Every data point read now, by instrument name: (attributes, value)."""
    out: dict[str, list[tuple[dict[str, Any], float]]] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope in resource_metrics.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    out.setdefault(metric.name, []).append((dict(point.attributes or {}), point.value))
    return out


def test_stage_counters_are_read_at_collection_time(reader_and_meter):
    reader, meter = reader_and_meter
    stats = SimpleNamespace(taken=0, sent=0, reasons={})
    metrics = PipelineMetrics(meter)
    metrics.stage("collect", events_in=lambda: stats.taken, events_out=lambda: stats.sent,
                  dead_letters=lambda: stats.reasons)
    stats.taken, stats.sent, stats.reasons = 10, 14, {"invalid_record": 2, "invalid_json": 1}
    first = points(reader)
    assert first["bge.events.in"] == [({"stage": "collect"}, 10)]
    assert first["bge.events.out"] == [({"stage": "collect"}, 14)]
    assert sorted(first["bge.dead_letters"], key=lambda p: p[0]["reason"]) == [
        ({"stage": "collect", "reason": "invalid_json"}, 1),
        ({"stage": "collect", "reason": "invalid_record"}, 2),
    ]
    stats.taken = 25
    assert points(reader)["bge.events.in"] == [({"stage": "collect"}, 25)]


def test_breaker_state_is_observed_without_changing_the_breaker(reader_and_meter):
    reader, meter = reader_and_meter
    now = [0.0]
    breaker = CircuitBreaker("postgres", BreakerConfig(failure_threshold=1, recovery_timeout=10, recovery_jitter=0),
                             clock=lambda: now[0])
    metrics = PipelineMetrics(meter)
    metrics.breaker(breaker)
    assert points(reader)["bge.breaker.state"] == [({"breaker": "postgres"}, 0)]
    assert breaker.try_acquire()
    breaker.record_failure(RuntimeError("down"))
    read = points(reader)
    assert read["bge.breaker.state"] == [({"breaker": "postgres"}, 2)]
    assert read["bge.breaker.opened"] == [({"breaker": "postgres"}, 1)]
    now[0] = 11.0  # the recovery time passed: it reads half-open ...
    assert points(reader)["bge.breaker.state"] == [({"breaker": "postgres"}, 1)]
    assert breaker._state is CircuitState.OPEN  # ... but only the breaker's own callers move it  # noqa: SLF001


def test_lag_snapshots_replace_the_previous_one_per_consumer_and_topic(reader_and_meter):
    reader, meter = reader_and_meter
    metrics = PipelineMetrics(meter)
    metrics.set_lag("bge", "jetstream.events", {0: 5, 1: 0})
    metrics.set_lag("projector", "growth.events", {0: 7})
    metrics.set_lag("bge", "jetstream.events", {0: 1, 1: 2})
    lag = sorted(points(reader)["bge.consumer.lag"], key=lambda p: (p[0]["consumer"], p[0]["partition"]))
    assert lag == [
        ({"consumer": "bge", "topic": "jetstream.events", "partition": 0}, 1),
        ({"consumer": "bge", "topic": "jetstream.events", "partition": 1}, 2),
        ({"consumer": "projector", "topic": "growth.events", "partition": 0}, 7),
    ]


def test_cursor_age_is_the_distance_from_the_wall_clock(reader_and_meter):
    reader, meter = reader_and_meter
    metrics = PipelineMetrics(meter)
    cursor: list[int | None] = [None]
    metrics.cursor(lambda: cursor[0])
    assert "bge.ingest.cursor.age" not in points(reader)  # nothing ingested yet: no point
    cursor[0] = int((time.time() - 30) * 1e6)
    ((_, age),) = points(reader)["bge.ingest.cursor.age"]
    assert 29 <= age <= 40


def test_several_processes_worth_of_metrics_on_one_meter_are_all_observed_while_they_live(reader_and_meter):
    # the SDK keeps the first instrument of a name: a second set of callbacks would be ignored
    reader, meter = reader_and_meter
    first, second = PipelineMetrics(meter), PipelineMetrics(meter)
    first.stage("ingest", events_in=lambda: 3)
    second.stage("collect", events_in=lambda: 4)
    assert sorted(points(reader)["bge.events.in"], key=lambda p: p[0]["stage"]) == [
        ({"stage": "collect"}, 4), ({"stage": "ingest"}, 3)]
    del second
    gc.collect()
    assert points(reader)["bge.events.in"] == [({"stage": "ingest"}, 3)]


@pytest.mark.parametrize(("environ", "enabled"), [
    ({}, True),
    ({"OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_SDK_DISABLED": "false"}, True),
    ({"OTEL_METRICS_EXPORTER": "none"}, False),
    ({"OTEL_METRICS_EXPORTER": "otlp"}, True),
])
def test_metrics_export_follows_the_standard_variables(environ, enabled):
    assert metrics_enabled(environ) is enabled


def test_export_interval_is_read_in_milliseconds_with_the_sdk_default():
    assert export_interval_seconds({}) == 60.0
    assert export_interval_seconds({"OTEL_METRIC_EXPORT_INTERVAL": "1500"}) == 1.5
    assert export_interval_seconds({"OTEL_METRIC_EXPORT_INTERVAL": "soon"}) == 60.0
    assert export_interval_seconds({"OTEL_METRIC_EXPORT_INTERVAL": "0"}) == 60.0


class _Stream:
    def __init__(self) -> None:
        self.enable_acks = True
        self.acked: list[Any] = []

    async def ack(self, event: Any) -> bool:
        self.acked.append(event)
        return True


async def _done() -> None:
    return None


async def test_the_ack_batcher_counts_what_it_acknowledged():
    stream = _Stream()
    batch: AckBatcher[list[Any]] = AckBatcher(stream, all_acknowledged, max_events=10, max_seconds=1)  # type: ignore[arg-type]
    batch.add("e1", [_done(), _done()])  # type: ignore[arg-type]
    batch.add("e2", [])  # type: ignore[arg-type]
    batch.add("e3", [_done()])  # type: ignore[arg-type]
    assert await batch.flush() == 3
    assert batch.acknowledged == 3
    assert stream.acked == ["e1", "e2", "e3"]


async def test_a_batch_that_fails_to_settle_is_neither_acknowledged_nor_counted():
    stream = _Stream()

    async def fail(items: list[Any]) -> int:
        raise ConnectionError("kafka down")

    batch: AckBatcher[Any] = AckBatcher(stream, fail, max_events=10, max_seconds=1)  # type: ignore[arg-type]
    batch.add("e1", 1)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        await batch.flush()
    assert (batch.acknowledged, stream.acked) == (0, [])
