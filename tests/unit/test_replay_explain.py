"""The replay tool's pure explain and diff parts, and the redrive decision of one dead letter."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from domain import StrategyConfig, StrategyState, process
from domain.events import by_partition_key, encode, encode_group, to_json_dict
from domain.identity import SourceCoordinates
from streams.config import load_settings
from streams.cli.dlq import Prepared, Refused, prepare_redrive, record_key, target_partition
from streams.cli.explain import (
    Explainer, comparable, diff_source, field_changes, load_strategy_config, source_id_of, stored_events,
)
from streams.ingest import codec
from streams.cli.selection import SelectionError
from tests.conftest import SAMPLE_JSONL

SAMPLE = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]
POST = next(line for line in SAMPLE if b'"collection":"app.bsky.feed.post"' in line and b'"operation":"create"' in line)
WORD = "youtube"  # in the first post's text


def interests(*keywords: str) -> StrategyConfig:
    return StrategyConfig.model_validate({"interests": {"keywords": list(keywords)}})


def test_a_post_shows_its_events_and_every_strategy_decision() -> None:
    result = Explainer(interests(WORD)).explain(POST, SourceCoordinates("t.raw", 1, 7)).to_json()
    assert result["status"] == "processed"
    assert [e["schema"] for e in result["events"]][:3] == ["UserSeen", "ActivityRecorded", "PostCreated"]
    assert any(e["schema"] == "PostEnriched" for e in result["events"])
    decisions = result["decisions"]
    assert set(decisions) == {"engagement_with_targets", "newcomers", "interests", "popular_content"}
    assert decisions["interests"]["result"] == "success"
    (found,) = decisions["interests"]["candidates"]
    assert found["schema"] == "CandidateFound" and found["strategy"] == "interests"
    assert any(WORD in reason for reason in found["reasons"])
    assert found["source"]["offset"] == 7
    assert decisions["engagement_with_targets"] == {
        "result": "failure", "code": "no_targets", "message": "no target accounts configured",
    }


def test_a_malformed_event_shows_its_rejection_and_keeps_its_identity() -> None:
    event = orjson.loads(POST)
    event["commit"]["record"]["createdAt"] = 12
    raw = orjson.dumps(event)
    result = Explainer().explain(raw).to_json()
    assert result["status"] == "rejected"
    assert result["code"] == "invalid_record"
    assert "createdAt" in result["message"]
    assert result["source_id"] == source_id_of(POST)
    assert Explainer().explain(b"{nope").to_json() == {
        "status": "rejected", "source_id": None, "code": "invalid_json", "message": result_message(b"{nope"),
    }


def result_message(raw: bytes) -> str:
    return process(raw, config=StrategyConfig(), state=StrategyState()).failure().message


def test_state_is_carried_from_event_to_event() -> None:
    explainer = Explainer()
    for line in SAMPLE:
        explainer.explain(line)
    assert explainer.state.accounts  # newcomers remembered the accounts it saw


def test_field_changes_name_the_differing_leaves() -> None:
    stored = {"a": 1, "b": {"c": [1, 2], "d": "x"}, "gone": True}
    now = {"a": 1, "b": {"c": [1, 3], "d": "y"}, "new": 0}
    changes = {(c.path, repr(c.stored), repr(c.now)) for c in field_changes(stored, now)}
    assert changes == {
        ("b.c.1", "2", "3"), ("b.d", "'x'", "'y'"), ("gone", "True", "'<absent>'"), ("new", "'<absent>'", "0"),
    }
    assert [c.path for c in field_changes({"x": 1}, {"x": 1.0})] == ["x"]  # 1 and 1.0 are different JSON


def test_diff_of_one_source_event() -> None:
    base = [to_json_dict(e) for e in Explainer(interests(WORD)).explain(POST, SourceCoordinates("t.raw", 0, 5)).events]
    assert not diff_source("s", base, base)
    # the same events read at other coordinates (a re-delivered raw event) are no difference
    moved = [to_json_dict(e) for e in Explainer(interests(WORD)).explain(POST, SourceCoordinates("t.raw", 2, 9)).events]
    assert not diff_source("s", moved, base)
    assert not diff_source("s", base, base + base[:1])  # a stored duplicate
    changed_config = StrategyConfig.model_validate({"interests": {"keywords": [WORD], "keyword_score": 2.5}})
    now = [to_json_dict(e) for e in Explainer(changed_config).explain(POST).events]
    difference = diff_source("s", now, base)
    assert not difference.added and not difference.removed
    (change,) = difference.changed
    assert change.schema == "CandidateFound"
    assert [(f.path, f.stored, f.now) for f in change.fields] == [("score", 1.0, 2.5)]
    without = [to_json_dict(e) for e in Explainer().explain(POST).events]
    gone = diff_source("s", without, base)
    assert [e["schema"] for e in gone.removed] == ["CandidateFound"] and not gone.added
    back = diff_source("s", base, without)
    assert [e["schema"] for e in back.added] == ["CandidateFound"]
    assert "partition" not in back.added[0]["source"]
    assert comparable(base[0])["source"].keys().isdisjoint({"topic", "partition", "offset"})


def test_stored_events_read_one_event_or_each_event_of_a_group_as_encode_writes_it() -> None:
    events = Explainer(interests(WORD)).explain(POST, SourceCoordinates("t.raw", 0, 5)).events
    groups = by_partition_key(events)
    assert "CandidateFound" in {e.schema_name for e in events} and len(events) > 2
    stored = [found for group in groups.values() for found in stored_events(encode_group(group))]
    source_id = events[0].source.id
    assert stored == [(source_id, to_json_dict(e)) for group in groups.values() for e in group]
    assert [list(event) for _, event in stored] == [list(to_json_dict(e)) for group in groups.values() for e in group]
    assert not diff_source(source_id, [to_json_dict(e) for e in events], [event for _, event in stored])
    assert stored_events(encode(events[0])) == [(source_id, to_json_dict(events[0]))]
    for junk in (None, b"", b"[1]", b"{", b'{"schema":"DomainEvents","version":1,"events":[]}',
                 b'{"schema":"DomainEvents","version":1,"source":{"id":"s"},"events":{}}'):
        assert stored_events(junk) == []


def test_strategy_config_files(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"interests": {"keywords": ["Bluesky"]}, "popular_content": {"threshold": 3}}))
    config = load_strategy_config(good)
    assert config.interests.keywords == ("bluesky",) and config.popular_content.threshold == 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"interests": {"keywordz": []}}))
    with pytest.raises(SelectionError, match="invalid strategy config"):
        load_strategy_config(bad)
    with pytest.raises(SelectionError, match="cannot read"):
        load_strategy_config(tmp_path / "missing.json")


# --- the redrive decision ------------------------------------------------------------------

SETTINGS = load_settings(env_file=None, bge_topic_prefix="tunit.")


def growth_dead_letter(reason: str = "invalid_record") -> list[tuple[str, bytes]]:
    return [("error_class", b"Rejection"), ("error_reason", reason.encode()), ("error_message", b"m"),
            ("source", b"kafka"), ("failed_at", b"2026-07-04T14:38:09+00:00"),
            ("source_topic", b"tunit.jetstream.events"), ("source_partition", b"1"), ("source_offset", b"4"),
            ("traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")]


def test_a_growth_dead_letter_the_pipeline_now_accepts_is_prepared_like_an_ingested_event() -> None:
    decision = prepare_redrive(SETTINGS, "tunit.growth.dlq", 0, 3, None, growth_dead_letter(), POST)
    assert isinstance(decision, Prepared)
    event = orjson.loads(POST)
    assert decision.target == "tunit.jetstream.events"
    assert decision.message_key == event["did"].encode()
    assert decision.value == POST
    headers = dict(decision.headers)
    assert headers["kind"] == b"commit" and headers["collection"] == b"app.bsky.feed.post"
    assert headers["operation"] == b"create" and int(headers["time_us"]) == event["time_us"]
    assert headers["redriven_from"] == b"tunit.growth.dlq/0/3" == record_key("tunit.growth.dlq", 0, 3).encode()
    assert headers["redriven_reason"] == b"invalid_record"
    assert headers["traceparent"].startswith(b"00-0af7")


def test_a_growth_dead_letter_still_rejected_stays_unless_forced() -> None:
    event = orjson.loads(POST)
    event["commit"]["record"]["createdAt"] = 12
    raw = orjson.dumps(event)
    decision = prepare_redrive(SETTINGS, "tunit.growth.dlq", 0, 3, None, growth_dead_letter(), raw)
    assert isinstance(decision, Refused) and decision.code == "still_rejected"
    assert "invalid_record" in decision.message
    assert isinstance(prepare_redrive(SETTINGS, "tunit.growth.dlq", 0, 3, None, growth_dead_letter(), raw, force=True), Prepared)


def test_a_jetstream_dead_letter_goes_back_only_when_it_reads_as_an_event() -> None:
    headers = [("error_class", b"BadFrame"), ("error_reason", b"oversized"), ("error_message", b"m"),
               ("source", b"jetstream"), ("failed_at", b"x"), ("endpoint", b"ws://127.0.0.1:1"), ("compressed", b"true")]
    frame = codec.compress(POST)
    decision = prepare_redrive(SETTINGS, "tunit.jetstream.dlq", 0, 0, None, headers, frame)
    assert isinstance(decision, Prepared)
    assert decision.value == POST and decision.target == "tunit.jetstream.events"
    small = load_settings(env_file=None, bge_topic_prefix="tunit.", jetstream_max_message_bytes=1024)
    big = orjson.loads(POST)
    big["commit"]["record"]["text"] = "x" * 3000
    refused = prepare_redrive(small, "tunit.jetstream.dlq", 0, 0, None, headers, codec.compress(orjson.dumps(big)))
    assert isinstance(refused, Refused) and refused.code == "still_oversized"
    plain = [h for h in headers if h[0] != "compressed"]
    assert isinstance(prepare_redrive(SETTINGS, "tunit.jetstream.dlq", 0, 0, None, plain, b"{not json"), Refused)


def test_target_partition_is_the_producer_default_for_the_key() -> None:
    from aiokafka.partitioner import murmur2

    key = b"did:plc:dclwtltrt2ggsryagfzk7dp4"
    assert target_partition(key, [3, 1, 0, 2]) == (murmur2(key) & 0x7FFFFFFF) % 4
    assert target_partition(None, [2, 1]) == 1
