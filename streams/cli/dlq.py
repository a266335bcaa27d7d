"""``bge dlq list|show|redrive``: inspect the two dead-letter topics and re-drive what is now fixed.

- ``list``: dead letters counted by reason and by source (source topic, or Jetstream endpoint),
  with how many were re-driven.
- ``show``: one dead letter (by partition and offset): its headers read back, its original
  bytes (``--raw`` writes them as they are), the event inside when it can be read, and its
  redrive record if any.
- ``redrive``: re-send selected dead letters to the raw topic once their cause is fixed.
  ``growth.dlq`` → the topic of its ``source_topic`` header, only when the current domain
  pipeline now accepts the event (``--force`` skips that check); ``jetstream.dlq`` → the raw
  topic, only when the frame now reads as an event (decompressed when it was compressed).
  The re-sent message has the raw topic's key (the repo DID) and headers (``kind``,
  ``time_us``, ``collection``, ``operation``), the dead letter's ``traceparent``, and
  ``redriven_from`` (``<dlq topic>/<partition>/<offset>``), ``redriven_at``, ``redriven_reason``.

The redrive record: a compacted topic ``<prefix>dlq.redriven`` (one partition), keyed by
``<dlq topic>/<partition>/<offset>``, whose JSON values say ``pending`` then ``done``:

1. ``pending`` records are written (and acknowledged) for a chunk of messages, naming the
   target partition (chosen by the key, as the producer would) and its end offset before the send;
2. the messages are sent (and acknowledged);
3. ``done`` records with the target offsets are written.

A redrive skips every dead letter whose record is ``done``. A ``pending`` one (a redrive that
died between 1 and 3) is settled by looking for its ``redriven_from`` header in its target
partition from the recorded offset: found, it is recorded ``done``; not found, it is re-driven.
So each dead letter is re-sent at most once, also across crashes, as long as two redrives of
one dead-letter topic do not run at the same time.

Exit codes: 0 ok; 1 nothing selected; 2 usage error; 3 Kafka failed.

One module of about 700 lines: the three ``bge dlq`` commands and their output formats; the reading
and selection they share with ``bge replay`` live in ``topicreader`` and ``selection``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError
from returns.result import Failure
from rich.markup import escape
from rich.table import Table

from domain.growth import StrategyConfig, StrategyState
from domain.pipeline import process
from streams.config import ConfigError, Settings, load_settings
from streams.topology import Header, Topic
from streams.cli.console import (
    FAILED,
    NOTHING,
    OK,
    USAGE,
    Output,
    ProgressBar,
    Selection,
    Tally,
    UsageParser,
    add_selection_options,
    default_streams,
    is_terminal,
    parse_cli,
    selection_from,
    stop_on_signals,
)
from streams.kafka.deadletter import read_dead_letter
from streams.ingest.frames import BadFrame, FrameFacts, event_bytes, raw_headers, read_facts
from streams.kafka.clients import KeyPartitioner, new_producer
from streams.cli.selection import (
    Bounds,
    EARLIEST,
    LATEST,
    AtOffset,
    MessageFilter,
    SelectionError,
    decode_headers,
    message_record,
    resolve_topic,
)
from streams.cli.topicreader import PartitionRange, messages_of, open_reader, plan_ranges, read_ranges, topic_partitions

__all__ = [
    "DLQ_TOPICS",
    "RECORD_TOPIC",
    "Prepared",
    "Refused",
    "build_parser",
    "ensure_record_topic",
    "main",
    "prepare_redrive",
    "read_records",
    "record_key",
    "run",
]

DLQ_TOPICS = (Topic.GROWTH_DLQ.value, Topic.JETSTREAM_DLQ.value)
RECORD_TOPIC = "dlq.redriven"
CHUNK = 500

USAGE_TEXT = """\
examples:
  bge dlq list
  bge dlq show growth.dlq --partition 2 --offset 17
  bge dlq show jetstream.dlq -p 0 --offset 3 --raw > frame.bin
  bge dlq redrive growth.dlq --reason invalid_record --dry-run
  bge dlq redrive jetstream.dlq --reason oversized --limit 100

exit codes: 0 ok; 1 nothing selected; 2 usage error; 3 Kafka failed.
"""


def build_parser() -> UsageParser:
    parser = UsageParser(
        prog="bge dlq",
        description="Inspect the dead-letter topics (growth.dlq, jetstream.dlq) and re-drive fixed dead letters.",
        epilog=USAGE_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=UsageParser)

    def output_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--output", choices=("json", "table"),
                       help="JSON lines (default when stdout is not a terminal) or a table")
        p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar on stderr (default: when stderr is a terminal)")
        p.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")

    listing = sub.add_parser("list", help="count dead letters by reason and by source",
                             description="Count dead letters by reason and by source, and how many were re-driven.")
    listing.add_argument("topics", nargs="*", metavar="TOPIC", help="growth.dlq (dlq), jetstream.dlq (raw-dlq); default both")
    add_selection_options(listing, filters=False)
    output_options(listing)

    show = sub.add_parser("show", help="one dead letter: headers, original bytes, redrive record",
                          description="One dead letter: its headers, its original bytes and its redrive record.")
    show.add_argument("topic", metavar="TOPIC")
    show.add_argument("-p", "--partition", type=int, required=True)
    show.add_argument("--offset", type=int, required=True)
    show.add_argument("--raw", action="store_true", help="write only the original bytes to stdout")
    show.add_argument("-o", "--output", choices=("json", "table"))

    redrive = sub.add_parser("redrive", help="re-send fixed dead letters to their source topic, once each",
                             description="Re-send selected dead letters to their source topic, once each.")
    redrive.add_argument("topic", metavar="TOPIC")
    redrive.add_argument("--reason", action="append", default=[], help="only dead letters with this error_reason (repeatable)")
    add_selection_options(redrive)
    redrive.add_argument("--dry-run", action="store_true", help="say what would be re-driven, send nothing")
    redrive.add_argument("--force", action="store_true",
                         help="growth.dlq: re-drive even when the current pipeline still rejects the event")
    output_options(redrive)
    return parser


def dlq_topic(name: str) -> str:
    short = resolve_topic(name)
    if short not in DLQ_TOPICS:
        raise SelectionError(f"{name!r} is not a dead-letter topic ({', '.join(DLQ_TOPICS)})")
    return short


# --- the redrive record ----------------------------------------------------------------------


def record_key(topic: str, partition: int, offset: int) -> str:
    """The key of a dead letter's redrive record (and its ``redriven_from`` header)."""
    return f"{topic}/{partition}/{offset}"


async def ensure_record_topic(settings: Settings) -> str:
    """Create the compacted redrive record topic when missing; return its name."""
    name = settings.topic(RECORD_TOPIC)
    admin = AIOKafkaAdminClient(**settings.kafka_client_options())
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            try:
                await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1,
                                                    topic_configs={"cleanup.policy": "compact"})])
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()
    return name


async def read_records(consumer: AIOKafkaConsumer, topic: str) -> dict[str, dict[str, Any]]:
    """The latest redrive record of every key (empty when the topic does not exist)."""
    if not await topic_partitions(consumer, topic):
        return {}
    ranges = await plan_ranges(consumer, topic, start=Bounds(EARLIEST), end=Bounds(LATEST))
    records: dict[str, dict[str, Any]] = {}
    async for batch in read_ranges(consumer, ranges):
        for message in messages_of(batch):
            if message.key is None:
                continue
            key = message.key.decode()
            if message.value is None:
                records.pop(key, None)
                continue
            try:
                records[key] = orjson.loads(message.value)
            except orjson.JSONDecodeError:
                continue
    return records


# --- what to re-send -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Prepared:
    """A dead letter ready to re-send: target topic, key, value and headers."""

    key: str
    target: str
    message_key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A dead letter that must stay where it is, and why."""

    code: str
    message: str


def prepare_redrive(
    settings: Settings,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    headers: Sequence[tuple[str, bytes]],
    value: bytes | None,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> Prepared | Refused:
    """Decide about one dead letter of ``topic`` (its full name): what to re-send, or why not."""
    decoded = decode_headers(headers)
    dead = read_dead_letter(headers)
    raw_topic = settings.topic(Topic.JETSTREAM_EVENTS)
    is_frame = topic == settings.topic(Topic.JETSTREAM_DLQ)
    frame = value or b""
    try:
        raw = event_bytes(frame, compressed=decoded.get("compressed") == "true",
                          max_bytes=settings.jetstream_max_message_bytes) if is_frame else frame
        facts: FrameFacts | None = read_facts(raw)
    except BadFrame as error:
        if is_frame or not force:
            return Refused(f"still_{error.reason}", str(error))
        raw, facts = frame, None
    if not is_frame and not force:
        outcome = process(raw, config=StrategyConfig(), state=StrategyState())
        if isinstance(outcome, Failure):
            rejection = outcome.failure()
            return Refused("still_rejected", f"{rejection.code.value}: {rejection.message}")
    target = raw_topic if is_frame else (dead.topic or raw_topic)
    name = record_key(topic, partition, offset)
    out = raw_headers(facts) if facts is not None else []
    out += [(k, v) for k, v in headers if k in (Header.TRACEPARENT, Header.TRACESTATE)]
    out += [
        ("redriven_from", name.encode()),
        ("redriven_at", (now or datetime.now(UTC)).isoformat().encode()),
        ("redriven_reason", dead.reason.encode()),
    ]
    message_key = facts.did.encode() if facts is not None else key
    return Prepared(name, target, message_key, raw, out, dead.reason)


def target_partition(message_key: bytes | None, partitions: Sequence[int]) -> int:
    """The partition the producer's default partitioner picks for ``message_key`` (murmur2, as
    the ingest's producer does), so an account's events stay in its partition."""
    ordered = sorted(partitions)
    if message_key is None:
        return ordered[0]
    return KeyPartitioner()(message_key, ordered, ordered)


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Dlq:
    settings: Settings
    args: argparse.Namespace
    out: Output
    stderr: IO[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tally: Tally = field(default_factory=Tally)

    @property
    def progress(self) -> bool:
        chosen = getattr(self.args, "progress", None)
        return chosen if chosen is not None else is_terminal(self.stderr)

    async def _read(self, consumer: AIOKafkaConsumer, short: str, selection: Any, predicate: Any = None) -> list:
        """Every selected message of one topic (with ``predicate(message)`` and the filters)."""
        topic = self.settings.topic(short)
        ranges: list[PartitionRange] = await plan_ranges(
            consumer, topic, partitions=selection.partitions, start=selection.start, end=selection.end
        )
        total = sum(r.size or 0 for r in ranges)
        found: list = []
        with ProgressBar(self.stderr, self.progress).task(short, total) as progress:
            async for batch in read_ranges(consumer, ranges, stop=self.stop):
                messages = messages_of(batch)
                for message in messages:
                    self.tally.read[short] += 1
                    if predicate is not None and not predicate(message):
                        continue
                    if not selection.filter.matches(message.key, message.headers, message.value):
                        continue
                    self.tally.matched[short] += 1
                    found.append(message)
                progress(advance=len(messages), matched=len(found))
        return found

    # --- list ------------------------------------------------------------------------------

    async def list(self) -> int:
        selection = selection_from(self.args)
        shorts = [dlq_topic(name) for name in self.args.topics] or list(DLQ_TOPICS)
        consumer = await open_reader(self.settings)
        try:
            records = await read_records(consumer, self.settings.topic(RECORD_TOPIC))
            summaries = []
            for short in dict.fromkeys(shorts):
                topic = self.settings.topic(short)
                if not await topic_partitions(consumer, topic):
                    summaries.append(_summary(short, []))
                    continue
                messages = await self._read(consumer, short, selection)
                summaries.append(_summary(short, messages, records, topic))
        finally:
            await consumer.stop()
        if self.out.fmt == "json":
            self.out.json_many(summaries)
        else:
            for summary in summaries:
                table = Table(title=f"{summary['topic']}: {summary['total']:,} dead letters, "
                                    f"{summary['redriven']:,} re-driven")
                for column in ("reason", "source", "count", "re-driven"):
                    table.add_column(column, justify="right" if column in ("count", "re-driven") else "left")
                for row in summary["by_reason_and_source"]:
                    table.add_row(escape(row["reason"]), escape(row["source"]), f"{row['count']:,}", f"{row['redriven']:,}")
                self.out.console.print(table)
        self.out.flush()
        return OK if any(s["total"] for s in summaries) else NOTHING

    # --- show ------------------------------------------------------------------------------

    async def show(self) -> int:
        short = dlq_topic(self.args.topic)
        topic = self.settings.topic(short)
        if self.args.partition < 0 or self.args.offset < 0:
            raise SelectionError("--partition and --offset must not be negative")
        at = Bounds(AtOffset(self.args.offset))
        selection = Selection((self.args.partition,), at, at, None, MessageFilter(), True)
        consumer = await open_reader(self.settings)
        try:
            messages = await self._read(consumer, short, selection)
            message = next((m for m in messages if m.offset == self.args.offset), None)
            records = await read_records(consumer, self.settings.topic(RECORD_TOPIC)) if message else {}
        finally:
            await consumer.stop()
        if message is None:
            self.stderr.write(f"bge dlq: no message at {short} partition {self.args.partition} offset {self.args.offset}\n")
            return NOTHING
        if self.args.raw:
            self.out.raw(message.value or b"")
            return OK
        detail = describe_dead_letter(self.settings, message, records.get(record_key(topic, message.partition, message.offset)))
        if self.out.fmt == "json":
            self.out.json(detail)
        else:
            console = self.out.console
            console.print(f"[bold]{escape(short)} {message.partition}/{message.offset}[/] at {detail['timestamp']}")
            table = Table(show_header=False, box=None)
            table.add_column(style="cyan")
            table.add_column()
            for name, value in detail["headers"].items():
                table.add_row(escape(name), escape(value))
            console.print(table)
            console.print(f"[bold]original bytes[/] ({detail['size']:,} bytes, base64):")
            console.print(escape(detail["bytes_base64"][:2000]))
            if detail.get("event") is not None:
                console.print("[bold]event[/]:")
                console.print_json(orjson.dumps(detail["event"]).decode())
            if detail.get("event_error"):
                console.print(f"[red]not an event[/]: {escape(detail['event_error'])}")
            console.print(f"[bold]redrive[/]: {escape(orjson.dumps(detail['redrive']).decode()) if detail['redrive'] else 'never re-driven'}")
        self.out.flush()
        return OK

    # --- redrive ---------------------------------------------------------------------------

    async def redrive(self) -> int:
        args, settings = self.args, self.settings
        short = dlq_topic(args.topic)
        if args.force and short == Topic.JETSTREAM_DLQ.value:
            raise SelectionError("--force applies to growth.dlq only: a frame that is not an event cannot go to the raw topic")
        selection = selection_from(args)
        limit = selection.limit
        selection = replace(selection, limit=None)  # the limit counts re-sent messages, not read ones
        topic = settings.topic(short)
        reasons = frozenset(args.reason)
        record_topic = settings.topic(RECORD_TOPIC)
        consumer = await open_reader(settings)
        producer = None
        actions: Counter[str] = Counter()
        try:
            records = await read_records(consumer, record_topic)
            messages = await self._read(
                consumer, short, selection,
                (lambda m: read_dead_letter(m.headers).reason in reasons) if reasons else None,
            )
            pending = {
                record_key(topic, m.partition, m.offset): m for m in messages
                if records.get(record_key(topic, m.partition, m.offset), {}).get("status") == "pending"
            }
            settled = await self._settle(consumer, records, pending) if pending else {}
            to_send: list[tuple[Any, Prepared]] = []
            for message in messages:
                if limit is not None and len(to_send) >= limit:
                    break
                key = record_key(topic, message.partition, message.offset)
                reason = read_dead_letter(message.headers).reason
                where = {"topic": short, "partition": message.partition, "offset": message.offset}
                record = settled.get(key) or records.get(key)
                if record is not None and record.get("status") == "done":
                    actions["already_redriven"] += 1
                    self._report(where, reason, "already_redriven", "re-driven before", _target_of(record))
                    continue
                decision = prepare_redrive(settings, topic, message.partition, message.offset, message.key,
                                           message.headers or (), message.value, force=args.force)
                if isinstance(decision, Refused):
                    actions["refused"] += 1
                    self._report(where, reason, "refused", f"{decision.code}: {decision.message}", None)
                    continue
                to_send.append((message, decision))
            if args.dry_run:
                for message, prepared in to_send:
                    actions["would_redrive"] += 1
                    where = {"topic": short, "partition": message.partition, "offset": message.offset}
                    self._report(where, prepared.reason, "would_redrive", f"to {prepared.target}",
                                 {"topic": prepared.target})
            elif to_send:
                await ensure_record_topic(settings)
                producer = new_producer(settings, client_id="bge-dlq-redrive")
                await producer.start()
                for start in range(0, len(to_send), CHUNK):
                    chunk = to_send[start:start + CHUNK]
                    for (message, prepared), target in zip(chunk, await self._send(consumer, producer, chunk), strict=True):
                        actions["redriven"] += 1
                        where = {"topic": short, "partition": message.partition, "offset": message.offset}
                        self._report(where, prepared.reason, "redriven", f"to {prepared.target}", target)
        finally:
            if producer is not None:
                await producer.stop()
            await consumer.stop()
            self.out.flush()
        if not args.quiet:
            done = ", ".join(f"{count} {action.replace('_', ' ')}" for action, count in sorted(actions.items()))
            self.stderr.write(f"redrive {short}: {len(messages):,} selected{', ' + done if done else ''}\n")
        return OK if messages else NOTHING

    def _report(self, where: dict[str, Any], reason: str, action: str, detail: str, target: dict[str, Any] | None) -> None:
        if self.out.fmt == "json":
            self.out.json({"dlq": where, "reason": reason, "action": action, "detail": detail, "target": target})
        else:
            style = {"redriven": "green", "would_redrive": "cyan", "already_redriven": "dim", "refused": "yellow"}[action]
            self.out.console.print(
                f"{escape(where['topic'])} {where['partition']}/{where['offset']} ({escape(reason)}): "
                f"[{style}]{action.replace('_', ' ')}[/] {escape(detail)}"
            )

    async def _send(self, consumer: AIOKafkaConsumer, producer: Any, chunk: list[tuple[Any, Prepared]]) -> list[dict[str, Any]]:
        """Pending records, the messages, done records (see the module docstring)."""
        settings = self.settings
        record_topic = settings.topic(RECORD_TOPIC)
        partitions: dict[str, list[int]] = {}
        for _, prepared in chunk:
            if prepared.target not in partitions:
                found = await topic_partitions(consumer, prepared.target)
                if not found:
                    raise SelectionError(f"target topic {prepared.target!r} does not exist")
                partitions[prepared.target] = found
        placed = [(message, prepared, target_partition(prepared.message_key, partitions[prepared.target]))
                  for message, prepared in chunk]
        tps = sorted({TopicPartition(p.target, part) for _, p, part in placed})
        ends = await consumer.end_offsets(tps)
        now = datetime.now(UTC).isoformat()
        base = [
            {
                "dlq_topic": message.topic, "dlq_partition": message.partition, "dlq_offset": message.offset,
                "reason": prepared.reason, "target_topic": prepared.target, "target_partition": part,
            }
            for message, prepared, part in placed
        ]
        await _send_all(producer, record_topic, [
            (prepared.key.encode(), {**b, "status": "pending", "target_from_offset": ends[TopicPartition(prepared.target, part)], "at": now})
            for (_, prepared, part), b in zip(placed, base, strict=True)
        ])
        futures = [
            await producer.send(prepared.target, value=prepared.value, key=prepared.message_key,
                                headers=prepared.headers, partition=part)
            for _, prepared, part in placed
        ]
        metadata = await asyncio.gather(*futures)
        done_at = datetime.now(UTC).isoformat()
        await _send_all(producer, record_topic, [
            (prepared.key.encode(), {**b, "status": "done", "target_offset": meta.offset, "at": done_at})
            for (_, prepared, _), b, meta in zip(placed, base, metadata, strict=True)
        ])
        return [{"topic": prepared.target, "partition": meta.partition, "offset": meta.offset}
                for (_, prepared, _), meta in zip(placed, metadata, strict=True)]

    async def _settle(self, consumer: AIOKafkaConsumer, records: dict[str, dict[str, Any]],
                      pending: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Look for the ``redriven_from`` header of pending redrives in their target partitions;
        record the ones found as ``done`` (returned by key)."""
        starts: dict[TopicPartition, int] = {}
        for key in pending:
            record = records[key]
            tp = TopicPartition(record["target_topic"], int(record["target_partition"]))
            starts[tp] = min(starts.get(tp, 1 << 62), int(record.get("target_from_offset", 0)))
        found: dict[str, dict[str, Any]] = {}
        for tp, start in starts.items():
            ranges = await plan_ranges(consumer, tp.topic, partitions=[tp.partition],
                                       start=Bounds(AtOffset(start)), end=Bounds(LATEST))
            async for batch in read_ranges(consumer, ranges, stop=self.stop):
                for message in messages_of(batch):
                    for name, value in message.headers or ():
                        if name == "redriven_from" and value.decode() in pending and value.decode() not in found:
                            key = value.decode()
                            found[key] = {**records[key], "status": "done", "target_offset": message.offset,
                                          "at": datetime.now(UTC).isoformat(), "settled": True}
        if found and not self.args.dry_run:
            await ensure_record_topic(self.settings)
            producer = new_producer(self.settings, client_id="bge-dlq-redrive")
            await producer.start()
            try:
                await _send_all(producer, self.settings.topic(RECORD_TOPIC), [(k.encode(), v) for k, v in found.items()])
            finally:
                await producer.stop()
        return found


async def _send_all(producer: Any, topic: str, items: list[tuple[bytes, dict[str, Any]]]) -> None:
    futures = [await producer.send(topic, key=key, value=orjson.dumps(value)) for key, value in items]
    await asyncio.gather(*futures)


def _target_of(record: dict[str, Any]) -> dict[str, Any] | None:
    if "target_offset" not in record:
        return None
    return {"topic": record.get("target_topic"), "partition": record.get("target_partition"), "offset": record["target_offset"]}


def _source_of(dead: Any) -> str:
    return dead.topic or (f"jetstream {dead.endpoint}" if dead.endpoint else dead.source or "(unknown)")


def _summary(short: str, messages: list, records: dict[str, dict[str, Any]] | None = None, topic: str = "") -> dict[str, Any]:
    """Counts of one dead-letter topic by reason, by source, by both, and re-driven."""
    by_reason: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    by_both: Counter[tuple[str, str]] = Counter()
    redriven_by_both: Counter[tuple[str, str]] = Counter()
    by_class: Counter[str] = Counter()
    redriven = pending = 0
    for message in messages:
        dead = read_dead_letter(message.headers)
        reason, source = dead.reason or "(none)", _source_of(dead)
        by_reason[reason] += 1
        by_source[source] += 1
        by_both[(reason, source)] += 1
        by_class[dead.error_class or "(none)"] += 1
        status = (records or {}).get(record_key(topic, message.partition, message.offset), {}).get("status")
        if status == "done":
            redriven += 1
            redriven_by_both[(reason, source)] += 1
        elif status == "pending":
            pending += 1
    return {
        "topic": short,
        "total": len(messages),
        "redriven": redriven,
        "pending": pending,
        "by_reason": dict(by_reason.most_common()),
        "by_source": dict(by_source.most_common()),
        "by_error_class": dict(by_class.most_common()),
        "by_reason_and_source": [
            {"reason": reason, "source": source, "count": count, "redriven": redriven_by_both[(reason, source)]}
            for (reason, source), count in by_both.most_common()
        ],
    }


def describe_dead_letter(settings: Settings, message: Any, record: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON of ``bge dlq show``: the message, its dead-letter headers, original bytes
    (base64), the event inside when it reads as one, and its redrive record."""
    detail = message_record(message.topic, message.partition, message.offset, message.timestamp, message.key,
                            message.headers, message.value)
    dead = read_dead_letter(message.headers)
    detail["dead_letter"] = asdict(dead)
    detail["size"] = len(message.value or b"")
    detail["bytes_base64"] = base64.b64encode(message.value or b"").decode()
    detail["event"] = None
    try:
        compressed = decode_headers(message.headers).get("compressed") == "true"
        raw = event_bytes(message.value or b"", compressed=compressed, max_bytes=settings.jetstream_max_message_bytes)
        detail["event"] = orjson.loads(raw)
        read_facts(raw)
    except (BadFrame, orjson.JSONDecodeError) as error:
        detail["event_error"] = str(error)
    detail["redrive"] = record
    return detail


# --- entry points ----------------------------------------------------------------------------


async def run(
    argv: Sequence[str],
    *,
    settings: Settings | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    signals: bool = False,
) -> int:
    """``bge dlq`` in a running event loop; returns the exit code."""
    stdout, stderr = default_streams(stdout, stderr)
    parsed = parse_cli(build_parser(), argv, stderr)
    if isinstance(parsed, int):
        return parsed
    try:
        settings = settings or load_settings()
    except ConfigError as error:
        stderr.write(f"bge dlq: {error}\n")
        return USAGE
    fmt = getattr(parsed, "output", None) or Output.default_format(stdout)
    tool = Dlq(settings, parsed, Output(stdout, fmt), stderr)
    action = {"list": tool.list, "show": tool.show, "redrive": tool.redrive}[parsed.action]
    try:
        if signals:
            with stop_on_signals(tool.stop, tool.tally):
                return await action()
        return await action()
    except SelectionError as error:
        stderr.write(f"bge dlq: {error}\n")
        return USAGE
    except (KafkaError, OSError) as error:
        stderr.write(f"bge dlq: Kafka failed: {type(error).__name__}: {error}\n")
        return FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``bge dlq ...`` (see ``bge dlq --help``)."""
    import sys

    return asyncio.run(run(sys.argv[1:] if argv is None else argv, signals=True))


if __name__ == "__main__":
    raise SystemExit(main())
