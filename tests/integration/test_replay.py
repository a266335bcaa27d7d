"""``bge replay`` against the real Kafka (and Postgres for --into-schema): every selector picks
exactly its messages on the raw and the domain topics; the pipeline explains and diffs; a
re-projection fills a scratch schema only; the read never touches a worker's offsets."""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.consumer.group_coordinator import GroupCoordinator
from psycopg import sql

from domain.events import encode
from domain.growth import StrategyConfig, StrategyState
from domain.pipeline import process
from projections import apply_batch, connect, migrate
from streams.cli import main as cli
from streams.cli import replay
from streams.config import Settings
from streams.topology import Topic
from streams.cli.explain import as_collected
from tests.integration.ingest_support import read_all, wait_until
from tests.integration.projection_support import dump
from tests.integration.replay_support import (
    SAMPLE_LINES,
    TRACEPARENT,
    coordinates,
    produce_domain,
    produce_raw,
    run_replay,
    tool_settings,
)

KEYWORD = "youtube"  # one post of the sample says it
INTERESTS = {"interests": {"keywords": [KEYWORD]}}
BUSY_DID = "did:plc:u4lmvw4wwzaql3z5kcf3r7h4"  # three posts in the sample
HOUR_MS = 3_600_000


@dataclass
class Loaded:
    settings: Settings
    raw: list[Any]  # raw messages as read back, in the order produced per partition
    domain: list[Any]
    stamps: dict[tuple[int, int], int]  # raw (partition, offset) -> timestamp
    cutoff_ms: int  # the first 100 raw events are stamped before it, the other 52 after


@pytest.fixture
async def loaded(unique: str) -> Loaded:
    """The real sample in the raw topic (events 0-99 stamped two hours ago, 100-151 ten minutes
    ago) and its domain events (interests on KEYWORD) in growth.events."""
    settings = tool_settings(unique)
    now_ms = int(time.time() * 1000)
    stamps = [now_ms - 2 * HOUR_MS + i * 1000 for i in range(100)] + [now_ms - 600_000 + i for i in range(52)]
    metadata = await produce_raw(settings, SAMPLE_LINES, stamps, traceparent=True)
    raw = await produce_domain(settings, StrategyConfig.model_validate(INTERESTS))
    domain = await read_all(settings, Topic.GROWTH_EVENTS)
    return Loaded(
        settings, raw, domain, {(m.partition, m.offset): s for m, s in zip(metadata, stamps, strict=True)},
        now_ms - HOUR_MS,
    )


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def select(messages: list[Any], predicate) -> set[tuple[int, int]]:
    return {(m.partition, m.offset) for m in messages if predicate(m)}


def events(messages: list[Any]) -> list[tuple[Any, dict[str, Any]]]:
    return [(m, orjson.loads(m.value)) for m in messages]


# --- offsets -------------------------------------------------------------------------------


async def test_offsets_select_exactly_their_range_per_partition(loaded: Loaded) -> None:
    s, raw, domain = loaded.settings, loaded.raw, loaded.domain
    ran = await run_replay(s, "raw", "-p", "1", "--from-offset", "2", "--to-offset", "5")
    assert ran.code == 0
    assert coordinates(ran.lines) == select(raw, lambda m: m.partition == 1 and 2 <= m.offset <= 5)
    ran = await run_replay(s, "jetstream.events", "-p", "1", "-p", "2", "--from-offset", "1:3")
    assert coordinates(ran.lines) == select(raw, lambda m: (m.partition == 1 and m.offset >= 3) or m.partition == 2)
    ends = {p: max(m.offset for m in raw if m.partition == p) + 1 for p in range(4)}
    ran = await run_replay(s, "raw", "--from-offset", "-2")
    assert coordinates(ran.lines) == select(raw, lambda m: m.offset >= ends[m.partition] - 2)
    ran = await run_replay(s, "raw", "--to-offset", "0", "--to-offset", "3:-1")  # 3:-1 = up to the last
    assert coordinates(ran.lines) == select(raw, lambda m: m.offset == 0 or m.partition == 3)
    ran = await run_replay(s, "domain", "-p", "0", "--from-offset", "10", "--to-offset", "19")
    assert coordinates(ran.lines) == select(domain, lambda m: m.partition == 0 and 10 <= m.offset <= 19)
    assert len(ran.lines) == 10
    assert all(line["topic"] == s.topic(Topic.GROWTH_EVENTS) for line in ran.lines)


# --- timestamps ----------------------------------------------------------------------------


async def test_times_select_exactly_the_messages_stamped_in_the_range(loaded: Loaded) -> None:
    s, raw, stamps = loaded.settings, loaded.raw, loaded.stamps
    ordered = sorted(stamps.values())
    start, end = ordered[20], ordered[30]
    ran = await run_replay(s, "raw", "--from", iso(start), "--to", iso(end))
    assert coordinates(ran.lines) == select(raw, lambda m: start <= stamps[(m.partition, m.offset)] < end)
    assert len(ran.lines) == 10
    ran = await run_replay(s, "raw", "--from", "-1h")
    assert coordinates(ran.lines) == select(raw, lambda m: stamps[(m.partition, m.offset)] >= loaded.cutoff_ms)
    assert len(ran.lines) == 52
    ran = await run_replay(s, "raw", "--until", "-1h")
    assert len(ran.lines) == 100
    ran = await run_replay(s, "domain", "--from", "-1h", "--to", "now")
    assert coordinates(ran.lines) == select(loaded.domain, lambda m: m.timestamp >= loaded.cutoff_ms)
    assert ran.lines and len(ran.lines) < len(loaded.domain)
    nothing = await run_replay(s, "raw", "--from", "now")
    assert (nothing.code, nothing.lines) == (1, [])
    assert "matched 0" in nothing.err
    ran = await run_replay(s, "raw", "--from", "earliest", "--to", "latest", "-p", "0")
    assert coordinates(ran.lines) == select(raw, lambda m: m.partition == 0)


# --- filters -------------------------------------------------------------------------------


def commit(event: dict[str, Any]) -> dict[str, Any]:
    return event.get("commit") or {}


RAW_FILTERS = [
    (["--did", BUSY_DID], lambda e: e["did"] == BUSY_DID),
    (["--did", BUSY_DID, "--did", "did:plc:wq4aajammjtxdomz3e23667t"],
     lambda e: e["did"] in (BUSY_DID, "did:plc:wq4aajammjtxdomz3e23667t")),
    (["--collection", "app.bsky.feed.post"], lambda e: commit(e).get("collection") == "app.bsky.feed.post"),
    (["--collection", "app.bsky.graph.*"], lambda e: commit(e).get("collection", "").startswith("app.bsky.graph.")),
    (["--operation", "delete"], lambda e: commit(e).get("operation") == "delete"),
    (["--operation", "update", "--operation", "delete"], lambda e: commit(e).get("operation") in ("update", "delete")),
    (["--kind", "identity"], lambda e: e["kind"] == "identity"),
    (["--kind", "account"], lambda e: e["kind"] == "account"),
    (["--where", "commit.record.text~(?i)\\bthe\\b"], lambda e: _has_word(e, "the")),
    (["--where", "commit.record.subject.uri~/app\\.bsky\\.feed\\.post/"],
     lambda e: "/app.bsky.feed.post/" in _subject_uri(e)),
    (["--where", "kind!=commit"], lambda e: e["kind"] != "commit"),
    (["--where", "commit.record.langs==en", "--collection", "app.bsky.feed.post"],
     lambda e: "en" in ((commit(e).get("record") or {}).get("langs") or [])),
    (["--collection", "app.bsky.feed.post", "--did", BUSY_DID, "--operation", "create"],
     lambda e: e["did"] == BUSY_DID and commit(e).get("collection") == "app.bsky.feed.post"),
]


def _subject_uri(event: dict[str, Any]) -> str:
    subject = (commit(event).get("record") or {}).get("subject")
    return subject.get("uri", "") if isinstance(subject, dict) else ""


def _has_word(event: dict[str, Any], word: str) -> bool:
    import re

    return bool(re.search(rf"(?i)\b{word}\b", (commit(event).get("record") or {}).get("text", "")))


async def test_each_filter_picks_exactly_its_raw_events(loaded: Loaded) -> None:
    parsed = events(loaded.raw)
    for argv, predicate in RAW_FILTERS:
        expected = {(m.partition, m.offset) for m, e in parsed if predicate(e)}
        assert expected, argv
        ran = await run_replay(loaded.settings, "raw", *argv)
        assert ran.code == 0, argv
        assert coordinates(ran.lines) == expected, argv


async def test_each_filter_picks_exactly_its_domain_events(loaded: Loaded) -> None:
    parsed = events(loaded.domain)
    cases = [
        (["--type", "PostCreated"], lambda e: e["schema"] == "PostCreated"),
        (["--type", "CandidateFound"], lambda e: e["schema"] == "CandidateFound"),
        (["--type", "FollowAdded", "--type", "FollowRemoved"], lambda e: e["schema"] in ("FollowAdded", "FollowRemoved")),
        (["--did", BUSY_DID], lambda e: BUSY_DID in (e["did"], e["source"]["did"])),
        (["--operation", "delete"], lambda e: e["source"].get("operation") == "delete"),
        (["--kind", "identity"], lambda e: e["source"]["kind"] == "identity"),
        (["--collection", "app.bsky.feed.like", "--type", "LikeAdded"],
         lambda e: e["schema"] == "LikeAdded" and e["source"]["collection"] == "app.bsky.feed.like"),
        (["--collection", "app.bsky.graph.*"], lambda e: (e["source"].get("collection") or "").startswith("app.bsky.graph.")),
        (["--where", "source.collection==app.bsky.graph.follow", "--where", "schema!=UserSeen"],
         lambda e: e["source"].get("collection") == "app.bsky.graph.follow" and e["schema"] != "UserSeen"),
        (["--where", f"reasons~{KEYWORD}"], lambda e: any(KEYWORD in r for r in e.get("reasons", []))),
        (["--where", "thread.depth==0"], lambda e: (e.get("thread") or {}).get("depth") == 0),
    ]
    for argv, predicate in cases:
        expected = {(m.partition, m.offset) for m, e in parsed if predicate(e)}
        assert expected, argv
        ran = await run_replay(loaded.settings, "growth.events", *argv)
        assert coordinates(ran.lines) == expected, argv


# --- output, limits, exit codes ------------------------------------------------------------


async def test_json_lines_carry_coordinates_headers_trace_and_value(loaded: Loaded) -> None:
    ran = await run_replay(loaded.settings, "raw", "--kind", "identity")
    (line,) = ran.lines
    (message,) = [m for m in loaded.raw if (m.partition, m.offset) == (line["partition"], line["offset"])]
    assert line["topic"] == loaded.settings.topic(Topic.JETSTREAM_EVENTS)
    assert line["timestamp_ms"] == message.timestamp
    assert line["timestamp"].endswith("Z")
    assert line["key"] == message.key.decode()
    assert line["headers"]["kind"] == "identity" and line["headers"]["traceparent"] == TRACEPARENT.decode()
    assert line["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert line["encoding"] == "json" and line["value"] == orjson.loads(message.value)
    # the value is embedded as recorded, byte for byte
    assert message.value in ran.out.encode()
    summary = ran.err.strip().splitlines()[-1]
    assert "read 152 messages, matched 1" in summary and "jetstream.events: 152 read, 1 matched" in summary


async def test_table_output(loaded: Loaded) -> None:
    ran = await run_replay(loaded.settings, "raw", "domain", "--did", BUSY_DID, "-o", "table")
    assert ran.code == 0
    assert "commit app.bsky.feed.post create" in ran.out
    assert "PostCreated" in ran.out and BUSY_DID[:20] in ran.out
    assert "jetstream.events:" in ran.err and "growth.events:" in ran.err


async def test_limit_and_nothing_matched(loaded: Loaded) -> None:
    ran = await run_replay(loaded.settings, "raw", "--limit", "7")
    assert ran.code == 0 and len(ran.lines) == 7
    ran = await run_replay(loaded.settings, "raw", "domain", "--did", "did:plc:nobody")
    assert (ran.code, ran.lines) == (1, [])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nope"], "unknown topic"),
        ([], "name at least one topic"),
        (["raw", "--from", "yesterday"], "not a time"),
        (["raw", "--from-offset", "x"], "not an offset"),
        (["raw", "--where", "novalue"], "not a field match"),
        (["raw", "--type", "PostCreated"], "--type filters domain events"),
        (["domain", "--type", "PostCreatd"], "unknown domain event type"),
        (["raw", "-p", "99"], "has no partition 99"),
        (["redriven"], "does not exist"),
        (["raw", "--diff", "--follow"], "cannot --follow"),
        (["raw", "--follow", "--to", "-1m"], "--follow reads without an end"),
        (["domain", "--through", "strategies"], "reads raw events"),
        (["raw", "--into-schema", "x"], "projects growth.events only"),
        (["--into-schema", "public"], "scratch schema"),
        (["--into-schema", "Bad-Name"], "must match"),
        (["raw", "--bogus"], "unrecognized arguments"),
        (["raw", "--limit", "0"], "at least 1"),
    ],
)
async def test_usage_errors_exit_2(unique: str, argv: list[str], message: str) -> None:
    settings = tool_settings(unique)
    await produce_raw(settings, SAMPLE_LINES[:1])
    ran = await run_replay(settings, *argv)
    assert ran.code == 2
    assert message in ran.err


def test_through_the_bge_entry_point(unique: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    settings = tool_settings(unique)
    asyncio.run(produce_raw(settings, SAMPLE_LINES))
    monkeypatch.setenv("BGE_TOPIC_PREFIX", settings.bge_topic_prefix)
    assert cli.main(["replay", "raw", "--kind", "commit", "--operation", "delete", "--from", "-1h"]) == 0
    out = capsys.readouterr()
    lines = [orjson.loads(line) for line in out.out.splitlines()]
    assert len(lines) == 4 and {line["headers"]["operation"] for line in lines} == {"delete"}
    assert cli.main(["replay", "raw", "--from", "soon"]) == 2
    assert "not a time" in capsys.readouterr().err
    assert cli.main(["replay", "--help"]) == 0
    assert "--through" in capsys.readouterr().out


# --- through strategies ------------------------------------------------------------------------


def write_config(tmp_path: Path, name: str, config: dict[str, Any]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return str(path)


async def test_through_strategies_shows_enrichment_decisions_and_rejections(loaded: Loaded, tmp_path: Path) -> None:
    s = loaded.settings
    malformed = orjson.loads(SAMPLE_LINES[0])
    malformed["did"] = "did:plc:malformedmalformedmalform"
    malformed["commit"]["record"].pop("subject")
    await produce_raw(s, [orjson.dumps(malformed)])
    config = write_config(tmp_path, "interests.json", INTERESTS)
    post = next(e for e in map(orjson.loads, SAMPLE_LINES) if KEYWORD in (commit(e).get("record") or {}).get("text", ""))
    ran = await run_replay(s, "raw", "--through", "strategies", "--strategies", config,
                           "--where", f"commit.rkey=={post['commit']['rkey']}")
    (line,) = ran.lines
    assert line["value"] == post
    result = line["pipeline"]
    assert result["status"] == "processed"
    schemas = [e["schema"] for e in result["events"]]
    assert schemas[:3] == ["UserSeen", "ActivityRecorded", "PostCreated"] and "PostEnriched" in schemas
    enriched = next(e for e in result["events"] if e["schema"] == "PostEnriched")
    assert [link["domain"] for link in enriched["links"]] == ["youtube.com"]
    assert enriched["thread"]["depth"] == 0
    decision = result["decisions"]["interests"]
    assert decision["result"] == "success"
    (found,) = decision["candidates"]
    assert found["did"] == post["did"] and found["strategy"] == "interests"
    assert any(KEYWORD in reason for reason in found["reasons"])
    assert result["decisions"]["newcomers"] == {"result": "failure", "code": "no_signal", "message": "no sign of a new account"}
    assert result["decisions"]["engagement_with_targets"]["code"] == "no_targets"

    rejected = await run_replay(s, "raw", "--through", "strategies", "--did", malformed["did"])
    (line,) = rejected.lines
    assert line["pipeline"]["status"] == "rejected"
    assert line["pipeline"]["code"] == "invalid_record"
    assert "subject" in line["pipeline"]["message"]

    table = await run_replay(s, "raw", "--through", "strategies", "--strategies", config, "-o", "table",
                             "--did", post["did"], "--did", malformed["did"])
    assert "✓ interests" in table.out and "candidate " + post["did"] in table.out
    assert "links https://www.youtube.com/watch?v=V5lDo-jw8mA" in table.out
    assert "✗ rejected invalid_record" in table.out
    assert "✗ newcomers" in table.out and "(no_signal)" in table.out


# --- diff ----------------------------------------------------------------------------------


async def test_diff_finds_nothing_on_an_unchanged_pipeline_and_exactly_what_a_change_changes(
    loaded: Loaded, tmp_path: Path
) -> None:
    s = loaded.settings
    same = await run_replay(s, "raw", "--diff", "--strategies", write_config(tmp_path, "same.json", INTERESTS))
    assert same.code == 0 and same.lines == []
    assert "152 source events compared, 152 identical, 0 differ" in same.err

    scored = write_config(tmp_path, "scored.json", {"interests": {"keywords": [KEYWORD], "keyword_score": 2.5}})
    ran = await run_replay(s, "raw", "--diff", "--strategies", scored)
    assert ran.code == 1
    (line,) = ran.lines
    assert line["added"] == [] and line["removed"] == []
    (change,) = line["changed"]
    assert change["schema"] == "CandidateFound"
    assert change["fields"] == [{"path": "score", "stored": 1.0, "now": 2.5}]
    stored = next(e for _, e in events(loaded.domain) if e["schema"] == "CandidateFound")
    assert change["id"] == stored["id"] and line["source_id"] == stored["source"]["id"]
    assert (line["raw"]["partition"], line["raw"]["offset"]) == (stored["source"]["partition"], stored["source"]["offset"])
    assert "1 differ (0 events added, 0 removed, 1 changed)" in ran.err

    more = write_config(tmp_path, "more.json", {"interests": {"keywords": [KEYWORD, "boring"]}})
    ran = await run_replay(s, "raw", "--diff", "--strategies", more)
    assert ran.code == 1
    (line,) = ran.lines
    (added,) = line["added"]
    assert added["schema"] == "CandidateFound" and added["did"] == "did:plc:t2yw5frug3pu4nmygjiq7vln"
    assert line["changed"] == [] and line["removed"] == []

    ran = await run_replay(s, "raw", "--diff")  # the defaults: no interests configured
    assert ran.code == 1
    (line,) = ran.lines
    assert [e["schema"] for e in line["removed"]] == ["CandidateFound"] and line["added"] == []

    # a selection compares only its own source events
    partition = stored["source"]["partition"]
    other = (partition + 1) % 4
    ran = await run_replay(s, "raw", "--diff", "--strategies", scored, "-p", str(other))
    assert ran.code == 0 and ran.lines == []
    ran = await run_replay(s, "raw", "--diff", "--strategies", scored, "-p", str(partition), "-o", "table")
    assert ran.code == 1
    assert "~ CandidateFound" in ran.out and "score: 1.0 → 2.5" in ran.out


# --- into a scratch schema -------------------------------------------------------------------


async def test_into_schema_projects_like_the_writer_and_leaves_the_live_schema_alone(
    loaded: Loaded, database_url: str, unique: str
) -> None:
    scratch, reference = f"replay_{unique}_scratch", f"replay_{unique}_ref"
    live = await _live_snapshot(database_url)
    try:
        ran = await run_replay(loaded.settings, "--into-schema", scratch, "--batch-size", "100")
        assert ran.code == 0
        (summary,) = ran.lines
        assert summary["schema"] == scratch and summary["applied"] == len(loaded.domain)
        assert summary["events"] == len(loaded.domain) and summary["skipped"] == 0
        assert summary["rows"]["likes"] == 105 and summary["migrated"]
        await migrate(database_url, reference)
        conn = await connect(database_url, reference)
        try:
            messages = loaded.domain
            await apply_batch(conn, replay.PROJECTION_CONSUMER, messages)
            expected = await dump(conn)
        finally:
            await conn.close()
        conn = await connect(database_url, scratch)
        try:
            assert await dump(conn) == expected
        finally:
            await conn.close()
        again = await run_replay(loaded.settings, "--into-schema", scratch)  # idempotent: all skipped
        assert again.lines[0]["applied"] == 0 and again.lines[0]["skipped"] == len(loaded.domain)
        assert await _live_snapshot(database_url) == live
    finally:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
            for name in (scratch, reference):
                await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


async def _live_snapshot(database_url: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables WHERE schemaname = 'public' ORDER BY relname"
        )
        return await cur.fetchall()


# --- follow and groups -----------------------------------------------------------------------


async def test_follow_tails_new_messages_until_stopped(unique: str) -> None:
    settings = tool_settings(unique)
    await produce_raw(settings, SAMPLE_LINES[:10])
    out, err, stop = io.StringIO(), io.StringIO(), asyncio.Event()
    task = asyncio.create_task(replay.run(["raw", "--follow", "--from", "latest", "--kind", "commit"],
                                          settings=settings, stdout=out, stderr=err, stop=stop))
    await asyncio.sleep(1.5)
    await produce_raw(settings, SAMPLE_LINES[10:20])
    await wait_until(lambda: len(out.getvalue().splitlines()) >= 10, 20, "followed messages")
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0
    values = [orjson.loads(line)["value"] for line in out.getvalue().splitlines()]
    assert values == [v for v in values if v] and len(values) == 10
    assert sorted(orjson.dumps(v) for v in values) == sorted(SAMPLE_LINES[10:20])


async def test_a_named_group_resumes_where_it_stopped_and_no_other_group_is_touched(unique: str) -> None:
    settings = tool_settings(unique)
    await produce_raw(settings, SAMPLE_LINES)
    plain = await run_replay(settings, "raw")
    assert len(plain.lines) == len(SAMPLE_LINES)
    first = await run_replay(settings, "raw", "--group", "g", "--limit", "50")
    second = await run_replay(settings, "raw", "--group", "g")
    third = await run_replay(settings, "raw", "--group", "g")
    assert len(first.lines) == 50 and len(second.lines) == len(SAMPLE_LINES) - 50
    assert coordinates(first.lines).isdisjoint(coordinates(second.lines))
    assert coordinates(first.lines) | coordinates(second.lines) == coordinates(plain.lines)
    assert third.code == 1 and third.lines == []
    again = await run_replay(settings, "raw", "--group", "g", "--from", "earliest", "--limit", "3")
    assert len(again.lines) == 3  # an explicit start overrides the group's position
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        groups = {group[0] for group in await admin.list_consumer_groups()}
    finally:
        await admin.close()
    ours = {group for group in groups if group.startswith(settings.bge_topic_prefix) or unique in group}
    assert ours == {f"{settings.bge_topic_prefix}bge-replay.g"}


async def test_a_group_replay_never_races_the_group_coordinator(unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A group reader that assigned twice (once to plan, once to read) failed with aiokafka's
    "Unexpected error during coordination AssertionError()" when the second assignment came
    while the coordinator was still being found; an explicit start (no committed offsets to
    wait for) and a busy broker made that likely. Here finding the coordinator is made slow
    on purpose, and twenty group replays in a row still succeed."""
    found = GroupCoordinator.ensure_coordinator_known

    async def slowly_found(self: GroupCoordinator) -> None:
        await asyncio.sleep(0.3)
        await found(self)

    monkeypatch.setattr(GroupCoordinator, "ensure_coordinator_known", slowly_found)
    settings = tool_settings(unique)
    await produce_raw(settings, SAMPLE_LINES[:20])
    for attempt in range(20):
        ran = await run_replay(settings, "raw", "--group", "g", "--from", "earliest", "--limit", "3", "-q")
        assert ran.code == 0, (attempt, ran.err)
        assert len(ran.lines) == 3


# --- speed ---------------------------------------------------------------------------------


async def test_replay_reads_faster_than_the_collect_pipeline_processes(unique: str) -> None:
    settings = tool_settings(unique)
    lines = SAMPLE_LINES * 130  # 19,760 events
    await produce_raw(settings, lines)
    config = as_collected(StrategyConfig())
    started = time.perf_counter()
    state = StrategyState()
    for line in lines:  # what collect does per raw event before Kafka: decide, then encode what it sends
        outcome = process(line, config=config, state=state).value_or(None)
        if outcome is not None:
            for event in outcome.events:
                encode(event)
            if outcome.state_changes:
                state = state.apply(outcome.state_changes)
    pipeline_rate = len(lines) / (time.perf_counter() - started)
    rates = {}
    for name, argv in (("all, JSON lines", ["raw"]), ("filtered", ["raw", "--collection", "app.bsky.feed.post", "-q"]),
                       ("--where", ["raw", "--where", "commit.record.text~(?i)bluesky", "-q"])):
        started = time.perf_counter()
        ran = await run_replay(settings, *argv)
        rates[name] = len(lines) / (time.perf_counter() - started)
        assert ran.code in (0, 1)
    print(f"\npipeline (collect) {pipeline_rate:,.0f} events/s; replay " +
          ", ".join(f"{name} {rate:,.0f} msg/s" for name, rate in rates.items()))
    assert min(rates.values()) >= pipeline_rate


# --- progress and Ctrl-C -------------------------------------------------------------------


async def test_progress_bar_with_rate_and_eta_on_stderr(unique: str) -> None:
    settings = tool_settings(unique)
    await produce_raw(settings, SAMPLE_LINES)
    ran = await run_replay(settings, "raw", "--progress", "--kind", "identity")
    bar, summary = ran.err.splitlines()[-2:]
    assert "152/152" in bar and "msg/s" in bar and "ETA" in bar and "1 matched" in bar
    assert summary.startswith("read 152 messages, matched 1")
    quiet = await run_replay(settings, "raw", "--kind", "identity", "-q")
    assert quiet.err == "" and len(quiet.lines) == 1


def test_ctrl_c_stops_cleanly_with_a_summary(unique: str, tmp_path: Path) -> None:
    import signal

    from tests.integration.ingest_support import start_bge

    settings = tool_settings(unique)
    asyncio.run(produce_raw(settings, SAMPLE_LINES))
    log = tmp_path / "replay.log"
    process = start_bge(["replay", "raw", "--follow", "-o", "json"], settings, str(log))
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and log.read_bytes().count(b'"encoding":"json"') < len(SAMPLE_LINES):
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert code == 0, text[-2000:]
    assert "Traceback" not in text
    assert f"interrupted: read {len(SAMPLE_LINES)} messages, matched {len(SAMPLE_LINES)}" in text
    assert f"jetstream.events: {len(SAMPLE_LINES)} read" in text
