"""Versioned SQL migrations: ``projections/migrations/NNNN_name.sql``, applied by :func:`migrate`.

- A migration's version is the number before the first ``_`` of its file name; versions are
  applied in order, each in its own transaction, and recorded in ``schema_migrations`` (with a
  checksum of the file) in the same transaction.
- :func:`migrate` is idempotent: versions already recorded are skipped.
- It refuses (:class:`SchemaTooNewError`) a schema recording a version this code does not know,
  and (:class:`MigrationChecksumError`) one whose recorded migration differs from the file.
- It holds a session advisory lock keyed by the schema name while it works, so workers that
  start together apply each migration once.
- Migration files name no schema: they run with ``search_path`` set to the target schema.
- Two kinds of schema are migrated from the one directory (:class:`MigrationSet`): projection
  schemas (``settings.db_schema`` and the fresh schemas of a rebuild) and the crawl's schema
  (``settings.crawl_schema``), which must outlive rebuilds and has its own ``growth_actions``.
  A migration whose name starts with ``crawl`` belongs to the crawl set, every other one to the
  projection set. Versions are unique across the directory; each schema records the versions
  of its own set only, and refuses (:class:`MigrationError`) migrations of the other set.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib import resources

import psycopg
from psycopg import sql

from projections.db import quote_schema, validate_schema

__all__ = [
    "Migration",
    "MigrationChecksumError",
    "MigrationError",
    "MigrationSet",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "applied_versions",
    "check_schema_version",
    "latest_version",
    "load_migrations",
    "migrate",
]

_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
SCHEMA_LOCK_NAMESPACE = "bge.migrate"
"""Advisory lock namespace (with the schema name) of migrations, swaps (exclusive) and batches (shared)."""
_LOCK_NAMESPACE = SCHEMA_LOCK_NAMESPACE


class MigrationError(RuntimeError):
    """The schema cannot be brought to this code's version."""


class SchemaTooNewError(MigrationError):
    """The database records migrations newer than this code knows: run newer code."""


class SchemaTooOldError(MigrationError):
    """The database lacks migrations this code needs: run ``bge migrate``."""


class MigrationChecksumError(MigrationError):
    """A recorded migration differs from the file of the same version."""


class MigrationSet(StrEnum):
    """The kind of schema a migration builds (see the module docstring)."""

    PROJECTIONS = "projections"
    CRAWL = "crawl"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def kind(self) -> MigrationSet:
        crawl = self.name == "crawl" or self.name.startswith("crawl_")
        return MigrationSet.CRAWL if crawl else MigrationSet.PROJECTIONS


def load_migrations(kind: MigrationSet = MigrationSet.PROJECTIONS) -> tuple[Migration, ...]:
    """The migrations of ``kind`` shipped in ``projections/migrations``, by version."""
    return tuple(migration for migration in _all_migrations() if migration.kind is kind)


@cache
def _all_migrations() -> tuple[Migration, ...]:
    """Every migration shipped, by version."""
    found: list[Migration] = []
    for entry in resources.files("projections").joinpath("migrations").iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda migration: migration.version)
    versions = [migration.version for migration in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version: {versions}")
    return tuple(found)


def latest_version(kind: MigrationSet = MigrationSet.PROJECTIONS) -> int:
    """The newest schema version of ``kind`` this code knows."""
    migrations = load_migrations(kind)
    return migrations[-1].version if migrations else 0


_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def applied_versions(conn: psycopg.AsyncConnection) -> dict[int, str]:
    """Version → checksum recorded in ``schema_migrations`` of the current search_path
    (empty when the table does not exist)."""
    exists = await (
        await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = await (await conn.execute("SELECT version, checksum FROM schema_migrations")).fetchall()
    return {int(version): str(checksum) for version, checksum in rows}


def _check_known(schema: str, applied: dict[int, str], kind: MigrationSet) -> None:
    foreign = sorted(m.version for m in _all_migrations() if m.version in applied and m.kind is not kind)
    if foreign:
        raise MigrationError(f"schema {schema!r} records migrations {foreign} of another kind: "
                             f"it is not a {kind.value} schema")
    known = {migration.version: migration for migration in load_migrations(kind)}
    newest_known = max(known, default=0)
    unknown = sorted(version for version in applied if version not in known)
    if unknown:
        raise SchemaTooNewError(
            f"schema {schema!r} is at version {max(applied)}, newer than this code knows "
            f"({newest_known}); unknown versions {unknown}: deploy the newer code instead of migrating"
        )
    for version, checksum in applied.items():
        if known[version].checksum != checksum:
            raise MigrationChecksumError(
                f"migration {version} ({known[version].name}) recorded in schema {schema!r} "
                "differs from the file shipped with this code; migrations must never be edited once applied"
            )


async def migrate(conninfo: str, schema: str = "public", kind: MigrationSet = MigrationSet.PROJECTIONS) -> list[int]:
    """Create ``schema`` if needed and apply the migrations of ``kind`` it lacks; return the
    versions applied now (empty when it was up to date).

    Raises :class:`SchemaTooNewError` when the schema records a version this code does not know,
    :class:`MigrationChecksumError` when a recorded migration was edited since,
    :class:`MigrationError` when it records migrations of the other kind.
    """
    validate_schema(schema)
    migrations = load_migrations(kind)
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute(
            "SELECT pg_advisory_lock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, schema)
        )
        try:
            await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(quote_schema(schema)))
            await conn.execute(sql.SQL("SET search_path TO {}").format(quote_schema(schema)))
            await conn.execute(_CREATE_LEDGER)
            applied = await applied_versions(conn)
            _check_known(schema, applied, kind)
            for migration in migrations:
                if migration.version in applied:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)  # type: ignore[arg-type]  # no parameters: simple protocol
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration.version)
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtext(%s), hashtext(%s))", (_LOCK_NAMESPACE, schema)
            )
    return applied_now


async def check_schema_version(conn: psycopg.AsyncConnection, kind: MigrationSet = MigrationSet.PROJECTIONS) -> int:
    """The schema version of the connection's search_path, if it is exactly this code's.

    For a worker's startup check: raises :class:`SchemaTooOldError` (run ``bge migrate``),
    :class:`SchemaTooNewError`, :class:`MigrationChecksumError` or :class:`MigrationError`.
    """
    migrations = load_migrations(kind)
    applied = await applied_versions(conn)
    schema = str((await (await conn.execute("SELECT current_schema()")).fetchone() or ("?",))[0])
    _check_known(schema, applied, kind)
    missing = [migration.version for migration in migrations if migration.version not in applied]
    if missing:
        raise SchemaTooOldError(f"schema {schema!r} lacks migrations {missing}: run `bge migrate` first")
    return latest_version(kind)
