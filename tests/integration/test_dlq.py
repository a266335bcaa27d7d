"""``bge dlq`` against the real Kafka: counts, one dead letter's bytes, and redrives that land in
the source topic once, however often they are asked for, also after a redrive that died midway."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson

from streams.bench.harness import free_port
from streams.cli.dlq import (
    RECORD_TOPIC,
    ensure_record_topic,
    record_key,
    target_partition,
)
from streams.config import Settings
from streams.ingest import codec
from streams.kafka.deadletter import dead_letter_headers
from streams.topology import Topic
from tests.integration.ingest_support import read_all
from tests.integration.replay_support import (
    SAMPLE_LINES,
    TRACEPARENT,
    ingest_headers,
    produce,
    run_dlq,
    tool_settings,
)
from tests.integration.worker_support import events_in

POST = next(line for line in SAMPLE_LINES if b'"collection":"app.bsky.feed.post"' in line and b'"operation":"create"' in line)
LIKE = next(line for line in SAMPLE_LINES if b'"collection":"app.bsky.feed.like"' in line)
BIG = max(SAMPLE_LINES, key=len)  # 1,246 bytes: over a 1,024-byte limit
assert len(BIG) > 1024


def invalid(line: bytes) -> bytes:
    """``line`` with a record the lexicon refuses (a like without a subject)."""
    event = orjson.loads(line)
    event["commit"]["record"].pop("subject", None)
    event["commit"]["record"].pop("text", None)
    event["commit"]["record"]["createdAt"] = 12
    return orjson.dumps(event)


def growth_letter(settings: Settings, value: bytes, reason: str, offset: int) -> tuple[None, bytes, list[tuple[str, bytes]]]:
    """A dead letter as the collect agent writes it (key None, raw bytes, reason in headers)."""
    headers = dead_letter_headers(error_class="Rejection", reason=reason, message=f"{reason}: refused", source="kafka",
                                  topic=settings.topic(Topic.JETSTREAM_EVENTS), partition=1, offset=offset)
    return None, value, headers + [("traceparent", TRACEPARENT)]


def frame_letter(frame: bytes, reason: str, compressed: bool) -> tuple[None, bytes, list[tuple[str, bytes]]]:
    """A dead letter as the ingest writes it (the frame as received)."""
    headers = dead_letter_headers(error_class="BadFrame", reason=reason, message=f"{reason}!", source="jetstream",
                                  endpoint="wss://jetstream.example/subscribe")
    return None, frame, headers + [("compressed", b"true" if compressed else b"false")]


async def fill(settings: Settings) -> None:
    """growth.dlq: [0] a post refused by older code (the pipeline accepts it now), [1] a like still
    invalid, [2] a like refused by older code. jetstream.dlq: [0] a compressed oversized frame,
    [1] garbage that never decompresses, [2] a plain frame that is not JSON."""
    await produce(settings, Topic.GROWTH_DLQ, [
        growth_letter(settings, POST, "invalid_record", 10),
        growth_letter(settings, invalid(LIKE), "invalid_record", 11),
        growth_letter(settings, LIKE, "unsupported_collection", 12),
    ])
    await produce(settings, Topic.JETSTREAM_DLQ, [
        frame_letter(codec.compress(BIG), "oversized", True),
        frame_letter(b"\x28\xb5\x2f\xfd garbage", "decompress_failed", True),
        frame_letter(b"{not json", "invalid_json", False),
    ])


async def test_list_counts_by_reason_and_source(unique: str) -> None:
    settings = tool_settings(unique)
    await fill(settings)
    ran = await run_dlq(settings, "list")
    assert ran.code == 0
    growth, frames = ran.lines
    raw_topic = settings.topic(Topic.JETSTREAM_EVENTS)
    assert growth["topic"] == "growth.dlq" and growth["total"] == 3 and growth["redriven"] == 0
    assert growth["by_reason"] == {"invalid_record": 2, "unsupported_collection": 1}
    assert growth["by_source"] == {raw_topic: 3}
    assert growth["by_error_class"] == {"Rejection": 3}
    assert {(r["reason"], r["source"], r["count"]) for r in growth["by_reason_and_source"]} == {
        ("invalid_record", raw_topic, 2), ("unsupported_collection", raw_topic, 1),
    }
    assert frames["topic"] == "jetstream.dlq" and frames["total"] == 3
    assert frames["by_reason"] == {"oversized": 1, "decompress_failed": 1, "invalid_json": 1}
    assert frames["by_source"] == {"jetstream wss://jetstream.example/subscribe": 3}
    only = await run_dlq(settings, "list", "raw-dlq", "-o", "table")
    assert "jetstream.dlq: 3 dead letters, 0 re-driven" in only.out and "oversized" in only.out
    empty = await run_dlq(tool_settings(unique + "x"), "list")
    assert empty.code == 1 and [line["total"] for line in empty.lines] == [0, 0]


async def test_show_gives_the_original_bytes_headers_and_event(unique: str, capfdbinary) -> None:
    settings = tool_settings(unique)
    await fill(settings)
    frames = await read_all(settings, Topic.JETSTREAM_DLQ)
    compressed = next(m for m in frames if dict(m.headers)["error_reason"] == b"oversized")
    ran = await run_dlq(settings, "show", "raw-dlq", "-p", str(compressed.partition), "--offset", str(compressed.offset))
    assert ran.code == 0
    (detail,) = ran.lines
    assert detail["dead_letter"]["reason"] == "oversized" and detail["dead_letter"]["source"] == "jetstream"
    assert detail["dead_letter"]["endpoint"] == "wss://jetstream.example/subscribe"
    assert detail["headers"]["compressed"] == "true"
    assert detail["encoding"] == "base64" and detail["size"] == len(compressed.value)
    import base64

    assert base64.b64decode(detail["bytes_base64"]) == compressed.value
    assert detail["event"] == orjson.loads(BIG) and detail["redrive"] is None
    garbage = next(m for m in frames if dict(m.headers)["error_reason"] == b"decompress_failed")
    ran = await run_dlq(settings, "show", "jetstream.dlq", "-p", str(garbage.partition), "--offset", str(garbage.offset))
    assert ran.lines[0]["event"] is None and ran.lines[0]["event_error"]
    missing = await run_dlq(settings, "show", "growth.dlq", "-p", "0", "--offset", "999")
    assert missing.code == 1 and "no message" in missing.err
    assert (await run_dlq(settings, "show", "growth.events", "-p", "0", "--offset", "0")).code == 2


def test_show_raw_writes_the_bytes_exactly(unique: str, capfdbinary, monkeypatch) -> None:
    from streams.cli import main as cli

    settings = tool_settings(unique)
    asyncio.run(fill(settings))
    (message,) = [m for m in asyncio.run(read_all(settings, Topic.JETSTREAM_DLQ)) if dict(m.headers)["error_reason"] == b"oversized"]
    monkeypatch.setenv("BGE_TOPIC_PREFIX", settings.bge_topic_prefix)
    assert cli.main(["dlq", "show", "raw-dlq", "-p", str(message.partition), "--offset", str(message.offset), "--raw"]) == 0
    assert capfdbinary.readouterr().out == message.value


async def test_redrive_of_growth_dead_letters_lands_in_the_raw_topic_once(unique: str) -> None:
    settings = tool_settings(unique)
    await fill(settings)
    raw_topic = settings.topic(Topic.JETSTREAM_EVENTS)
    dry = await run_dlq(settings, "redrive", "dlq", "--dry-run")
    assert dry.code == 0
    assert sorted((line["reason"], line["action"]) for line in dry.lines) == [
        ("invalid_record", "refused"), ("invalid_record", "would_redrive"), ("unsupported_collection", "would_redrive"),
    ]
    refused = next(line for line in dry.lines if line["action"] == "refused")
    assert refused["detail"].startswith("still_rejected: invalid_record")
    assert await read_all(settings, Topic.JETSTREAM_EVENTS) == []

    ran = await run_dlq(settings, "redrive", "growth.dlq", "--reason", "invalid_record")
    assert ran.code == 0
    assert sorted(line["action"] for line in ran.lines) == ["redriven", "refused"]
    redriven = next(line for line in ran.lines if line["action"] == "redriven")
    (message,) = await read_all(settings, Topic.JETSTREAM_EVENTS)
    assert message.value == POST
    assert message.key == orjson.loads(POST)["did"].encode()
    assert redriven["target"] == {"topic": raw_topic, "partition": message.partition, "offset": message.offset}
    assert message.partition == target_partition(message.key, range(4))
    headers = dict(message.headers)
    key, ingest = ingest_headers(POST)
    assert all(headers[name] == value for name, value in ingest)
    dead = [m for m in await read_all(settings, Topic.GROWTH_DLQ) if m.value == POST][0]
    assert headers["redriven_from"] == record_key(settings.topic(Topic.GROWTH_DLQ), dead.partition, dead.offset).encode()
    assert headers["redriven_reason"] == b"invalid_record" and headers["redriven_at"]
    assert headers["traceparent"] == TRACEPARENT
    assert "1 redriven, 1 refused" in ran.err

    again = await run_dlq(settings, "redrive", "growth.dlq", "--reason", "invalid_record")
    assert sorted(line["action"] for line in again.lines) == ["already_redriven", "refused"]
    assert len(await read_all(settings, Topic.JETSTREAM_EVENTS)) == 1

    rest = await run_dlq(settings, "redrive", "growth.dlq")
    assert sorted(line["action"] for line in rest.lines) == ["already_redriven", "redriven", "refused"]
    assert sorted(m.value for m in await read_all(settings, Topic.JETSTREAM_EVENTS)) == sorted([POST, LIKE])
    records = await read_all(settings, RECORD_TOPIC)
    assert {orjson.loads(r.value)["status"] for r in records} == {"pending", "done"}
    listed = await run_dlq(settings, "list", "growth.dlq")
    assert listed.lines[0]["redriven"] == 2 and listed.lines[0]["pending"] == 0
    forced = await run_dlq(settings, "redrive", "growth.dlq", "--force", "--dry-run")
    assert sorted(line["action"] for line in forced.lines) == ["already_redriven", "already_redriven", "would_redrive"]


async def test_redrive_of_frames_only_when_they_now_read_as_events(unique: str) -> None:
    settings = tool_settings(unique, jetstream_max_message_bytes=1024)  # the limit the post was refused under
    await fill(settings)
    still = await run_dlq(settings, "redrive", "jetstream.dlq")
    assert {line["action"] for line in still.lines} == {"refused"}
    assert {line["detail"].split(":")[0] for line in still.lines} == {
        "still_oversized", "still_decompress_failed", "still_invalid_json",
    }
    fixed = tool_settings(unique)  # the limit raised: the cause is fixed
    ran = await run_dlq(fixed, "redrive", "raw-dlq", "--limit", "5")
    assert sorted(line["action"] for line in ran.lines) == ["redriven", "refused", "refused"]
    (message,) = await read_all(fixed, Topic.JETSTREAM_EVENTS)
    assert message.value == BIG  # decompressed: the raw topic holds event JSON
    assert dict(message.headers)["redriven_reason"] == b"oversized"
    again = await run_dlq(fixed, "redrive", "raw-dlq")
    assert sorted(line["action"] for line in again.lines) == ["already_redriven", "refused", "refused"]
    assert len(await read_all(fixed, Topic.JETSTREAM_EVENTS)) == 1
    assert (await run_dlq(fixed, "redrive", "raw-dlq", "--force")).code == 2


async def test_selection_and_limit_of_a_redrive(unique: str) -> None:
    settings = tool_settings(unique)
    lines = [line for line in SAMPLE_LINES if b'"kind":"commit"' in line][:6]
    await produce(settings, Topic.GROWTH_DLQ, [growth_letter(settings, line, "invalid_record", i) for i, line in enumerate(lines)])
    letters = await read_all(settings, Topic.GROWTH_DLQ)
    partition = letters[0].partition
    in_partition = sorted(m.offset for m in letters if m.partition == partition)
    ran = await run_dlq(settings, "redrive", "dlq", "-p", str(partition), "--from-offset", str(in_partition[0]),
                        "--to-offset", str(in_partition[0]), "--dry-run")
    assert [(line["dlq"]["partition"], line["dlq"]["offset"]) for line in ran.lines] == [(partition, in_partition[0])]
    ran = await run_dlq(settings, "redrive", "dlq", "--limit", "2")
    assert [line["action"] for line in ran.lines] == ["redriven", "redriven"]
    done = {(line["dlq"]["partition"], line["dlq"]["offset"]) for line in ran.lines}
    ran = await run_dlq(settings, "redrive", "dlq", "--did", orjson.loads(lines[5])["did"])
    (line,) = ran.lines
    done.add((line["dlq"]["partition"], line["dlq"]["offset"]))
    nothing = await run_dlq(settings, "redrive", "dlq", "--reason", "oversized")
    assert nothing.code == 1 and nothing.lines == []
    ran = await run_dlq(settings, "redrive", "dlq")
    assert {(line["dlq"]["partition"], line["dlq"]["offset"]) for line in ran.lines if line["action"] == "already_redriven"} == done
    assert len(ran.lines) == 6
    assert len(await read_all(settings, Topic.JETSTREAM_EVENTS)) == 6


async def test_a_redrive_that_died_midway_is_settled_without_sending_twice(unique: str) -> None:
    settings = tool_settings(unique)
    await produce(settings, Topic.GROWTH_DLQ, [
        growth_letter(settings, POST, "invalid_record", 1),
        growth_letter(settings, LIKE, "invalid_record", 2),
    ])
    letters = {m.value: m for m in await read_all(settings, Topic.GROWTH_DLQ)}
    dlq_topic, raw_topic = settings.topic(Topic.GROWTH_DLQ), settings.topic(Topic.JETSTREAM_EVENTS)
    await ensure_record_topic(settings)
    # the dead redrive: pending records for both, only the post was sent before it died
    pending = []
    for value, letter in letters.items():
        key = record_key(dlq_topic, letter.partition, letter.offset)
        partition = target_partition(orjson.loads(value)["did"].encode(), range(4))
        pending.append((key.encode(), orjson.dumps({
            "status": "pending", "dlq_topic": dlq_topic, "dlq_partition": letter.partition, "dlq_offset": letter.offset,
            "reason": "invalid_record", "target_topic": raw_topic, "target_partition": partition,
            "target_from_offset": 0, "at": datetime.now(UTC).isoformat(),
        }), []))
    await produce(settings, RECORD_TOPIC, pending)
    post_letter = letters[POST]
    key, headers = ingest_headers(POST)
    sent = record_key(dlq_topic, post_letter.partition, post_letter.offset)
    await produce(settings, Topic.JETSTREAM_EVENTS, [(key, POST, headers + [("redriven_from", sent.encode())])])

    ran = await run_dlq(settings, "redrive", "growth.dlq")
    by_letter = {(line["dlq"]["partition"], line["dlq"]["offset"]): line for line in ran.lines}
    assert by_letter[(post_letter.partition, post_letter.offset)]["action"] == "already_redriven"
    assert by_letter[(letters[LIKE].partition, letters[LIKE].offset)]["action"] == "redriven"
    assert sorted(m.value for m in await read_all(settings, Topic.JETSTREAM_EVENTS)) == sorted([POST, LIKE])
    latest = {r.key.decode(): orjson.loads(r.value) for r in await read_all(settings, RECORD_TOPIC)}
    assert latest[sent]["status"] == "done" and latest[sent]["settled"] is True
    assert all(record["status"] == "done" for record in latest.values())
    again = await run_dlq(settings, "redrive", "growth.dlq")
    assert {line["action"] for line in again.lines} == {"already_redriven"}
    assert len(await read_all(settings, Topic.JETSTREAM_EVENTS)) == 2


# --- with the worker ------------------------------------------------------------------------


async def test_a_redriven_dead_letter_is_collected_by_the_worker_once(unique: str, tmp_path) -> None:
    """growth.dlq → redrive → the worker's collect agent → growth.events, once; and the replay's
    --diff agrees with what the worker emitted."""
    import signal

    from tests.integration.ingest_support import kill, start_bge, wait_until

    settings = tool_settings(unique, bge_state_dir=tmp_path)
    await produce(settings, Topic.GROWTH_DLQ, [growth_letter(settings, POST, "invalid_record", 3)])
    worker = start_bge(["worker", "-l", "warn"], settings.model_copy(update={"api_port": free_port()}),
                       str(tmp_path / "worker.log"))
    try:
        ran = await run_dlq(settings, "redrive", "growth.dlq")
        assert [line["action"] for line in ran.lines] == ["redriven"]

        async def collected() -> int:
            return len(events_in(await read_all(settings, Topic.GROWTH_EVENTS)))

        await wait_until(lambda: _at_least(collected, 4), 180, "the re-driven event collected")
        again = await run_dlq(settings, "redrive", "growth.dlq")
        assert [line["action"] for line in again.lines] == ["already_redriven"]
        await asyncio.sleep(3)  # time for a second copy to show up, if there were one
    finally:
        kill(worker, signal.SIGTERM)
    domain = events_in(await read_all(settings, Topic.GROWTH_EVENTS))
    schemas = sorted(event["schema"] for event in domain)
    assert schemas == ["ActivityRecorded", "PostCreated", "PostEnriched", "UserSeen"]
    assert len({event["id"] for event in domain}) == 4
    assert len(await read_all(settings, Topic.JETSTREAM_EVENTS)) == 1
    from tests.integration.replay_support import run_replay

    diff = await run_replay(settings, "raw", "--diff")
    assert diff.code == 0 and "1 identical, 0 differ" in diff.err


async def _at_least(count, n: int) -> bool:
    return await count() >= n
