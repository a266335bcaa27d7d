"""Rebuild: project into a fresh schema, then swap it in atomically."""

from __future__ import annotations

import psycopg
import pytest

from projections import apply_batch, connect, create_fresh_schema, create_pool, swap_schema
from projections.migrate import load_migrations
from projections.rebuild import SwapError
from tests.integration.projection_support import Events, Offsets, make_schema, scalar  # noqa: F401  (fixture)


async def test_a_rebuilt_schema_is_swapped_in_for_new_and_existing_connections(database_url, make_schema) -> None:  # noqa: F811
    e = Events()
    live = await make_schema("live")
    fresh = await make_schema("fresh", migrated=False)
    stale_events = [e.follow("did:plc:a", "did:plc:b")]
    replayed_events = [e.follow("did:plc:a", "did:plc:b"), e.follow("did:plc:c", "did:plc:b")]

    async with create_pool(database_url, live, min_size=1, max_size=1) as pool:
        async with pool.connection() as conn:
            await apply_batch(conn, "projector", Offsets().messages(stale_events))
            for _ in range(8):  # long enough for psycopg to prepare the statement server-side
                assert await scalar(conn, "SELECT count(*) FROM follows WHERE subject_did = %s", ("did:plc:b",)) == 1

        assert await create_fresh_schema(database_url, fresh) == [m.version for m in load_migrations()]  # [1, 3]
        rebuilder = await connect(database_url, fresh)
        await apply_batch(rebuilder, "projector", Offsets().messages(replayed_events))
        await rebuilder.close()

        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            retired = await swap_schema(admin, live, fresh)
        assert retired == f"{live}_retired"

        async with pool.connection() as conn:  # the same server session as before the swap
            assert await scalar(conn, "SELECT count(*) FROM follows WHERE subject_did = %s", ("did:plc:b",)) == 2
            assert await scalar(conn, "SELECT follower_count FROM users WHERE did = 'did:plc:b'") == 2
    old = await connect(database_url, retired)
    assert await scalar(old, "SELECT count(*) FROM follows") == 1
    await old.close()


async def test_swap_refuses_schemas_that_are_not_ready(database_url, make_schema) -> None:  # noqa: F811
    live = await make_schema("live")
    missing = await make_schema("missing", migrated=False)
    empty = await make_schema("empty", migrated=False)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
        await admin.execute(f"CREATE SCHEMA {empty}")
        with pytest.raises(SwapError, match="does not exist"):
            await swap_schema(admin, live, missing)
        with pytest.raises(SwapError, match="never migrated"):
            await swap_schema(admin, live, empty)
        with pytest.raises(SwapError, match="must differ"):
            await swap_schema(admin, live, live)
        fresh = await make_schema("fresh")
        await admin.execute(f"CREATE SCHEMA {live}_retired")
        with pytest.raises(SwapError, match="already exists"):
            await swap_schema(admin, live, fresh)
        assert await scalar(admin, "SELECT count(*) FROM pg_namespace WHERE nspname IN (%s, %s)", (live, fresh)) == 2
    with pytest.raises(SwapError, match="already exists"):
        await create_fresh_schema(database_url, live)
