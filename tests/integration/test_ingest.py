"""The ingest against the real Kafka and the local Jetstream server: lossless, resumable, exactly once."""

from __future__ import annotations

import asyncio
import random
import subprocess

import orjson
import pytest

from streams.topology import Topic
from streams.local import corpus
from streams.local.jetstream_server import JetstreamServer
from tests.conftest import SAMPLE_JSONL, ROOT
from tests.integration.ingest_support import (
    count_in,
    identities,
    ingest_settings,
    kill,
    read_all,
    running_ingest,
    start_bge,
    wait_until,
)

SAMPLE_LINES = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]


@pytest.mark.parametrize("compress", [True, False], ids=["zstd", "plain"])
async def test_the_real_sample_arrives_in_the_raw_topic_byte_for_byte_once_each(unique: str, compress: bool) -> None:
    async with JetstreamServer(SAMPLE_JSONL) as server:
        settings = ingest_settings(unique, [server.url], jetstream_compress=compress)
        async with running_ingest(settings):
            await wait_until(lambda: _count_is(settings, len(SAMPLE_LINES)), 60, "sample ingested")
    messages = await read_all(settings, Topic.JETSTREAM_EVENTS)
    assert sorted(m.value for m in messages) == sorted(SAMPLE_LINES)
    for message in messages:
        event = orjson.loads(message.value)
        assert message.key == event["did"].encode()
        headers = dict(message.headers)
        assert headers["kind"] == event["kind"].encode()
        assert int(headers["time_us"]) == event["time_us"]
        if event["kind"] == "commit":
            assert headers["collection"] == event["commit"]["collection"].encode()
            assert headers["operation"] == event["commit"]["operation"].encode()
    # one account's events stay in one partition, in the order they were received
    by_did: dict[bytes, set[int]] = {}
    for message in messages:
        by_did.setdefault(message.key, set()).add(message.partition)
    assert all(len(parts) == 1 for parts in by_did.values())
    assert await count_in(settings, Topic.JETSTREAM_DLQ) == 0


async def _count_is(settings, expected: int) -> bool:
    return await count_in(settings, Topic.JETSTREAM_EVENTS) >= expected


async def test_a_restart_resumes_from_kafka_and_produces_nothing_twice(unique: str) -> None:
    async with JetstreamServer(SAMPLE_JSONL) as server:
        settings = ingest_settings(unique, [server.url])
        async with running_ingest(settings):
            await wait_until(lambda: _count_is(settings, len(SAMPLE_LINES)), 60, "sample ingested")
        async with running_ingest(settings) as holder:
            ingest = holder["ingest"]
            await wait_until(lambda: ingest.stats.events_in > 0, 30, "re-delivered overlap received")
            await asyncio.sleep(1.0)
        assert ingest.stats.duplicates == ingest.stats.events_in > 0
    counts = identities(await read_all(settings, Topic.JETSTREAM_EVENTS))
    assert len(counts) == len(SAMPLE_LINES) and set(counts.values()) == {1}


async def test_every_kind_of_bad_frame_is_dead_lettered_with_its_reason_and_the_stream_goes_on(unique: str) -> None:
    events = list(corpus.generate(400, seed=7, accounts=50))
    async with JetstreamServer(events[:200], rate=2000) as server:
        settings = ingest_settings(unique, [server.url], jetstream_max_message_bytes=50_000)
        async with running_ingest(settings) as holder:
            await server.wait_connected()
            server.send_malformed()
            server.send_not_event()
            server.send_oversized(200_000)
            server.send_bad_compression()
            server.append(events[200:])
            await wait_until(lambda: _count_is(settings, 400), 60, "all good events ingested")
            await wait_until(lambda: holder["ingest"].stats.dead_lettered >= 4, 30, "bad frames dead-lettered")
    dead = await read_all(settings, Topic.JETSTREAM_DLQ)
    reasons = sorted(dict(m.headers)["error_reason"].decode() for m in dead)
    assert reasons == ["decompress_failed", "invalid_json", "not_an_event", "oversized"]
    for message in dead:
        headers = dict(message.headers)
        assert headers["error_class"] == b"BadFrame"
        assert headers["error_message"] and headers["failed_at"] and headers["endpoint"]
        assert message.value  # the original bytes, as received
    counts = identities(await read_all(settings, Topic.JETSTREAM_EVENTS))
    assert len(counts) == 400 and set(counts.values()) == {1}


async def test_forced_disconnects_and_a_host_switch_lose_nothing_and_duplicate_nothing(unique: str) -> None:
    events = list(corpus.generate(6000, seed=11, accounts=500))
    # host B's clock runs 1.5 s ahead of host A's, as different Jetstream instances do
    async with JetstreamServer(events, rate=1500) as a, JetstreamServer(events, rate=3000, time_offset_us=1_500_000) as b:
        settings = ingest_settings(unique, [a.url, b.url], jetstream_stall_timeout_seconds=3)
        async with running_ingest(settings) as holder:
            ingest = holder["ingest"]
            await wait_until(lambda: ingest.stats.events_in > 1000, 30, "streaming from A")
            a.drop_connections()  # 1006, no close frame
            await wait_until(lambda: ingest.stats.reconnects >= 1 and ingest.stats.events_in > 2500, 30, "resumed")
            a.drop_connections()
            await asyncio.sleep(0.5)
            await a.stop()  # host A goes away: fail over to B
            await wait_until(lambda: _count_is(settings, 6000), 90, "all events ingested through B")
            assert ingest.stats.endpoint == b.url
    counts = identities(await read_all(settings, Topic.JETSTREAM_EVENTS))
    assert len(counts) == 6000 and set(counts.values()) == {1}


async def test_a_cursor_older_than_the_servers_retention_is_reported_as_a_gap(unique: str) -> None:
    early = list(corpus.generate(100, seed=3, accounts=20, start_time_us=1_800_000_000_000_000))
    # the service retained only events from 10 minutes later on
    later_start = 1_800_000_000_000_000 + 600_000_000
    later = list(corpus.generate(100, seed=4, accounts=20, start_time_us=later_start))
    async with JetstreamServer(early) as server:
        settings = ingest_settings(unique, [server.url])
        async with running_ingest(settings):
            await wait_until(lambda: _count_is(settings, 100), 60, "early events ingested")
    async with JetstreamServer(later) as server:
        settings = ingest_settings(unique, [server.url])
        async with running_ingest(settings) as holder:
            await wait_until(lambda: _count_is(settings, 200), 60, "later events ingested")
        assert holder["ingest"].stats.gaps == 1
    ops = await read_all(settings, Topic.JETSTREAM_OPS)
    assert len(ops) == 1
    gap = orjson.loads(ops[0].value)
    assert gap["type"] == "gap"
    assert gap["first_time_us"] > gap["cursor_us"]
    assert 590 < gap["gap_seconds"] < 610


async def test_sigkill_at_random_points_while_streaming_100k_events_leaves_each_exactly_once(unique: str, tmp_path) -> None:
    total = 100_000
    events = list(corpus.generate(total, seed=5, accounts=20_000))
    rng = random.Random(1234)
    async with JetstreamServer(events, rate=8000) as server:
        settings = ingest_settings(unique, [server.url])
        log = str(tmp_path / "ingest.log")
        for _ in range(4):
            process = start_bge(["ingest"], settings, log)
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            assert process.poll() is None, open(log).read()[-3000:]
            kill(process)
        before_last_start = await count_in(settings, Topic.JETSTREAM_EVENTS)
        assert 0 < before_last_start < total, "the kills happened mid-stream"
        process = start_bge(["ingest"], settings, log)
        try:
            await wait_until(lambda: _count_is(settings, total), 240, "all events ingested", interval=2)
        finally:
            kill(process, subprocess.signal.SIGTERM)
    counts = identities(await read_all(settings, Topic.JETSTREAM_EVENTS))
    assert len(counts) == total
    assert [i for i, n in counts.items() if n > 1] == []


async def test_stopping_kafka_for_30_seconds_mid_stream_loses_nothing(unique: str) -> None:
    events = list(corpus.generate(20_000, seed=9, accounts=2000))
    async with JetstreamServer(events, rate=400) as server:
        settings = ingest_settings(unique, [server.url], ingest_delivery_timeout_seconds=180)
        async with running_ingest(settings) as holder:
            ingest = holder["ingest"]
            await wait_until(lambda: ingest.stats.events_in > 2000, 30, "streaming")
            await asyncio.to_thread(subprocess.run, [str(ROOT / "infra/stack"), "down", "kafka"], check=True)
            try:
                await asyncio.sleep(30)
            finally:
                await asyncio.to_thread(subprocess.run, [str(ROOT / "infra/stack"), "up", "kafka"], check=True)
            server.rate = None  # let the rest through at full speed
            await wait_until(lambda: _count_is(settings, 20_000), 180, "all events ingested", interval=2)
    counts = identities(await read_all(settings, Topic.JETSTREAM_EVENTS))
    assert len(counts) == 20_000 and set(counts.values()) == {1}
