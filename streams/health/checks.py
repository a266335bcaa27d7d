"""The worker's health checks: each does real I/O against its dependency.

:func:`build_registry` registers them in a :class:`~streams.health.report.HealthRegistry` (which runs
them concurrently, each under a timeout, and turns a raised error into UNHEALTHY):

| check | what it does | degraded / unhealthy when |
| --- | --- | --- |
| ``kafka`` | a metadata request through an admin client | a product topic is missing / no broker answers |
| ``postgres`` | a pooled connection, the schema version (:func:`projections.check_schema_version`) | — / no connection, wrong schema version |
| ``jetstream`` | reads the last message of every partition of the raw topic: age of the newest ``time_us`` header | older than ``freshness_degraded_s`` (or no event yet) / older than ``freshness_unhealthy_s`` |
| ``lag.collect`` | committed offsets of the worker's consumer group vs end offsets of ``jetstream.events`` | lag ≥ ``lag_degraded`` / ≥ ``lag_unhealthy`` |
| ``lag.growth-events`` | the same for ``growth.events`` | the same |
| ``lag.projector`` | the projector's offsets in Postgres (``projection_offsets``) vs end offsets of ``growth.events`` | the same |
| ``dead-letters`` | messages appended to ``growth.dlq`` and ``jetstream.dlq`` in the last ``dlq_window_minutes`` (by timestamp) | ≥ ``dlq_degraded`` / ≥ ``dlq_unhealthy`` |
| ``breaker.<name>`` | the state of each circuit breaker given (the AT Protocol AppView's) | half-open / open |
| ``tracing`` | a TCP connection to the OTLP endpoint | unreachable (never unhealthy: losing traces does not stop the pipeline) |

A partition without a committed offset counts as unread from its beginning: that is where a
worker starts (``auto_offset_reset=earliest``). Every check makes its own short-lived Kafka
clients, so a restarted broker or a changed topic never leaves stale state behind.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from projections import MigrationError, check_schema_version, stored_offsets
from streams.adapters.breaker import CircuitBreaker, CircuitState
from streams.config import Settings
from streams.topology import PROJECTOR_CONSUMER as PROJECTOR, Topic
from streams.health.report import Check, CheckOutcome, HealthRegistry
from streams.ingest.resume import header_time_us
from streams.kafka.clients import PRODUCT_TOPICS, new_reader
from streams.observability.log import get_logger, mask_text

# the names the lag checks have in /health (``lag.<name>``)
LAG_CHECK_NAMES = {Topic.JETSTREAM_EVENTS: "collect", Topic.GROWTH_EVENTS: "growth-events",
                   Topic.GROWTH_ENGAGEMENT: "popularity"}

__all__ = [
    "HealthThresholds",
    "OtlpEndpoint",
    "build_registry",
    "kafka_admin",
    "kafka_reader",
    "otlp_endpoint",
    "probe_tcp",
]

KAFKA_REQUEST_TIMEOUT_MS = 4_000


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """When a check degrades and when it fails. Ages in seconds, lags in messages."""

    freshness_degraded_s: float = 60.0
    freshness_unhealthy_s: float = 600.0
    lag_degraded: int = 50_000
    lag_unhealthy: int = 1_000_000
    dlq_window_minutes: float = 15.0
    dlq_degraded: int = 10
    dlq_unhealthy: int = 1_000
    postgres_timeout_s: float = 3.0
    tcp_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        for low, high in (("freshness_degraded_s", "freshness_unhealthy_s"), ("lag_degraded", "lag_unhealthy"),
                          ("dlq_degraded", "dlq_unhealthy")):
            if not 0 < getattr(self, low) <= getattr(self, high):
                raise ValueError(f"need 0 < {low} <= {high}, got {getattr(self, low)} and {getattr(self, high)}")
        for name in ("dlq_window_minutes", "postgres_timeout_s", "tcp_timeout_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


def _graded(value: float, degraded_at: float, unhealthy_at: float, message: str) -> CheckOutcome:
    if value >= unhealthy_at:
        return CheckOutcome.unhealthy(message)
    if value >= degraded_at:
        return CheckOutcome.degraded(message)
    return CheckOutcome.healthy(message)


# --- Kafka ---------------------------------------------------------------------------------


@asynccontextmanager
async def kafka_admin(settings: Settings) -> AsyncIterator[AIOKafkaAdminClient]:
    """A started admin client (bootstrapped: one metadata round trip), closed afterwards."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="bge-health",
                                request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS)
    try:
        await admin.start()
        yield admin
    finally:
        await admin.close()


@asynccontextmanager
async def kafka_reader(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A started consumer without a group (it commits nothing), stopped afterwards."""
    consumer = new_reader(settings, client_id="bge-health", request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
                          fetch_max_wait_ms=100)
    try:
        await consumer.start()
        # Let the consumer's background task begin: aiokafka's stop() awaits it, and a task
        # cancelled before it ever ran re-raises CancelledError into the caller.
        await asyncio.sleep(0)
        yield consumer
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The partitions of ``topic`` from fresh metadata (a request that never creates topics)."""
    cluster = await consumer._client.fetch_all_metadata()  # noqa: SLF001 - the metadata call that creates nothing
    return [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]


async def _offsets(consumer: AIOKafkaConsumer, topic: str) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """Beginning and end offsets of every partition of ``topic`` (``LookupError`` if it does not exist)."""
    tps = await _partitions(consumer, topic)
    if not tps:
        raise LookupError(f"topic {topic} does not exist")
    return await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)


def _lag_outcome(stage: str, lag: dict[int, int], thresholds: HealthThresholds, note: str = "") -> CheckOutcome:
    total = sum(lag.values())
    message = f"{stage}: lag {total} messages over {len(lag)} partitions"
    if total:
        partition, largest = max(lag.items(), key=lambda item: (item[1], -item[0]))
        message += f" (largest: partition {partition}, {largest})"
    return _graded(total, thresholds.lag_degraded, thresholds.lag_unhealthy, message + note)


def _lag(begin: Mapping[TopicPartition, int], end: Mapping[TopicPartition, int],
         position: Mapping[int, int]) -> dict[int, int]:
    """Messages not yet consumed per partition; a partition without a position is unread from its beginning."""
    return {tp.partition: max(0, end[tp] - position.get(tp.partition, begin[tp])) for tp in end}


def kafka_check(settings: Settings) -> Check:
    async def check() -> CheckOutcome:
        async with kafka_admin(settings) as admin:
            cluster = await admin.describe_cluster()
            topics = {topic["topic"] for topic in await admin.describe_topics()}
        brokers = len(cluster.get("brokers", ()))
        missing = [settings.topic(t) for t in PRODUCT_TOPICS if settings.topic(t) not in topics]
        message = f"{brokers} broker(s), controller {cluster.get('controller_id')}"
        if missing:
            return CheckOutcome.degraded(f"{message}; missing topics: {', '.join(missing)}")
        return CheckOutcome.healthy(f"{message}; all {len(PRODUCT_TOPICS)} product topics present")

    return check


def freshness_check(settings: Settings, thresholds: HealthThresholds, wall: Callable[[], float]) -> Check:
    topic = settings.topic(Topic.JETSTREAM_EVENTS)

    async def check() -> CheckOutcome:
        async with kafka_reader(settings) as consumer:
            begin, end = await _offsets(consumer, topic)
            newest = await _newest_time_us(consumer, [tp for tp in end if end[tp] > begin[tp]], end)
        if newest is None:
            return CheckOutcome.degraded(f"no raw event in {topic} yet")
        age = max(0.0, wall() - newest / 1_000_000)
        return _graded(age, thresholds.freshness_degraded_s, thresholds.freshness_unhealthy_s,
                       f"newest raw event is {age:.1f}s old")

    return check


async def _newest_time_us(consumer: AIOKafkaConsumer, tps: list[TopicPartition],
                          end: Mapping[TopicPartition, int]) -> int | None:
    """The largest ``time_us`` header among the last messages of ``tps`` (the Kafka timestamp
    when a message has no such header)."""
    if not tps:
        return None
    consumer.assign(tps)
    for tp in tps:
        consumer.seek(tp, end[tp] - 1)
    pending = set(tps)
    newest: int | None = None
    deadline = time.monotonic() + 2.0
    while pending and time.monotonic() < deadline:
        batches = await consumer.getmany(*pending, timeout_ms=200)
        for tp, messages in batches.items():
            for message in messages:
                stamp = header_time_us(message.headers)
                if stamp is None and message.timestamp is not None:
                    stamp = message.timestamp * 1000
                if stamp is not None:
                    newest = stamp if newest is None else max(newest, stamp)
            if messages:
                pending.discard(tp)
    return newest


async def group_lag(settings: Settings, topic: str, group: str) -> tuple[dict[int, int], bool]:
    """Messages of each partition of ``topic`` that consumer ``group`` has not committed, and
    whether the group has committed anything there at all."""
    async with kafka_reader(settings) as consumer:
        begin, end = await _offsets(consumer, topic)
    async with kafka_admin(settings) as admin:
        committed = await admin.list_consumer_group_offsets(group, partitions=list(end))
    positions = {tp.partition: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    return _lag(begin, end, positions), bool(positions)


async def projector_lag(settings: Settings, pool: AsyncConnectionPool, consumer_name: str,
                        timeout_s: float) -> dict[int, int]:
    """Messages of each ``growth.events`` partition not yet applied by projection consumer
    ``consumer_name`` (its high-water marks live in Postgres, not in Kafka)."""
    topic = settings.topic(Topic.GROWTH_EVENTS)
    async with kafka_reader(settings) as consumer:
        begin, end = await _offsets(consumer, topic)
    return _lag(begin, end, await stored_offsets(pool, consumer_name, topic, timeout_s=timeout_s))


def group_lag_check(settings: Settings, topic_name: Topic, group: str, stage: str,
                    thresholds: HealthThresholds) -> Check:
    async def check() -> CheckOutcome:
        lag, committed = await group_lag(settings, settings.topic(topic_name), group)
        note = f"; group {group} has committed nothing yet" if any(lag.values()) and not committed else ""
        return _lag_outcome(stage, lag, thresholds, note)

    return check


def projector_lag_check(settings: Settings, pool: AsyncConnectionPool, consumer_name: str,
                        thresholds: HealthThresholds) -> Check:
    async def check() -> CheckOutcome:
        lag = await projector_lag(settings, pool, consumer_name, thresholds.postgres_timeout_s)
        return _lag_outcome(f"projector {consumer_name!r}", lag, thresholds)

    return check


def dead_letter_check(settings: Settings, thresholds: HealthThresholds, wall: Callable[[], float]) -> Check:
    topics = [settings.topic(Topic.GROWTH_DLQ), settings.topic(Topic.JETSTREAM_DLQ)]

    async def check() -> CheckOutcome:
        since_ms = int((wall() - thresholds.dlq_window_minutes * 60) * 1000)
        counts: dict[str, int] = {}
        async with kafka_reader(settings) as consumer:
            for topic in topics:
                _, end = await _offsets(consumer, topic)
                found = await consumer.offsets_for_times({tp: since_ms for tp in end})
                counts[topic] = sum(end[tp] - found[tp].offset for tp in end if found.get(tp) is not None)
        total = sum(counts.values())
        detail = ", ".join(f"{topic} {count}" for topic, count in counts.items())
        return _graded(total, thresholds.dlq_degraded, thresholds.dlq_unhealthy,
                       f"{total} dead letters in the last {thresholds.dlq_window_minutes:g} min ({detail})")

    return check


# --- Postgres ------------------------------------------------------------------------------


def postgres_check(pool: AsyncConnectionPool, thresholds: HealthThresholds) -> Check:
    async def check() -> CheckOutcome:
        try:
            async with pool.connection(timeout=thresholds.postgres_timeout_s) as conn:
                version = await check_schema_version(conn)
        except PoolClosed:
            return CheckOutcome.unhealthy("the connection pool is not open")
        except PoolTimeout:
            reason = await _connect_error(pool.conninfo, thresholds.postgres_timeout_s)
            return CheckOutcome.unhealthy(f"no connection within {thresholds.postgres_timeout_s:g}s: {reason}")
        except MigrationError as exc:
            return CheckOutcome.unhealthy(str(exc))
        stats = pool.get_stats()
        return CheckOutcome.healthy(
            f"schema version {version}; pool {stats.get('pool_size', 0)} connections, "
            f"{stats.get('pool_available', 0)} idle, {stats.get('requests_waiting', 0)} waiting")

    return check


async def _connect_error(conninfo: str, timeout: float) -> str:
    """Why a direct connection fails (the pool only says it timed out), credentials masked."""
    try:
        conn = await psycopg.AsyncConnection.connect(conninfo, connect_timeout=max(1, int(timeout)))
    except Exception as exc:  # noqa: BLE001 - the reason is the answer
        return mask_text(" ".join(str(exc).split()))
    await conn.close()
    return "the server accepts connections, but the pool had none free (exhausted)"


# --- breakers and tracing ------------------------------------------------------------------


def breaker_check(breaker: CircuitBreaker) -> Check:
    async def check() -> CheckOutcome:
        state = breaker.state
        stats = breaker.stats()
        counts = f"{stats.total_calls} calls, {stats.total_failures} failures, {stats.rejected_calls} rejected"
        if state is CircuitState.OPEN:
            retry = breaker.retry_after()
            when = "held open" if retry is None else f"next probe in {retry:.1f}s"
            return CheckOutcome.unhealthy(f"open ({when}; last error: {stats.last_error}); {counts}")
        if state is CircuitState.HALF_OPEN:
            return CheckOutcome.degraded(f"half-open: probing recovery; {counts}")
        return CheckOutcome.healthy(f"closed; {counts}")

    return check


@dataclass(frozen=True, slots=True)
class OtlpEndpoint:
    url: str
    host: str
    port: int


def otlp_endpoint(environ: Mapping[str, str] = os.environ) -> OtlpEndpoint | None:
    """Where the trace exporter sends spans, read from the standard variables as the SDK does
    (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, else ``OTEL_EXPORTER_OTLP_ENDPOINT``, else
    ``http://localhost:4317``); None when tracing is off (``OTEL_SDK_DISABLED=true`` or
    ``OTEL_TRACES_EXPORTER=none``). ``ValueError`` when the endpoint names no host."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    url = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
           or "http://localhost:4317").strip()
    parts = urlsplit(url if "://" in url else f"http://{url}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise ValueError(f"OTLP endpoint {mask_text(url)!r}: {exc}") from None
    if not parts.hostname:
        raise ValueError(f"OTLP endpoint {mask_text(url)!r} names no host")
    return OtlpEndpoint(mask_text(url), parts.hostname, port)


async def probe_tcp(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout``, else why not."""
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return f"no answer within {timeout:g}s"
    except socket.gaierror as exc:
        return f"cannot resolve {host}: {exc.strerror}"
    except OSError as exc:  # asyncio words refusals as "Connect call failed (...)": say what errno says
        return f"{type(exc).__name__}: {os.strerror(exc.errno) if exc.errno else exc}"
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return None


def tracing_check(thresholds: HealthThresholds, environ: Mapping[str, str] = os.environ) -> Check:
    async def check() -> CheckOutcome:
        try:
            endpoint = otlp_endpoint(environ)
        except ValueError as exc:
            return CheckOutcome.degraded(f"{exc}: spans are dropped")
        if endpoint is None:
            return CheckOutcome.healthy("tracing is disabled")
        problem = await probe_tcp(endpoint.host, endpoint.port, thresholds.tcp_timeout_s)
        if problem is not None:
            return CheckOutcome.degraded(f"OTLP endpoint {endpoint.url} unreachable ({problem}): spans are dropped")
        return CheckOutcome.healthy(f"OTLP endpoint {endpoint.url} reachable")

    return check


# --- the registry --------------------------------------------------------------------------


def build_registry(
    settings: Settings,
    *,
    pool: AsyncConnectionPool,
    breakers: Iterable[CircuitBreaker] = (),
    consumer_group: str,
    consumed: Iterable[Topic] = (Topic.JETSTREAM_EVENTS, Topic.GROWTH_EVENTS),
    projector_consumer: str | None = PROJECTOR,
    thresholds: HealthThresholds | None = None,
    wall: Callable[[], float] = time.time,
    timeout: float = 5.0,
) -> HealthRegistry:
    """Every check above in one registry, each under ``timeout`` seconds.

    ``pool`` is the worker's (opened elsewhere); ``consumer_group`` the worker's Kafka group
    (the Faust app id, ``app.conf.id``) and ``consumed`` the topics it consumes, whose lag is
    checked; ``projector_consumer`` the name the projector stores its offsets under (None: this
    worker does not project); ``wall`` gives unix seconds (injectable for tests).
    """
    thresholds = thresholds or HealthThresholds()
    registry = HealthRegistry(default_timeout=timeout, logger=get_logger("health"))
    registry.register("kafka", kafka_check(settings))
    registry.register("postgres", postgres_check(pool, thresholds))
    registry.register("jetstream", freshness_check(settings, thresholds, wall))
    for topic in consumed:
        stage = f"group {consumer_group} on {settings.topic(topic)}"
        registry.register(f"lag.{LAG_CHECK_NAMES.get(topic, topic.value)}",
                          group_lag_check(settings, topic, consumer_group, stage, thresholds))
    if projector_consumer is not None:
        registry.register("lag.projector", projector_lag_check(settings, pool, projector_consumer, thresholds))
    registry.register("dead-letters", dead_letter_check(settings, thresholds, wall))
    for breaker in breakers:
        registry.register(f"breaker.{breaker.name}", breaker_check(breaker))
    registry.register("tracing", tracing_check(thresholds))
    return registry
