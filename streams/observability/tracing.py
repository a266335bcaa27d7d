"""OpenTelemetry set-up: one tracer provider per process, exported over OTLP to Jaeger.

Configured by the standard variables, read by the SDK itself: ``OTEL_EXPORTER_OTLP_ENDPOINT``
(default ``http://localhost:4317``), ``OTEL_SERVICE_NAME`` (else the process role, e.g.
``bge-ingest``), ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_BSP_*`` for the batch
processor, ``OTEL_SDK_DISABLED``. Export is batched in a background thread: a collector that is
down costs dropped spans and a logged warning, never a crash or a blocked event loop.

W3C trace context travels in Kafka headers (``traceparent``/``tracestate``): :func:`inject_headers`
and :func:`extract_context` are the two halves.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import streams
from streams.topology import Header

__all__ = ["extract_context", "inject_headers", "instrument_psycopg", "sdk_disabled", "service_resource", "setup_tracing",
           "shutdown_tracing"]

_provider: TracerProvider | None = None


def service_resource(role: str) -> Resource:
    """The resource naming this process: ``OTEL_SERVICE_NAME``, else ``bge-<role>``."""
    return Resource.create({
        "service.name": os.environ.get("OTEL_SERVICE_NAME") or f"bge-{role}",
        "service.version": streams.__version__,
        "service.namespace": "bluesky-growth-engine",
    })


def sdk_disabled() -> bool:
    """``OTEL_SDK_DISABLED=true``: nothing is exported (the providers still exist, as no-ops)."""
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def setup_tracing(role: str) -> TracerProvider:
    """Install the process's tracer provider (once); ``role`` names the service when
    ``OTEL_SERVICE_NAME`` is unset: ``bge-<role>``."""
    global _provider
    if _provider is not None:
        return _provider
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=service_resource(role))
    if not sdk_disabled():
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _provider = provider
    atexit.register(shutdown_tracing)
    return provider


def instrument_psycopg() -> None:
    """Trace every Postgres statement (opentelemetry-instrumentation-psycopg), once per process;
    nothing with ``OTEL_SDK_DISABLED=true`` (the wrapper would cost each statement a parse of its
    text for spans that are never made)."""
    if sdk_disabled():
        return
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

    instrumentor = PsycopgInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(enable_commenter=False)


def shutdown_tracing(timeout_ms: int = 5_000) -> None:
    """Flush and stop the exporter (bounded in time)."""
    global _provider
    if _provider is not None:
        _provider.force_flush(timeout_ms)
        _provider.shutdown()
        _provider = None


def inject_headers(headers: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """Append the current trace context to Kafka ``headers`` (in place) and return them."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    headers.extend((k, v.encode()) for k, v in carrier.items())
    return headers


def has_trace_context(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    """Whether Kafka ``headers`` carry a W3C trace context (cheaper than extracting none)."""
    return any(key == Header.TRACEPARENT for key, _ in headers or ())


def extract_context(headers: Iterable[tuple[str, bytes]] | None) -> otel_context.Context:
    """The trace context carried by Kafka ``headers`` (an empty context when none)."""
    carrier = {k: v.decode("latin-1") for k, v in headers or () if k in (Header.TRACEPARENT, Header.TRACESTATE)}
    return propagate.extract(carrier)
