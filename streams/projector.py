"""The project stage: domain events from ``growth.events`` into Postgres, exactly once in effect.

Batches are bounded by size (``PROJECTOR_BATCH_SIZE``) and age (``PROJECTOR_BATCH_SECONDS``). Each
batch is one transaction that also advances the stored (topic, partition, offset) high-water marks
(``projections.apply_batch``), so a batch delivered again is skipped. A batch is acknowledged to
Faust only after its transaction committed.

When Postgres is down the projector never gives up on a batch and never skips one: it retries
behind a circuit breaker with growing pauses, and while it waits the agent consumes nothing
(Faust pauses fetching when the stream buffer is full). When Postgres is back it resumes with
the same batch.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind
from psycopg_pool import AsyncConnectionPool

from projections import BatchResult, Message, QueryStats, RetryPolicy, create_pool, is_transient, project_batch
from streams.breaker import BreakerConfig, CircuitBreaker
from streams.config import Settings
from streams.log import ContextLogger, get_logger
from streams.metrics import projection_batch_duration
from streams.telemetry import extract_context

__all__ = ["Projector", "ProjectorStats", "PendingMessage"]

CONSUMER = "projector"
_tracer = trace.get_tracer("bge.projector")


@dataclass(frozen=True, slots=True)
class PendingMessage:
    """One message of a batch: where it was read, its bytes and its trace headers."""

    topic: str
    partition: int
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass
class ProjectorStats:
    batches: int = 0
    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    rows: int = 0
    retries: int = 0
    last_batch_ms: float = 0.0


class Projector:
    """Owns the connection pool and applies batches until they succeed."""

    def __init__(self, settings: Settings, *, logger: ContextLogger | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.log = logger or get_logger("projector")
        self.query_stats = QueryStats()
        self.stats = ProjectorStats()
        self.breaker = CircuitBreaker(
            "postgres",
            BreakerConfig(failure_threshold=settings.breaker_failure_threshold,
                          recovery_timeout=min(settings.breaker_recovery_seconds, 5.0),
                          enabled=settings.enable_circuit_breaker),
        )
        self._rng = rng or random.Random()
        self._pool: AsyncConnectionPool | None = None
        self._retry = RetryPolicy(attempts=3)

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            self._pool = create_pool(
                self.settings.database_url, self.settings.db_schema,
                min_size=self.settings.db_pool_min, max_size=self.settings.db_pool_max,
                statement_timeout_ms=self.settings.db_statement_timeout_ms, stats=self.query_stats,
            )
        return self._pool

    async def start(self) -> None:
        await self.pool.open(wait=False)

    async def stop(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def apply(self, batch: list[PendingMessage]) -> BatchResult:
        """Apply ``batch`` in one transaction, retrying transient failures until it succeeds."""
        links = []
        for message in batch:
            context = trace.get_current_span(extract_context(message.headers)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
        with _tracer.start_as_current_span("project batch", kind=SpanKind.CONSUMER, links=links[:128],
                                           attributes={"batch.size": len(batch)}) as span:
            started = time.perf_counter()
            try:
                result = await self._apply_until_done([Message(m.topic, m.partition, m.offset, m.value) for m in batch])
            except Exception:
                projection_batch_duration(time.perf_counter() - started, outcome="failed")
                raise
            projection_batch_duration(time.perf_counter() - started, outcome="applied")
            span.set_attributes({"applied": result.applied, "skipped": result.skipped,
                                 "dead_lettered": result.dead_lettered, "duration_ms": result.duration_s * 1000})
        self._trace_each(batch)
        self.stats.batches += 1
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += result.dead_lettered
        self.stats.rows += sum(result.rows.values())
        self.stats.last_batch_ms = result.duration_s * 1000
        return result

    async def _apply_until_done(self, messages: list[Message]) -> BatchResult:
        attempt = 0
        while True:
            if self.breaker.try_acquire():
                try:
                    result = await project_batch(self.pool, CONSUMER, messages, retry=self._retry)
                except Exception as exc:  # noqa: BLE001 - classified below
                    self.breaker.record_failure(exc)
                    if not is_transient(exc):
                        raise
                    self.stats.retries += 1
                    self.log.warning("projection batch failed; retrying the same batch", error=repr(exc),
                                     attempt=attempt, batch_size=len(messages), breaker=self.breaker.state.value)
                else:
                    self.breaker.record_success()
                    return result
            delay = min(0.5 * 2 ** min(attempt, 5), 15.0) * (0.5 + self._rng.random())
            attempt += 1
            await asyncio.sleep(max(delay, self.breaker.retry_after() or 0.0))

    def _trace_each(self, batch: list[PendingMessage]) -> None:
        """A short span per message inside that message's own trace, so one event's trace
        reaches its database write."""
        for message in batch:
            parent = extract_context(message.headers)
            if not trace.get_current_span(parent).get_span_context().is_valid:
                continue
            with _tracer.start_as_current_span(
                "project growth.event", context=parent, kind=SpanKind.CONSUMER,
                attributes={"messaging.kafka.partition": message.partition,
                            "messaging.kafka.offset": message.offset, "db.system": "postgresql"},
            ):
                pass
