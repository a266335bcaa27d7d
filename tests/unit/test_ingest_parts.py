"""The ingest's pure parts: frame facts, the subscribe request, the duplicate filter, the batches in flight."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.ingest import codec
from streams.ingest.frames import BadFrame, FrameFacts, _checked_facts, event_bytes, read_facts
from streams.ingest.outgoing import DeliveryFailed, Outgoing
from streams.ingest.session import MAX_URL_LENGTH, subscribe_request
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


COMMIT = next(line for line in SAMPLE if b'"kind":"commit"' in line)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xef\xbb\xbf" + COMMIT, "invalid_json"),  # simdjson would take the byte-order mark, orjson does not
        (COMMIT[:-1] + b',"n":1e999}', "invalid_json"),  # past a double
        (COMMIT[:-1] + b',"s":"\xff"}', "invalid_json"),  # not UTF-8
        (COMMIT[:-1] + b',"s":"\\ud800"}', "invalid_json"),  # a lone surrogate
        (COMMIT[:-1] + b',"d":' + b"[" * 2000 + b"]" * 2000 + b"}", "invalid_json"),  # nested too deep
        (COMMIT + b" {}", "invalid_json"),  # a second document
        (COMMIT.replace(b'"time_us":', b'"time_us":true,"x":'), "not_an_event"),
        (COMMIT.replace(b'"rev":"', b'"rev":7,"x":"'), "not_an_event"),
        (COMMIT.replace(b'"rkey":"', b'"rkey":"","x":"'), "not_an_event"),
        (COMMIT.replace(b'"did":"did:', b'"did":"pid:'), "not_an_event"),
    ],
)
def test_commit_frames_read_the_fast_way_are_refused_as_the_general_way_refuses(raw: bytes, reason: str) -> None:
    for read in (read_facts, _checked_facts):
        with pytest.raises(BadFrame) as caught:
            read(raw)
        assert caught.value.reason == reason, read


def test_a_commit_simdjson_refuses_but_orjson_takes_is_read_the_general_way() -> None:
    raw = COMMIT[:-1] + b',"n":123456789012345678901234567890}'  # an integer past 64 bits
    assert read_facts(raw) == _checked_facts(raw) == read_facts(COMMIT)


@pytest.mark.parametrize("refused", [COMMIT.replace(b'"rev":"', b'"rev":7,"x":"'),
                                     COMMIT.replace(b'"did":"', b'"did":{"a":[1]},"x":"')])
def test_a_refused_frame_kept_with_its_traceback_does_not_slow_later_frames(
    refused: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(BadFrame) as kept:  # refused the general way after simdjson parsed it
        read_facts(refused)
    assert kept.value.__traceback__ is not None

    def general_way(raw: bytes) -> FrameFacts:
        raise AssertionError("a well-formed commit went the general way")

    monkeypatch.setattr("streams.ingest.frames._checked_facts", general_way)
    assert read_facts(COMMIT).kind == "commit"


def _outcome(read, raw: bytes) -> FrameFacts | str:
    try:
        return read(raw)
    except BadFrame as exc:
        return exc.reason


_JSONISH = st.sampled_from(list(b'{}[],:"\\0123456789.eE+-tfnul \t\x00\x7f\x80\xff\xc3'))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(SAMPLE), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 2), _JSONISH), max_size=3))
def test_the_fast_way_and_the_general_way_agree_on_any_damaged_frame(line: bytes, edits: list[tuple[int, int, int]]) -> None:
    raw = bytearray(line)
    for at, how, byte in edits:
        at %= len(raw)
        if how == 0:
            raw[at] = byte
        elif how == 1:
            raw.insert(at, byte)
        else:
            del raw[at]
    assert _outcome(read_facts, bytes(raw)) == _outcome(_checked_facts, bytes(raw))


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


class FakeSender:
    """A :class:`~streams.kafka.clients.Sender` whose batches are acknowledged by the test: each
    submitted outbox's records are kept, with the future that acknowledges them."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[bytes], asyncio.Future[None]]] = []

    def outbox(self) -> FakeOutbox:
        return FakeOutbox()

    def submit(self, outbox: FakeOutbox) -> list[asyncio.Future[asyncio.Future[None]]]:
        loop = asyncio.get_running_loop()
        acknowledged: asyncio.Future[None] = loop.create_future()
        handed: asyncio.Future[asyncio.Future[None]] = loop.create_future()
        handed.set_result(acknowledged)
        self.batches.append(([value for _, _, value, _ in outbox.records], acknowledged))
        return [handed]

    def acknowledge(self, index: int, error: Exception | None = None) -> None:
        future = self.batches[index][1]
        future.set_exception(error) if error else future.set_result(None)


class FakeOutbox:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes, list]] = []

    def add(self, topic: str, key: bytes, value: bytes, headers: list) -> None:
        self.records.append((topic, key, value, headers))


def outgoing(sender: FakeSender, **bounds: int) -> Outgoing:
    return Outgoing(sender, "raw", **{"max_count": 10, "max_span_us": 10**9, "linger_s": 3600, **bounds})  # type: ignore[arg-type]


async def test_events_go_to_the_producer_a_batch_at_a_time_when_full_or_after_the_linger() -> None:
    sender = FakeSender()
    out = Outgoing(sender, "raw", max_count=100, max_span_us=10**9, max_batch=3, linger_s=0.05)  # type: ignore[arg-type]
    for n in range(4):
        out.add(b"k", b"%d" % n, [], 1_000 + n)
    assert [values for values, _ in sender.batches] == [[b"0", b"1", b"2"]] and len(out) == 4
    await asyncio.sleep(0.1)  # the linger hands over the open batch
    assert [values for values, _ in sender.batches] == [[b"0", b"1", b"2"], [b"3"]]
    sender.acknowledge(1)
    await asyncio.sleep(0)
    assert out.settle_done() == 0, "acknowledged out of order: the first batch still holds the front"
    sender.acknowledge(0)
    assert await out.drain() == 4 and len(out) == 0


async def test_make_room_waits_for_the_oldest_when_the_count_or_time_span_is_exceeded() -> None:
    sender = FakeSender()
    out = outgoing(sender, max_count=2, max_span_us=100)
    out.add(b"k", b"a", [], 1_000)
    out.add(b"k", b"b", [], 1_050)
    waiter = asyncio.create_task(out.make_room(1_060))  # count limit reached: the open batch goes now
    await asyncio.sleep(0.01)
    assert not waiter.done() and [values for values, _ in sender.batches] == [[b"a", b"b"]]
    sender.acknowledge(0)
    assert await waiter == 2 and len(out) == 0
    out.add(b"k", b"c", [], 1_100)
    waiter = asyncio.create_task(out.make_room(1_250))  # span from 1_100 to 1_250 > 100
    await asyncio.sleep(0.01)
    assert not waiter.done()
    sender.acknowledge(1)
    assert await waiter == 1
    assert await out.make_room(1_300) == 0  # nothing unacknowledged: room at once


async def test_a_failed_delivery_ends_the_ingest() -> None:
    sender = FakeSender()
    out = outgoing(sender)
    out.add(b"k", b"a", [], 1)
    out.flush()
    sender.acknowledge(0, TimeoutError("broker gone"))
    await asyncio.sleep(0.01)
    with pytest.raises(DeliveryFailed):
        out.settle_done()
