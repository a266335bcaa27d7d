"""``bge replay``: read any range of the product's topics back, to look, explain, compare or re-project.

It reads with a consumer of its own, without a group by default (``--group NAME`` uses
``<prefix>bge-replay.NAME``), so the workers' committed offsets are never touched, and it
writes nothing to Kafka.

Modes (one per run):

- show (default): the selected messages as JSON lines or a table.
- ``--through strategies``: every selected raw event through the current domain pipeline (state
  carried from event to event, starting empty): the rejection, or the domain events and every
  strategy's decision.
- ``--diff``: what the pipeline would emit now for the selected raw events, compared with what
  ``growth.events`` holds for the same source events (see :mod:`streams.cli.explain`).
- ``--into-schema NAME``: ``growth.events`` projected into a scratch Postgres schema (created and
  migrated if needed) with the projector's own batch writer; the live schema is not touched.

Exit codes: 0 ok; 1 nothing matched, or ``--diff`` found differences; 2 usage error; 3 Kafka or
Postgres failed.

One module of about 650 lines: the ``bge replay`` command (reading, explaining, comparing, re-
projecting) with its output formats; the reading and selection it shares with ``bge dlq`` live in
``topicreader`` and ``selection``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from domain.events import to_json_dict
from domain.growth import StrategyConfig
from domain.identity import SourceCoordinates
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
from streams.cli.explain import (
    Explainer,
    Explanation,
    SourceDiff,
    as_collected,
    diff_source,
    load_strategy_config,
    stored_events,
)
from streams.cli.selection import (
    EARLIEST,
    LATEST,
    Bounds,
    SelectionError,
    decode_headers,
    message_line,
    message_record,
    parse_bound,
    resolve_topic,
)
from streams.cli.topicreader import PartitionRange, commit_positions, open_reader, plan_ranges, read_ranges, replay_group

__all__ = ["Replay", "ReplayPlan", "build_parser", "main", "run"]

RAW_TOPICS = (Topic.JETSTREAM_EVENTS.value, Topic.GROWTH_DLQ.value, Topic.JETSTREAM_DLQ.value)
DOMAIN_TOPICS = (Topic.GROWTH_EVENTS.value, Topic.GROWTH_CRAWL.value)
PROJECTION_CONSUMER = "bge-replay"

USAGE_TEXT = """\
examples:
  bge replay raw --from -15m --collection app.bsky.feed.post --where 'commit.record.text~(?i)bluesky'
  bge replay growth.events --type CandidateFound --did did:plc:abc -o table
  bge replay raw --partition 3 --from-offset 1200 --to-offset 1300
  bge replay raw --from 2026-07-04T14:38:00Z --to 2026-07-04T14:39:00Z --through strategies
  bge replay raw --diff --strategies strategies.json
  bge replay growth.events --into-schema scratch_2026_07_04
  bge replay raw --follow --did did:plc:abc

topics: jetstream.events (raw), jetstream.dlq (raw-dlq), jetstream.ops (ops), growth.events
(domain), growth.dlq (dlq), growth.crawl (crawl), dlq.redriven (redriven); the prefix
BGE_TOPIC_PREFIX is applied.

exit codes: 0 ok; 1 nothing matched, or --diff found differences; 2 usage error;
3 Kafka or Postgres failed.
"""


def build_parser() -> UsageParser:
    parser = UsageParser(
        prog="bge replay",
        description="Read a range of the product's Kafka topics back: show, filter, explain, diff, re-project.",
        epilog=USAGE_TEXT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("topics", nargs="*", metavar="TOPIC",
                        help="short topic names or aliases (default: raw for --through/--diff, domain for --into-schema)")
    add_selection_options(parser)
    parser.add_argument("-f", "--follow", action="store_true", help="keep reading new messages until Ctrl-C")
    shown = parser.add_argument_group("output")
    shown.add_argument("-o", "--output", choices=("json", "table"),
                       help="JSON lines (default when stdout is not a terminal) or a table")
    shown.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                       help="progress bar on stderr (default: when stderr is a terminal)")
    shown.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    shown.add_argument("--group", metavar="NAME",
                       help="read as consumer group <prefix>bge-replay.NAME: start where it stopped, commit where it ends")
    explain = parser.add_argument_group("explain")
    explain.add_argument("--through", choices=("strategies",), help="run raw events through the current pipeline")
    explain.add_argument("--diff", action="store_true",
                         help="compare what the pipeline would emit now with growth.events (exit 1 on differences)")
    explain.add_argument("--strategies", metavar="FILE.json",
                         help="a StrategyConfig JSON for --through/--diff (default: BGE_STRATEGIES_FILE, else the defaults)")
    explain.add_argument("--diff-from", metavar="WHEN", help="read growth.events from here for --diff (default earliest)")
    project = parser.add_argument_group("re-project")
    project.add_argument("--into-schema", metavar="NAME", help="project growth.events into this scratch Postgres schema")
    project.add_argument("--batch-size", type=int, default=5000, metavar="N", help="messages per transaction (5000)")
    return parser


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """A validated replay request."""

    mode: str  # show | through | diff | project
    topics: tuple[str, ...]  # short names
    selection: Selection
    follow: bool
    output: str
    progress: bool
    quiet: bool
    group: str | None
    strategies_file: str | None
    diff_from: Bounds
    schema: str | None
    batch_size: int


def make_plan(args: argparse.Namespace, stdout: IO[str], stderr: IO[str]) -> ReplayPlan:
    """Check the options' combinations. Raises :class:`SelectionError`."""
    modes = [m for m, on in (("through", args.through), ("diff", args.diff), ("project", args.into_schema)) if on]
    if len(modes) > 1:
        raise SelectionError(f"choose one of --through, --diff, --into-schema (got {', '.join(modes)})")
    mode = modes[0] if modes else "show"
    topics = tuple(dict.fromkeys(resolve_topic(name) for name in args.topics))
    if not topics:
        if mode in ("through", "diff"):
            topics = (Topic.JETSTREAM_EVENTS.value,)
        elif mode == "project":
            topics = (Topic.GROWTH_EVENTS.value,)
        else:
            raise SelectionError("name at least one topic (jetstream.events, growth.events, growth.dlq, ... or raw, domain, dlq)")
    if mode in ("through", "diff") and any(t not in RAW_TOPICS for t in topics):
        raise SelectionError(f"--{mode} reads raw events: topics {', '.join(RAW_TOPICS)}")
    if mode == "project" and topics != (Topic.GROWTH_EVENTS.value,):
        raise SelectionError("--into-schema projects growth.events only")
    if mode == "diff" and args.follow:
        raise SelectionError("--diff needs an end: it cannot --follow")
    if args.follow and (args.end or args.to_offset):
        raise SelectionError("--follow reads without an end: drop --to/--to-offset")
    if args.strategies and mode not in ("through", "diff"):
        raise SelectionError("--strategies applies to --through and --diff")
    if args.group and mode == "diff":
        raise SelectionError("--group does not apply to --diff")
    if args.diff_from and mode != "diff":
        raise SelectionError("--diff-from applies to --diff")
    if args.batch_size < 1:
        raise SelectionError("--batch-size must be at least 1")
    selection = selection_from(args)
    if selection.filter.types and not any(t in DOMAIN_TOPICS for t in topics):
        raise SelectionError("--type filters domain events: select growth.events")
    if mode == "project":
        from projections.db import validate_schema

        try:
            validate_schema(args.into_schema)
        except ValueError as error:
            raise SelectionError(str(error)) from None
        if args.into_schema == "public":
            raise SelectionError("--into-schema must name a scratch schema, not the live 'public'")
    return ReplayPlan(
        mode=mode,
        topics=topics,
        selection=selection,
        follow=args.follow,
        output=args.output or Output.default_format(stdout),
        progress=args.progress if args.progress is not None else is_terminal(stderr),
        quiet=args.quiet,
        group=args.group,
        strategies_file=args.strategies,
        diff_from=Bounds(parse_bound(args.diff_from, datetime.now(UTC)) if args.diff_from else EARLIEST),
        schema=args.into_schema,
        batch_size=args.batch_size,
    )


# --- the run -------------------------------------------------------------------------------

Handler = Callable[[list], Awaitable[None]]


@dataclass
class Replay:
    """One replay: reads the plan's ranges and hands the matching messages to the mode."""

    settings: Settings
    plan: ReplayPlan
    out: Output
    stderr: IO[str]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tally: Tally = field(default_factory=Tally)
    differences: int = 0
    _short: dict[str, str] = field(default_factory=dict)
    _rows: int = 0

    async def run(self) -> int:
        plan = self.plan
        strategies = plan.strategies_file or self.settings.bge_strategies_file
        config = load_strategy_config(strategies) if strategies else StrategyConfig()
        explainer = Explainer(as_collected(config))
        group = replay_group(self.settings, plan.group) if plan.group else None
        consumer = await open_reader(self.settings, group=group)
        try:
            ranges = await self._ranges(consumer, group is not None)
            if plan.mode == "show":
                positions = await self._scan(consumer, ranges, self._show)
            elif plan.mode == "through":
                positions = await self._scan(consumer, ranges, lambda batch: self._through(batch, explainer))
            elif plan.mode == "diff":
                expected: dict[str, tuple[Any, Explanation]] = {}
                positions = await self._scan(consumer, ranges, lambda batch: self._expect(batch, explainer, expected))
                if not self.stop.is_set():
                    await self._diff(consumer, expected)
            else:
                positions = await self._project(consumer, ranges)
            if group is not None:
                await commit_positions(consumer, positions)
        finally:
            await consumer.stop()
            self.out.flush()
        if not plan.quiet:
            self.stderr.write(self.tally.summary() + "\n")
        if plan.mode == "diff" and self.differences:
            return NOTHING
        return OK if self.tally.total_matched else NOTHING

    async def _ranges(self, consumer: Any, committed: bool) -> list[PartitionRange]:
        plan, selection = self.plan, self.plan.selection
        ranges: list[PartitionRange] = []
        for short in plan.topics:
            topic = self.settings.topic(short)
            self._short[topic] = short
            ranges += await plan_ranges(
                consumer, topic, partitions=selection.partitions, start=selection.start, end=selection.end,
                follow=plan.follow, committed_start=committed and not selection.explicit_start,
            )
        return ranges

    async def _scan(self, consumer: Any, ranges: Sequence[PartitionRange], handle: Handler,
                    description: str | None = None, *, count: bool = True) -> dict[TopicPartition, int]:
        """Read ``ranges``, filter, hand each batch of matches to ``handle``; return the next
        offset of every partition read (for a group's commit)."""
        selection, tally = self.plan.selection, self.tally
        limit = selection.limit if count else None
        everything = not count or (limit is None and selection.filter.empty)  # no test per message
        positions: dict[TopicPartition, int] = {}
        total = None if any(r.end is None for r in ranges) else sum(r.size or 0 for r in ranges)
        label = description or ", ".join(self.plan.topics)
        with ProgressBar(self.stderr, self.plan.progress).task(label, total) as progress:
            async for batch in read_ranges(consumer, ranges, stop=self.stop):
                matched: list = []
                done = False
                read = 0
                for tp, messages in batch.items():
                    if everything:
                        kept, taken = messages, len(messages)
                    else:
                        room = None if limit is None else limit - tally.total_matched
                        kept, taken, done = _select(messages, selection.filter.matches, room)
                    matched += kept
                    if count:
                        short = self._short.get(tp.topic, tp.topic)
                        tally.matched[short] += len(kept)
                        tally.read[short] += taken
                    read += taken
                    positions[tp] = messages[taken - 1].offset + 1
                    if done:
                        break
                if matched:
                    await handle(matched)
                progress(advance=read, matched=tally.total_matched)
                if done:
                    break
        if self.stop.is_set():
            tally.interrupted = True
        return positions

    # --- show ----------------------------------------------------------------------------

    async def _show(self, batch: list) -> None:
        if self.out.fmt == "json":
            self.out.lines(b"".join([
                message_line(m.topic, m.partition, m.offset, m.timestamp, m.key, m.headers, m.value) for m in batch
            ]))
            return
        records = [
            message_record(m.topic, m.partition, m.offset, m.timestamp, m.key, m.headers, m.value) for m in batch
        ]
        console = self.out.console
        if self._rows == 0:
            console.print(_row(console.width, "where", "time", "key", "what", "summary", style="bold"))
        for record in records:
            what, summary = describe(record)
            console.print(_row(
                console.width,
                f"{self._short.get(record['topic'], record['topic'])} {record['partition']}/{record['offset']}",
                record["timestamp"], str(record.get("key") or ""), what, summary,
            ))
        self._rows += len(records)

    # --- through strategies -------------------------------------------------------------------

    def _raw_bytes(self, message: Any) -> bytes:
        value = message.value or b""
        headers = decode_headers(message.headers)
        if headers.get(Header.COMPRESSED) == "true":
            from streams.ingest import codec

            try:
                return codec.decompress(value, max_output_size=self.settings.jetstream_max_message_bytes)
            except codec.CodecError:
                return value
        return value

    @staticmethod
    def _coordinates(message: Any) -> SourceCoordinates:
        dead = read_dead_letter(message.headers) if any(k == "source_topic" for k, _ in message.headers or ()) else None
        if dead is not None and dead.topic is not None and dead.partition is not None and dead.offset is not None:
            return SourceCoordinates(dead.topic, dead.partition, dead.offset)
        return SourceCoordinates(message.topic, message.partition, message.offset)

    async def _through(self, batch: list, explainer: Explainer) -> None:
        for message in batch:
            explanation = explainer.explain(self._raw_bytes(message), self._coordinates(message))
            record = message_record(
                message.topic, message.partition, message.offset, message.timestamp, message.key, message.headers,
                message.value,
            )
            if self.out.fmt == "json":
                record["pipeline"] = explanation.to_json()
                self.out.json(record)
            else:
                self._print_explanation(record, explanation)

    def _print_explanation(self, record: dict[str, Any], explanation: Explanation) -> None:
        console = self.out.console
        what, summary = describe(record)
        console.print(
            f"[bold]{escape(self._short.get(record['topic'], record['topic']))} {record['partition']}/{record['offset']}[/] "
            f"{record['timestamp']} {escape(str(record.get('key') or ''))} [cyan]{escape(what)}[/] {escape(summary[:100])}"
        )
        result = explanation.to_json()
        if result["status"] == "rejected":
            console.print(f"  [red]✗ rejected {escape(result['code'])}[/]: {escape(result['message'])}")
            return
        if result["skipped"]:
            console.print(f"  [dim]skipped: {escape(result['skipped'])}[/]")
        names = ", ".join(event["schema"] for event in result["events"])
        console.print(f"  events: {escape(names) or '(none)'}")
        for event in result["events"]:
            if event["schema"] == "PostEnriched":
                console.print(f"  enrichment: {escape(enrichment_summary(event))}")
        for strategy, decision in result["decisions"].items():
            if decision["result"] == "success":
                for found in decision["candidates"]:
                    console.print(
                        f"  [green]✓ {escape(strategy)}[/] → candidate {escape(found['did'])} score {found['score']:g}: "
                        f"{escape('; '.join(found['reasons']))}"
                    )
            else:
                console.print(f"  [yellow]✗ {escape(strategy)}[/] ({escape(decision['code'])}): {escape(decision['message'])}")

    # --- diff ----------------------------------------------------------------------------

    async def _expect(self, batch: list, explainer: Explainer, expected: dict[str, tuple[Any, Explanation]]) -> None:
        for message in batch:
            explanation = explainer.explain(self._raw_bytes(message), self._coordinates(message))
            if explanation.source_id is not None:
                expected[explanation.source_id] = (message, explanation)

    async def _diff(self, consumer: Any, expected: dict[str, tuple[Any, Explanation]]) -> None:
        topic = self.settings.topic(Topic.GROWTH_EVENTS)
        self._short[topic] = Topic.GROWTH_EVENTS.value
        stored: dict[str, list[dict[str, Any]]] = {}

        async def keep(batch: list) -> None:
            for message in batch:
                for source_id, event in stored_events(message.value):
                    if source_id in expected:
                        stored.setdefault(source_id, []).append(event)

        ranges = await plan_ranges(consumer, topic, start=self.plan.diff_from, end=Bounds(LATEST))
        await self._scan(consumer, ranges, keep, f"{Topic.GROWTH_EVENTS.value} (stored)", count=False)
        if self.stop.is_set():
            self.tally.interrupted = True
            return
        counts = {"added": 0, "removed": 0, "changed": 0}
        for source_id, (message, explanation) in expected.items():
            now = [to_json_dict(event) for event in explanation.events]
            difference = diff_source(source_id, now, stored.get(source_id, []))
            if not difference:
                continue
            self.differences += 1
            counts["added"] += len(difference.added)
            counts["removed"] += len(difference.removed)
            counts["changed"] += len(difference.changed)
            self._print_difference(message, difference)
        if not self.plan.quiet:
            self.stderr.write(
                f"diff: {len(expected):,} source events compared, {len(expected) - self.differences:,} identical, "
                f"{self.differences:,} differ ({counts['added']} events added, {counts['removed']} removed, "
                f"{counts['changed']} changed)\n"
            )

    def _print_difference(self, message: Any, difference: SourceDiff) -> None:
        where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
        if self.out.fmt == "json":
            self.out.json({**difference.to_json(), "raw": where})
            return
        console = self.out.console
        console.print(
            f"[bold]~ {escape(difference.source_id)}[/] "
            f"({escape(self._short.get(message.topic, message.topic))} {message.partition}/{message.offset})"
        )
        for event in difference.added:
            console.print(f"  [green]+ {escape(event_line(event))}[/]")
        for event in difference.removed:
            console.print(f"  [red]- {escape(event_line(event))}[/]")
        for change in difference.changed:
            console.print(f"  [yellow]~ {escape(change.schema)} {escape(change.id)}[/]")
            for item in change.fields:
                console.print(f"      {escape(item.path)}: {escape(_short_json(item.stored))} → {escape(_short_json(item.now))}")

    # --- into a scratch schema ---------------------------------------------------------------

    async def _project(self, consumer: Any, ranges: Sequence[PartitionRange]) -> dict[TopicPartition, int]:
        from projections import BatchResult, apply_batch, connect, migrate

        plan = self.plan
        assert plan.schema is not None
        applied_versions = await migrate(self.settings.database_url, plan.schema)
        conn = await connect(self.settings.database_url, plan.schema,
                             statement_timeout_ms=self.settings.db_statement_timeout_ms)
        total = BatchResult()

        async def apply(batch: list) -> None:
            nonlocal total
            messages = batch
            for start in range(0, len(messages), plan.batch_size):
                total = total.merge(await apply_batch(conn, PROJECTION_CONSUMER, messages[start:start + plan.batch_size]))

        try:
            positions = await self._scan(consumer, ranges, apply)
        finally:
            await conn.close()
        summary = {
            "schema": plan.schema,
            "migrated": applied_versions,
            "applied": total.applied,
            "skipped": total.skipped,
            "dead_lettered": total.dead_lettered,
            "events": total.events,
            "rows": dict(sorted(total.rows.items())),
        }
        if self.out.fmt == "json":
            self.out.json(summary)
        else:
            table = Table(title=f"projected into schema {plan.schema}")
            table.add_column("table")
            table.add_column("rows written", justify="right")
            for name, rows in summary["rows"].items():
                table.add_row(name, f"{rows:,}")
            self.out.console.print(table)
            self.out.console.print(
                f"applied {total.applied:,} messages ({total.events:,} events), skipped {total.skipped:,} "
                f"already applied, {total.dead_lettered:,} dead-lettered"
            )
        return positions


def _select(messages: list, matches: Callable[..., bool], room: int | None) -> tuple[list, int, bool]:
    """The ``messages`` that match, at most ``room`` of them (None: no limit); how many were read;
    whether ``room`` was reached."""
    kept = []
    for index, message in enumerate(messages):
        if matches(message.key, message.headers, message.value):
            kept.append(message)
            if room is not None and len(kept) >= room:
                return kept, index + 1, True
    return kept, len(messages), False


# --- rendering helpers ---------------------------------------------------------------------


COLUMNS = (24, 24, 32, 34)
"""Widths of the table's where, time, key and what columns; the summary takes the rest."""


def _row(width: int, *cells: str, style: str = "") -> Text:
    """One table row: fixed-width cells, each cut with an ellipsis, the last one filling the line."""
    text = Text(style=style, no_wrap=True, overflow="ellipsis")
    for (cell, size), cell_style in zip(zip(cells, COLUMNS), ("", "", "", "cyan"), strict=False):
        part = Text(cell.replace("\n", " "), style=cell_style if not style else "")
        part.truncate(size, overflow="ellipsis", pad=True)
        text.append(part)
        text.append(" ")
    last = Text(cells[-1].replace("\n", " "))
    last.truncate(max(width - sum(COLUMNS) - len(COLUMNS) - 1, 20), overflow="ellipsis")
    text.append(last)
    return text


def _short_json(value: Any, limit: int = 120) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def event_line(event: dict[str, Any]) -> str:
    """One domain event (JSON) in a line."""
    schema = event.get("schema", "?")
    if schema == "CandidateFound":
        return f"CandidateFound {event.get('id')}: {event.get('strategy')} {event.get('did')} score {event.get('score')}"
    return f"{schema} {event.get('id')}"


def enrichment_summary(event: dict[str, Any]) -> str:
    """A ``PostEnriched`` event in a line: hashtags, mentions, links, media, thread, langs."""
    parts = []
    if event.get("hashtags"):
        parts.append("hashtags " + " ".join(f"#{tag}" for tag in event["hashtags"]))
    if event.get("mentions"):
        parts.append("mentions " + " ".join(event["mentions"]))
    if event.get("links"):
        parts.append("links " + " ".join(link.get("uri", "") for link in event["links"]))
    if event.get("media"):
        parts.append("media " + " ".join(item.get("kind", "") for item in event["media"]))
    thread = event.get("thread") or {}
    if thread:
        depth = thread.get("depth")
        parts.append("top-level post" if depth == 0 else f"reply in thread {thread.get('root_uri')} (depth {depth})")
    if event.get("quote"):
        parts.append(f"quotes {event['quote'].get('uri')}")
    if event.get("langs"):
        parts.append("langs " + ",".join(event["langs"]))
    return " · ".join(parts) or "(nothing)"


def describe(record: dict[str, Any]) -> tuple[str, str]:
    """``(what, summary)`` of a printed message: its kind and a line of its content."""
    headers, value = record.get("headers") or {}, record.get("value")
    if "error_reason" in headers:
        return f"dead letter {headers[Header.ERROR_REASON]}", headers.get(Header.ERROR_MESSAGE, "")
    if record.get("encoding") != "json":
        return "bytes", f"{len(str(value or ''))} base64 characters"
    if isinstance(value, orjson.Fragment):
        value = orjson.loads(orjson.dumps(value))
    if not isinstance(value, dict):
        return "json", _short_json(value)
    if "schema" in value:
        schema = value["schema"]
        if schema == "CandidateFound":
            reasons = value.get("reasons") or [""]
            return schema, f"{value.get('strategy')} score {value.get('score')}: {reasons[0]}"
        for name in ("text", "uri", "subject_did", "handle", "status"):
            if value.get(name):
                return schema, str(value[name]).replace("\n", " ")
        return schema, ""
    kind = value.get("kind", "?")
    commit = value.get("commit")
    if isinstance(commit, dict):
        record_ = commit.get("record") or {}
        summary = ""
        if isinstance(record_, dict):
            subject = record_.get("subject")
            summary = str(record_.get("text") or (subject.get("uri") if isinstance(subject, dict) else subject) or "")
        return f"{kind} {commit.get('collection')} {commit.get('operation')}", summary.replace("\n", " ")
    for name in ("identity", "account"):
        if isinstance(value.get(name), dict):
            return kind, _short_json(value[name])
    return str(kind), _short_json(value)


# --- entry points ----------------------------------------------------------------------------


async def run(
    argv: Sequence[str],
    *,
    settings: Settings | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    stop: asyncio.Event | None = None,
    signals: bool = False,
) -> int:
    """``bge replay`` in a running event loop; returns the exit code. ``settings`` default to
    the environment's; ``stop`` ends the read early, as Ctrl-C does (with ``signals``)."""
    stdout, stderr = default_streams(stdout, stderr)
    parsed = parse_cli(build_parser(), argv, stderr)
    if isinstance(parsed, int):
        return parsed
    try:
        settings = settings or load_settings()
        plan = make_plan(parsed, stdout, stderr)
    except (SelectionError, ConfigError) as error:
        stderr.write(f"bge replay: {error}\n")
        return USAGE
    replay = Replay(settings, plan, Output(stdout, plan.output), stderr, stop=stop or asyncio.Event())
    try:
        if signals:
            with stop_on_signals(replay.stop, replay.tally):
                return await replay.run()
        return await replay.run()
    except SelectionError as error:
        stderr.write(f"bge replay: {error}\n")
        return USAGE
    except (KafkaError, OSError) as error:
        stderr.write(f"bge replay: Kafka failed: {type(error).__name__}: {error}\n")
        return FAILED
    except Exception as error:  # Postgres errors of --into-schema
        if type(error).__module__.startswith(("psycopg", "projections")):
            stderr.write(f"bge replay: Postgres failed: {type(error).__name__}: {error}\n")
            return FAILED
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``bge replay ...`` (see ``bge replay --help``). The process collects garbage as the worker
    does (:func:`~streams.kafka.source.tune_gc`): batches of 10,000 messages made Python's default
    collector about a quarter of a replay's time."""
    import sys

    from streams.kafka.source import tune_gc

    tune_gc()
    return asyncio.run(run(sys.argv[1:] if argv is None else argv, signals=True))


if __name__ == "__main__":
    raise SystemExit(main())
