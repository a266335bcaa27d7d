"""The contextual logger: JSON lines, span recording, masking, child contexts, timers."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from collections.abc import Iterator

import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from streams.observability.log import (
    configure_logging,
    correlation,
    current_correlation_id,
    get_logger,
    is_secret_key,
    mask_fields,
    mask_text,
    mask_url,
)


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    """JSON logging at DEBUG into a buffer; the root logger is restored afterwards.

    The product's ``bge.*`` loggers are returned to their defaults for the test (level unset,
    propagating, no handler of their own): code that ran earlier in this process, such as a
    worker configured with ``only_product=True``, may have changed them."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    product = [logging.getLogger("bge")] + [
        logger for name, logger in logging.root.manager.loggerDict.items()
        if name.startswith("bge.") and isinstance(logger, logging.Logger)
    ]
    saved = [(logger, logger.level, logger.propagate, list(logger.handlers)) for logger in product]
    for logger in product:
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
        logger.handlers[:] = []
    stream = io.StringIO()
    configure_logging("debug", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)
    for logger, logger_level, propagate, logger_handlers in saved:
        logger.setLevel(logger_level)
        logger.propagate = propagate
        logger.handlers[:] = logger_handlers


@pytest.fixture
def spans() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("test"), exporter
    provider.shutdown()


def lines(stream: io.StringIO) -> list[dict]:
    """The JSON records written, without asyncio's own debug chatter."""
    records = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    return [r for r in records if r["context"] != "asyncio"]


def test_each_call_writes_one_json_object_per_line_with_the_standard_keys(output):
    log = get_logger("ingest")
    log.info("connected", host="jetstream1", cursor=42)
    log.warning("slow", lag_ms=1500.5)
    records = lines(output)
    assert len(records) == 2
    first = records[0]
    assert first["level"] == "INFO"
    assert first["context"] == "ingest"
    assert first["message"] == "connected"
    assert first["host"] == "jetstream1" and first["cursor"] == 42
    assert first["correlation_id"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["ts"])
    assert "trace_id" not in first  # no span is recording
    assert records[1]["lag_ms"] == 1500.5


def test_a_field_named_like_a_reserved_key_does_not_overwrite_it(output):
    get_logger("x").info("hello", message="other", level=3)
    record = lines(output)[0]
    assert record["message"] == "hello" and record["level"] == "INFO"
    assert record["field_message"] == "other" and record["field_level"] == 3


def test_configure_logging_rejects_an_unknown_level_and_accepts_any_case():
    with pytest.raises(ValueError, match="TRACE"):
        configure_logging("TRACE", stream=io.StringIO())


def test_configure_logging_called_twice_keeps_one_handler(output):
    root = logging.getLogger()
    configure_logging("info", stream=output)
    ours = [h for h in root.handlers if getattr(h, "_bge_json_handler", False)]
    assert len(ours) == 1
    assert root.level == logging.INFO


def test_calls_below_the_level_are_not_written(output):
    configure_logging("WARNING", stream=output)
    log = get_logger("quiet")
    log.info("dropped")
    log.debug("dropped too")
    log.warning("kept")
    assert [r["message"] for r in lines(output)] == ["kept"]


def test_fields_are_set_on_the_current_span_and_added_as_an_event(output, spans):
    tracer, exporter = spans
    log = get_logger("collect")
    with tracer.start_as_current_span("handle") as span:
        log.info("event parsed", did="did:plc:abc", seq=7, ratio=0.5, ok=True, kind=None)
        log.info("event parsed", did="did:plc:def", seq=8, ratio=0.25, ok=False)
        trace_id = trace.format_trace_id(span.get_span_context().trace_id)
        span_id = trace.format_span_id(span.get_span_context().span_id)
    (finished,) = exporter.get_finished_spans()
    # Attributes hold the latest values, events keep every call.
    assert finished.attributes["did"] == "did:plc:def"
    assert finished.attributes["seq"] == 8
    assert finished.attributes["ok"] is False
    assert "kind" not in finished.attributes  # None has no OpenTelemetry representation
    events = [e for e in finished.events if e.name == "event parsed"]
    assert [e.attributes["seq"] for e in events] == [7, 8]
    assert events[0].attributes["did"] == "did:plc:abc"
    assert events[0].attributes["ratio"] == 0.5
    assert events[0].attributes["log.level"] == "INFO"
    assert events[0].attributes["log.context"] == "collect"
    # ... and the JSON line carries the span's ids.
    record = lines(output)[0]
    assert record["trace_id"] == trace_id and re.fullmatch(r"[0-9a-f]{32}", trace_id)
    assert record["span_id"] == span_id and re.fullmatch(r"[0-9a-f]{16}", span_id)


def test_values_that_are_not_primitive_are_coerced_for_the_span(spans):
    tracer, exporter = spans
    logging.getLogger("bge").setLevel(logging.DEBUG)
    try:
        with tracer.start_as_current_span("s"):
            get_logger("c").info("m", tags=["a", "b"], nested={"k": 1}, err=ValueError("bad"))
    finally:
        logging.getLogger("bge").setLevel(logging.NOTSET)
    attrs = exporter.get_finished_spans()[0].attributes
    assert attrs["tags"] == '["a","b"]'
    assert attrs["nested"] == '{"k":1}'
    assert attrs["err"] == "ValueError: bad"


def test_a_call_filtered_out_by_level_does_not_touch_the_span(output, spans):
    tracer, exporter = spans
    configure_logging("ERROR", stream=output)
    with tracer.start_as_current_span("s"):
        get_logger("c").info("hidden", secret_sauce=1, n=1)
    finished = exporter.get_finished_spans()[0]
    assert "n" not in finished.attributes and not finished.events


def test_secrets_are_masked_in_the_log_line_and_on_the_span(output, spans):
    tracer, exporter = spans
    log = get_logger("db")
    with tracer.start_as_current_span("s"):
        log.info(
            "connecting to postgresql://bge:hunter2@db:5432/bge",
            password="hunter2",
            accessJwt="eyJhbGciOi.payload.sig",
            api_key="k-123",
            authorization="Bearer abc.def",
            dsn="postgresql://bge:hunter2@db:5432/bge?sslmode=require",
            url="https://example.com/x?token=t0k3n&page=2",
            header="Bearer abc.def",
            tokens=3,
            config={"db_password": "hunter2", "host": "db"},
        )
    raw = output.getvalue()
    assert "hunter2" not in raw and "k-123" not in raw and "abc.def" not in raw
    assert "t0k3n" not in raw and "eyJhbGciOi" not in raw
    record = lines(output)[0]
    assert record["message"] == "connecting to postgresql://bge:***@db:5432/bge"
    assert record["password"] == "***" and record["accessJwt"] == "***"
    assert record["dsn"] == "postgresql://bge:***@db:5432/bge?sslmode=require"
    assert record["url"] == "https://example.com/x?token=***&page=2"
    assert record["header"] == "Bearer ***"
    assert record["tokens"] == 3  # "tokens" is not a secret-named key
    assert record["config"] == {"db_password": "***", "host": "db"}
    finished = exporter.get_finished_spans()[0]
    span_text = str(dict(finished.attributes)) + str([dict(e.attributes) for e in finished.events])
    assert "hunter2" not in span_text and "k-123" not in span_text and "t0k3n" not in span_text
    assert finished.attributes["password"] == "***"
    assert finished.events[0].name == "connecting to postgresql://bge:***@db:5432/bge"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True), ("db_password", True), ("PASSWORD", True), ("secret", True),
        ("client_secret", True), ("token", True), ("access_token", True), ("refreshJwt", True),
        ("api_key", True), ("apiKey", True), ("X-Api-Key", True), ("authorization", True),
        ("Authorization", True), ("cookie", True), ("credentials", True), ("private_key", True),
        ("tokens", False), ("author", False), ("did", False), ("host", False), ("key", False),
        ("secretary_count", False),
    ],
)
def test_is_secret_key_recognises_secret_field_names(key, secret):
    assert is_secret_key(key) is secret


def test_mask_url_masks_only_the_password():
    assert mask_url("postgresql://bge:bge@127.0.0.1:55432/bge") == "postgresql://bge:***@127.0.0.1:55432/bge"
    assert mask_url("wss://jetstream1.us-east.bsky.network/subscribe") == "wss://jetstream1.us-east.bsky.network/subscribe"
    assert mask_url("https://host:443/p?a=1") == "https://host:443/p?a=1"
    assert mask_text("no url here") == "no url here"


def test_mask_fields_returns_a_masked_copy():
    fields = {"password": "p", "items": ["postgresql://u:p@h/d"], "n": None}
    assert mask_fields(fields) == {"password": "***", "items": ["postgresql://u:***@h/d"], "n": None}
    assert fields["password"] == "p"


def test_child_extends_the_context_and_binds_fields(output):
    parent = get_logger("ingest").child("jetstream", host="h1")
    child = parent.child("frame", host="h2", shard=3)
    parent.info("a")
    child.info("b", extra=1)
    a, b = lines(output)
    assert a["context"] == "ingest.jetstream" and a["host"] == "h1"
    assert b["context"] == "ingest.jetstream.frame"
    assert b["host"] == "h2" and b["shard"] == 3 and b["extra"] == 1
    assert parent.fields == {"host": "h1"}  # the parent is unchanged
    bound = parent.bind(request="r1")
    assert bound.context == "ingest.jetstream" and bound.fields == {"host": "h1", "request": "r1"}
    assert child.logger.name == "bge.ingest.jetstream.frame"


def test_correlation_binds_an_id_for_the_block_and_restores_the_previous(output):
    log = get_logger("api")
    with correlation("req-1") as cid:
        assert cid == "req-1" and current_correlation_id() == "req-1"
        with correlation() as generated:
            assert re.fullmatch(r"[0-9a-f]{32}", generated)
            log.info("inner")
        log.info("outer")
    assert current_correlation_id() is None
    inner, outer = lines(output)
    assert inner["correlation_id"] == generated and outer["correlation_id"] == "req-1"


async def test_correlation_ids_are_isolated_between_tasks(output):
    log = get_logger("worker")

    async def unit(name: str) -> None:
        with correlation(name):
            await asyncio.sleep(0)
            log.info("step", unit=name)

    await asyncio.gather(unit("a"), unit("b"))
    assert {(r["unit"], r["correlation_id"]) for r in lines(output)} == {("a", "a"), ("b", "b")}


def test_timer_logs_the_duration_of_a_sync_block(output, monkeypatch):
    ticks = iter([10.0, 10.25])
    monkeypatch.setattr("streams.observability.log.time.perf_counter", lambda: next(ticks))
    with get_logger("db").timer("flush batch", rows=3) as timer:
        pass
    assert timer.elapsed_ms == 250.0
    (record,) = lines(output)
    assert record["message"] == "flush batch" and record["duration_ms"] == 250.0
    assert record["rows"] == 3 and record["outcome"] == "ok" and record["level"] == "INFO"


async def test_timer_works_async_and_logs_an_error_outcome_when_the_block_raises(output, spans):
    tracer, exporter = spans
    with tracer.start_as_current_span("s"), pytest.raises(RuntimeError):
        async with get_logger("api").timer("fetch profile", did="did:plc:x"):
            raise RuntimeError("boom")
    (record,) = lines(output)
    assert record["level"] == "ERROR" and record["outcome"] == "error"
    assert record["error_type"] == "RuntimeError" and record["error_message"] == "boom"
    assert record["duration_ms"] >= 0
    event = exporter.get_finished_spans()[0].events[0]
    assert event.name == "fetch profile" and event.attributes["outcome"] == "error"


def test_error_and_exception_carry_the_exception(output):
    log = get_logger("x")
    log.error("failed", exc=ValueError("nope"), step="parse")
    try:
        raise KeyError("k")
    except KeyError:
        log.exception("crashed")
    failed, crashed = lines(output)
    assert failed["error_type"] == "ValueError" and failed["step"] == "parse"
    assert "ValueError: nope" in failed["exception"]
    assert crashed["level"] == "ERROR" and crashed["error_type"] == "KeyError"
    assert "Traceback" in crashed["exception"]


def test_domain_helpers_log_their_fixed_messages_and_fields(output):
    log = get_logger("h")
    log.api_error("app.bsky.actor.getProfile", RuntimeError("502"), status=502)
    log.user_action("collected", did="did:plc:a", posts=3)
    log.rate_limit_hit("appview", limit=3000, retry_after=12.0)
    log.breaker_opened("appview", failures=5, next_attempt_in=30.0)
    records = lines(output)
    assert [(r["message"], r["level"]) for r in records] == [
        ("api error", "ERROR"), ("user action", "INFO"),
        ("rate limit hit", "WARNING"), ("circuit breaker opened", "WARNING"),
    ]
    assert records[0]["endpoint"] == "app.bsky.actor.getProfile" and records[0]["status"] == 502
    assert records[1]["action"] == "collected" and records[1]["posts"] == 3
    assert records[2]["retry_after"] == 12.0 and records[2]["key"] == "appview"
    assert records[3]["breaker"] == "appview" and records[3]["failures"] == 5


def test_records_of_other_libraries_are_formatted_as_json_too(output):
    with correlation("c-1"):
        logging.getLogger("aiokafka.consumer").warning("rebalancing %s", "group")
    (record,) = lines(output)
    assert record["context"] == "aiokafka.consumer"
    assert record["message"] == "rebalancing group" and record["correlation_id"] == "c-1"


def test_importing_the_module_installs_no_handler():
    import importlib
    import subprocess
    import sys

    code = ("import logging, streams.observability.log, streams.config, streams.adapters.breaker, streams.adapters.ratelimit, "
            "streams.health.report; assert logging.getLogger().handlers == [], "
            "logging.getLogger().handlers")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert importlib.import_module("streams.observability.log")
