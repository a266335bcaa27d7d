"""The crawl's memory in Postgres: what was fetched and done (see :mod:`streams.stages.crawl`).

It lives in the crawl's own schema (``settings.crawl_schema``, ``bge_crawl`` by default), not a
projection schema, which a rebuild swaps away; its tables are built by the crawl migrations
(``projections/migrations/0002_crawl.sql``, :attr:`projections.migrate.MigrationSet.CRAWL`):

- ``crawl_profiles``: when each account's profile was last fetched;
- ``crawl_requests``: requests executed, and how they ended;
- ``crawl_discovered``: the accounts each snowball crawl judged, and whether it kept them;
- ``growth_actions``: every growth action, unique on ``(action, subject)``;
- ``crawl_edges`` (``0005_crawl_edges.sql``): the follower and follow lists the crawl last read;
- ``crawls`` and ``crawl_members`` (``0004_crawl_runs.sql``): the crawls started by ``bge crawl``,
  their requests, and whether they were cancelled (``bge crawl status`` / ``cancel`` read them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from domain.crawl import CrawlRequest, Discovery, PlannedAction
from projections.db import create_pool, validate_schema, with_retry
from projections.migrate import MigrationSet, migrate

__all__ = ["CRAWL_REPORT", "DEFAULT_SCHEMA", "CrawlStore", "EdgeRead", "crawl_progress"]

DEFAULT_SCHEMA = "bge_crawl"

_T = TypeVar("_T")
Work = Callable[[psycopg.AsyncConnection[Any]], Awaitable[_T]]


CRAWL_REPORT = """
SELECT c.id, c.kind, c.args, c.requested_at, c.cancelled_at,
       count(m.request_id) AS requests,
       count(r.id) + count(p.did) AS finished,
       count(r.id) FILTER (WHERE r.status = 'failed') AS failed,
       count(r.id) FILTER (WHERE r.status = 'skipped') AS skipped,
       coalesce(sum(r.found), 0) + count(p.did) AS found,
       coalesce(sum(r.pages), 0) + ceil(count(p.did) / 25.0)::int AS pages,
       greatest(max(r.finished_at), max(p.fetched_at)) AS last_finished_at,
       (array_agg(DISTINCT r.detail) FILTER (WHERE r.status = 'failed'))[1:5] AS errors
FROM crawls c
LEFT JOIN crawl_members m ON m.crawl_id = c.id
LEFT JOIN crawl_requests r ON r.id = m.request_id
LEFT JOIN crawl_profiles p ON m.subject IS NOT NULL AND p.did = m.subject AND p.fetched_at >= c.requested_at
"""


@dataclass(frozen=True, slots=True)
class EdgeRead:
    """One read of ``owner``'s follower or follow list (``direction``): the accounts listed,
    and whether every page was read (only then are the accounts not listed gone)."""

    owner: str
    direction: str
    listed: frozenset[str]
    complete: bool


def _us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def _at(time_us: int) -> datetime:
    return datetime.fromtimestamp(time_us // 1_000_000, UTC).replace(microsecond=time_us % 1_000_000)


class CrawlStore:
    """The crawl's memory in Postgres (see the module docstring), in its own ``schema``.

    :meth:`open` applies the crawl migrations the schema lacks (creating it if missing; see
    :func:`projections.migrate.migrate`) and opens a small pool; every unit of work is re-run
    after transient errors (:func:`projections.db.with_retry`).
    """

    def __init__(self, conninfo: str, schema: str = DEFAULT_SCHEMA) -> None:
        self.conninfo = conninfo
        self.schema = validate_schema(schema)
        self._pool: AsyncConnectionPool | None = None

    async def open(self) -> None:
        await migrate(self.conninfo, self.schema, MigrationSet.CRAWL)
        self._pool = create_pool(self.conninfo, self.schema, min_size=1, max_size=2, name="bge-crawl")
        await self._pool.open(wait=True)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def __aenter__(self) -> CrawlStore:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _run(self, work: Work[_T]) -> _T:
        if self._pool is None:
            raise RuntimeError("CrawlStore is not open")
        pool = self._pool

        async def unit() -> _T:
            async with pool.connection() as conn, conn.transaction():
                return await work(conn)

        return await with_retry(unit)

    # -- profiles, requests, crawls -----------------------------------------------------------

    async def fetched_at(self, dids: Sequence[str]) -> dict[str, int]:
        """When each of ``dids`` had its profile fetched last (unix µs); absent: never."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
            cur = await conn.execute("SELECT did, fetched_at FROM crawl_profiles WHERE did = ANY(%s)", (list(dids),))
            return {did: _us(at) for did, at in await cur.fetchall()}
        return await self._run(work) if dids else {}

    async def status(self, request_id: str) -> str | None:
        """How request ``request_id`` ended (``done``, ``failed``, ``skipped``), or None."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
            cur = await conn.execute("SELECT status FROM crawl_requests WHERE id = %s", (request_id,))
            row = await cur.fetchone()
            return row[0] if row else None
        return await self._run(work)

    async def discovered(self, crawl_id: str) -> tuple[set[str], int]:
        """The accounts crawl ``crawl_id`` judged, and how many it kept."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> tuple[set[str], int]:
            cur = await conn.execute("SELECT did, accepted FROM crawl_discovered WHERE crawl_id = %s", (crawl_id,))
            rows = await cur.fetchall()
            return {did for did, _ in rows}, sum(1 for _, accepted in rows if accepted)
        return await self._run(work)

    async def record(self, *, request: CrawlRequest | None = None, status: str = "done", detail: str | None = None,
                     fetched: Sequence[tuple[str, str]] = (), crawl_id: str | None = None,
                     discoveries: Sequence[Discovery] = (), follow_ups: Sequence[str] = (), found: int = 0,
                     pages: int = 0, edges: Sequence[EdgeRead] = (), at_us: int) -> None:
        """In one transaction: profiles fetched (``(did, request id)``), the accounts a crawl
        judged, the ids of the follow-up requests sent for crawl ``crawl_id`` (members of it when
        a command started it), and how ``request`` ended (with the accounts it ``found`` and the
        ``pages`` it read), and the follower and follow lists read (``edges``: what each list
        holds now, and whether it was read whole)."""
        at = _at(at_us)

        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            for read in edges:
                if read.complete:
                    await conn.execute("DELETE FROM crawl_edges WHERE owner = %s AND direction = %s "
                                       "AND NOT (other = ANY(%s::text[]))", (read.owner, read.direction, sorted(read.listed)))
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO crawl_edges (owner, direction, other, seen_at) VALUES (%s, %s, %s, %s) "
                        "ON CONFLICT (owner, direction, other) DO UPDATE SET seen_at = EXCLUDED.seen_at",
                        [(read.owner, read.direction, other, at) for other in sorted(read.listed)])
            if follow_ups and crawl_id is not None:
                await conn.execute(
                    "INSERT INTO crawl_members (crawl_id, request_id) SELECT %s, unnest(%s::text[]) "
                    "WHERE EXISTS (SELECT 1 FROM crawls WHERE id = %s) ON CONFLICT DO NOTHING",
                    (crawl_id, list(follow_ups), crawl_id))
            if fetched:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO crawl_profiles (did, fetched_at, request_id) VALUES (%s, %s, %s) "
                        "ON CONFLICT (did) DO UPDATE SET fetched_at = EXCLUDED.fetched_at, request_id = EXCLUDED.request_id "
                        "WHERE crawl_profiles.fetched_at < EXCLUDED.fetched_at",
                        [(did, at, request_id) for did, request_id in sorted(set(fetched))],
                    )
            if discoveries:
                async with conn.cursor() as cur:
                    await cur.executemany(
                        "INSERT INTO crawl_discovered (crawl_id, did, degree, accepted, reason, discovered_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (crawl_id, did) DO NOTHING",
                        [(crawl_id, d.did, d.degree, d.accepted, d.reason, at) for d in discoveries],
                    )
            if request is not None:
                await conn.execute(
                    "INSERT INTO crawl_requests (id, kind, status, detail, finished_at, found, pages) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, detail = EXCLUDED.detail, "
                    "finished_at = EXCLUDED.finished_at, found = EXCLUDED.found, pages = EXCLUDED.pages",
                    (request.id, request.schema_name, status, detail, at, found, pages),
                )

        await self._run(work)

    async def known_edges(self, owner: str, direction: str) -> set[str]:
        """The accounts the crawl last saw in ``owner``'s list ``direction``."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            cur = await conn.execute("SELECT other FROM crawl_edges WHERE owner = %s AND direction = %s", (owner, direction))
            return {row[0] for row in await cur.fetchall()}
        return await self._run(work)

    # -- crawls started by a command ------------------------------------------------------------

    async def start_crawl(self, crawl_id: str, kind: str, args: dict[str, Any],
                          members: Sequence[tuple[str, str | None]], at_us: int) -> bool:
        """Record a crawl and its first requests (``(request id, subject did or None)``); False
        when a crawl with this id (the same command and label) exists already."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                "INSERT INTO crawls (id, kind, args, requested_at) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (crawl_id, kind, Jsonb(args), _at(at_us)))
            async with conn.cursor() as members_cur:
                await members_cur.executemany(
                    "INSERT INTO crawl_members (crawl_id, request_id, subject) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                    [(crawl_id, request_id, subject) for request_id, subject in members])
            return cur.rowcount == 1
        return await self._run(work)

    async def resolve(self, prefix: str) -> str | None:
        """The id of the one crawl whose id starts with ``prefix`` (None: none, or several)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> str | None:
            cur = await conn.execute("SELECT id FROM crawls WHERE starts_with(id, %s) LIMIT 2", (prefix,))
            rows = await cur.fetchall()
            return rows[0][0] if len(rows) == 1 else None
        return await self._run(work)

    async def cancel(self, crawl_id: str, at_us: int) -> bool:
        """Cancel crawl ``crawl_id``: its requests not executed yet are skipped. False when no
        such crawl is running (unknown, or cancelled already)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute("UPDATE crawls SET cancelled_at = %s WHERE id = %s AND cancelled_at IS NULL",
                                     (_at(at_us), crawl_id))
            return cur.rowcount == 1
        return await self._run(work)

    async def cancelled(self, request_ids: Sequence[str]) -> set[str]:
        """Those of ``request_ids`` that belong to a cancelled crawl."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            cur = await conn.execute(
                "SELECT m.request_id FROM crawl_members m JOIN crawls c ON c.id = m.crawl_id "
                "WHERE m.request_id = ANY(%s) AND c.cancelled_at IS NOT NULL", (list(request_ids),))
            return {row[0] for row in await cur.fetchall()}
        return await self._run(work) if request_ids else set()

    async def crawl_reports(self, crawl_id: str | None = None, *, limit: int = 20) -> list[dict[str, Any]]:
        """Per crawl (one, or the latest ``limit``): what was asked, requests sent and finished
        (a profile request is finished once its account was fetched after the crawl started),
        failures and their reasons, accounts found, pages read, and when requests finished."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute(CRAWL_REPORT + ("WHERE c.id = %s " if crawl_id else "")
                                     + "GROUP BY c.id ORDER BY c.requested_at DESC LIMIT %s",
                                     (crawl_id, limit) if crawl_id else (limit,))
            columns = [column.name for column in cur.description or ()]
            return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
        return await self._run(work)

    # -- growth actions -----------------------------------------------------------------------

    async def recorded_subjects(self, action: str) -> set[str]:
        """Subjects of ``action`` that must not be acted on again: all but ``failed``."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            cur = await conn.execute("SELECT subject FROM growth_actions WHERE action = %s AND status <> 'failed'",
                                     (action,))
            return {row[0] for row in await cur.fetchall()}
        return await self._run(work)

    async def count_since(self, action: str, since_us: int) -> int:
        """Actions of this kind claimed since ``since_us`` (all but ``failed``): for daily caps."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> int:
            cur = await conn.execute(
                "SELECT count(*) FROM growth_actions WHERE action = %s AND planned_at >= %s AND status <> 'failed'",
                (action, _at(since_us)))
            row = await cur.fetchone()
            return int(row[0]) if row else 0
        return await self._run(work)

    async def claim(self, planned: PlannedAction, at_us: int) -> bool:
        """Record ``planned`` as ``pending`` before it is taken; False when it is already
        recorded (only a ``failed`` action may be claimed again)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> bool:
            cur = await conn.execute(
                "INSERT INTO growth_actions (action, subject, subject_did, status, reason, planned_at) "
                "VALUES (%s, %s, %s, 'pending', %s, %s) ON CONFLICT (action, subject) DO UPDATE "
                "SET status = 'pending', attempts = growth_actions.attempts + 1, planned_at = EXCLUDED.planned_at, "
                "error = NULL WHERE growth_actions.status = 'failed' RETURNING 1",
                (planned.action, planned.subject, planned.subject_did, planned.reason, _at(at_us)))
            return await cur.fetchone() is not None
        return await self._run(work)

    async def settle(self, planned: PlannedAction, status: str, at_us: int, *, record_uri: str | None = None,
                     error: str | None = None) -> None:
        """How a claimed action ended: ``done`` (with the record), ``failed`` or ``unknown``."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> None:
            await conn.execute(
                "UPDATE growth_actions SET status = %s, record_uri = %s, error = %s, taken_at = %s "
                "WHERE action = %s AND subject = %s",
                (status, record_uri, error, _at(at_us), planned.action, planned.subject))
        await self._run(work)

    async def actions(self) -> list[dict[str, Any]]:
        """Every recorded growth action (for reports and tests)."""
        async def work(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
            cur = await conn.execute("SELECT action, subject, subject_did, status, record_uri, attempts "
                                     "FROM growth_actions ORDER BY action, subject")
            columns = ("action", "subject", "subject_did", "status", "record_uri", "attempts")
            return [dict(zip(columns, row, strict=True)) for row in await cur.fetchall()]
        return await self._run(work)


def crawl_progress(report: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A crawl's report (:meth:`CrawlStore.crawl_reports`) with its state, rate and ETA
    (``bge crawl status``, ``GET /api/crawls``)."""
    requested, finished = int(report["requests"]), int(report["finished"])
    started: datetime = report["requested_at"]
    last: datetime | None = report["last_finished_at"]
    elapsed = ((last or now) - started).total_seconds()
    rate = finished / elapsed * 60 if finished and elapsed > 0 else None
    state = ("cancelled" if report["cancelled_at"] else "done" if requested and finished >= requested
             else "running" if finished else "queued")
    eta_s = (requested - finished) / rate * 60 if rate and state == "running" else None
    return {
        "id": report["id"], "kind": report["kind"], "state": state, "args": report["args"],
        "requested_at": started.isoformat(), "requests": requested, "finished": finished,
        "failed": int(report["failed"]), "skipped": int(report["skipped"]), "accounts_found": int(report["found"]),
        "pages": int(report["pages"]), "rate_per_min": round(rate, 1) if rate else None,
        "eta_s": round(eta_s) if eta_s is not None else None, "errors": list(report["errors"] or []),
    }
