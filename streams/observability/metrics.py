"""OpenTelemetry metrics for operators, exported over OTLP beside the traces.

One meter provider per process (:func:`setup_metrics`), with the same resource as the tracer
provider and configured by the standard variables the SDK reads itself:
``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``OTEL_EXPORTER_OTLP_METRICS_ENDPOINT``),
``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds, default 60,000), ``OTEL_METRICS_EXPORTER=none``
and ``OTEL_SDK_DISABLED`` to turn export off. ``infra/stack`` runs Jaeger with a metrics
pipeline that serves what it receives in Prometheus format (``METRICS_URL``).

The processes count their work anyway (``IngestStats``, ``CollectStats``, the batchers'
acknowledgements, ...), so the counters here are *observable*: the SDK reads those counters
when it exports, and the hot paths pay nothing for metrics. Only the projection batch latency
is recorded as it happens (a histogram, one record per batch).

| instrument | kind | attributes |
| --- | --- | --- |
| ``bge.events.in`` | counter | ``stage``: messages a stage took in (frames for ingest; a ``growth.events`` message holds one raw event's domain events) |
| ``bge.events.out`` | counter | ``stage``: what a stage emitted: domain events (collect, popularity), rows written (project), events produced (ingest), requests executed (crawl) |
| ``bge.dead_letters`` | counter | ``stage``, ``reason`` |
| ``bge.consumer.lag`` | gauge | ``consumer`` (the worker's group, or ``projector``), ``topic``, ``partition`` |
| ``bge.ingest.cursor.age`` | gauge, s | how far the newest ingested event is behind the wall clock |
| ``bge.breaker.state`` | gauge | ``breaker``: 0 closed, 1 half-open, 2 open |
| ``bge.breaker.opened`` | counter | ``breaker``: times the breaker opened |
| ``bge.projection.batch.duration`` | histogram, s | one projection transaction, retries included |
"""

from __future__ import annotations

import atexit
import os
import time
import weakref
from collections.abc import Callable, Iterable, Mapping

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader

import streams
from streams.adapters.breaker import CircuitBreaker, CircuitState
from streams.observability.tracing import service_resource

__all__ = ["BREAKER_STATE_VALUES", "PipelineMetrics", "export_interval_seconds", "metrics_enabled",
           "projection_batch_duration", "setup_metrics", "shutdown_metrics"]

BREAKER_STATE_VALUES: Mapping[CircuitState, int] = {
    CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2,
}
BATCH_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_provider: MeterProvider | None = None


def metrics_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether this process exports metrics (not ``OTEL_SDK_DISABLED``, not ``OTEL_METRICS_EXPORTER=none``)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return environ.get("OTEL_METRICS_EXPORTER", "otlp").strip().lower() != "none"


def export_interval_seconds(environ: Mapping[str, str] = os.environ) -> float:
    """``OTEL_METRIC_EXPORT_INTERVAL`` in seconds (the SDK's default, 60 s, when unset or invalid)."""
    try:
        milliseconds = float(environ.get("OTEL_METRIC_EXPORT_INTERVAL", "60000"))
    except ValueError:
        return 60.0
    return milliseconds / 1000 if milliseconds > 0 else 60.0


def setup_metrics(role: str, readers: Iterable[MetricReader] | None = None) -> MeterProvider:
    """Install the process's meter provider (once). ``readers`` replaces the OTLP exporter
    (tests pass an in-memory reader)."""
    global _provider
    if _provider is not None:
        return _provider
    if readers is None:
        readers = []
        if metrics_enabled():
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    provider = MeterProvider(resource=service_resource(role), metric_readers=list(readers))
    metrics.set_meter_provider(provider)
    _provider = provider
    atexit.register(shutdown_metrics)
    return provider


def shutdown_metrics(timeout_ms: int = 5_000) -> None:
    """Export what was measured since the last export, then stop (bounded in time)."""
    global _provider
    if _provider is not None:
        _provider.force_flush(timeout_ms)
        _provider.shutdown(timeout_millis=timeout_ms)
        _provider = None


def _meter() -> Meter:
    return metrics.get_meter("bge", streams.__version__)


_batch_duration = _meter().create_histogram(
    "bge.projection.batch.duration", unit="s",
    description="Time to apply one projection batch in Postgres, retries included",
    explicit_bucket_boundaries_advisory=list(BATCH_DURATION_BUCKETS),
)


def projection_batch_duration(seconds: float, *, outcome: str) -> None:
    """Record one projection batch's duration (``outcome``: ``applied`` or ``failed``)."""
    _batch_duration.record(seconds, {"outcome": outcome})


Count = Callable[[], int]


class PipelineMetrics:
    """The observable instruments of one process, fed by the counters its stages keep.

    Register what the process has with :meth:`stage`, :meth:`breaker` and :meth:`cursor`;
    :attr:`lag` is a snapshot that a periodic task refreshes (reading it must not do I/O: the
    SDK calls the callbacks from its export thread).
    """

    def __init__(self, meter: Meter | None = None) -> None:
        self._in: dict[str, Count] = {}
        self._out: dict[str, Count] = {}
        self._dead: dict[str, Callable[[], Mapping[str, int]]] = {}
        self._breakers: list[CircuitBreaker] = []
        self._cursor: Callable[[], int | None] | None = None
        self.lag: dict[tuple[str, str, int], int] = {}
        _instruments(meter).sources.add(self)

    def stage(self, name: str, *, events_in: Count, events_out: Count | None = None,
              dead_letters: Callable[[], Mapping[str, int]] | None = None) -> None:
        """Observe stage ``name`` through these readers of its own counters."""
        self._in[name] = events_in
        if events_out is not None:
            self._out[name] = events_out
        if dead_letters is not None:
            self._dead[name] = dead_letters

    def breaker(self, breaker: CircuitBreaker) -> None:
        self._breakers.append(breaker)

    def cursor(self, newest_time_us: Callable[[], int | None]) -> None:
        """Observe the ingest cursor (microseconds since the epoch of the newest event)."""
        self._cursor = newest_time_us

    def set_lag(self, consumer: str, topic: str, lag: Mapping[int, int]) -> None:
        """Replace the lag snapshot of ``consumer`` on ``topic`` (partition → messages)."""
        fresh = {(consumer, topic, partition): value for partition, value in lag.items()}
        self.lag = {k: v for k, v in self.lag.items() if k[:2] != (consumer, topic)} | fresh

    # -- callbacks (the SDK's export thread) -------------------------------------------------

    def _observe_in(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count(), {"stage": stage}) for stage, count in list(self._in.items())]

    def _observe_out(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count(), {"stage": stage}) for stage, count in list(self._out.items())]

    def _observe_dead(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"stage": stage, "reason": reason})
                for stage, reasons in list(self._dead.items()) for reason, n in dict(reasons()).items()]

    def _observe_lag(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(n, {"consumer": consumer, "topic": topic, "partition": partition})
                for (consumer, topic, partition), n in self.lag.items()]

    def _observe_breakers(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(BREAKER_STATE_VALUES[b.peek()[0]], {"breaker": b.name}) for b in self._breakers]

    def _observe_opened(self, _: CallbackOptions) -> Iterable[Observation]:
        return [Observation(b.peek()[1], {"breaker": b.name}) for b in self._breakers]

    def _observe_cursor(self, _: CallbackOptions) -> Iterable[Observation]:
        newest = self._cursor() if self._cursor is not None else None
        if newest is None:
            return []
        return [Observation(max(time.time() - newest / 1e6, 0.0))]



class _Instruments:
    """The observable instruments of one meter, created once (the SDK keeps the first
    instrument of a name and ignores later callbacks), reading every live :class:`PipelineMetrics`."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.sources: weakref.WeakSet[PipelineMetrics] = weakref.WeakSet()
        observe = self._gather
        meter.create_observable_counter("bge.events.in", [observe(PipelineMetrics._observe_in)], unit="{event}",
                                        description="Messages a stage took in (Jetstream frames for ingest)")
        meter.create_observable_counter("bge.events.out", [observe(PipelineMetrics._observe_out)], unit="{event}",
                                        description="What a stage emitted: domain events, events produced (ingest), rows written (project)")
        meter.create_observable_counter("bge.dead_letters", [observe(PipelineMetrics._observe_dead)], unit="{event}",
                                        description="Messages dead-lettered, by stage and reason")
        meter.create_observable_gauge("bge.consumer.lag", [observe(PipelineMetrics._observe_lag)], unit="{event}",
                                      description="Messages of a topic partition a consumer has not yet consumed")
        meter.create_observable_gauge("bge.breaker.state", [observe(PipelineMetrics._observe_breakers)],
                                      description="Circuit breaker state: 0 closed, 1 half-open, 2 open")
        meter.create_observable_counter("bge.breaker.opened", [observe(PipelineMetrics._observe_opened)],
                                        unit="{open}", description="Times a circuit breaker opened")
        meter.create_observable_gauge("bge.ingest.cursor.age", [observe(PipelineMetrics._observe_cursor)], unit="s",
                                      description="Age of the newest ingested Jetstream event")

    def _gather(self, read: Callable[[PipelineMetrics, CallbackOptions], Iterable[Observation]],
                ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [observation for source in list(self.sources) for observation in read(source, options)]
        return callback


_by_meter: dict[int, _Instruments] = {}
_default: list[_Instruments] = []


def _instruments(meter: Meter | None) -> _Instruments:
    if meter is None:
        if not _default:
            _default.append(_Instruments(_meter()))
        return _default[0]
    if id(meter) not in _by_meter:
        _by_meter[id(meter)] = _Instruments(meter)
    return _by_meter[id(meter)]
