"""The popularity stage dead-letters engagement it cannot decode, like collect and project do."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from domain.growth import PopularContentConfig, StrategyConfig
from streams.bench.throughput import Consumed, MemoryState
from streams.kafka.deadletter import read_dead_letter
from streams.stages.collect import Collector
from streams.stages.popularity import Popularity
from tests.unit.state_support import RecordingState

SAMPLE = Path(__file__).resolve().parents[2] / "streams/data/sample-2026-07-04.jsonl"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    def add(self, topic: str, key: bytes | None, value: bytes, headers: Any = (), partition: int | None = None) -> None:
        self.sent.append((topic, key, value, list(headers)))


def popularity() -> Popularity:
    return Popularity(config=PopularContentConfig(threshold=1.0), windows=MemoryState(), engagement_topic="eng",
                      events_topic="events", dlq_topic="dlq")


async def engagement_values(lines: list[bytes] | None = None) -> list[bytes]:
    """Engagement messages as the collect stage routes them to growth.engagement, of the likes
    among ``lines`` (by default the recorded sample's)."""
    stage = popularity()
    collector = Collector(config=StrategyConfig(), accounts=MemoryState(), events_topic="events", dlq_topic="dlq",
                          route=stage.route)
    outbox = Outbox()
    likes = [Consumed("raw", 0, offset, line)
             for offset, line in enumerate(SAMPLE.read_bytes().splitlines() if lines is None else lines)
             if b'"app.bsky.feed.like"' in line and b'"create"' in line]
    await collector.handle_batch(likes, [0], outbox)
    return [value for topic, _, value, _ in outbox.sent if topic == "eng"]


async def test_an_undecodable_engagement_is_dead_lettered_with_its_reason_and_coordinates(caplog) -> None:
    stage = popularity()
    await stage.windows.ensure(3)
    outbox = Outbox()
    await stage.observe_batch([Record("growth.engagement", 3, 41, b'{"schema":"LikeAdded","version":1,"broken')], [3], outbox)
    ((topic, key, value, headers),) = outbox.sent
    assert (topic, key, value) == ("dlq", None, b'{"schema":"LikeAdded","version":1,"broken')
    letter = read_dead_letter(headers)
    assert letter.reason == "invalid_json" and letter.source == "kafka"
    assert (letter.topic, letter.partition, letter.offset) == ("growth.engagement", 3, 41)
    assert stage.rejections == {"invalid_json": 1}
    assert stage.windows.view(3) == {}  # nothing counted


async def test_decodable_engagement_is_counted_and_nothing_is_dead_lettered() -> None:
    values = await engagement_values()
    assert values, "the sample has likes"
    stage = popularity()
    await stage.windows.ensure(0)
    outbox = Outbox()
    await stage.observe_batch([Record("growth.engagement", 0, offset, value) for offset, value in enumerate(values)], [0], outbox)
    assert not [sent for sent in outbox.sent if sent[0] == "dlq"]
    assert stage.rejections == {}
    assert len(stage.windows.view(0)) >= 1


@pytest.mark.parametrize("value", [b"", b"[]", b'{"schema":"NoSuchEvent","version":1}'])
async def test_every_kind_of_rejection_is_a_dead_letter(value: bytes) -> None:
    stage = popularity()
    await stage.windows.ensure(0)
    outbox = Outbox()
    await stage.observe_batch([Record("growth.engagement", 0, 0, value)], [0], outbox)
    assert [sent[0] for sent in outbox.sent] == ["dlq"]
    assert sum(stage.rejections.values()) == 1


async def test_windows_that_event_time_left_behind_are_forgotten_with_a_tombstone() -> None:
    from domain.growth import EngagementBucket, EngagementWindow, encode_state

    config = PopularContentConfig(window_us=3_600_000_000, bucket_us=300_000_000)
    windows = RecordingState()
    stage = Popularity(config=config, windows=windows, engagement_topic="eng", events_topic="events", dlq_topic="dlq")
    await windows.ensure(0)
    now = 10 * config.window_us
    old = EngagementWindow(author_did="did:plc:a", buckets=(EngagementBucket(start_us=now - 2 * config.window_us, likes=3),))
    fresh = EngagementWindow(author_did="did:plc:b", buckets=(EngagementBucket(start_us=now - config.bucket_us, likes=1),))
    old_but_reported_lately = EngagementWindow(author_did="did:plc:c", buckets=(EngagementBucket(start_us=now - 2 * config.window_us, likes=9),),
                                               reported_at_us=now - config.bucket_us)
    for uri, window in (("at://old", old), ("at://fresh", fresh), ("at://reported", old_but_reported_lately)):
        windows.view(0)[uri] = encode_state(window)
    windows.view(0)["at://garbage"] = b"not a window"
    stage.expire(0, now, Outbox())
    assert sorted(windows.changelog) == [(0, "at://garbage", None), (0, "at://old", None)]
    assert set(windows.view(0)) == {"at://fresh", "at://reported"} and stage.expired == 2
    # at most one sweep per bucket of event time
    windows.view(0)["at://old"] = encode_state(old)
    stage.expire(0, now + config.bucket_us - 1, Outbox())
    assert "at://old" in windows.view(0)
    stage.expire(0, now + config.bucket_us, Outbox())
    assert "at://old" not in windows.view(0)


async def test_a_forgotten_window_decides_like_the_old_one_would() -> None:
    """Forgetting changes no decision: the same stream through a stage that expires windows and
    through the pure domain function without expiry yields the same candidates."""
    from domain.growth import popular_content
    from domain.events import decode
    from streams.stages.popularity import _collected

    values = await engagement_values()
    config = PopularContentConfig(threshold=1.0, window_us=60_000_000, bucket_us=10_000_000)
    stage = Popularity(config=config, windows=MemoryState(), engagement_topic="eng", events_topic="events",
                       dlq_topic="dlq")
    await stage.windows.ensure(0)
    outbox = Outbox()
    for offset, value in enumerate(values):
        await stage.observe_batch([Record("growth.engagement", 0, offset, value)], [0], outbox)
    with_expiry = [v for topic, _, v, _ in outbox.sent if topic == "events"]
    posts: dict[str, Any] = {}
    without_expiry = 0
    for value in values:
        event = decode(value).unwrap()
        changed, decision = popular_content(posts, _collected(event), event.source.time_us, config)
        posts.update(changed)
        without_expiry += len(decision.value_or(()))
    assert len(with_expiry) == without_expiry > 0


async def test_a_batch_writes_each_changed_window_once_and_decides_like_one_engagement_at_a_time() -> None:
    """Windows are written back once per post per batch (the last value), and a batch decides,
    and leaves the windows, exactly as the same engagements one batch each would. The generated
    corpus, whose popular posts are liked many times (the recorded sample's likes are of distinct
    posts)."""
    from streams.local import corpus

    values = await engagement_values(list(corpus.generate(3_000, seed=7, accounts=600)))
    config = PopularContentConfig(threshold=3.0)
    records = [Record("growth.engagement", 0, offset, value) for offset, value in enumerate(values)]

    async def run(batches: list[list[Record]]) -> tuple[RecordingState, list[bytes]]:
        windows = RecordingState()
        stage = Popularity(config=config, windows=windows, engagement_topic="eng", events_topic="events", dlq_topic="dlq")
        await windows.ensure(0)
        outbox = Outbox()
        for batch in batches:
            await stage.observe_batch(batch, [0], outbox)
        return windows, [v for topic, _, v, _ in outbox.sent if topic == "events"]

    batched, batched_found = await run([records])
    one_by_one, one_by_one_found = await run([[record] for record in records])
    assert batched.view(0) == one_by_one.view(0) and batched_found == one_by_one_found
    assert batched_found, "the sample has posts liked often enough to be candidates"
    written = [key for _, key, _ in batched.changelog]
    assert len(written) == len(set(written)) == len(batched.view(0)) < len(one_by_one.changelog)
    assert all(value == batched.view(0)[key] for _, key, value in batched.changelog)
