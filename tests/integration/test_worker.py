"""The Faust worker against the real Kafka: domain events out, dead letters, crashes, rebalances."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from collections import Counter

import orjson

from streams.config import Settings
from streams.local import corpus
from streams.topology import Topic
from tests.integration.ingest_support import kill, read_all, wait_until
from tests.integration.worker_support import (
    SAMPLE_LINES, events_in, expected_ids, growth_at_least, growth_count, growth_events_at_least, ids, produce_raw,
    start_worker, worker_settings,
)

# what the sample yields, by domain event type (hand-checked against the sample's counts)
SAMPLE_EXPECTED = {
    "LikeAdded": 105, "PostCreated": 17, "PostEnriched": 17, "RepostAdded": 15, "FollowAdded": 6,
    "FollowRemoved": 3, "BlockAdded": 1, "PostDeleted": 1, "HandleChanged": 1, "AccountStatusChanged": 1,
}


def schemas(messages: list) -> Counter[str]:
    return Counter(event["schema"] for event in events_in(messages))


async def test_the_sample_yields_the_expected_domain_events_and_a_malformed_event_a_dead_letter(unique, tmp_path) -> None:
    settings = worker_settings(unique, tmp_path)
    malformed = b'{"did":"did:plc:abc","time_us":1783175888085434,"kind":"commit","commit":{"rev":"3mptbypluud2a","operation":"create","collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":{"$type":"app.bsky.feed.like"}}}'
    await produce_raw(settings, SAMPLE_LINES + [malformed])
    worker = start_worker(settings, str(tmp_path / "worker.log"))
    try:
        await wait_until(lambda: _dlq_count_is(settings, 1), 90, "dead letter written")
        await wait_until(lambda: growth_events_at_least(settings, sum(SAMPLE_EXPECTED.values())), 60, "domain events")
        await asyncio.sleep(2)  # nothing more arrives
    finally:
        kill(worker, subprocess.signal.SIGTERM)
    events = await read_all(settings, Topic.GROWTH_EVENTS)
    counts = schemas(events)
    for schema, expected in SAMPLE_EXPECTED.items():
        assert counts[schema] == expected, schema
    assert counts["UserSeen"] > 0 and counts["ActivityRecorded"] == 148
    assert set(ids(events).values()) == {1}
    for message in events:  # one source event's events with one key (a group), or one event: keyed by their did
        document = orjson.loads(message.value)
        members = document["events"] if document["schema"] == "DomainEvents" else [document]
        assert members and {event["did"].encode() for event in members} == {message.key}
        assert dict(message.headers)["schema"].decode().split(",") == [event["schema"] for event in members]
    assert len(events) < sum(counts.values())  # most raw events made several domain events, sent together
    (dead,) = await read_all(settings, Topic.GROWTH_DLQ)
    headers = dict(dead.headers)
    assert dead.value == malformed
    assert headers["error_reason"] == b"invalid_record"
    assert headers["source_topic"] == settings.topic(Topic.JETSTREAM_EVENTS).encode()
    assert int(headers["source_offset"]) >= 0 and headers["error_message"]


async def _dlq_count_is(settings: Settings, n: int) -> bool:
    return len(await read_all(settings, Topic.GROWTH_DLQ)) >= n


async def test_killing_the_worker_mid_stream_loses_no_domain_event_and_duplicates_keep_their_ids(unique, tmp_path) -> None:
    settings = worker_settings(unique, tmp_path)
    lines = list(corpus.generate(15_000, seed=21, accounts=3000))
    await produce_raw(settings, lines)
    expected = await expected_ids(lines)
    log = str(tmp_path / "worker.log")
    worker = start_worker(settings, log)
    await wait_until(lambda: growth_at_least(settings, 1000), 120, "worker processing", interval=1)
    kill(worker)  # SIGKILL mid-stream
    assert await growth_count(settings) < len(lines), "killed before the end"
    worker = start_worker(settings, log)
    try:
        await wait_until(lambda: _all_ids_present(settings, expected), 240, "all domain events", interval=2)
    finally:
        kill(worker, subprocess.signal.SIGTERM)
    produced = ids(await read_all(settings, Topic.GROWTH_EVENTS))
    candidates = {event["id"] for event in events_in(await read_all(settings, Topic.GROWTH_EVENTS))
                  if event["schema"] == "CandidateFound"}
    assert set(produced) - candidates == set(expected)


async def _all_ids_present(settings: Settings, expected: Counter[str]) -> bool:
    """Cheap until the topic holds a message for most raw events (about one each); then checks the ids."""
    if await growth_count(settings) < sum(expected.values()) // 4:
        return False
    return set(expected) <= set(ids(await read_all(settings, Topic.GROWTH_EVENTS)))


async def test_two_workers_share_the_partitions_and_one_takes_over_when_the_other_stops(unique, tmp_path) -> None:
    settings = worker_settings(unique, tmp_path, bge_topic_partitions=4)
    first_half = list(corpus.generate(10_000, seed=31, accounts=2000))
    await produce_raw(settings, first_half[:5_000])
    a = start_worker(settings, str(tmp_path / "a.log"), LOG_LEVEL="INFO")  # the source logs its assignments
    b = start_worker(settings, str(tmp_path / "b.log"), LOG_LEVEL="INFO")
    every = 3 * 4  # the source's topics (raw, engagement, growth events) x 4 partitions
    try:
        # both hold a share of the partitions at once, and both process
        await wait_until(lambda: all(0 < (assigned(tmp_path / f"{w}.log") or [0])[-1] < every for w in "ab"),
                         120, "the partitions shared by both workers", interval=1)
        await wait_until(lambda: growth_at_least(settings, 400), 120, "processing", interval=1)
        kill(a, subprocess.signal.SIGTERM)  # b takes over a's partitions
        await wait_until(lambda: (assigned(tmp_path / "b.log") or [0])[-1] == every, 60, "b owns every partition",
                         interval=1)
        await produce_raw(settings, first_half[5_000:])
        expected = await expected_ids(first_half)
        await wait_until(lambda: _all_ids_present(settings, expected), 240, "union complete", interval=2)
    finally:
        for worker in (a, b):
            if worker.poll() is None:
                kill(worker, subprocess.signal.SIGTERM)
    assert sum(assigned(tmp_path / "a.log")) > 0 and sum(assigned(tmp_path / "b.log")) > 0


def assigned(log: Path) -> list[int]:
    """How many partitions each assignment of the worker's batched source gave it, in order."""
    if not log.exists():
        return []
    entries = [orjson.loads(line) for line in log.read_bytes().splitlines() if line.startswith(b"{")]
    return [entry["partitions"] for entry in entries
            if entry.get("message") == "partitions assigned" and entry.get("context") == "worker.source"]
