"""The project stage: domain events from ``growth.events`` into Postgres, exactly once in effect.

The stage gets a batch of messages at a time (``streams.kafka.source``: what one fetch brought, at
most ``PROJECTOR_BATCH_SIZE`` per transaction). Each transaction also advances the stored (topic,
partition, offset) high-water marks (``projections.apply_batch``), so a batch delivered again is
skipped, and a partition assigned to the worker starts at its mark (:meth:`Projector.positions`).
Kafka offsets are committed after the transaction, for lag tools only.

Batches are pipelined one deep (:meth:`Projector.submit`): a batch's values are decoded and its
transactions planned (:class:`projections.Prepared`) while Postgres still runs the previous batch's
transaction, then its own transaction starts once that one is done. Transactions never overlap, so
they commit in the order the batches came.

When Postgres is down the projector never gives up on a batch and never skips one: it retries
behind a circuit breaker with growing pauses, and while it waits the stage consumes nothing
(the source's channel fills and its fetching waits). When Postgres is back it resumes with the
same batch.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from psycopg_pool import AsyncConnectionPool

from projections import (
    BatchResult, Decoded, Prepared, QueryStats, RetryPolicy, create_pool, decode_messages, is_transient, project_batch,
    stored_offsets,
)
from streams.adapters.breaker import BreakerConfig, CircuitBreaker
from streams.config import Settings
from streams.kafka.clients import Received
from streams.observability.log import ContextLogger, get_logger
from streams.observability.metrics import projection_batch_duration
from streams.observability.tracing import extract_context
from streams.topology import PROJECTOR_CONSUMER, Header

__all__ = ["CONSUMER", "Projector", "ProjectorStats"]

CONSUMER = PROJECTOR_CONSUMER
DECODE_CHUNK = 50
"""Messages decoded between two yields to the event loop, so the transaction in flight gets on."""
_tracer = trace.get_tracer("bge.projector")


def _traces_of(batch: Sequence[Received]) -> dict[bytes, tuple[Context, list[Received]]]:
    """The batch's messages that carry a valid trace context, by their ``traceparent``, each
    context extracted once."""
    traces: dict[bytes, tuple[Context, list[Received]]] = {}
    for message in batch:
        parent = next((value for key, value in message.headers or () if key == Header.TRACEPARENT), None)
        if parent is None:
            continue
        found = traces.get(parent)
        if found is None:
            context = extract_context(message.headers)
            if not trace.get_current_span(context).get_span_context().is_valid:
                continue
            traces[parent] = found = (context, [])
        found[1].append(message)
    return traces


def _outcome(message: Received, result: BatchResult) -> str:
    """What the transaction did with ``message``: ``applied``, ``skipped`` (below the partition's
    mark: applied by an earlier transaction) or ``dead_lettered: <code>``."""
    code = result.dead_letters.get((message.topic, message.partition, message.offset))
    if code is not None:
        return f"dead_lettered: {code}"
    if message.offset < result.marks_before.get((message.topic, message.partition), 0):
        return "skipped"
    return "applied"


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
        self.query_stats = QueryStats(slow_threshold_ms=settings.db_slow_query_ms)
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
        self._in_flight: asyncio.Task[None] | None = None

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
        """Close the pool; a transaction still in flight is cancelled (rolled back: its batch was
        not committed to Kafka either, so it is delivered again)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None and not in_flight.done():
            in_flight.cancel()
            await asyncio.gather(in_flight, return_exceptions=True)
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Where to start ``partitions`` of ``topic``: the stored marks (Postgres is the
        truth; Kafka's committed offsets may lag them). When Postgres cannot answer, nothing:
        the group's committed offsets are at or below the marks, and what is below is skipped."""
        try:
            marks = await stored_offsets(self.pool, CONSUMER, topic, timeout_s=10.0)
        except Exception as exc:  # noqa: BLE001 - the fallback is safe, only slower
            self.log.warning("projection marks unreadable; starting from committed offsets", error=repr(exc))
            return {}
        return {partition: marks[partition] for partition in partitions if partition in marks}

    async def submit(self, batch: Sequence[Received]) -> list[asyncio.Future[Any]]:
        """Project ``batch`` after the batch submitted before it: decode and plan its transactions
        now (while Postgres runs the previous batch's transaction), wait for that transaction, then
        start this batch's. Returns, in the shape of :meth:`streams.kafka.clients.Sender.submit`, one
        future resolved with the task of this batch's transactions: the source commits the
        batch's offsets once that task succeeded. A failure of the previous batch is raised here
        too (the stage stops; the source crashes the worker and nothing after it is committed)."""
        decoded = await self._decode(batch)
        prepared = [(chunk, Prepared(CONSUMER, chunk, decoded)) for chunk in self._transactions(batch)]
        previous, self._in_flight = self._in_flight, None
        if previous is not None:
            await previous
        task = self._in_flight = asyncio.create_task(self._apply_prepared(prepared), name="projector-transaction")
        handed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        handed.set_result(task)
        return [handed]

    @staticmethod
    async def _decode(batch: Sequence[Received]) -> Decoded:
        decoded: dict[Any, Any] = {}
        for start in range(0, len(batch), DECODE_CHUNK):
            decoded.update(decode_messages(batch[start:start + DECODE_CHUNK]))
            await asyncio.sleep(0)
        return decoded

    def _transactions(self, batch: Sequence[Received]) -> list[Sequence[Received]]:
        """``batch`` cut in transactions of at most ``PROJECTOR_BATCH_SIZE`` messages."""
        size = max(1, self.settings.projector_batch_size)
        return [batch[start:start + size] for start in range(0, len(batch), size)]

    async def _apply_prepared(self, prepared: list[tuple[Sequence[Received], Prepared]]) -> None:
        for messages, planned in prepared:
            await self.apply(messages, planned)

    async def apply(self, batch: Sequence[Received], prepared: Prepared | None = None) -> BatchResult:
        """Apply ``batch`` in one transaction, retrying transient failures until it succeeds
        (``prepared``: decoded and planned before, :class:`projections.Prepared`)."""
        traces = _traces_of(batch)
        links = [Link(trace.get_current_span(context).get_span_context())
                 for context, _ in itertools.islice(traces.values(), 128)]
        with _tracer.start_as_current_span("project batch", kind=SpanKind.CONSUMER, links=links,
                                           attributes={"batch.size": len(batch)}) as span:
            started = time.perf_counter()
            try:
                result = await self._apply_until_done(batch, prepared)
            except Exception:
                projection_batch_duration(time.perf_counter() - started, outcome="failed")
                raise
            projection_batch_duration(time.perf_counter() - started, outcome="applied")
            span.set_attributes({"applied": result.applied, "skipped": result.skipped,
                                 "dead_lettered": result.dead_lettered, "duration_ms": result.duration_s * 1000})
        self._trace_each(traces, result, span)
        self.stats.batches += 1
        self.stats.applied += result.applied
        self.stats.skipped += result.skipped
        self.stats.dead_lettered += result.dead_lettered
        self.stats.rows += sum(result.rows.values())
        self.stats.last_batch_ms = result.duration_s * 1000
        return result

    async def _apply_until_done(self, messages: Sequence[Received], prepared: Prepared | None) -> BatchResult:
        attempt = 0
        while True:
            if self.breaker.try_acquire():
                try:
                    result = await project_batch(self.pool, CONSUMER, messages, retry=self._retry, prepared=prepared)
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

    @staticmethod
    def _trace_each(traces: dict[bytes, tuple[Context, list[Received]]], result: BatchResult,
                    batch_span: trace.Span) -> None:
        """A span in each traced event's own trace, so one event's trace reaches its database
        write: one per trace (a raw event's domain events share their producer's trace), linked
        to the batch span that holds the statements, saying what happened to each of its
        messages (applied, skipped as applied before, or dead-lettered with the reason) and the
        batch's rows by table (a batch is applied by set-based statements, so rows are not
        attributable to one message)."""
        batch_link = [Link(batch_span.get_span_context())]
        rows = {f"db.rows.{table}": count for table, count in sorted(result.rows.items())}
        for context, messages in traces.values():
            outcomes = [_outcome(message, result) for message in messages]
            first = messages[0]
            with _tracer.start_as_current_span(
                "project growth.event", context=context, kind=SpanKind.CONSUMER, links=batch_link,
                attributes={"messaging.kafka.partition": first.partition,
                            "messaging.kafka.offset": first.offset,
                            "messaging.kafka.offsets": [message.offset for message in messages],
                            "messaging.batch.message_count": len(messages), "db.system": "postgresql",
                            "outcomes": outcomes,
                            "outcome": "applied" if all(o == "applied" for o in outcomes) else
                                       next(o for o in outcomes if o != "applied"),
                            **rows},
            ) as span:
                if any(o.startswith("dead_lettered") for o in outcomes):
                    span.set_status(Status(StatusCode.ERROR, "a message was dead-lettered"))
