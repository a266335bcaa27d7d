"""The local Jetstream server speaks the real v1 /subscribe wire and injects faults on command."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
import websockets
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, ConnectionClosedError, InvalidStatus

from streams.ingest import codec
from streams.local import corpus
from streams.local.jetstream_server import JetstreamServer, SubscriberOptions, parse_options_update, parse_subscribe_query

from tests.conftest import SAMPLE_JSONL as SAMPLE  # noqa: E402 - the bundled real recording
SAMPLE_LINES = [line.rstrip(b"\n") for line in SAMPLE.open("rb")]
SAMPLE_EVENTS = [orjson.loads(line) for line in SAMPLE_LINES]
GENERATED = list(corpus.generate(400, seed=11, accounts=50))  # time_us strictly increasing
GENERATED_TIMES = [orjson.loads(line)["time_us"] for line in GENERATED]

pytestmark = pytest.mark.timeout(30)


def connect(url: str, **kwargs: object) -> websockets.asyncio.client.connect:
    # max_queue=None: a test that stops reading early still sees the close frame promptly
    # (with a bounded queue, websockets stops reading and the close handshake times out)
    options: dict[str, object] = {
        "compression": None,
        "max_size": 4 * 1024 * 1024,
        "open_timeout": 5,
        "close_timeout": 2,
        "max_queue": None,
    }
    options.update(kwargs)
    return websockets.connect(url, **options)  # type: ignore[arg-type]


async def receive(ws: ClientConnection, n: int, timeout: float = 5.0) -> list[bytes]:
    """The next n frames as bytes (decompressed when binary)."""
    out = []
    async with asyncio.timeout(timeout):
        for _ in range(n):
            frame = await ws.recv(decode=False)
            out.append(frame)
    return out


async def receive_json(ws: ClientConnection, n: int, timeout: float = 5.0) -> list[dict]:
    return [orjson.loads(frame) for frame in await receive(ws, n, timeout)]


async def assert_silent(ws: ClientConnection, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            await ws.recv()


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    body = await reader.readexactly(length)
    writer.close()
    return status, body


def expected_filtered(lines: list[bytes], keep) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [line for line in lines if keep(orjson.loads(line))]


# ------------------------------------------------------------------ serving the real sample


async def test_serves_the_real_sample_byte_for_byte_in_text_frames() -> None:
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url) as ws:
        frames = [await ws.recv() for _ in range(len(SAMPLE_LINES))]
        assert all(isinstance(frame, str) for frame in frames)  # text frames
        assert [frame.encode() for frame in frames] == SAMPLE_LINES
        assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
        await assert_silent(ws, 0.2)


async def test_serves_the_real_sample_compressed_with_the_dictionary() -> None:
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + "?compress=true") as ws:
        frames = [await ws.recv() for _ in range(len(SAMPLE_LINES))]
        assert all(isinstance(frame, bytes) for frame in frames)  # binary frames
        assert [codec.decompress(frame, 1 << 20) for frame in frames] == SAMPLE_LINES
        assert sum(map(len, frames)) < 0.6 * sum(map(len, SAMPLE_LINES))


async def test_frames_without_content_size_are_served_when_configured() -> None:
    async with JetstreamServer(SAMPLE, write_content_size=False) as srv:
        async with connect(srv.subscribe_url + "?compress=true") as ws:
            frame = await ws.recv()
            assert codec.zstandard.frame_content_size(frame) == -1
            assert codec.decompress(frame, 1 << 20) == SAMPLE_LINES[0]


async def test_root_path_also_subscribes_and_other_paths_are_404() -> None:
    async with JetstreamServer(SAMPLE) as srv:
        async with connect(srv.url + "/") as ws:
            assert (await receive(ws, 1))[0] == SAMPLE_LINES[0]
        with pytest.raises(InvalidStatus) as caught:
            async with connect(srv.url + "/firehose"):
                pass
        assert caught.value.response.status_code == 404


async def test_compress_with_permessage_deflate_offered_is_rejected_400() -> None:
    async with JetstreamServer(SAMPLE) as srv:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(srv.subscribe_url + "?compress=true", compression="deflate"):
                pass
        assert caught.value.response.status_code == 400
        # without compress=true the offer is simply not taken up
        async with connect(srv.subscribe_url, compression="deflate") as ws:
            assert ws.response.headers.get("Sec-WebSocket-Extensions") is None
            assert (await receive(ws, 1))[0] == SAMPLE_LINES[0]


async def test_socket_encoding_header_also_asks_for_compression() -> None:
    async with JetstreamServer(SAMPLE) as srv:
        async with connect(srv.subscribe_url, additional_headers={"Socket-Encoding": "zstd"}) as ws:
            frame = await ws.recv()
            assert isinstance(frame, bytes)
            assert codec.decompress(frame, 1 << 20) == SAMPLE_LINES[0]


# ------------------------------------------------------------------ where a connection starts


async def test_cursor_starts_at_the_first_event_at_or_after_it() -> None:
    async with JetstreamServer(GENERATED) as srv:
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[100]}") as ws:
            assert await receive(ws, 3) == GENERATED[100:103]
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[100] + 1}") as ws:
            assert (await receive(ws, 1))[0] == GENERATED[101]
        async with connect(f"{srv.subscribe_url}?cursor=0") as ws:
            assert (await receive(ws, 1))[0] == GENERATED[0]


async def test_cursor_on_the_real_sample_follows_relay_order() -> None:
    # the sample is in relay order, not time order: replay starts at the first line at/after the cursor
    cursor = SAMPLE_EVENTS[10]["time_us"]
    first = next(i for i, event in enumerate(SAMPLE_EVENTS) if event["time_us"] >= cursor)
    async with JetstreamServer(SAMPLE) as srv, connect(f"{srv.subscribe_url}?cursor={cursor}") as ws:
        assert await receive(ws, len(SAMPLE_LINES) - first) == SAMPLE_LINES[first:]


async def test_future_cursor_live_tails_only_appended_events() -> None:
    async with JetstreamServer(GENERATED[:100]) as srv:
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[-1] * 2}") as ws:
            await srv.wait_connected()
            await assert_silent(ws, 0.2)
            srv.append(GENERATED[100:110])
            assert await receive(ws, 10) == GENERATED[100:110]


async def test_without_cursor_replays_from_start_or_tails_when_configured() -> None:
    async with JetstreamServer(GENERATED[:50]) as srv, connect(srv.subscribe_url) as ws:
        assert await receive(ws, 50) == GENERATED[:50]
    async with JetstreamServer(GENERATED[:50], default_from_start=False) as srv, connect(srv.subscribe_url) as ws:
        await srv.wait_connected()
        await assert_silent(ws, 0.2)
        srv.append([line.decode() for line in GENERATED[50:52]])  # str lines are accepted too
        assert await receive(ws, 2) == GENERATED[50:52]


async def test_cursor_before_retention_silently_moves_to_the_oldest_retained_event() -> None:
    async with JetstreamServer(GENERATED, retention_start_us=GENERATED_TIMES[50]) as srv:
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[10]}") as ws:
            first = (await receive_json(ws, 1))[0]
            assert first["time_us"] == GENERATED_TIMES[50]  # > cursor: the client can see the gap
        async with connect(srv.subscribe_url) as ws:
            assert (await receive(ws, 1))[0] == GENERATED[50]
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[60]}") as ws:
            assert (await receive(ws, 1))[0] == GENERATED[60]
        srv.retention_start_us = GENERATED_TIMES[70]  # time passes on a running server
        async with connect(f"{srv.subscribe_url}?cursor={GENERATED_TIMES[60]}") as ws:
            assert (await receive(ws, 1))[0] == GENERATED[70]


async def test_time_offset_imitates_another_hosts_clock() -> None:
    offset = 1_234_567
    async with JetstreamServer(SAMPLE, time_offset_us=offset) as srv, connect(srv.subscribe_url) as ws:
        frames = await receive(ws, len(SAMPLE_LINES))
    for frame, original in zip(frames, SAMPLE_EVENTS, strict=True):
        event = orjson.loads(frame)
        assert event["time_us"] == original["time_us"] + offset
        assert {**event, "time_us": original["time_us"]} == original
        assert list(event) == list(original)  # key order kept
    async with JetstreamServer(SAMPLE, time_offset_us=offset) as srv:
        cursor = SAMPLE_EVENTS[0]["time_us"] + offset  # cursors are in the serving host's clock
        async with connect(f"{srv.subscribe_url}?cursor={cursor}") as ws:
            assert orjson.loads((await receive(ws, 1))[0])["time_us"] == cursor


# ------------------------------------------------------------------ filters


async def test_lines_in_another_key_order_are_still_filtered_and_shifted() -> None:
    odd = [
        b'{"kind":"commit","time_us":10,"did":"did:plc:aaa","commit":{"collection":"app.bsky.feed.like","rkey":"x"}}',
        b'{"kind":"identity","did":"did:plc:bbb","time_us":20,"identity":{"did":"did:plc:bbb","seq":1}}',
        b'{"kind":"commit","did":"did:plc:bbb","time_us":30,"commit":{"collection":"app.bsky.feed.post","rkey":"y"}}',
    ]
    query = "?wantedDids=did:plc:bbb&wantedCollections=app.bsky.feed.like"
    async with JetstreamServer(odd, time_offset_us=5) as srv, connect(srv.subscribe_url + query) as ws:
        (identity,) = await receive_json(ws, 1)
        assert identity["kind"] == "identity" and identity["time_us"] == 25
        await assert_silent(ws, 0.2)



async def test_wanted_collections_filter_and_identity_account_always_pass() -> None:
    query = "?wantedCollections=app.bsky.feed.post&wantedCollections=app.bsky.graph.block"
    expected = expected_filtered(
        SAMPLE_LINES,
        lambda e: e["kind"] != "commit" or e["commit"]["collection"] in ("app.bsky.feed.post", "app.bsky.graph.block"),
    )
    assert len(expected) == 17 + 1 + 1 + 2  # post creates, post delete, block, identity + account
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + query) as ws:
        assert await receive(ws, len(expected)) == expected
        await assert_silent(ws, 0.2)


async def test_wanted_collections_prefix_form() -> None:
    expected = expected_filtered(
        SAMPLE_LINES, lambda e: e["kind"] != "commit" or e["commit"]["collection"].startswith("app.bsky.graph.")
    )
    assert len(expected) == 6 + 3 + 1 + 2
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + "?wantedCollections=app.bsky.graph.*") as ws:
        assert await receive(ws, len(expected)) == expected
        await assert_silent(ws, 0.2)


async def test_wanted_dids_filter_applies_to_every_kind() -> None:
    dids = ["did:plc:hqvhxrowqbemo5e4wjnj6zao", SAMPLE_EVENTS[0]["did"]]
    expected = expected_filtered(SAMPLE_LINES, lambda e: e["did"] in dids)
    query = "?" + "&".join(f"wantedDids={did}" for did in dids)
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + query) as ws:
        assert await receive(ws, len(expected)) == expected
        await assert_silent(ws, 0.2)


async def test_collections_and_dids_combine_and_work_compressed() -> None:
    did = "did:plc:hqvhxrowqbemo5e4wjnj6zao"
    query = f"?compress=true&wantedDids={did}&wantedCollections=app.bsky.feed.like"
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + query) as ws:
        frames = [codec.decompress(frame, 1 << 20) for frame in await receive(ws, 2)]
        assert [orjson.loads(frame)["kind"] for frame in frames] == ["identity", "account"]


async def test_max_message_size_skips_larger_events() -> None:
    expected = [line for line in SAMPLE_LINES if len(line) <= 600]
    assert 0 < len(expected) < len(SAMPLE_LINES)
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + "?maxMessageSizeBytes=600") as ws:
        assert await receive(ws, len(expected)) == expected
        await assert_silent(ws, 0.2)


@pytest.mark.parametrize(
    "query",
    [
        "wantedCollections=not%20an%20nsid",
        "wantedDids=not-a-did",
        "cursor=yesterday",
        "&".join(f"wantedCollections=com.example.c{i}" for i in range(101)),
    ],
    ids=["bad-collection", "bad-did", "bad-cursor", "too-many-collections"],
)
async def test_invalid_query_is_answered_400(query: str) -> None:
    async with JetstreamServer(SAMPLE) as srv:
        with pytest.raises(InvalidStatus) as caught:
            async with connect(f"{srv.subscribe_url}?{query}"):
                pass
        assert caught.value.response.status_code == 400


async def test_require_hello_waits_for_options_update() -> None:
    expected = expected_filtered(
        SAMPLE_LINES, lambda e: e["kind"] != "commit" or e["commit"]["collection"] == "app.bsky.feed.repost"
    )
    async with JetstreamServer(SAMPLE) as srv, connect(srv.subscribe_url + "?requireHello=true") as ws:
        await assert_silent(ws, 0.3)
        await ws.send(json.dumps({"type": "something_else", "payload": {}}))  # ignored, still no hello
        await assert_silent(ws, 0.2)
        hello = {"type": "options_update", "payload": {"wantedCollections": ["app.bsky.feed.repost"], "wantedDids": []}}
        await ws.send(json.dumps(hello))
        assert await receive(ws, len(expected)) == expected


async def test_options_update_replaces_filters_mid_stream() -> None:
    likes = [line for line in GENERATED if b'"collection":"app.bsky.feed.like"' in line]
    others = [line for line in GENERATED if b'"kind":"commit"' in line and line not in likes]
    async with JetstreamServer(default_from_start=False) as srv:
        async with connect(srv.subscribe_url + "?wantedCollections=app.bsky.feed.like") as ws:
            await srv.wait_connected()
            srv.append(others[:5] + likes[:2])
            assert await receive(ws, 2) == likes[:2]
            update = {"type": "options_update", "payload": {"wantedCollections": [], "wantedDids": []}}
            await ws.send(json.dumps(update))
            async with asyncio.timeout(5):
                while srv.stats()["subscribers"][0]["options_updates"] < 1:
                    await asyncio.sleep(0.01)
            srv.append(others[5:8])
            assert await receive(ws, 3) == others[5:8]
            update = {"type": "options_update", "payload": {"wantedCollections": [], "maxMessageSizeBytes": 1}}
            await ws.send(json.dumps(update))
            async with asyncio.timeout(5):
                while srv.stats()["subscribers"][0]["options_updates"] < 2:
                    await asyncio.sleep(0.01)
            srv.append(others[8:10])
            await assert_silent(ws, 0.2)  # every event is larger than 1 byte


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"options_update","payload":{"wantedCollections":["not an nsid!"]}}',
        '{"type":"options_update","payload":{"wantedDids":["nope"]}}',
        '{"type":"options_update","payload":{"wantedCollections":"app.bsky.feed.post"}}',
        "{not json",
    ],
    ids=["bad-collection", "bad-did", "not-a-list", "not-json"],
)
async def test_invalid_options_update_disconnects(frame: str) -> None:
    async with JetstreamServer(default_from_start=False) as srv, connect(srv.subscribe_url) as ws:
        await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1000
        assert ws.close_reason


def test_option_parsing_matches_the_real_rules() -> None:
    options = parse_subscribe_query(
        "wantedCollections=app.bsky.*&wantedCollections=app.bsky.feed.post&wantedDids=did:plc:abc"
        "&cursor=123&compress=true&requireHello=true&maxMessageSizeBytes=-5"
    )
    assert options.wanted_prefixes == ("app.bsky.",)
    assert options.wanted_collections == frozenset({"app.bsky.feed.post"})
    assert options.wanted_dids == frozenset({"did:plc:abc"})
    assert (options.cursor, options.compress, options.require_hello, options.max_message_size) == (123, True, True, 0)
    assert options.wants_collection("app.bsky.graph.follow")
    assert options.wants_collection("")  # identity / account
    assert not options.wants_collection("fm.teal.alpha.actor.status")
    updated = parse_options_update('{"type":"options_update","payload":{"maxMessageSizeBytes":900}}', options)
    assert updated is not None
    assert updated.wanted_collections is None and updated.wanted_dids is None  # empty means all
    assert (updated.compress, updated.cursor, updated.max_message_size) == (True, 123, 900)
    assert parse_options_update('{"type":"ping"}', SubscriberOptions()) is None


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@given(
    st.one_of(
        st.text(max_size=80),
        _json.map(json.dumps),
        st.fixed_dictionaries({"type": st.just("options_update"), "payload": _json}).map(json.dumps),
        st.fixed_dictionaries(
            {
                "type": st.just("options_update"),
                "payload": st.fixed_dictionaries(
                    {"wantedCollections": _json, "wantedDids": _json, "maxMessageSizeBytes": _json}
                ),
            }
        ).map(json.dumps),
    )
)
def test_any_client_frame_is_an_update_ignored_or_a_clean_rejection(frame: str) -> None:
    current = SubscriberOptions(compress=True, cursor=7)
    try:
        result = parse_options_update(frame, current)
    except ValueError:
        return  # the connection is closed with the reason
    assert result is None or (result.compress, result.cursor) == (True, 7)


# ------------------------------------------------------------------ pacing, appending, looping


async def test_rate_paces_each_connection() -> None:
    async with JetstreamServer(GENERATED, rate=200) as srv, connect(srv.subscribe_url) as ws:
        started = time.monotonic()
        await receive(ws, 41)
        assert time.monotonic() - started >= 0.15  # 40 intervals of 5 ms


async def test_live_pace_follows_time_us_gaps_scaled_by_speed() -> None:
    lines = list(corpus.generate(30, seed=5, rate_per_s=100))  # ~0.3 s of events
    span = (orjson.loads(lines[-1])["time_us"] - orjson.loads(lines[0])["time_us"]) / 1e6
    async with JetstreamServer(lines, live=True, speed=2.0) as srv, connect(srv.subscribe_url) as ws:
        started = time.monotonic()
        assert await receive(ws, 30) == lines
        elapsed = time.monotonic() - started
    assert span / 2 * 0.8 <= elapsed <= span / 2 + 1.0


async def test_loop_repeats_the_corpus_with_increasing_time() -> None:
    lines = GENERATED[:20]
    async with JetstreamServer(lines, loop=True) as srv, connect(srv.subscribe_url) as ws:
        events = await receive_json(ws, 50)
    times = [event["time_us"] for event in events]
    assert times == sorted(times) and len(set(times)) == 50
    originals = [orjson.loads(line) for line in lines]
    assert {**events[20], "time_us": originals[0]["time_us"]} == originals[0]


async def test_slow_live_tail_is_dropped_without_close_frame() -> None:
    async with JetstreamServer(default_from_start=False, drop_slow_tail_after=100) as srv:
        async with connect(srv.subscribe_url) as ws:
            await srv.wait_connected()
            srv.append(GENERATED)  # 400 behind at once
            with pytest.raises(ConnectionClosedError):
                async with asyncio.timeout(5):
                    while True:
                        await ws.recv()
            assert ws.close_code == 1006


# ------------------------------------------------------------------ faults


async def test_drop_connections_aborts_without_close_frame() -> None:
    async with JetstreamServer(GENERATED[:10], default_from_start=True) as srv, connect(srv.subscribe_url) as ws:
        assert await receive(ws, 10) == GENERATED[:10]
        assert srv.drop_connections() == 1
        with pytest.raises(ConnectionClosedError):
            async with asyncio.timeout(5):
                await ws.recv()
        assert ws.close_code == 1006  # abnormal closure: no close frame
        assert srv.stats()["dropped"] == 1


async def test_drop_after_events_cuts_the_stream_mid_replay() -> None:
    async with JetstreamServer(default_from_start=False) as srv, connect(srv.subscribe_url) as ws:
        await srv.wait_connected()
        srv.drop_connections(after_events=5)
        srv.append(GENERATED[:50])
        assert await receive(ws, 5) == GENERATED[:5]
        with pytest.raises(ConnectionClosedError):
            async with asyncio.timeout(5):
                await ws.recv()


@pytest.mark.parametrize("compress", [False, True])
async def test_malformed_and_not_event_frames_then_the_stream_goes_on(compress: bool) -> None:
    query = "?compress=true" if compress else ""
    async with JetstreamServer(default_from_start=False) as srv, connect(srv.subscribe_url + query) as ws:
        await srv.wait_connected()
        assert srv.send_malformed() == 1
        assert srv.send_not_event() == 1
        srv.append(GENERATED[:1])
        frames = await receive(ws, 3)
        if compress:
            frames = [codec.decompress(frame, 1 << 20) for frame in frames]
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(frames[0])
        not_event = orjson.loads(frames[1])
        assert isinstance(not_event, dict) and not {"did", "time_us", "kind"} <= set(not_event)
        assert frames[2] == GENERATED[0]


async def test_oversized_frame_trips_the_client_limit() -> None:
    async with JetstreamServer(default_from_start=False) as srv:
        async with connect(srv.subscribe_url, max_size=1024 * 1024) as ws:
            await srv.wait_connected()
            srv.send_oversized(2_000_000)
            with pytest.raises(ConnectionClosedError) as caught:
                async with asyncio.timeout(5):
                    await ws.recv()
            assert caught.value.sent is not None and caught.value.sent.code == 1009  # message too big
        async with connect(srv.subscribe_url, max_size=4 * 1024 * 1024) as ws:
            await srv.wait_connected()
            srv.send_oversized(2_000_000)
            frame = (await receive(ws, 1))[0]
            assert len(frame) == 2_000_000
            assert orjson.loads(frame)["kind"] == "commit"
        async with connect(srv.subscribe_url + "?compress=true") as ws:
            await srv.wait_connected()
            srv.send_oversized(300_000)
            frame = (await receive(ws, 1))[0]
            assert len(codec.decompress(frame, 1 << 20)) == 300_000
            with pytest.raises(codec.FrameTooLargeError):
                codec.decompress(frame, 100_000)


async def test_bad_compression_frame_is_not_valid_zstd() -> None:
    async with JetstreamServer(default_from_start=False) as srv, connect(srv.subscribe_url + "?compress=true") as ws:
        await srv.wait_connected()
        srv.send_bad_compression()
        srv.append(GENERATED[:1])
        bad, good = await receive(ws, 2)
        with pytest.raises(codec.CorruptFrameError):
            codec.decompress(bad, 1 << 20)
        assert codec.decompress(good, 1 << 20) == GENERATED[0]


async def test_fault_with_no_connection_waits_for_the_next_one() -> None:
    async with JetstreamServer(GENERATED[:2]) as srv:
        assert srv.send_malformed() == 0
        async with connect(srv.subscribe_url) as ws:
            frames = await receive(ws, 3)
        with pytest.raises(orjson.JSONDecodeError):
            orjson.loads(frames[0])
        assert frames[1:] == GENERATED[:2]


async def test_stall_keeps_the_socket_open_but_sends_nothing() -> None:
    async with JetstreamServer(default_from_start=False) as srv, connect(srv.subscribe_url) as ws:
        await srv.wait_connected()
        srv.stall(0.6)
        started = time.monotonic()
        srv.append(GENERATED[:3])
        await assert_silent(ws, 0.3)
        assert srv.stats()["stalled"] is True
        assert await receive(ws, 3) == GENERATED[:3]
        assert time.monotonic() - started >= 0.5
        await ws.ping()  # still alive


async def test_fail_with_503_answers_the_next_handshakes() -> None:
    async with JetstreamServer(SAMPLE) as srv:
        srv.fail_with_503(2)
        for _ in range(2):
            with pytest.raises(InvalidStatus) as caught:
                async with connect(srv.subscribe_url):
                    pass
            assert caught.value.response.status_code == 503
        async with connect(srv.subscribe_url) as ws:
            assert (await receive(ws, 1))[0] == SAMPLE_LINES[0]
        assert srv.stats()["handshakes_503"] == 2


async def test_faults_over_http_on_the_same_port() -> None:
    async with JetstreamServer(default_from_start=False) as srv:
        status, body = await http_get(srv.port, "/_control/fail_with_503?n=1")
        assert status == 200 and json.loads(body)["pending_503"] == 1
        with pytest.raises(InvalidStatus):
            async with connect(srv.subscribe_url):
                pass
        async with connect(srv.subscribe_url + "?compress=true") as ws:
            await srv.wait_connected()
            status, body = await http_get(srv.port, "/_control/stats")
            stats = json.loads(body)
            assert status == 200 and stats["connections"] == 1 and stats["handshakes_503"] == 1
            for path in (
                "/_control/send_malformed",
                "/_control/send_not_event",
                "/_control/send_bad_compression",
                "/_control/send_oversized?n_bytes=5000",
            ):
                status, body = await http_get(srv.port, path)
                assert status == 200 and json.loads(body)["connections"] == 1
            malformed, not_event, bad, oversized = await receive(ws, 4)
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(codec.decompress(malformed, 1 << 20))
            assert "did" not in orjson.loads(codec.decompress(not_event, 1 << 20))
            with pytest.raises(codec.CorruptFrameError):
                codec.decompress(bad, 1 << 20)
            assert len(codec.decompress(oversized, 1 << 20)) == 5000
            status, _ = await http_get(srv.port, "/_control/stall?seconds=0.01")
            assert status == 200
            status, body = await http_get(srv.port, "/_control/drop_connections")
            assert status == 200 and json.loads(body)["connections"] == 1
            with pytest.raises(ConnectionClosedError):
                async with asyncio.timeout(5):
                    await ws.recv()
        status, _ = await http_get(srv.port, "/_control/explode")
        assert status == 404
        status, _ = await http_get(srv.port, "/_control/send_oversized?n_bytes=10")
        assert status == 400
        stats = srv.stats()
        assert stats["events_sent"] == 0 and stats["faults_sent"] == 4 and stats["connections_total"] == 1


async def test_stats_count_connections_and_events() -> None:
    async with JetstreamServer(SAMPLE) as srv:
        async with connect(srv.subscribe_url) as one, connect(srv.subscribe_url + "?compress=true") as two:
            await receive(one, 152)
            await receive(two, 152)
            stats = srv.stats()
            assert stats["connections"] == 2 and stats["connections_total"] == 2
            assert stats["events_sent"] == 304 and stats["log_events"] == 152
        async with asyncio.timeout(5):
            while srv.stats()["connections"]:
                await asyncio.sleep(0.01)


def test_command_line_serves_a_corpus(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "streams.local.jetstream_server", "--corpus", str(SAMPLE), "--port", "0", "--rate", "10000"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert process.stderr is not None
        banner = process.stderr.readline()
        url = re.search(r"(ws://127\.0\.0\.1:\d+/subscribe)", banner).group(1)  # type: ignore[union-attr]

        async def check() -> None:
            async with connect(url) as ws:
                assert await receive(ws, 152) == SAMPLE_LINES

        asyncio.run(check())
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0
