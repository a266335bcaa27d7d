"""The replay tool's pure selection: topics, times, bounds, field matches and message filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import StrategyConfig, StrategyState, process
from domain.events import by_partition_key, encode, encode_group
from domain.growth import candidate
from streams.cli.console import joined_values, json_line
from streams.cli import selection
from streams.cli.replay import _select
from streams.cli.selection import (
    EARLIEST,
    LATEST,
    AtOffset,
    AtTime,
    Bounds,
    MessageFilter,
    SelectionError,
    decode_headers,
    end_offset,
    lookup,
    message_line,
    message_record,
    parse_bound,
    parse_offset_bounds,
    parse_time,
    parse_where,
    resolve_topic,
    start_offset,
)
from tests.conftest import SAMPLE_JSONL

NOW = datetime(2026, 7, 4, 14, 40, 0, tzinfo=UTC)
SAMPLE = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]
POST = next(line for line in SAMPLE if b'"collection":"app.bsky.feed.post"' in line and b'"operation":"create"' in line)
LIKE = next(line for line in SAMPLE if b'"collection":"app.bsky.feed.like"' in line)


def raw_headers(line: bytes) -> list[tuple[str, bytes]]:
    event = orjson.loads(line)
    headers = [("kind", event["kind"].encode()), ("time_us", str(event["time_us"]).encode())]
    if event["kind"] == "commit":
        headers += [("collection", event["commit"]["collection"].encode()),
                    ("operation", event["commit"]["operation"].encode())]
    return headers


# --- topics and times ----------------------------------------------------------------------


def test_topics_by_short_name_or_alias_and_unknown_ones_refused() -> None:
    assert resolve_topic("jetstream.events") == "jetstream.events"
    assert resolve_topic("raw") == "jetstream.events"
    assert resolve_topic("domain") == "growth.events"
    assert resolve_topic("dlq") == "growth.dlq"
    assert resolve_topic("raw-dlq") == "jetstream.dlq"
    with pytest.raises(SelectionError, match="unknown topic"):
        resolve_topic("growth.event")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW),
        ("-15m", NOW - timedelta(minutes=15)),
        ("-2h", NOW - timedelta(hours=2)),
        ("-30s", NOW - timedelta(seconds=30)),
        ("-1d", NOW - timedelta(days=1)),
        ("-1w", NOW - timedelta(weeks=1)),
        ("-500ms", NOW - timedelta(milliseconds=500)),
        ("-1.5h", NOW - timedelta(minutes=90)),
        ("2026-07-04T14:38:08Z", datetime(2026, 7, 4, 14, 38, 8, tzinfo=UTC)),
        ("2026-07-04T14:38:08.250+02:00", datetime(2026, 7, 4, 12, 38, 8, 250_000, tzinfo=UTC)),
        ("2026-07-04 14:38", datetime(2026, 7, 4, 14, 38, tzinfo=UTC)),
        ("2026-07-04", datetime(2026, 7, 4, tzinfo=UTC)),
    ],
)
def test_times_are_iso_8601_or_relative_to_now(text: str, expected: datetime) -> None:
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15m", "-15x", "2026-13-01", ""])
def test_what_is_not_a_time_is_a_usage_error(text: str) -> None:
    with pytest.raises(SelectionError, match="not a time"):
        parse_time(text, NOW)


def test_bounds_are_earliest_latest_or_a_time_in_milliseconds() -> None:
    assert parse_bound("earliest", NOW) is EARLIEST
    assert parse_bound("latest", NOW) is LATEST
    assert parse_bound("-1m", NOW) == AtTime(int((NOW - timedelta(minutes=1)).timestamp() * 1000))


def test_offsets_for_every_partition_or_one() -> None:
    bounds = parse_offset_bounds(["100", "3:7", "5:-2"], EARLIEST)
    assert bounds.of(0) == AtOffset(100)
    assert bounds.of(3) == AtOffset(7)
    assert bounds.of(5) == AtOffset(-2)
    assert parse_offset_bounds(["2:5"], LATEST).of(1) is LATEST
    for bad in ("x", "1:y", "-1:4"):
        with pytest.raises(SelectionError, match="not an offset"):
            parse_offset_bounds([bad], EARLIEST)


def test_argv_values_that_look_like_options_are_joined() -> None:
    assert joined_values(["raw", "--from", "-15m", "--to-offset", "-1", "--did", "x"]) == [
        "raw", "--from=-15m", "--to-offset=-1", "--did", "x",
    ]


# --- bounds to offsets ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bound", "at_time", "expected"),
    [
        (EARLIEST, None, 10),
        (LATEST, None, 50),
        (AtOffset(20), None, 20),
        (AtOffset(5), None, 10),  # before the beginning (deleted by retention): the beginning
        (AtOffset(99), None, 50),
        (AtOffset(-5), None, 45),
        (AtTime(123), 30, 30),
        (AtTime(123), None, 50),  # no message at or after the time: nothing to read
    ],
)
def test_start_offsets(bound, at_time, expected) -> None:
    assert start_offset(bound, 10, 50, at_time) == expected


@pytest.mark.parametrize(
    ("bound", "at_time", "expected"),
    [
        (LATEST, None, 50),
        (EARLIEST, None, 10),
        (AtOffset(20), None, 21),  # --to-offset is inclusive
        (AtOffset(99), None, 50),
        (AtOffset(-1), None, 50),  # the last message included
        (AtTime(123), 30, 30),  # times are exclusive: stop before the first message at the time
        (AtTime(123), None, 50),
    ],
)
def test_end_offsets(bound, at_time, expected) -> None:
    assert end_offset(bound, 10, 50, at_time) == expected


# --- --where -------------------------------------------------------------------------------


def test_lookup_follows_dicts_lists_and_indexes() -> None:
    doc = {"a": {"b": [{"c": 1}, {"c": 2}, {"d": 3}]}, "l": ["x", "y"]}
    assert lookup(doc, ["a", "b", "c"]) == [1, 2]
    assert lookup(doc, ["a", "b", "1", "c"]) == [2]
    assert lookup(doc, ["l", "-1"]) == ["y"]
    assert lookup(doc, ["a", "zz"]) == []


def test_where_operators_on_nested_fields() -> None:
    post = orjson.loads(POST)
    text = post["commit"]["record"]["text"]
    assert parse_where(f"commit.record.text=={text}").test(post)
    assert parse_where(f"commit.record.text={text}").test(post)
    assert not parse_where("commit.record.text==nope").test(post)
    assert parse_where("commit.record.text!=nope").test(post)
    assert parse_where("commit.record.text~(?i)YOUTUBE").test(post)
    assert parse_where("commit.record.text=~youtube").test(post)
    assert parse_where("commit.record.text!~^zzz").test(post)
    assert parse_where("commit.record.langs==en").test(post)  # any item of a list
    assert parse_where("commit.record.$type==app.bsky.feed.post").test(post)
    assert parse_where(f"time_us=={post['time_us']}").test(post)  # numbers compare as numbers
    assert parse_where(f"time_us=={float(post['time_us'])}").test(post)
    assert parse_where("commit.record.facets.features.$type~#link").test(post)


def test_where_on_missing_fields() -> None:
    doc = {"a": 1}
    assert not parse_where("b==1").test(doc)
    assert parse_where("b!=1").test(doc)
    assert not parse_where("b~.").test(doc)
    assert parse_where("b!~.").test(doc)
    assert parse_where("a==1").test(doc)
    assert parse_where("n==null").test({"n": None})
    assert parse_where("t==true").test({"t": True})


@pytest.mark.parametrize("text", ["novalue", "==x", "a..b==1", "a~(unclosed"])
def test_bad_where_is_a_usage_error(text: str) -> None:
    with pytest.raises(SelectionError):
        parse_where(text)


# --- message filters -----------------------------------------------------------------------


def test_filters_on_raw_events_use_headers_key_and_value() -> None:
    post, like = orjson.loads(POST), orjson.loads(LIKE)
    key = post["did"].encode()
    assert MessageFilter().matches(key, raw_headers(POST), POST)
    assert MessageFilter(dids=frozenset({post["did"]})).matches(key, raw_headers(POST), POST)
    assert MessageFilter(dids=frozenset({post["did"]})).matches(None, (), POST)  # the value's did
    assert not MessageFilter(dids=frozenset({like["did"]})).matches(key, raw_headers(POST), POST)
    assert MessageFilter(collections=("app.bsky.feed.post",)).matches(key, raw_headers(POST), POST)
    assert MessageFilter(collections=("app.bsky.feed.*",)).matches(key, raw_headers(LIKE), LIKE)
    assert not MessageFilter(collections=("app.bsky.graph.*",)).matches(key, raw_headers(LIKE), LIKE)
    assert MessageFilter(operations=frozenset({"create"}), kinds=frozenset({"commit"})).matches(key, raw_headers(POST), POST)
    assert not MessageFilter(operations=frozenset({"delete"})).matches(key, raw_headers(POST), POST)
    # without headers the JSON says the same
    assert MessageFilter(collections=("app.bsky.feed.post",), operations=frozenset({"create"})).matches(None, (), POST)
    assert not MessageFilter(kinds=frozenset({"identity"})).matches(None, (), POST)


def test_headers_are_trusted_without_parsing_the_value() -> None:
    headers = [("kind", b"commit"), ("collection", b"app.bsky.feed.post"), ("operation", b"create")]
    assert MessageFilter(collections=("app.bsky.feed.post",)).matches(b"k", headers, b"not json")
    assert not MessageFilter(collections=("app.bsky.feed.post",)).matches(b"k", [("kind", b"identity")], POST)


def test_filters_on_domain_events() -> None:
    outcome = process(POST, config=StrategyConfig(), state=StrategyState()).unwrap()
    created = next(e for e in outcome.events if e.schema_name == "PostCreated")
    value = encode(created)
    assert MessageFilter(types=frozenset({"PostCreated"})).matches(b"k", (), value)
    assert not MessageFilter(types=frozenset({"LikeAdded"})).matches(b"k", (), value)
    assert MessageFilter(collections=("app.bsky.feed.post",), operations=frozenset({"create"}),
                         kinds=frozenset({"commit"})).matches(b"k", (), value)
    assert MessageFilter(dids=frozenset({created.did})).matches(b"other", (), value)
    assert MessageFilter(where=(parse_where("source.rkey==" + created.rkey),)).matches(b"k", (), value)
    # a non-canonical spelling of the JSON still filters by schema
    reordered = orjson.dumps({"version": 1, **orjson.loads(value)})
    assert MessageFilter(types=frozenset({"PostCreated"})).matches(b"k", (), reordered)


def test_filters_on_a_group_of_domain_events_look_at_every_event() -> None:
    outcome = process(LIKE, config=StrategyConfig(), state=StrategyState()).unwrap()
    group = by_partition_key(outcome.events)[outcome.source.did.encode()]
    assert {"UserSeen", "LikeAdded"} <= {e.schema_name for e in group}
    value = encode_group(group)
    assert MessageFilter(types=frozenset({"LikeAdded"})).matches(b"k", (), value)
    assert MessageFilter(types=frozenset({"UserSeen", "PostCreated"})).matches(b"k", (), value)
    assert not MessageFilter(types=frozenset({"PostCreated"})).matches(b"k", (), value)
    assert not MessageFilter(types=frozenset({"DomainEvents"})).matches(b"k", (), value)
    assert MessageFilter(collections=("app.bsky.feed.like",), kinds=frozenset({"commit"})).matches(b"k", (), value)
    assert MessageFilter(dids=frozenset({outcome.source.did})).matches(b"other", (), value)
    assert MessageFilter(where=(parse_where("events.0.schema==UserSeen"),)).matches(b"k", (), value)
    # a candidate's group is keyed by the candidate, and found by its DID in the events too
    source = group[0].source
    found = encode_group([candidate(source, "newcomers", "did:plc:candidate", 0.5, ("new",))])
    assert MessageFilter(dids=frozenset({"did:plc:candidate"})).matches(b"other", (), found)
    assert MessageFilter(types=frozenset({"CandidateFound"})).matches(b"k", (), found)


def test_every_filter_must_match_and_any_value_of_one_does() -> None:
    headers = raw_headers(POST)
    key = orjson.loads(POST)["did"].encode()
    both = MessageFilter(dids=frozenset({"did:plc:nobody", key.decode()}), collections=("app.bsky.feed.like", "app.bsky.feed.post"))
    assert both.matches(key, headers, POST)
    assert not MessageFilter(dids=frozenset({key.decode()}), collections=("app.bsky.feed.like",)).matches(key, headers, POST)
    assert not MessageFilter(where=(parse_where("kind==commit"), parse_where("did==x"))).matches(key, headers, POST)
    assert not MessageFilter(where=(parse_where("a==b"),)).matches(key, headers, b"\x00binary")


def test_the_json_form_of_a_message() -> None:
    traceparent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    record = message_record("t.raw", 3, 42, 1_783_175_888_085, b"did:plc:x", [("kind", b"commit"), ("traceparent", traceparent)], POST)
    line = orjson.loads(orjson.dumps(record))
    assert line["topic"] == "t.raw" and line["partition"] == 3 and line["offset"] == 42
    assert line["timestamp"] == "2026-07-04T14:38:08.085Z"
    assert line["key"] == "did:plc:x"
    assert line["headers"] == {"kind": "commit", "traceparent": traceparent.decode()}
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["encoding"] == "json" and line["value"] == orjson.loads(POST)
    binary = orjson.loads(orjson.dumps(message_record("t", 0, 0, 0, b"\xff", None, b"\x28\xb5\x2f\xfd")))
    assert binary["encoding"] == "base64" and binary["value"] == "KLUv/Q=="
    assert binary["key"] is None and binary["key_base64"] == "/w=="
    assert binary["trace_id"] is None
    empty = orjson.loads(orjson.dumps(message_record("t", 0, 0, 0, None, None, None)))
    assert empty["encoding"] == "null" and empty["value"] is None


TRACEPARENT = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("key", "headers", "value"),
    [
        (b"did:plc:x", [("kind", b"commit"), ("traceparent", TRACEPARENT)], POST),
        (None, None, LIKE),
        (b"did:plc:\xc3\xa9\"quoted\"", [("kind", b"commit")], b' {"a": "\\u2028", "b": [1, 2.5e3]} '),
        (b"\xff\xfe", [("kind", b"commit")], POST),  # a key that is not UTF-8
        (b"k", [("bad", b"a\xffb"), ("none", None), ("traceparent", b"not-a-trace")], POST),
        (b"k", None, b"\x28\xb5\x2f\xfd"),  # not JSON: base64
        (b"k", None, None),
        (b"k", None, b'{\n  "pretty": true\n}'),  # JSON over several lines: re-serialised
        (b"k", None, b"{\"a\":1}\r"),
        (b"k", None, b""),
        (b"k", None, b"nul"),
        (b"k", None, b'"text"'),
        (b"k", None, b"\xef\xbb\xbf{}"),  # a byte-order mark: simdjson takes it, JSON does not
        (b"k", None, b"[18446744073709551616]"),  # past 64 bits: simdjson refuses, orjson takes it
        (b"k", None, b"[" * 2000 + b"]" * 2000),  # deeper than simdjson goes
        (b"k", None, b'{"a":"\xff"}'),  # not UTF-8 inside a string
    ],
)
def test_a_message_line_is_byte_for_byte_the_record_serialised(key, headers, value) -> None:
    line = message_line("t.raw", 3, 42, 1_783_175_888_085, key, headers, value)
    assert line == json_line(message_record("t.raw", 3, 42, 1_783_175_888_085, key, headers, value))
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    orjson.loads(line)


def test_a_plain_message_line_builds_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_record(*args: object) -> None:
        raise AssertionError("the direct path should not build a record")

    monkeypatch.setattr(selection, "message_record", no_record)
    line = orjson.loads(message_line("t", 0, 7, 0, b"did:plc:x", [("traceparent", TRACEPARENT)], POST))
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and line["value"] == orjson.loads(POST)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@given(
    key=st.none() | st.binary(max_size=12) | st.text(max_size=12).map(str.encode),
    headers=st.none() | st.lists(st.tuples(st.text(max_size=8), st.none() | st.binary(max_size=12)), max_size=4),
    value=st.none() | st.binary(max_size=24) | _json_values.map(orjson.dumps),
    timestamp_ms=st.integers(0, 4_102_444_800_000),
)
def test_any_message_line_is_the_record_serialised(key, headers, value, timestamp_ms) -> None:
    line = message_line("t", 1, 2, timestamp_ms, key, headers, value)
    assert line == json_line(message_record("t", 1, 2, timestamp_ms, key, headers, value))


def test_headers_decode_as_text_whatever_their_bytes() -> None:
    assert decode_headers([("kind", b"commit"), ("kind", b"identity")]) == {"kind": "identity"}
    assert decode_headers([("kind", b"commit"), ("bad", b"a\xffb"), ("none", None)]) == {
        "kind": "commit",
        "bad": "a\ufffdb",
        "none": "",
    }
    assert decode_headers(None) == {}


def test_a_json_line_turns_keys_that_are_not_strings_into_strings() -> None:
    assert json_line({"a": [1, "x"]}) == b'{"a":[1,"x"]}\n'
    assert json_line({1: {2: None}}) == b'{"1":{"2":null}}\n'


class _Message:
    def __init__(self, offset: int, value: bytes) -> None:
        self.offset, self.key, self.headers, self.value = offset, None, None, value


def test_selecting_from_a_batch_stops_at_the_room_left() -> None:
    messages = [_Message(offset, b"yes" if offset % 2 else b"no") for offset in range(10)]
    wanted = lambda key, headers, value: value == b"yes"  # noqa: E731
    kept, read, full = _select(messages, wanted, None)
    assert [m.offset for m in kept] == [1, 3, 5, 7, 9] and read == 10 and not full
    kept, read, full = _select(messages, wanted, 2)
    assert [m.offset for m in kept] == [1, 3] and read == 4 and full
    kept, read, full = _select(messages, wanted, 5)
    assert len(kept) == 5 and read == 10 and full


def test_bounds_default_and_per_partition() -> None:
    bounds = Bounds(LATEST, {1: AtOffset(3)})
    assert bounds.of(0) is LATEST and bounds.of(1) == AtOffset(3)
