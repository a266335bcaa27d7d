"""The ingest: every Jetstream event becomes a Kafka event, exactly as received, exactly once.

    Jetstream /subscribe ──frames──► Ingest ──original bytes, key = repo DID──► jetstream.events
                                         └──── bad frames, original bytes + reason ──► jetstream.dlq
                                         └──── gaps (cursor older than retention) ────► jetstream.ops

Contracts:

- Resume without loss: the cursor comes from the raw topic's tail (``resume.read_tail``), rewound
  by ``JETSTREAM_REWIND_SECONDS``; the re-delivered overlap is dropped by event identity.
- Bounded in flight: at most ``INGEST_MAX_INFLIGHT`` events, spanning at most half the rewind
  window in ``time_us``, wait for Kafka's acknowledgement; beyond that the ingest stops reading the
  socket (backpressure reaches the server) instead of buffering or dropping. Events go to the
  producer a batch at a time (``streams.ingest.outgoing``), not one send each.
- A batch Kafka cannot take within ``INGEST_DELIVERY_TIMEOUT_SECONDS`` ends the process with
  :class:`DeliveryFailed` (exit code 3); a restart resumes from the recovered cursor.
- Failover: endpoints are tried in order, each behind its own circuit breaker, with exponential
  backoff and jitter between attempts; silence longer than ``JETSTREAM_STALL_TIMEOUT_SECONDS`` is a
  failure. Every reconnect rewinds by the safety window; the cursor itself never moves backwards.
- A frame that is not an event never stops the process: it goes to the dead-letter topic with
  headers ``error_class``, ``error_reason``, ``error_message``, ``source``, ``endpoint`` and
  ``failed_at`` (``streams.kafka.deadletter``).

One module of about 500 lines because the session's states (connect, read, stall watchdog, in-flight
bound, dedupe, failover, shutdown) share one object's fields; splitting them would pass that state
around.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlencode

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitState
from streams.config import Settings
from streams.topology import Header, Topic
from streams.kafka.clients import PRODUCER_COMPRESSION, Sender
from streams.kafka.deadletter import dead_letter_headers
from streams.observability.metrics import PipelineMetrics
from streams.ingest.frames import BadFrame, FrameFacts, event_bytes, raw_headers, read_facts
from streams.ingest.outgoing import DeliveryFailed, Outgoing
from streams.ingest.resume import RecentIdentities, TailState
from streams.observability.log import ContextLogger, get_logger
from streams.observability.tracing import inject_headers

_tracer = trace.get_tracer("bge.ingest")

__all__ = ["DeliveryFailed", "Ingest", "IngestStats", "subscribe_request"]

MAX_URL_LENGTH = 8_000
"""Past this, wanted DIDs go in an ``options_update`` after ``requireHello`` instead of the URL."""
WS_SIZE_FACTOR = 4
"""The websocket layer accepts frames up to this many times the event limit, so an oversized event
can still be read and dead-lettered instead of breaking the connection."""


def _tracing_enabled() -> bool:
    """Whether this process's tracer makes real spans (False when no SDK is installed or
    ``OTEL_SDK_DISABLED`` is set). Without them a span and its header injection would cost
    per-event work for nothing: an invalid span context injects no ``traceparent``."""
    probe = _tracer.start_span("ingest tracing probe")  # never ended: never exported
    return probe.get_span_context().is_valid


@dataclass
class IngestStats:
    """Counters of one ingest process."""

    events_in: int = 0
    produced: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    reconnects: int = 0
    gaps: int = 0
    gap_us_total: int = 0
    cursor_us: int | None = None
    endpoint: str = ""
    dlq_reasons: dict[str, int] = field(default_factory=dict)

    def lag_seconds(self, now_us: int) -> float | None:
        return None if self.cursor_us is None else max(now_us - self.cursor_us, 0) / 1e6

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "lag_seconds": self.lag_seconds(int(time.time() * 1e6))}


def subscribe_request(
    base_url: str,
    *,
    collections: list[str],
    wanted_dids: list[str],
    cursor_us: int | None,
    compress: bool,
    max_message_bytes: int,
) -> tuple[str, bytes | None]:
    """The ``/subscribe`` URL and, when the DID list is too long for a URL, the ``options_update``
    frame to send first (the URL then carries ``requireHello=true``)."""
    base = base_url.rstrip("/")
    if not base.endswith("/subscribe"):
        base += "/subscribe"
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in collections]
    if cursor_us is not None:
        params.append(("cursor", str(cursor_us)))
    if compress:
        params.append(("compress", "true"))
    params.append(("maxMessageSizeBytes", str(max_message_bytes)))
    with_dids = params + [("wantedDids", d) for d in wanted_dids]
    url = f"{base}?{urlencode(with_dids)}"
    if len(url) <= MAX_URL_LENGTH:
        return url, None
    hello = orjson.dumps({
        "type": "options_update",
        "payload": {"wantedCollections": collections, "wantedDids": wanted_dids,
                    "maxMessageSizeBytes": max_message_bytes},
    })
    return f"{base}?{urlencode(params + [('requireHello', 'true')])}", hello


class Ingest:
    """One ingest process: connect, read, deduplicate, produce; fail over and resume."""

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        *,
        tail: TailState | None = None,
        logger: ContextLogger | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.sender = sender
        self.log = logger or get_logger("ingest")
        self.stats = IngestStats()
        self._rng = rng or random.Random()
        self._rewind_us = int(settings.jetstream_rewind_seconds * 1e6)
        self._recent = RecentIdentities()
        self._raw_topic = settings.topic(Topic.JETSTREAM_EVENTS)
        self._outgoing = Outgoing(sender, self._raw_topic, max_count=settings.ingest_max_inflight,
                                  max_span_us=max(self._rewind_us // 2, 1))
        self._dlq_topic = settings.topic(Topic.JETSTREAM_DLQ)
        self._ops_topic = settings.topic(Topic.JETSTREAM_OPS)
        self._stopping = asyncio.Event()
        self._connection: ClientConnection | None = None
        self.breakers = {
            url: CircuitBreaker(
                f"jetstream:{url}",
                BreakerConfig(failure_threshold=3, recovery_timeout=settings.breaker_recovery_seconds,
                              enabled=settings.enable_circuit_breaker),
            )
            for url in settings.jetstream_endpoint
        }
        if tail is not None:
            for identity, time_us in tail.identities:
                self._recent.add(identity, time_us)
            self.stats.cursor_us = tail.newest_time_us
        self.connected = asyncio.Event()
        self._traced = _tracing_enabled()
        self.metrics = ingest_metrics(self)
        self._reading_since: float | None = None  # loop time a frame read started; None while handling

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the ingest to stop: it stops reading and flushes what it has sent."""
        self._stopping.set()
        if self._connection is not None:
            asyncio.ensure_future(self._connection.close())

    async def run(self) -> IngestStats:
        """Run until :meth:`stop`; raises :class:`DeliveryFailed` when Kafka cannot take events."""
        attempt = 0
        index = 0
        endpoints = self.settings.jetstream_endpoint
        reporter = asyncio.create_task(self._report_every(10.0))
        try:
            while not self._stopping.is_set():
                url = endpoints[index % len(endpoints)]
                breaker = self.breakers[url]
                if not breaker.try_acquire():
                    index += 1
                    if all(b.state is CircuitState.OPEN for b in self.breakers.values()):
                        await self._backoff(attempt)
                        attempt += 1
                    continue
                try:
                    received = await self._session(url)
                except DeliveryFailed:
                    breaker.release()
                    raise
                except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError, BadFrame) as exc:
                    breaker.record_failure(exc)
                    self.log.warning("jetstream connection failed", endpoint=url, error=repr(exc),
                                     attempt=attempt)
                    received = 0
                else:
                    breaker.record_success()
                if self._stopping.is_set():
                    break
                self.stats.reconnects += 1
                if received == 0:
                    index += 1  # fail over to the next host
                    await self._backoff(attempt)
                    attempt += 1
                else:
                    attempt = 0
            await self._flush()
        except BaseException:
            await self._flush(quick=True)
            raise
        finally:
            reporter.cancel()
        self.log.info("ingest stopped", **self._summary_fields())
        return self.stats

    async def _report_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            self.log.info("ingest progress", **self._summary_fields())

    async def _backoff(self, attempt: int) -> None:
        delay = min(0.25 * (2 ** min(attempt, 8)), 30.0)
        delay *= 0.5 + self._rng.random()  # full jitter around the exponential delay
        try:
            await asyncio.wait_for(self._stopping.wait(), timeout=delay)
        except TimeoutError:
            pass

    async def _flush(self, quick: bool = False) -> None:
        try:
            if quick:
                self._outgoing.settle_done()
            else:
                self.stats.produced += await self._outgoing.drain()
        except DeliveryFailed:
            if not quick:
                raise

    # -- one connection ------------------------------------------------------------------------

    def _resume_cursor(self) -> int | None:
        if self.stats.cursor_us is None:
            return None
        return max(self.stats.cursor_us - self._rewind_us, 0)

    async def _session(self, url: str) -> int:
        """Read one connection until it ends; returns the number of events received."""
        cursor = self._resume_cursor()
        settings = self.settings
        request_url, hello = subscribe_request(
            url,
            collections=settings.jetstream_collections,
            wanted_dids=settings.jetstream_wanted_dids,
            cursor_us=cursor,
            compress=settings.jetstream_compress,
            max_message_bytes=settings.jetstream_max_message_bytes,
        )
        self.stats.endpoint = url
        received = 0
        async with connect(
            request_url,
            compression=None,  # no permessage-deflate: compress=true is zstd, and 2026 hosts refuse both
            max_size=settings.jetstream_max_message_bytes * WS_SIZE_FACTOR,
            open_timeout=10,
            ping_interval=20,
            ping_timeout=20,
            close_timeout=5,
            max_queue=64,
            user_agent_header="bluesky-growth-engine",
        ) as ws:
            self._connection = ws
            if hello is not None:
                await ws.send(hello.decode())
            self.log.info("jetstream connected", endpoint=url, cursor=cursor)
            self.connected.set()
            stall = settings.jetstream_stall_timeout_seconds
            first = True
            loop = asyncio.get_running_loop()
            stalled = asyncio.Event()
            # Stall detection by a watchdog reading one timestamp, instead of asyncio.wait_for on
            # every frame (a task per frame: the ingest's main overhead after Kafka's client).
            watchdog = asyncio.create_task(self._watch_stall(ws, stall, stalled))
            try:
                while not self._stopping.is_set():
                    self._reading_since = loop.time()
                    frame = await ws.recv(decode=False)
                    self._reading_since = None
                    facts = await self._handle(frame, url)
                    if facts is None:
                        continue
                    received += 1
                    if first:
                        first = False
                        await self._check_gap(cursor, facts.time_us, url)
            except ConnectionClosed:
                if self._stopping.is_set():
                    return received
                if stalled.is_set():
                    raise TimeoutError(f"no frame for {stall}s from {url}") from None
                if received == 0:
                    raise
            finally:
                self._reading_since = None
                watchdog.cancel()
                self._connection = None
        return received

    async def _watch_stall(self, ws: ClientConnection, stall: float, stalled: asyncio.Event) -> None:
        """Abort the connection when a read has waited longer than ``stall`` seconds (time spent
        handling a frame, e.g. waiting for Kafka, does not count); the session then raises
        ``TimeoutError``."""
        loop = asyncio.get_running_loop()
        period = min(1.0, stall / 4)
        while True:
            await asyncio.sleep(period)
            since = self._reading_since
            if since is not None and loop.time() - since > stall:
                stalled.set()
                if ws.transport is not None:
                    ws.transport.abort()
                return

    async def _handle(self, frame: bytes, url: str) -> FrameFacts | None:
        """Produce one frame's event, drop it as a duplicate, or dead-letter it."""
        stats = self.stats
        stats.events_in += 1
        settings = self.settings
        try:
            raw = event_bytes(frame, compressed=settings.jetstream_compress,
                              max_bytes=settings.jetstream_max_message_bytes)
            facts = read_facts(raw)
        except BadFrame as exc:
            await self._dead_letter(frame, exc, url)
            return None
        stats.produced += await self._outgoing.make_room(facts.time_us)
        if not self._recent.add(facts.identity, facts.time_us):
            stats.duplicates += 1
            return facts
        headers = raw_headers(facts)
        if self._traced:
            with _tracer.start_as_current_span(
                "ingest jetstream.frame",
                kind=SpanKind.PRODUCER,
                attributes={"did": facts.did, "kind": facts.kind, "collection": facts.collection,
                            "operation": facts.operation, "time_us": facts.time_us, "endpoint": url,
                            "messaging.system": "kafka", "messaging.destination.name": self._raw_topic},
            ):
                inject_headers(headers)
                self._outgoing.add(facts.did.encode(), raw, headers, facts.time_us)
        else:  # tracing off: no span to start, no context to inject
            self._outgoing.add(facts.did.encode(), raw, headers, facts.time_us)
        if stats.cursor_us is None or facts.time_us > stats.cursor_us:
            stats.cursor_us = facts.time_us  # never backwards
            if stats.events_in % 4096 == 0:
                self._recent.forget_older_than(facts.time_us - 4 * self._rewind_us)
        return facts

    async def _dead_letter(self, frame: bytes, exc: BadFrame, url: str) -> None:
        stats = self.stats
        stats.dead_lettered += 1
        stats.dlq_reasons[exc.reason] = stats.dlq_reasons.get(exc.reason, 0) + 1
        self.log.warning("frame dead-lettered", reason=exc.reason, error=str(exc), endpoint=url,
                         size=len(frame))
        headers = dead_letter_headers(
            error_class=type(exc).__name__, reason=exc.reason, message=str(exc), source="jetstream",
            failed_at=datetime.now(UTC), endpoint=url,
        )
        headers.append((Header.COMPRESSED, b"true" if self.settings.jetstream_compress else b"false"))
        inject_headers(headers)
        await self.sender.producer.send_and_wait(self._dlq_topic, value=frame, headers=headers)

    async def _check_gap(self, cursor: int | None, first_time_us: int, url: str) -> None:
        """A first event later than the cursor by more than the rewind window, with no DID filter
        to explain the silence, means the service no longer had the events asked for."""
        if cursor is None or self.settings.jetstream_wanted_dids:
            return
        gap_us = first_time_us - cursor - self._rewind_us
        if gap_us <= self._rewind_us:
            return
        self.stats.gaps += 1
        self.stats.gap_us_total += gap_us
        record = {
            "type": "gap",
            "endpoint": url,
            "cursor_us": cursor,
            "first_time_us": first_time_us,
            "gap_us": gap_us,
            "gap_seconds": gap_us / 1e6,
            "detected_at": datetime.now(UTC).isoformat(),
        }
        self.log.error("jetstream gap: events older than the service's retention were lost upstream",
                       endpoint=url, cursor=cursor, first_time_us=first_time_us, gap_seconds=gap_us / 1e6)
        await self.sender.producer.send_and_wait(self._ops_topic, value=orjson.dumps(record), key=b"gap")

    def _summary_fields(self) -> dict[str, object]:
        return {k: v for k, v in self.stats.as_dict().items() if k != "dlq_reasons"}


async def run_ingest(settings: Settings, *, stop: asyncio.Event | None = None,
                     on_start: Callable[[Ingest], None] | None = None) -> int:
    """The ``bge ingest`` process: recover the cursor from Kafka, then ingest until SIGTERM,
    SIGINT or ``stop`` (exit 0, producer flushed) or until Kafka cannot take events (exit 3)."""
    import signal

    from streams.ingest.resume import read_tail
    from streams.kafka.clients import ensure_topics, new_reader

    log = get_logger("ingest")
    await ensure_topics(settings, (Topic.JETSTREAM_EVENTS, Topic.JETSTREAM_DLQ, Topic.JETSTREAM_OPS))

    async def started_reader():
        reader = new_reader(settings)
        await reader.start()
        return reader

    rewind_us = int(settings.jetstream_rewind_seconds * 1e6)
    tail = await read_tail(started_reader, settings.topic(Topic.JETSTREAM_EVENTS), rewind_us)
    log.info("cursor recovered from Kafka", newest_time_us=tail.newest_time_us,
             cursor=tail.cursor(rewind_us), seeded_identities=len(tail.identities),
             tail_messages_read=tail.messages_read)
    # the raw topic is compressed whatever KAFKA_COMPRESSION says: it keeps every event as received
    sender = Sender(settings, client_id="bge-ingest", compression_type=PRODUCER_COMPRESSION)
    await sender.start()
    await sender.open(settings.topic(Topic.JETSTREAM_EVENTS))
    ingest = Ingest(settings, sender, tail=tail, logger=log)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, ingest.stop)
    if on_start is not None:
        on_start(ingest)
    stopper = asyncio.create_task(_stop_when(stop, ingest)) if stop is not None else None
    try:
        await ingest.run()
        return 0
    except DeliveryFailed as exc:
        log.error("Kafka did not acknowledge events in time; exiting so a restart resumes from Kafka",
                  error=str(exc), **ingest._summary_fields())
        return 3
    finally:
        if stopper is not None:
            stopper.cancel()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await sender.stop()


def ingest_metrics(ingest: Ingest) -> PipelineMetrics:
    """The ingest process's metrics (``streams.observability.metrics``): frames in, events produced, dead
    letters by reason, each endpoint's breaker, and the age of the newest event ingested."""
    stats = ingest.stats
    metrics = PipelineMetrics()
    metrics.stage("ingest", events_in=lambda: stats.events_in, events_out=lambda: stats.produced,
                  dead_letters=lambda: stats.dlq_reasons)
    for breaker in ingest.breakers.values():
        metrics.breaker(breaker)
    metrics.cursor(lambda: stats.cursor_us)
    return metrics


async def _stop_when(event: asyncio.Event, ingest: Ingest) -> None:
    await event.wait()
    ingest.stop()
