"""The real Jetstream sample (152 events of 2026-07-04), through the domain pipeline, projects
to the hand-counted numbers."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime

import orjson

from domain.events import encode, partition_key
from domain.growth import StrategyConfig, StrategyState
from domain.records import is_collected
from domain.pipeline import process
from projections import Message, apply_batch, queries
from tests.conftest import SAMPLE_JSONL
from tests.integration.projection_support import conn, dump, make_schema, scalar, schema  # noqa: F401

PARTITIONS = 4
SAMPLE_NOW = datetime(2026, 7, 4, 14, 40, tzinfo=UTC)


def sample_lines() -> list[bytes]:
    return [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]


def sample_messages() -> list[Message]:
    """The sample's domain events as the collect agent would publish them: keyed by DID,
    partitioned by key, consecutive offsets per partition."""
    offsets = [0] * PARTITIONS
    messages = []
    for line in sample_lines():
        outcome = process(line, config=StrategyConfig(), state=StrategyState()).unwrap()
        for event in outcome.all_events:
            partition = zlib.crc32(partition_key(event)) % PARTITIONS
            messages.append(Message("growth.events", partition, offsets[partition], encode(event)))
            offsets[partition] += 1
    return messages


def uris(collection: str, operation: str) -> set[str]:
    found = set()
    for line in sample_lines():
        event = orjson.loads(line)
        commit = event.get("commit") or {}
        if commit.get("collection") == collection and commit.get("operation") == operation:
            found.add(f"at://{event['did']}/{collection}/{commit['rkey']}")
    return found


async def test_the_sample_projects_to_the_hand_counted_numbers(conn) -> None:  # noqa: F811
    messages = sample_messages()
    for start in range(0, len(messages), 64):
        await apply_batch(conn, "projector", messages[start : start + 64])

    # The one deleted post was written before the capture, and the three unfollows undo follows
    # made before it: they find no row, so they remove nothing and subtract nothing.
    assert not uris("app.bsky.feed.post", "delete") & uris("app.bsky.feed.post", "create")
    assert not uris("app.bsky.graph.follow", "delete") & uris("app.bsky.graph.follow", "create")
    counts = {
        table: await scalar(conn, f"SELECT count(*) FROM {table}")
        for table in ("likes", "posts", "reposts", "follows", "blocks", "replies", "quotes", "dead_letters")
    }
    assert counts == {
        "likes": 105, "posts": 17, "reposts": 15, "follows": 6, "blocks": 1, "replies": 8, "quotes": 0,
        "dead_letters": 0,
    }
    totals = await (await conn.execute(
        "SELECT sum(like_count), sum(repost_count), sum(reply_count) FROM engagement_counts"
    )).fetchone()
    assert totals == (105, 15, 8)
    users = await (await conn.execute(
        "SELECT sum(follower_count), sum(follow_count), sum(post_count), sum(likes_received) FROM users"
    )).fetchone()
    assert users == (6, 6, 17, 105)
    assert await scalar(conn, "SELECT sum(gained) - sum(lost) FROM follower_gains_hourly") == 6
    assert await scalar(conn, "SELECT count(*) FROM activity_events") == 148  # the collected commits
    assert await scalar(conn, "SELECT sum(events) FROM activity_patterns") == 148
    actors = {
        event["did"]
        for event in map(orjson.loads, sample_lines())
        if event["kind"] != "commit" or is_collected(event["commit"]["collection"])
    }
    assert await scalar(conn, "SELECT count(*) FROM users WHERE first_seen_at IS NOT NULL") == len(actors) == 147
    account = await (await conn.execute(
        "SELECT handle, active, status FROM users WHERE did = 'did:plc:hqvhxrowqbemo5e4wjnj6zao'"
    )).fetchone()
    assert account == (None, True, "active")  # its identity event carried no handle

    stats = await queries.network_stats(conn, now=SAMPLE_NOW, minutes=5)
    assert (stats["posts"], stats["follows"], stats["likes"]) == (17, 6, 105)
    assert stats["events_per_minute"] == 148 / 5


async def test_the_sample_delivered_twice_projects_the_same_as_once(conn) -> None:  # noqa: F811
    messages = sample_messages()
    await apply_batch(conn, "projector", messages)
    once = await dump(conn, skip=("schema_migrations", "projection_offsets"))
    # At-least-once upstream: the collect agent publishes the whole sample again, at new offsets.
    again = [m._replace(offset=m.offset + len(messages)) for m in messages]
    await apply_batch(conn, "projector", again)
    await apply_batch(conn, "projector", messages)  # and Kafka re-delivers the first copy too
    assert await dump(conn, skip=("schema_migrations", "projection_offsets")) == once
