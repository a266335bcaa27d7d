"""The whole worker (collect + project) against the real Kafka and Postgres."""

from __future__ import annotations

import asyncio
import random
import subprocess

from projections import apply_batch, connect
from streams.app import app_id
from streams.config import Settings
from streams.health.checks import group_lag
from streams.local import corpus
from streams.topology import Topic
from tests.integration.ingest_support import ROOT, end_offsets_total, kill, read_all, wait_until
from tests.integration.projection_support import dump, scalar
from tests.integration.worker_support import (
    SAMPLE_LINES, drop, expected_ids, growth_at_least, ids, produce_raw, projected_offsets, scratch_schema,
    start_worker, wait_projected, worker_settings,
)

IGNORED = ("schema_migrations",)


async def reference_dump(settings: Settings, schema: str) -> dict:
    """The database an uninterrupted projector makes of what growth.events holds: every message
    applied once, in one batch, with its real coordinates."""
    messages = await read_all(settings, Topic.GROWTH_EVENTS)
    async with await connect(settings.database_url, schema) as conn:
        await apply_batch(conn, "projector", messages)
        return await dump(conn, skip=IGNORED)


async def live_dump(settings: Settings, schema: str) -> dict:
    async with await connect(settings.database_url, schema) as conn:
        return await dump(conn, skip=IGNORED)


async def test_the_sample_through_the_worker_projects_the_hand_counted_numbers(unique, tmp_path) -> None:
    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema)
    await scratch_schema(settings, schema)
    try:
        await produce_raw(settings, SAMPLE_LINES)
        worker = start_worker(settings, str(tmp_path / "worker.log"))
        try:
            await wait_projected(settings, schema, 120)
        finally:
            kill(worker, subprocess.signal.SIGTERM)
        async with await connect(settings.database_url, schema) as conn:
            counts = {table: await scalar(conn, f"SELECT count(*) FROM {table}")
                      for table in ("posts", "likes", "reposts", "follows", "blocks", "replies")}
            # hand count of the sample: 17 post creates (the deleted post is not one of them),
            # 105 likes, 15 reposts, 6 follows (the 3 unfollows target follows older than the capture),
            # 1 block, 8 of the posts are replies
            assert counts == {"posts": 17, "likes": 105, "reposts": 15, "follows": 6, "blocks": 1, "replies": 8}
            seen = await scalar(conn, "SELECT count(*) FROM users WHERE last_seen_at IS NOT NULL")
            assert seen == len(_accounts_seen(SAMPLE_LINES))
            assert await scalar(conn, "SELECT count(*) FROM dead_letters") == 0
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"ref_{unique}")


async def _projected_past(settings: Settings, schema: str, mark: int) -> bool:
    return await projected_offsets(settings, schema) >= mark


def _accounts_seen(lines: list[bytes]) -> set[str]:
    """Accounts whose events the domain does not skip (the status records are not collected)."""
    from domain.growth import StrategyConfig, StrategyState
    from domain.pipeline import process

    outcomes = [process(line, config=StrategyConfig(), state=StrategyState()).unwrap() for line in lines]
    return {o.source.did for o in outcomes if o.skipped is None}


async def _reference(settings: Settings, unique: str) -> dict:
    reference = await scratch_schema(settings, f"ref_{unique}")
    return await reference_dump(settings, reference)


async def test_sigkill_of_the_worker_between_writing_and_committing_leaves_the_database_as_one_clean_run(unique, tmp_path) -> None:
    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema, projector_batch_size=200)
    await scratch_schema(settings, schema)
    rng = random.Random(99)
    try:
        await produce_raw(settings, list(corpus.generate(8000, seed=41, accounts=1500)))
        log = str(tmp_path / "worker.log")
        # each kill lands once the projection passed a mark (of about 8,000 messages: a raw event's
        # domain events go as one), at a random moment after it: mid-stream however fast the worker projects
        for mark in (300, 1_500, 3_000):
            worker = start_worker(settings, log)
            await wait_until(lambda mark=mark: _projected_past(settings, schema, mark), 120, f"projecting past {mark}",
                             interval=0.05)
            await asyncio.sleep(rng.uniform(0.0, 0.3))
            kill(worker)  # SIGKILL: Postgres committed batches whose Kafka offsets were never committed
        assert await projected_offsets(settings, schema) < await end_offsets_total(settings, Topic.GROWTH_EVENTS) \
            or await end_offsets_total(settings, Topic.GROWTH_EVENTS) < 6_000
        worker = start_worker(settings, log)
        try:
            await wait_projected(settings, schema, 240)
        finally:
            kill(worker, subprocess.signal.SIGTERM)
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"ref_{unique}")


async def test_stopping_postgres_for_30_seconds_mid_stream_ends_with_the_same_database(unique, tmp_path) -> None:
    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema, projector_batch_size=200)
    await scratch_schema(settings, schema)
    try:
        await produce_raw(settings, list(corpus.generate(8000, seed=43, accounts=1500)))
        worker = start_worker(settings, str(tmp_path / "worker.log"))
        try:
            await wait_until(lambda: projected_offsets(settings, schema), 120, "projecting", interval=0.5)
            await asyncio.to_thread(subprocess.run, [str(ROOT / "infra/stack"), "down", "postgres"], check=True)
            try:
                await asyncio.sleep(30)
                assert worker.poll() is None, "the worker survives a Postgres outage"
            finally:
                await asyncio.to_thread(subprocess.run, [str(ROOT / "infra/stack"), "up", "postgres"], check=True)
            await wait_projected(settings, schema, 240)
        finally:
            kill(worker, subprocess.signal.SIGTERM)
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"ref_{unique}")


async def test_a_rebuild_from_replay_equals_the_live_projection_and_the_worker_carries_on(unique, tmp_path) -> None:
    from rich.console import Console

    from streams.cli.rebuild import rebuild

    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema)
    await scratch_schema(settings, schema)
    lines = list(corpus.generate(3000, seed=47, accounts=800))
    try:
        await produce_raw(settings, SAMPLE_LINES + lines[:1500])
        worker = start_worker(settings, str(tmp_path / "worker.log"))
        try:
            await wait_projected(settings, schema, 180)
            before = await live_dump(settings, schema)
            retired = await rebuild(settings, Console(file=open(tmp_path / "rebuild.out", "w")))  # noqa: SIM115
            assert retired == f"{schema}_retired"
            assert await live_dump(settings, schema) == before  # identical to the live one
            await produce_raw(settings, lines[1500:])  # the live projector carries on in the new schema
            await wait_projected(settings, schema, 180)
        finally:
            kill(worker, subprocess.signal.SIGTERM)
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"{schema}_retired", f"ref_{unique}")


async def test_stages_split_over_two_workers_make_the_same_database_as_one_worker(unique, tmp_path) -> None:
    # WORKER_AGENTS: one process collects and counts popularity, another projects, each its own group
    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema)
    collecting = settings.model_copy(update={"worker_agents": ["collect", "popularity"]})
    projecting = settings.model_copy(update={"worker_agents": ["project"]})
    assert app_id(collecting) == f"{app_id(settings)}-collect-popularity"
    assert app_id(projecting) == f"{app_id(settings)}-project"
    await scratch_schema(settings, schema)
    try:
        await produce_raw(settings, list(corpus.generate(6000, seed=5, accounts=800)))
        workers = [start_worker(collecting, str(tmp_path / "collect.log")),
                   start_worker(projecting, str(tmp_path / "project.log"))]
        try:
            await wait_projected(settings, schema, 240)
        finally:
            for worker in workers:
                kill(worker, subprocess.signal.SIGTERM)
        raw = settings.topic(Topic.JETSTREAM_EVENTS)
        lag, committed = await group_lag(settings, raw, app_id(collecting))
        assert committed and not any(lag.values())  # the collecting group read all of the raw topic ...
        assert (await group_lag(settings, raw, app_id(projecting)))[1] is False  # ... the projecting one none of it
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"ref_{unique}")


async def test_a_worker_joining_and_another_leaving_mid_stream_lose_and_duplicate_nothing(unique, tmp_path) -> None:
    # a rebalance drains the batch in flight and commits before the partitions move, and skips
    # what was fetched but not processed: the next owner starts exactly where the last one stopped
    schema = f"pipe_{unique}"
    settings = worker_settings(unique, tmp_path, db_schema=schema, bge_topic_partitions=4)
    lines = list(corpus.generate(24_000, seed=17, accounts=3000))
    await scratch_schema(settings, schema)
    try:
        await produce_raw(settings, lines[:8_000])
        a = start_worker(settings, str(tmp_path / "a.log"))
        workers = [a]
        try:
            await wait_until(lambda: growth_at_least(settings, 700), 120, "the first worker collecting", interval=0.2)
            workers.append(start_worker(settings, str(tmp_path / "b.log")))  # b joins mid-stream
            await produce_raw(settings, lines[8_000:16_000])
            await wait_until(lambda: growth_at_least(settings, 10_000), 180, "both collecting", interval=0.2)
            kill(a, subprocess.signal.SIGTERM)  # a leaves mid-stream
            await produce_raw(settings, lines[16_000:])
            await wait_projected(settings, schema, 300)
        finally:
            for worker in workers:
                if worker.poll() is None:
                    kill(worker, subprocess.signal.SIGTERM)
        sent = ids(await read_all(settings, Topic.GROWTH_EVENTS))
        assert [event_id for event_id, count in sent.items() if count > 1] == []  # nothing sent twice
        collected = await expected_ids(lines)
        assert set(collected) <= set(sent)  # nothing lost
        raw = settings.topic(Topic.JETSTREAM_EVENTS)
        lag, committed = await group_lag(settings, raw, app_id(settings))
        assert committed and not any(lag.values())
        assert await live_dump(settings, schema) == await _reference(settings, unique)
    finally:
        await drop(settings, schema, f"ref_{unique}")
