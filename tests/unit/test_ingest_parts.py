"""The ingest's pure parts: frame facts, the subscribe request, the duplicate filter, the in-flight bound."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from streams.ingest import codec
from streams.ingest.frames import BadFrame, event_bytes, read_facts
from streams.ingest.session import MAX_URL_LENGTH, DeliveryFailed, InFlight, subscribe_request
from streams.ingest.resume import RecentIdentities
from tests.conftest import SAMPLE_JSONL

SAMPLE = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line]


def test_every_sample_event_has_facts_and_a_distinct_identity() -> None:
    facts = [read_facts(line) for line in SAMPLE]
    assert len({f.identity for f in facts}) == len(SAMPLE)
    kinds = {f.kind for f in facts}
    assert kinds == {"commit", "identity", "account"}
    commits = [f for f in facts if f.kind == "commit"]
    assert all(f.collection and f.operation for f in commits)
    # one relay commit with three operations: three events sharing one rev, three identities
    revs = [orjson.loads(line)["commit"]["rev"] for line in SAMPLE if b'"kind":"commit"' in line]
    shared = [rev for rev in set(revs) if revs.count(rev) == 3]
    assert shared


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1,2]", "not_an_event"),
        (b'{"did":"did:plc:x","kind":"commit"}', "not_an_event"),
        (b'{"did":"did:plc:x","time_us":1,"kind":"commit","commit":{"rev":"r"}}', "not_an_event"),
        (b'{"did":"did:plc:x","time_us":1,"kind":"identity","identity":{}}', "not_an_event"),
        (b'{"did":"did:plc:x","time_us":1,"kind":"mystery"}', "not_an_event"),
        (b'{"did":"nope","time_us":1,"kind":"account","account":{"seq":1}}', "not_an_event"),
    ],
)
def test_frames_that_are_not_events_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadFrame) as caught:
        read_facts(raw)
    assert caught.value.reason == reason


def test_compressed_frames_are_decoded_with_a_bounded_output() -> None:
    assert event_bytes(codec.compress(SAMPLE[0]), compressed=True, max_bytes=10_000) == SAMPLE[0]
    with pytest.raises(BadFrame) as too_big:
        event_bytes(codec.compress(b"x" * 5000), compressed=True, max_bytes=1000)
    assert too_big.value.reason == "oversized"
    with pytest.raises(BadFrame) as corrupt:
        event_bytes(b"\x28\xb5\x2f\xfd garbage", compressed=True, max_bytes=1000)
    assert corrupt.value.reason == "decompress_failed"
    with pytest.raises(BadFrame):
        event_bytes(b"y" * 2000, compressed=False, max_bytes=1000)


def test_the_subscribe_url_carries_filters_cursor_and_compression() -> None:
    url, hello = subscribe_request("wss://host.example", collections=["app.bsky.feed.post", "app.bsky.graph.*"],
                                   wanted_dids=["did:plc:a"], cursor_us=123, compress=True, max_message_bytes=999)
    parts = urlsplit(url)
    assert parts.path == "/subscribe"
    query = parse_qs(parts.query)
    assert query == {"wantedCollections": ["app.bsky.feed.post", "app.bsky.graph.*"], "wantedDids": ["did:plc:a"],
                     "cursor": ["123"], "compress": ["true"], "maxMessageSizeBytes": ["999"]}
    assert hello is None


def test_a_did_list_too_long_for_a_url_goes_in_an_options_update_after_require_hello() -> None:
    dids = [f"did:plc:{i:024d}" for i in range(2000)]
    url, hello = subscribe_request("wss://host.example/subscribe", collections=["app.bsky.feed.post"],
                                   wanted_dids=dids, cursor_us=None, compress=False, max_message_bytes=1000)
    assert len(url) < MAX_URL_LENGTH
    query = parse_qs(urlsplit(url).query)
    assert query["requireHello"] == ["true"] and "wantedDids" not in query and "cursor" not in query
    update = orjson.loads(hello)
    assert update["type"] == "options_update"
    assert update["payload"]["wantedDids"] == dids
    assert update["payload"]["wantedCollections"] == ["app.bsky.feed.post"]


def test_recent_identities_drop_duplicates_and_stay_bounded() -> None:
    recent = RecentIdentities(max_entries=3)
    assert recent.add("a", 1) and not recent.add("a", 1)
    for identity, t in (("b", 2), ("c", 3), ("d", 4)):
        recent.add(identity, t)
    assert len(recent) == 3 and "a" not in recent
    recent.forget_older_than(4)
    assert len(recent) == 1 and "d" in recent


async def test_in_flight_waits_for_the_oldest_when_the_count_or_time_span_is_exceeded() -> None:
    loop = asyncio.get_running_loop()
    inflight = InFlight(max_count=2, max_span_us=100)
    first, second = loop.create_future(), loop.create_future()
    inflight.add(1_000, first)
    inflight.add(1_050, second)
    waiter = asyncio.create_task(inflight.make_room(1_060))  # count limit reached
    await asyncio.sleep(0.01)
    assert not waiter.done()
    first.set_result(None)
    assert await waiter == 1
    waiter = asyncio.create_task(inflight.make_room(1_200))  # span from 1_050 to 1_200 > 100
    await asyncio.sleep(0.01)
    assert not waiter.done()
    second.set_result(None)
    assert await waiter == 1


async def test_in_flight_reports_a_failed_delivery() -> None:
    inflight = InFlight(max_count=10, max_span_us=10**9)
    failed = asyncio.get_running_loop().create_future()
    failed.set_exception(TimeoutError("broker gone"))
    inflight.add(1, failed)
    with pytest.raises(DeliveryFailed):
        inflight.settle_done()
