"""Strategy state in the worker: popular content counted across partitions, and the Faust tables
that hold strategy state recovered after the worker is killed."""

from __future__ import annotations

import json
import subprocess

import orjson

from domain.growth import POPULAR_CONTENT
from streams.topology import Topic
from streams.local.corpus import tid
from tests.integration.ingest_support import kill, read_all, wait_until
from tests.integration.worker_support import (
    events_in, growth_events_at_least, produce_raw, start_worker, worker_settings,
)

AUTHOR = "did:plc:authorauthorauthorauthor"
POST_URI = f"at://{AUTHOR}/app.bsky.feed.post/3mptbyoeyc22k"


def like(n: int, time_us: int) -> bytes:
    """A like of the post by the n-th liker (distinct accounts, spread over all partitions)."""
    did = "did:plc:" + tid(1_700_000_000_000_000 + n * 7_919, n % 1000).ljust(24, "a")[:24]
    return orjson.dumps({
        "did": did, "time_us": time_us, "kind": "commit",
        "commit": {"rev": tid(time_us, 1), "operation": "create", "collection": "app.bsky.feed.like",
                   "rkey": tid(time_us, 2), "cid": "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i",
                   "record": {"$type": "app.bsky.feed.like", "createdAt": "2026-07-04T14:38:08.999Z",
                              "subject": {"uri": POST_URI,
                                          "cid": "bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza"}}},
    })


def popular_candidates(messages: list) -> list[dict]:
    values = events_in(messages)
    return [v for v in values if v["schema"] == "CandidateFound" and v["strategy"] == POPULAR_CONTENT]


async def test_likes_from_every_partition_add_up_and_survive_a_killed_worker(unique, tmp_path) -> None:
    strategies = tmp_path / "strategies.json"
    strategies.write_text(json.dumps({"popular_content": {"threshold": 30, "window_us": 3_600_000_000,
                                                           "bucket_us": 300_000_000}}))
    settings = worker_settings(unique, tmp_path, bge_strategies_file=strategies, bge_topic_partitions=4)
    start = 1_783_175_888_000_000
    likes = [like(n, start + n * 1000) for n in range(40)]
    # 20 likes: below the threshold of 30 on their own, whatever partition they landed on
    await produce_raw(settings, likes[:20])
    log = str(tmp_path / "worker.log")
    worker = start_worker(settings, log)
    try:
        await wait_until(lambda: _engagement_routed(settings, 20), 120, "first likes counted", interval=1)
        await wait_until(lambda: growth_events_at_least(settings, 20 * 3), 60, "first likes collected", interval=1)
    finally:
        kill(worker)  # SIGKILL: the windows must come back from the changelog
    assert popular_candidates(await read_all(settings, Topic.GROWTH_EVENTS)) == []
    partitions = {m.partition for m in await read_all(settings, Topic.JETSTREAM_EVENTS)}
    assert len(partitions) > 1, "the likes come from several partitions"
    await produce_raw(settings, likes[20:])
    worker = start_worker(settings, log)
    try:
        await wait_until(lambda: _popular_found(settings), 120, "popular content found", interval=1)
    finally:
        kill(worker, subprocess.signal.SIGTERM)
    (found,) = {c["id"]: c for c in popular_candidates(await read_all(settings, Topic.GROWTH_EVENTS))}.values()
    assert found["did"] == AUTHOR and found["subject_uri"] == POST_URI
    assert found["score"] >= 30 and "30 likes" in found["reasons"][0]


async def _engagement_routed(settings, n: int) -> bool:
    return len(await read_all(settings, Topic.GROWTH_ENGAGEMENT)) >= n


async def _popular_found(settings) -> bool:
    return bool(popular_candidates(await read_all(settings, Topic.GROWTH_EVENTS)))
