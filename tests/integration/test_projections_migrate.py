"""Migrations: versioned, idempotent, schema-independent, refusing schemas newer than the code."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from projections import (
    MigrationChecksumError,
    MigrationError,
    MigrationSet,
    SchemaTooNewError,
    SchemaTooOldError,
    check_schema_version,
    connect,
    latest_version,
    migrate,
)
from projections.migrate import load_migrations
from tests.integration.projection_support import make_schema, scalar  # noqa: F401  (fixture)

EXPECTED_TABLES = {
    "activity_events", "activity_patterns", "blocks", "candidates", "dead_letters", "engagement_counts",
    "feed_generators", "follow_events", "follower_gains_hourly", "follows", "growth_actions", "hashtags", "labeler_services", "likes", "links",
    "list_items", "lists", "media", "mentions", "observed_follows", "posts", "projection_offsets", "quotes", "replies",
    "reposts", "schema_migrations", "starter_packs", "threadgates", "threads", "users",
}


CRAWL_TABLES = {"crawl_profiles", "crawl_requests", "crawl_discovered", "growth_actions", "schema_migrations",
                "crawls", "crawl_members", "crawl_edges"}


async def _tables(database_url: str, schema: str) -> set[str]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE'",
            (schema,),
        )
        return {row[0] for row in await cur.fetchall()}


async def test_migrate_applies_every_version_once_and_then_nothing(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema(migrated=False)
    assert await migrate(database_url, schema) == [m.version for m in load_migrations()]
    assert await migrate(database_url, schema) == []
    assert await _tables(database_url, schema) == EXPECTED_TABLES
    conn = await connect(database_url, schema)
    try:
        assert await scalar(conn, "SELECT count(*) FROM schema_migrations") == len(load_migrations())
        assert await check_schema_version(conn) == latest_version()
    finally:
        await conn.close()


async def test_migrations_build_any_named_schema_without_touching_others(database_url: str, make_schema) -> None:  # noqa: F811
    first = await make_schema("one")
    second = await make_schema("two")
    assert await _tables(database_url, first) == EXPECTED_TABLES
    assert await _tables(database_url, second) == EXPECTED_TABLES


async def test_workers_starting_together_apply_each_migration_once(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema(migrated=False)
    results = await asyncio.gather(*(migrate(database_url, schema) for _ in range(4)))
    assert sorted(results, key=len) == [[], [], [], [m.version for m in load_migrations()]]


async def test_migrate_refuses_a_schema_newer_than_the_code(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema()
    conn = await connect(database_url, schema)
    try:
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (9999, 'from_the_future', 'x')"
        )
        with pytest.raises(SchemaTooNewError, match=r"version 9999, newer than this code knows"):
            await migrate(database_url, schema)
        with pytest.raises(SchemaTooNewError):
            await check_schema_version(conn)
    finally:
        await conn.close()


async def test_migrate_refuses_a_recorded_migration_that_was_edited(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema()
    conn = await connect(database_url, schema)
    try:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")
        with pytest.raises(MigrationChecksumError, match="must never be edited"):
            await migrate(database_url, schema)
    finally:
        await conn.close()


async def test_a_worker_refuses_an_unmigrated_schema(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema(migrated=False)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {schema}")
    conn = await connect(database_url, schema)
    try:
        with pytest.raises(SchemaTooOldError, match="bge migrate"):
            await check_schema_version(conn)
    finally:
        await conn.close()


async def test_schema_names_are_checked(database_url: str) -> None:
    with pytest.raises(ValueError, match="schema name"):
        await migrate(database_url, 'x"; DROP TABLE users; --')


def test_each_migration_belongs_to_one_kind_of_schema() -> None:
    projections, crawl = load_migrations(MigrationSet.PROJECTIONS), load_migrations(MigrationSet.CRAWL)
    assert [m.name for m in crawl] == ["crawl", "crawl_runs", "crawl_edges"]
    assert not {m.version for m in projections} & {m.version for m in crawl}
    assert latest_version(MigrationSet.CRAWL) == crawl[-1].version


async def test_a_crawl_schema_gets_the_crawl_tables_only(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema("crawl", migrated=False)
    crawl_versions = [m.version for m in load_migrations(MigrationSet.CRAWL)]
    assert await migrate(database_url, schema, MigrationSet.CRAWL) == crawl_versions
    assert await migrate(database_url, schema, MigrationSet.CRAWL) == []
    assert await _tables(database_url, schema) == CRAWL_TABLES
    conn = await connect(database_url, schema)
    try:
        assert await check_schema_version(conn, MigrationSet.CRAWL) == latest_version(MigrationSet.CRAWL)
        with pytest.raises(MigrationError, match="not a projections schema"):
            await check_schema_version(conn)
    finally:
        await conn.close()
    with pytest.raises(MigrationError, match="not a projections schema"):
        await migrate(database_url, schema)


async def test_a_projection_schema_refuses_the_crawl_migrations(database_url: str, make_schema) -> None:  # noqa: F811
    schema = await make_schema()
    with pytest.raises(MigrationError, match="not a crawl schema"):
        await migrate(database_url, schema, MigrationSet.CRAWL)


async def test_the_crawl_migration_adopts_tables_created_before_it(database_url: str, make_schema) -> None:  # noqa: F811
    """Workers before migration 0002 created the crawl tables themselves, without a ledger."""
    schema = await make_schema("crawl_old", migrated=False)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"CREATE SCHEMA {schema}")
        await conn.execute(f"CREATE TABLE {schema}.crawl_requests (id text PRIMARY KEY, kind text NOT NULL, "
                           "status text NOT NULL, detail text, finished_at timestamptz NOT NULL)")
        await conn.execute(f"INSERT INTO {schema}.crawl_requests VALUES ('r1', 'StartSnowball', 'done', NULL, now())")
    assert await migrate(database_url, schema, MigrationSet.CRAWL) == [m.version for m in load_migrations(MigrationSet.CRAWL)]
    conn = await connect(database_url, schema)
    try:
        assert await scalar(conn, "SELECT count(*) FROM crawl_requests") == 1
    finally:
        await conn.close()


async def test_the_migrations_are_the_one_declaration_of_the_writers_columns(database_url: str, make_schema) -> None:  # noqa: F811
    """Each table's columns live in three places: the migration SQL (the declaration), the
    writer's ``COLUMNS`` (names and types for ``json_to_recordset``) and the planner's row dicts.
    The writer's must be the table's own columns with the table's own types, and every row the
    planner makes for a table must carry exactly the writer's columns: a drift would write NULLs
    or drop values silently."""
    from domain import events as ev
    from projections.plan import plan_batch
    from projections.writer import COLUMNS
    from tests.integration.projection_support import NOW, Events

    schema = await make_schema()
    async with await connect(database_url, schema) as conn:
        cur = await conn.execute(
            "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped", (schema,))
        declared: dict[str, dict[str, str]] = {}
        for table, column, kind in await cur.fetchall():
            declared.setdefault(table, {})[column] = kind
    spelled = {"timestamptz": "timestamp with time zone"}  # format_type's long names
    for table, columns in COLUMNS.items():
        assert table in declared, f"writer.COLUMNS names {table}, which no migration creates"
        for column, kind in columns:
            found = declared[table].get(column)
            assert found == spelled.get(kind, kind), f"{table}.{column}: writer says {kind}, the migration {found}"

    e = Events()
    post = e.post("did:plc:a", "a #tag and a link", hashtags=["tag"], mentions=["did:plc:b"], links=["https://x.example/"], images=1)
    reply = e.post("did:plc:b", "a reply", reply_to=post[0].uri)
    quote = e.post("did:plc:c", "a quote", quote=post[0].uri)
    events = [*post, *reply, *quote, e.like("did:plc:b", post[0].uri), e.repost("did:plc:c", post[0].uri),
              e.follow("did:plc:b", "did:plc:a"), e.block("did:plc:c", "did:plc:a"),
              e.upsert(ev.ListUpserted, "did:plc:a", name="l", purpose="app.bsky.graph.defs#curatelist"),
              e.candidate("did:plc:a", "interests", 0.5, ["r"], actor="did:plc:a"),
              e.growth_action("did:plc:engine", "follow", "did:plc:a", "why"), e.activity("did:plc:a", NOW)]
    plan = plan_batch(events)
    seen = {table for table, rows in plan.rows.items() if rows}
    assert {"posts", "likes", "reposts", "blocks", "replies", "quotes", "mentions", "hashtags", "links",
            "media", "threads", "lists", "growth_actions"} <= seen, seen
    for table in seen:
        names = {name for name, _ in COLUMNS[table]}
        for row in plan.rows[table]:
            assert set(row) - {"event_id"} == names - {"event_id"} or set(row) == names, (table, set(row) ^ names)
    follows = [row for round_ in plan.follow_rounds for row in round_.rows]
    assert follows and all(set(row) - {"event_id"} == {name for name, _ in COLUMNS["follows"]} for row in follows)
    for table, rows, extra in (("candidates", plan.candidates, set()),
                               ("activity_events", plan.activity, {"iso_weekday", "hour"})):  # extra: for activity_patterns
        names = {name for name, _ in COLUMNS[table]}
        assert rows and all(set(row) - extra == names for row in rows), table
