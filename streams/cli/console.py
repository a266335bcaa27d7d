"""What the replay and dead-letter commands share: their selection options, JSON-lines and table
output, a progress bar on stderr, a tally of what was read, and a clean stop on Ctrl-C.

Exit codes of both commands: :data:`OK` (0), :data:`NOTHING` (1: nothing matched, or ``--diff``
found differences), :data:`USAGE` (2: a usage or configuration error), :data:`FAILED` (3: Kafka
or Postgres failed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from streams.cli.selection import (
    EARLIEST,
    LATEST,
    Bounds,
    MessageFilter,
    SelectionError,
    json_line,
    parse_bound,
    parse_offset_bounds,
    parse_where,
)

__all__ = [
    "FAILED",
    "NOTHING",
    "OK",
    "USAGE",
    "Output",
    "ProgressBar",
    "Selection",
    "Tally",
    "UsageParser",
    "add_selection_options",
    "joined_values",
    "json_line",
    "parse_cli",
    "selection_from",
    "stop_on_signals",
]

OK, NOTHING, USAGE, FAILED = 0, 1, 2, 3

# Options whose value may start with "-" (``--from -15m``, ``--from-offset -100``).
VALUE_OPTIONS = frozenset({"--from", "--to", "--since", "--until", "--from-offset", "--to-offset", "--diff-from"})


def joined_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with ``--from -15m`` written as ``--from=-15m`` (argparse would take ``-15m``
    for an option)."""
    out: list[str] = []
    items = list(argv)
    i = 0
    while i < len(items):
        item = items[i]
        if item in VALUE_OPTIONS and i + 1 < len(items) and items[i + 1].startswith("-") and items[i + 1] != "--":
            out.append(f"{item}={items[i + 1]}")
            i += 2
            continue
        out.append(item)
        i += 1
    return out


class UsageError(Exception):
    """Raised by :class:`UsageParser` instead of exiting."""


class UsageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that raises :class:`UsageError` instead of exiting, so the commands
    return exit code 2 to their caller (the ``bge`` entry point or a test)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: error: {message}")


def parse_cli(parser: UsageParser, argv: Sequence[str], stderr: IO[str]) -> argparse.Namespace | int:
    """Parse ``argv``; on ``--help`` print help and return 0, on an error print usage and the
    message and return 2."""
    try:
        return parser.parse_args(joined_values(argv))
    except UsageError as error:
        stderr.write(parser.format_usage())
        stderr.write(f"{error}\n")
        return USAGE
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)


# --- selection options ---------------------------------------------------------------------


def add_selection_options(parser: argparse.ArgumentParser, *, filters: bool = True) -> None:
    """``--partition``, ``--from``/``--to``, ``--from-offset``/``--to-offset``, ``--limit`` and,
    with ``filters``, ``--did``, ``--collection``, ``--operation``, ``--kind``, ``--type``, ``--where``."""
    group = parser.add_argument_group("range")
    group.add_argument("-p", "--partition", type=int, action="append", default=[], metavar="N",
                       help="only this partition (repeatable; default: all)")
    group.add_argument("--from", "--since", dest="start", metavar="WHEN",
                       help="start: earliest (default), latest, ISO 8601 time, or relative (-15m, -2h, -1d, now)")
    group.add_argument("--to", "--until", dest="end", metavar="WHEN",
                       help="end (exclusive for times): latest (default), earliest, ISO 8601 time, or relative")
    group.add_argument("--from-offset", action="append", default=[], metavar="[P:]N",
                       help="start offset, every partition or partition P (repeatable); negative counts from the end")
    group.add_argument("--to-offset", action="append", default=[], metavar="[P:]N",
                       help="last offset to read (inclusive), every partition or partition P (repeatable)")
    group.add_argument("-n", "--limit", type=int, metavar="N", help="stop after N matching messages")
    if not filters:
        return
    group = parser.add_argument_group("filters (different filters must all match; repeated values: any)")
    group.add_argument("--did", action="append", default=[], help="the key, the event's did or source.did")
    group.add_argument("--collection", action="append", default=[], metavar="NSID",
                       help="collection NSID, or a prefix ending in * (app.bsky.feed.*)")
    group.add_argument("--operation", action="append", default=[], choices=("create", "update", "delete"))
    group.add_argument("--kind", action="append", default=[], choices=("commit", "identity", "account"))
    group.add_argument("--type", dest="types", action="append", default=[], metavar="SCHEMA",
                       help="domain event schema name (PostCreated, CandidateFound, ...)")
    group.add_argument("--where", action="append", default=[], metavar="PATH OP VALUE",
                       help="field match on the JSON value: path.to.field==v, !=v, ~regex, !~regex (repeatable: all)")


@dataclass(frozen=True, slots=True)
class Selection:
    partitions: tuple[int, ...]
    start: Bounds
    end: Bounds
    limit: int | None
    filter: MessageFilter
    explicit_start: bool


def selection_from(args: argparse.Namespace, now: datetime | None = None) -> Selection:
    """The :class:`Selection` of parsed options. Raises :class:`SelectionError`."""
    now = now or datetime.now(UTC)
    start_default = parse_bound(args.start, now) if args.start else EARLIEST
    end_default = parse_bound(args.end, now) if args.end else LATEST
    start = parse_offset_bounds(args.from_offset, start_default)
    end = parse_offset_bounds(args.to_offset, end_default)
    if args.limit is not None and args.limit < 1:
        raise SelectionError("--limit must be at least 1")
    if any(p < 0 for p in args.partition):
        raise SelectionError("--partition must not be negative")
    message_filter = MessageFilter()
    if hasattr(args, "did"):
        types = frozenset(args.types)
        if types:
            from domain.events import SCHEMAS

            known = {name for name, _ in SCHEMAS}
            unknown = sorted(types - known)
            if unknown:
                raise SelectionError(f"unknown domain event type {unknown[0]!r}; known: {', '.join(sorted(known))}")
        message_filter = MessageFilter(
            dids=frozenset(args.did),
            collections=tuple(args.collection),
            operations=frozenset(args.operation),
            kinds=frozenset(args.kind),
            types=types,
            where=tuple(parse_where(text) for text in args.where),
        )
    return Selection(
        partitions=tuple(args.partition),
        start=start,
        end=end,
        limit=args.limit,
        filter=message_filter,
        explicit_start=bool(args.start or args.from_offset),
    )


# --- output --------------------------------------------------------------------------------


class Output:
    """JSON lines or rich tables on stdout (``fmt``: ``json`` or ``table``)."""

    def __init__(self, stdout: IO[str], fmt: str) -> None:
        self.fmt = fmt
        self._text = stdout
        self._binary: IO[bytes] | None = getattr(stdout, "buffer", None)
        # a terminal's own width; redirected tables get room for their columns
        self.console = Console(file=stdout, highlight=False, soft_wrap=False,
                               width=None if is_terminal(stdout) else 160)

    @staticmethod
    def default_format(stdout: IO[str]) -> str:
        """``table`` in a terminal, else ``json``."""
        isatty = getattr(stdout, "isatty", None)
        return "table" if isatty is not None and isatty() else "json"

    def json(self, record: Any) -> None:
        self.lines(json_line(record))

    def json_many(self, records: list[Any]) -> None:
        if records:
            self.lines(b"".join([json_line(record) for record in records]))

    def lines(self, data: bytes) -> None:
        """Lines of JSON already encoded (UTF-8), buffered like :meth:`json`."""
        if self._binary is not None:
            self._binary.write(data)
        else:
            self._text.write(data.decode())

    def raw(self, data: bytes) -> None:
        """``data`` as it is (UTF-8 with replacements when stdout takes only text)."""
        if self._binary is not None:
            self._binary.write(data)
            self._binary.flush()
        else:
            self._text.write(data.decode("utf-8", "replace"))

    def flush(self) -> None:
        with contextlib.suppress(Exception):
            if self._binary is not None:
                self._binary.flush()
            self._text.flush()


# --- progress and tally ----------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else None)
        return Text(f"{speed:,.0f} msg/s" if speed else "- msg/s", style="progress.data.speed")


class ProgressBar:
    """A rich progress bar with rate and ETA on stderr (a no-op when not ``enabled``)."""

    def __init__(self, stderr: IO[str], enabled: bool) -> None:
        self._progress: Progress | None = None
        if enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[matched]} matched"),
                console=Console(file=stderr),
                transient=False,
                speed_estimate_period=10,
            )

    @contextlib.contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Any]:
        if self._progress is None:
            yield lambda advance=0, matched=0: None
            return
        with self._progress:
            task_id = self._progress.add_task(description, total=total, matched=0)

            def update(advance: int = 0, matched: int = 0) -> None:
                assert self._progress is not None
                self._progress.update(task_id, advance=advance, matched=matched)

            yield update


@dataclass
class Tally:
    """Messages read and matched, by topic."""

    read: Counter[str] = field(default_factory=Counter)
    matched: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    interrupted: bool = False

    @property
    def total_read(self) -> int:
        return sum(self.read.values())

    @property
    def total_matched(self) -> int:
        return sum(self.matched.values())

    def summary(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        topics = "; ".join(f"{topic}: {self.read[topic]} read, {self.matched[topic]} matched" for topic in sorted(self.read))
        line = (
            f"{'interrupted: ' if self.interrupted else ''}read {self.total_read:,} messages, matched "
            f"{self.total_matched:,} in {elapsed:.1f} s ({self.total_read / elapsed:,.0f} msg/s)"
        )
        return f"{line} [{topics}]" if topics else line

    def to_json(self) -> dict[str, Any]:
        return {"read": dict(self.read), "matched": dict(self.matched), "interrupted": self.interrupted}


@contextlib.contextmanager
def stop_on_signals(stop: asyncio.Event, tally: Tally | None = None) -> Iterator[None]:
    """Set ``stop`` on the first SIGINT or SIGTERM (a clean stop with a summary); a second one
    interrupts at once. Does nothing where the loop cannot take signal handlers."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []

    def first(signum: int) -> None:
        stop.set()
        if tally is not None:
            tally.interrupted = True
        for sig in installed:
            loop.remove_signal_handler(sig)

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, first, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    try:
        yield
    finally:
        for sig in installed:
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(sig)


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def default_streams(stdout: IO[str] | None, stderr: IO[str] | None) -> tuple[IO[str], IO[str]]:
    return stdout or sys.stdout, stderr or sys.stderr
