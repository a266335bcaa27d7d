"""Rebuilding the projection: project into a fresh schema, then swap it in atomically.

The runtime replays the domain event topic from the beginning into a fresh schema, with a
pool made by :func:`projections.db.create_pool` for that schema and the usual
:func:`projections.writer.apply_batch`; the fresh schema keeps its own
``projection_offsets``, so the replay is as exactly-once as the live projection. When it has
caught up, :func:`swap_schema` renames in one transaction: live → retired, fresh → live.

Connections resolve table names through ``search_path`` (a schema *name*), so new transactions
see the swapped-in tables at once. Stop the projector writing to the live schema before the
swap (a transaction already running keeps the tables it has opened), and drop the retired
schema with :func:`drop_schema` once nothing reads it.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from projections.db import quote_schema, validate_schema
from projections.migrate import MigrationError, latest_version, migrate

__all__ = ["SwapError", "create_fresh_schema", "drop_schema", "schema_exists", "swap_schema"]

from projections.migrate import SCHEMA_LOCK_NAMESPACE as _LOCK_NAMESPACE  # a swap never races a migrate or a batch


class SwapError(RuntimeError):
    """The schemas are not in a state that allows a swap."""


async def schema_exists(conn: psycopg.AsyncConnection[Any], schema: str) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)", (schema,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def create_fresh_schema(conninfo: str, schema: str) -> list[int]:
    """Create ``schema`` (which must not exist yet) and migrate it; return the versions applied."""
    validate_schema(schema)
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        if await schema_exists(conn, schema):
            raise SwapError(f"schema {schema!r} already exists: drop it or choose another name for the rebuild")
    return await migrate(conninfo, schema)


async def drop_schema(conn: psycopg.AsyncConnection[Any], schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` (refuses ``public``: drop its tables another way if you mean it)."""
    if validate_schema(schema) == "public":
        raise SwapError("refusing to drop schema 'public'")
    await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(quote_schema(schema)))


async def _version(conn: psycopg.AsyncConnection[Any], schema: str) -> int | None:
    cur = await conn.execute(
        sql.SQL("SELECT max(version) FROM {}.schema_migrations").format(quote_schema(schema))
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def swap_schema(
    conn: psycopg.AsyncConnection[Any], live: str, fresh: str, *, retired: str | None = None
) -> str:
    """In one transaction rename ``live`` to ``retired`` (default ``<live>_retired``) and
    ``fresh`` to ``live``; return the retired schema's name.

    ``fresh`` must exist and be migrated to this code's version; ``retired`` must not exist.
    When ``live`` does not exist, ``fresh`` is simply renamed to it (and ``""`` is returned).
    """
    retired = retired or f"{live}_retired"
    for name in (live, fresh, retired):
        validate_schema(name)
    if len({live, fresh, retired}) != 3:
        raise SwapError(f"live, fresh and retired schemas must differ: {live!r}, {fresh!r}, {retired!r}")
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, live))
        if not await schema_exists(conn, fresh):
            raise SwapError(f"fresh schema {fresh!r} does not exist")
        try:
            version = await _version(conn, fresh)
        except psycopg.errors.UndefinedTable as error:
            raise SwapError(f"fresh schema {fresh!r} was never migrated") from error
        if version != latest_version():
            raise MigrationError(f"fresh schema {fresh!r} is at version {version}, this code at {latest_version()}")
        if await schema_exists(conn, retired):
            raise SwapError(f"schema {retired!r} already exists: drop the previous retired schema first")
        if await schema_exists(conn, live):
            await conn.execute(
                sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(quote_schema(live), quote_schema(retired))
            )
        else:
            retired = ""
        await conn.execute(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(quote_schema(fresh), quote_schema(live)))
    return retired
