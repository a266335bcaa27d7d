"""``bge validate``: the startup validator. Is this machine ready to run the product?

Checks, in order (``--only NAME``, repeatable, runs a selection):

| name | passes when | otherwise |
| --- | --- | --- |
| ``config`` | every variable is valid (``load_settings``) | fail, one line per invalid variable |
| ``kafka`` | a broker answers a metadata request | fail |
| ``postgres`` | a connection opens and answers a query | fail |
| ``schema`` | the schema (``--schema``, default ``DB_SCHEMA``) is at this code's version | fail (missing, too old, too new, edited) |
| ``topics`` | every product topic exists with its partitions (``BGE_TOPIC_PARTITIONS``; ``jetstream.ops`` 1) | fail |
| ``jetstream`` | one of ``JETSTREAM_ENDPOINT`` accepts a TCP connection | warning: the ingest would wait and retry |
| ``atproto`` | ``ATPROTO_SERVICE`` accepts a TCP connection | warning: the crawl would fail until it does |
| ``tracing`` | the OTLP endpoint accepts a TCP connection (or tracing is disabled) | warning: spans would be dropped |
| ``python`` | Python >= 3.11 | fail |
| ``memory`` | >= 1 GiB available | warning below 1 GiB, fail below 256 MiB |
| ``state-dir`` | ``BGE_STATE_DIR`` (or the temp folder) is writable | fail; warning below 1 GiB free |

A check that needs another which failed is ``skipped`` (``schema`` needs ``postgres``, ``topics``
needs ``kafka``, and those and ``jetstream``/``atproto`` need a valid configuration). The configuration is always loaded;
with ``--only`` it is reported only when it is invalid.

Output: a table on a terminal, plain lines otherwise, or one JSON object with ``--json``.
Exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 on a usage error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson
import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from projections import MigrationError, check_schema_version, connect
from streams.health.checks import kafka_admin, otlp_endpoint, probe_tcp
from streams.config import ConfigError, Settings, load_settings
from streams.cli.console import USAGE, UsageParser, parse_cli
from streams.kafka.clients import PRODUCT_TOPICS, partition_count
from streams.observability.log import mask_text

__all__ = ["CHECKS", "CheckReport", "Status", "main", "render", "validate"]

CHECKS: tuple[str, ...] = ("config", "kafka", "postgres", "schema", "topics", "jetstream", "atproto", "tracing",
                           "python", "memory", "state-dir")
DEPENDS_ON: dict[str, str] = {"schema": "postgres", "topics": "kafka"}
MIN_PYTHON = (3, 11)
GIB = 1024**3
MIB = 1024**2
MEMORY_WARN_BELOW = 1 * GIB
MEMORY_FAIL_BELOW = 256 * MIB
DISK_WARN_BELOW = 1 * GIB


class Status(StrEnum):
    PASS = "pass"
    WARNING = "warning"
    FAIL = "fail"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class CheckReport:
    """One check's verdict: ``message`` says what was found; ``details`` list the problems
    (one line each) when there are several."""

    name: str
    status: Status
    message: str
    details: tuple[str, ...] = ()
    duration_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "message": self.message,
                "details": list(self.details), "duration_ms": round(self.duration_ms, 1)}


@dataclass(slots=True)
class _Verdict:
    status: Status
    message: str
    details: tuple[str, ...] = field(default=())


def _pass(message: str) -> _Verdict:
    return _Verdict(Status.PASS, message)


def _warn(message: str) -> _Verdict:
    return _Verdict(Status.WARNING, message)


def _fail(message: str, details: Sequence[str] = ()) -> _Verdict:
    return _Verdict(Status.FAIL, message, tuple(details))


def _reason(exc: BaseException) -> str:
    """An error as one line, credentials masked."""
    text = " ".join(str(exc).split())
    return mask_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# --- the checks ----------------------------------------------------------------------------


async def check_kafka(settings: Settings) -> _Verdict:
    servers = ",".join(settings.kafka_bootstrap_servers)
    try:
        async with kafka_admin(settings) as admin:
            cluster = await admin.describe_cluster()
    except Exception as exc:  # noqa: BLE001 - the reason is the verdict
        return _fail(f"cannot reach Kafka at {servers}: {_reason(exc)}")
    return _pass(f"{len(cluster.get('brokers', ()))} broker(s) at {servers} "
                 f"(cluster {cluster.get('cluster_id')}, controller {cluster.get('controller_id')})")


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 5432}{parts.path}"


async def check_postgres(settings: Settings, timeout: float) -> _Verdict:
    where = _where(settings.database_url)
    try:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True,
                                                         connect_timeout=max(1, int(timeout))) as conn:
            row = await (await conn.execute("SELECT current_setting('server_version')")).fetchone()
    except Exception as exc:  # noqa: BLE001
        return _fail(f"cannot connect to Postgres at {where}: {_reason(exc)}")
    return _pass(f"PostgreSQL {row[0] if row else '?'} at {where}")


async def check_schema(settings: Settings, schema: str) -> _Verdict:
    try:
        conn = await connect(settings.database_url, schema, statement_timeout_ms=settings.db_statement_timeout_ms)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        found = await (await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))).fetchone()
        if found is None:
            return _fail(f"schema {schema!r} does not exist: run `bge migrate` first")
        version = await check_schema_version(conn)
    except MigrationError as exc:
        return _fail(str(exc))
    finally:
        await conn.close()
    return _pass(f"schema {schema!r} is at version {version}, this code's")


async def check_topics(settings: Settings) -> _Verdict:
    async with kafka_admin(settings) as admin:
        found = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}
    problems = []
    for topic in PRODUCT_TOPICS:
        name, expected = settings.topic(topic), partition_count(settings, topic)
        if name not in found:
            problems.append(f"{name}: missing (expected with {_partitions(expected)}; `bge topics` creates it)")
        elif found[name] != expected:
            problems.append(f"{name}: {_partitions(found[name])}, expected {expected}")
    if problems:
        return _fail(f"{len(problems)} of {len(PRODUCT_TOPICS)} topics missing or mis-partitioned", problems)
    return _pass(f"all {len(PRODUCT_TOPICS)} topics present with their partitions "
                 f"({settings.bge_topic_partitions}; jetstream.ops 1)")


def _port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or (443 if parts.scheme in ("https", "wss") else 80)


async def check_jetstream(settings: Settings, timeout: float) -> _Verdict:
    urls = settings.jetstream_endpoint
    problems = await asyncio.gather(*(probe_tcp(*_port(url), timeout) for url in urls))
    reachable = [url for url, problem in zip(urls, problems) if problem is None]
    if reachable:
        return _pass(f"{len(reachable)} of {len(urls)} Jetstream endpoints reachable, first {reachable[0]}")
    return _Verdict(Status.WARNING, f"none of {len(urls)} Jetstream endpoints reachable: the ingest would wait and retry",
                    tuple(f"{url}: {problem}" for url, problem in zip(urls, problems)))


async def check_atproto(settings: Settings, timeout: float) -> _Verdict:
    problem = await probe_tcp(*_port(settings.atproto_service), timeout)
    if problem is not None:
        return _warn(f"{settings.atproto_service} unreachable ({problem}): the crawl would fail until it is")
    return _pass(f"{settings.atproto_service} reachable")


def _partitions(count: int) -> str:
    return f"{count} partition{'' if count == 1 else 's'}"


async def check_tracing(timeout: float) -> _Verdict:
    try:
        endpoint = otlp_endpoint()
    except ValueError as exc:
        return _warn(f"{exc}: spans would be dropped")
    if endpoint is None:
        return _pass("tracing is disabled (OTEL_SDK_DISABLED or OTEL_TRACES_EXPORTER=none)")
    problem = await probe_tcp(endpoint.host, endpoint.port, timeout)
    if problem is not None:
        return _warn(f"OTLP endpoint {endpoint.url} unreachable ({problem}): spans would be dropped")
    return _pass(f"OTLP endpoint {endpoint.url} reachable")


def check_python() -> _Verdict:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return _fail(f"Python {version}; {'.'.join(map(str, MIN_PYTHON))} or newer is required")
    return _pass(f"Python {version}")


def check_memory() -> _Verdict:
    memory = psutil.virtual_memory()
    message = f"{memory.available / GIB:.1f} GiB available of {memory.total / GIB:.1f} GiB"
    if memory.available < MEMORY_FAIL_BELOW:
        return _fail(f"{message}; at least {MEMORY_FAIL_BELOW // MIB} MiB are needed")
    if memory.available < MEMORY_WARN_BELOW:
        return _warn(f"{message}; below {MEMORY_WARN_BELOW // GIB} GiB the worker may swap")
    return _pass(message)


def check_state_dir(state_dir: Path | None) -> _Verdict:
    path = state_dir or Path(tempfile.gettempdir())
    source = "BGE_STATE_DIR" if state_dir else "the temp folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".bge-validate-") as probe:
            probe.write(b"ok")
            probe.flush()
        free = shutil.disk_usage(path).free
    except OSError as exc:
        return _fail(f"{path} ({source}) is not writable: {_reason(exc)}")
    message = f"{path} ({source}) is writable, {free / GIB:.1f} GiB free"
    if free < DISK_WARN_BELOW:
        return _warn(f"{message}; below {DISK_WARN_BELOW // GIB} GiB")
    return _pass(message)


# --- running them --------------------------------------------------------------------------


async def _timed(name: str, run: Callable[[], Awaitable[_Verdict]], timeout: float) -> CheckReport:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            verdict = await run()
    except TimeoutError:
        verdict = _fail(f"no answer within {timeout:g}s")
    except Exception as exc:  # noqa: BLE001 - a crashing check is a failed check
        verdict = _fail(_reason(exc))
    return CheckReport(name, verdict.status, verdict.message, verdict.details,
                       (time.perf_counter() - started) * 1000)


async def validate(
    only: Sequence[str] = (),
    *,
    schema: str | None = None,
    timeout: float = 10.0,
    env_file: str | Path | None = ".env",
) -> list[CheckReport]:
    """Run the checks named in ``only`` (all when empty) and return their reports in
    :data:`CHECKS` order. Never raises for a failing check."""
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks: {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    selected = [name for name in CHECKS if not only or name in only]
    started = time.perf_counter()
    settings: Settings | None = None
    try:
        settings = load_settings(env_file)
        config = CheckReport("config", Status.PASS, "every variable is valid")
    except ConfigError as exc:
        config = CheckReport("config", Status.FAIL, f"{len(exc.lines)} invalid variable(s)", tuple(exc.lines))
    config = CheckReport(config.name, config.status, config.message, config.details,
                         (time.perf_counter() - started) * 1000)

    runners: dict[str, Callable[[], Awaitable[_Verdict]]] = {}
    if settings is not None:
        s = settings
        runners |= {
            "kafka": lambda: check_kafka(s),
            "postgres": lambda: check_postgres(s, timeout),
            "schema": lambda: check_schema(s, schema or s.db_schema),
            "topics": lambda: check_topics(s),
            "jetstream": lambda: check_jetstream(s, min(timeout, 3.0)),
            "atproto": lambda: check_atproto(s, min(timeout, 3.0)),
        }
    state_dir = settings.bge_state_dir if settings is not None else (
        Path(os.environ["BGE_STATE_DIR"]) if os.environ.get("BGE_STATE_DIR") else None)
    runners |= {
        "tracing": lambda: check_tracing(min(timeout, 3.0)),
        "python": _sync(check_python),
        "memory": _sync(check_memory),
        "state-dir": _sync(lambda: check_state_dir(state_dir)),
    }

    reports: dict[str, CheckReport] = {}
    if "config" in selected or config.status is Status.FAIL:
        reports["config"] = config
    first = [name for name in selected if name != "config" and name not in DEPENDS_ON]
    for name, report in zip(first, await asyncio.gather(*(_run(name, runners, timeout) for name in first))):
        reports[name] = report
    for name in [n for n in selected if n in DEPENDS_ON]:
        needed = reports.get(DEPENDS_ON[name])
        if settings is not None and needed is not None and needed.status is Status.FAIL:
            reports[name] = CheckReport(name, Status.SKIPPED, f"not checked: {needed.name} failed")
        else:
            reports[name] = await _run(name, runners, timeout)
    return [reports[name] for name in CHECKS if name in reports]


def _sync(check: Callable[[], _Verdict]) -> Callable[[], Awaitable[_Verdict]]:
    async def run() -> _Verdict:
        return check()

    return run


async def _run(name: str, runners: dict[str, Callable[[], Awaitable[_Verdict]]], timeout: float) -> CheckReport:
    if name not in runners:  # needs the settings, which are invalid
        return CheckReport(name, Status.SKIPPED, "not checked: the configuration is invalid")
    return await _timed(name, runners[name], timeout)


# --- output --------------------------------------------------------------------------------

_LABELS = {Status.PASS: "PASS", Status.WARNING: "WARN", Status.FAIL: "FAIL", Status.SKIPPED: "SKIP"}
_STYLES = {Status.PASS: "green", Status.WARNING: "yellow", Status.FAIL: "bold red", Status.SKIPPED: "dim"}


def summary(reports: Sequence[CheckReport]) -> str:
    counts = {status: sum(r.status is status for r in reports) for status in Status}
    parts = [f"{counts[s]} {s.value}" for s in (Status.FAIL, Status.WARNING, Status.SKIPPED) if counts[s]]
    verdict = "validation failed" if counts[Status.FAIL] else "validation passed"
    return f"{verdict}: {counts[Status.PASS]} of {len(reports)} passed" + (f", {', '.join(parts)}" if parts else "")


def render(reports: Sequence[CheckReport], out: IO[str], *, as_json: bool = False, table: bool = False) -> None:
    """Write the reports: one JSON object, a rich table, or plain lines."""
    if as_json:
        ok = not any(r.status is Status.FAIL for r in reports)
        out.write(orjson.dumps({"ok": ok, "summary": summary(reports),
                                "checks": [r.to_json() for r in reports]}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if table:
        grid = Table(title="bge validate", title_justify="left")
        for column in ("check", "status", "result", "ms"):
            grid.add_column(column, justify="right" if column == "ms" else "left", overflow="fold")
        for r in reports:
            text = "\n".join((r.message, *(f"  {line}" for line in r.details)))
            grid.add_row(r.name, f"[{_STYLES[r.status]}]{_LABELS[r.status]}[/]", text, f"{r.duration_ms:.0f}")
        console = Console(file=out, highlight=False)
        console.print(grid)
        console.print(summary(reports), style="bold red" if "failed" in summary(reports) else "bold green")
        return
    width = max((len(r.name) for r in reports), default=0)
    for r in reports:
        out.write(f"{_LABELS[r.status]}  {r.name:<{width}}  {r.message} ({r.duration_ms:.0f} ms)\n")
        for line in r.details:
            out.write(f"{'':6}{'':<{width}}  - {line}\n")
    out.write(summary(reports) + "\n")


def build_parser() -> UsageParser:
    parser = UsageParser(prog="bge validate", description="Check the configuration, the services, the schema, "
                         "the topics and the environment before starting the product.")
    parser.add_argument("--only", action="append", default=[], choices=CHECKS, metavar="NAME",
                        help=f"run only this check (repeatable): {', '.join(CHECKS)}")
    parser.add_argument("--json", action="store_true", help="write one JSON object instead of a table")
    parser.add_argument("--schema", help="the Postgres schema of the projections (default: DB_SCHEMA)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long each check may take (default: 10)")
    return parser


def main(argv: Sequence[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    args = parse_cli(build_parser(), list(sys.argv[1:] if argv is None else argv), err)
    if isinstance(args, int):
        return args
    if args.timeout <= 0:
        err.write("bge validate: --timeout must be > 0\n")
        return USAGE
    reports = asyncio.run(validate(args.only, schema=args.schema, timeout=args.timeout))
    render(reports, out, as_json=args.json, table=not args.json and out.isatty())
    return 1 if any(r.status is Status.FAIL for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main())
