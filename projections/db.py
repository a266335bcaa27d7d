"""Connections to Postgres: pool factory, query statistics and retry of transient errors.

- Every connection made here has ``search_path`` set to one schema (so the same SQL serves the
  live schema, a rebuild's fresh schema and a test's scratch schema) and ``statement_timeout``
  set on connect. Connections are in autocommit mode: units of work open explicit transactions
  (``async with conn.transaction()``).
- :class:`QueryStats` keeps what the original engine's database client reported: total
  queries, average duration, slow queries over a threshold and error rate. Cursors of
  connections made here record into it.
- :func:`with_retry` re-runs a whole unit of work after a transient error (connection lost,
  serialization failure, deadlock, lock or statement timeout) with exponential backoff.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

_log = logging.getLogger("bge.projections.db")

__all__ = [
    "QueryStats",
    "RetryPolicy",
    "SlowQuery",
    "connect",
    "create_pool",
    "is_transient",
    "quote_schema",
    "validate_schema",
    "with_retry",
]

T = TypeVar("T")

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def validate_schema(schema: str) -> str:
    """``schema`` if it is a plain lowercase identifier (``[a-z_][a-z0-9_]*``, at most 63)."""
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must match {_SCHEMA_NAME.pattern}")
    return schema


def quote_schema(schema: str) -> sql.Identifier:
    return sql.Identifier(validate_schema(schema))


# --- query statistics ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlowQuery:
    statement: str
    """The first 200 characters of the SQL, whitespace collapsed."""
    duration_ms: float
    failed: bool


@dataclass(slots=True)
class QueryStats:
    """Counters of the statements run through instrumented connections.

    Not thread-safe by design: the runtime is one asyncio loop per process.
    """

    slow_threshold_ms: float = 500.0
    total_queries: int = 0
    total_errors: int = 0
    total_duration_ms: float = 0.0
    slow_queries: int = 0
    max_duration_ms: float = 0.0
    recent_slow: deque[SlowQuery] = field(default_factory=lambda: deque(maxlen=20))
    """The last 20 slow statements."""

    slow_by_statement: Counter[str] = field(default_factory=Counter)
    """Slow statements counted by :func:`statement_name`."""

    def record(self, statement: str, duration_ms: float, failed: bool) -> None:
        self.total_queries += 1
        self.total_duration_ms += duration_ms
        self.max_duration_ms = max(self.max_duration_ms, duration_ms)
        if failed:
            self.total_errors += 1
        if duration_ms >= self.slow_threshold_ms:
            self.slow_queries += 1
            name = statement_name(statement)
            self.slow_by_statement[name] += 1
            text = " ".join(statement.split())[:200]
            self.recent_slow.append(SlowQuery(text, round(duration_ms, 3), failed))
            _log.warning("slow query: %s took %.1f ms (threshold %.0f ms)", name, duration_ms, self.slow_threshold_ms,
                         extra={"bge_fields": {"statement": name, "duration_ms": round(duration_ms, 3),
                                               "threshold_ms": self.slow_threshold_ms, "failed": failed,
                                               "sql": text}})

    @property
    def avg_duration_ms(self) -> float:
        return self.total_duration_ms / self.total_queries if self.total_queries else 0.0

    @property
    def error_rate(self) -> float:
        """Failed statements / all statements (0.0 before the first)."""
        return self.total_errors / self.total_queries if self.total_queries else 0.0

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy for health checks and the API."""
        return {
            "total_queries": self.total_queries,
            "total_errors": self.total_errors,
            "avg_duration_ms": round(self.avg_duration_ms, 3),
            "max_duration_ms": round(self.max_duration_ms, 3),
            "slow_queries": self.slow_queries,
            "slow_threshold_ms": self.slow_threshold_ms,
            "slow_by_statement": dict(self.slow_by_statement.most_common()),
            "error_rate": round(self.error_rate, 6),
            "recent_slow": [
                {"statement": q.statement, "duration_ms": q.duration_ms, "failed": q.failed}
                for q in self.recent_slow
            ],
        }


_STATEMENT = re.compile(
    r"^\s*(?:WITH\b.*?\)\s*)?(INSERT\s+INTO|UPDATE|DELETE\s+FROM|SELECT\b.*?\bFROM|COPY)\s+([\w.\"]+)",
    re.IGNORECASE | re.DOTALL)


def statement_name(statement: str) -> str:
    """A statement's short name for logs and counts: its verb and first table (``INSERT likes``,
    ``UPDATE users``, ``SELECT users``), else its first word."""
    match = _STATEMENT.match(statement)
    if match is None:
        words = statement.split()
        return words[0].upper() if words else "?"
    verb = match.group(1).split()[0].upper()
    return f"{verb} {match.group(2).strip(chr(34))}"


def _statement_text(query: Any) -> str:
    if isinstance(query, str):
        return query
    if isinstance(query, bytes):
        return query.decode(errors="replace")
    return repr(query)  # sql.Composed: readable enough for a slow-query log


def instrumented_cursor(stats: QueryStats) -> type[psycopg.AsyncCursor[Any]]:
    """An ``AsyncCursor`` class that times every ``execute``/``executemany`` into ``stats``."""

    class InstrumentedCursor(psycopg.AsyncCursor[Any]):
        async def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            started = time.perf_counter()
            failed = False
            try:
                return await super().execute(query, params, **kwargs)
            except BaseException:
                failed = True
                raise
            finally:
                stats.record(_statement_text(query), (time.perf_counter() - started) * 1000, failed)

        async def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
            started = time.perf_counter()
            failed = False
            try:
                await super().executemany(query, params_seq, **kwargs)
            except BaseException:
                failed = True
                raise
            finally:
                stats.record(_statement_text(query), (time.perf_counter() - started) * 1000, failed)

    return InstrumentedCursor


# --- connections ---------------------------------------------------------------------------


async def _configure(conn: psycopg.AsyncConnection[Any], schema: str, statement_timeout_ms: int) -> None:
    await conn.execute(sql.SQL("SET search_path TO {}").format(quote_schema(schema)))
    await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(statement_timeout_ms))))


async def connect(
    conninfo: str,
    schema: str = "public",
    *,
    statement_timeout_ms: int = 30_000,
    stats: QueryStats | None = None,
) -> psycopg.AsyncConnection[Any]:
    """One autocommit connection with ``search_path`` and ``statement_timeout`` set."""
    validate_schema(schema)
    kwargs: dict[str, Any] = {"autocommit": True}
    if stats is not None:
        kwargs["cursor_factory"] = instrumented_cursor(stats)
    conn = await psycopg.AsyncConnection.connect(conninfo, **kwargs)
    try:
        await _configure(conn, schema, statement_timeout_ms)
    except BaseException:
        await conn.close()
        raise
    return conn


def create_pool(
    conninfo: str,
    schema: str = "public",
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout_ms: int = 30_000,
    stats: QueryStats | None = None,
    name: str = "bge-projections",
    timeout: float = 30.0,
) -> AsyncConnectionPool:
    """A closed ``AsyncConnectionPool``; open it with ``async with create_pool(...) as pool``
    or ``await pool.open(wait=True)``. Its connections are configured like :func:`connect`'s."""
    validate_schema(schema)
    if not 0 <= min_size <= max_size or max_size < 1:
        raise ValueError(f"pool bounds must satisfy 0 <= min_size <= max_size, >= 1: got {min_size}, {max_size}")
    kwargs: dict[str, Any] = {"autocommit": True}
    if stats is not None:
        kwargs["cursor_factory"] = instrumented_cursor(stats)

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        await _configure(conn, schema, statement_timeout_ms)

    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        kwargs=kwargs,
        configure=configure,
        open=False,
        name=name,
        timeout=timeout,
    )


# --- retry ---------------------------------------------------------------------------------


def is_transient(error: BaseException) -> bool:
    """True for errors worth re-running the whole transaction for: lost or refused connections,
    serialization failures, deadlocks, lock and statement timeouts (all ``OperationalError``)
    and a pool that had no connection in time."""
    return isinstance(error, psycopg.OperationalError | PoolTimeout)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter: attempt ``n`` (from 1) waits up to
    ``min(max_delay_s, base_delay_s * multiplier ** (n - 1))`` before the next."""

    attempts: int = 5
    base_delay_s: float = 0.05
    max_delay_s: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        cap = min(self.max_delay_s, self.base_delay_s * self.multiplier ** (attempt - 1))
        return (rng or random).uniform(cap / 2, cap)


async def with_retry(
    operation: Callable[[], Awaitable[T]],
    policy: RetryPolicy = RetryPolicy(),
    *,
    on_retry: Callable[[int, BaseException, float], None] | None = None,
) -> T:
    """Run ``operation`` (a whole transaction), again after transient errors, at most
    ``policy.attempts`` times; the last error propagates. ``on_retry(attempt, error, delay)``
    is called before each wait (for logs and metrics)."""
    attempt = 1
    while True:
        try:
            return await operation()
        except Exception as error:
            if not is_transient(error) or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt)
            if on_retry is not None:
                on_retry(attempt, error, delay)
            await asyncio.sleep(delay)
            attempt += 1
