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

The checks run in the same framework as the worker's ``/health``: a
:class:`~streams.health.report.HealthRegistry` (concurrently, each under ``--timeout``; ``schema`` and
``topics`` registered as needing ``postgres`` and ``kafka``). Its statuses are shown here as pass
(healthy), warning (degraded), fail (unhealthy) and skipped.

Output: a table on a terminal, plain lines otherwise, or one JSON object with ``--json``.
Exit code: 0 when nothing failed (warnings allowed), 1 when a check failed, 2 on a usage error.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import orjson
import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from projections import MigrationError, check_schema_version, connect
from streams.cli.console import USAGE, UsageParser, parse_cli
from streams.config import ConfigError, Settings, load_settings
from streams.health.checks import kafka_admin, otlp_endpoint, probe_tcp
from streams.health.report import (
    Check,
    CheckOutcome,
    CheckResult,
    HealthRegistry,
    HealthStatus,
)
from streams.kafka.clients import PRODUCT_TOPICS, partition_count
from streams.observability.log import mask_text

__all__ = ["CHECKS", "main", "render", "validate"]

CHECKS: tuple[str, ...] = ("config", "kafka", "postgres", "schema", "topics", "jetstream", "atproto", "tracing",
                           "python", "memory", "state-dir")
DEPENDS_ON: dict[str, str] = {"schema": "postgres", "topics": "kafka"}
NEED_SETTINGS: tuple[str, ...] = ("kafka", "postgres", "schema", "topics", "jetstream", "atproto")
MIN_PYTHON = (3, 11)
GIB = 1024**3
MIB = 1024**2
MEMORY_WARN_BELOW = 1 * GIB
MEMORY_FAIL_BELOW = 256 * MIB
DISK_WARN_BELOW = 1 * GIB


_pass = CheckOutcome.healthy
_warn = CheckOutcome.degraded
_fail = CheckOutcome.unhealthy


def _reason(exc: BaseException) -> str:
    """An error as one line, credentials masked."""
    text = " ".join(str(exc).split())
    return mask_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


# --- the checks ----------------------------------------------------------------------------


async def check_kafka(settings: Settings) -> CheckOutcome:
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


async def check_postgres(settings: Settings, timeout: float) -> CheckOutcome:
    where = _where(settings.database_url)
    try:
        async with await psycopg.AsyncConnection.connect(settings.database_url, autocommit=True,
                                                         connect_timeout=max(1, int(timeout))) as conn:
            row = await (await conn.execute("SELECT current_setting('server_version')")).fetchone()
    except Exception as exc:  # noqa: BLE001
        return _fail(f"cannot connect to Postgres at {where}: {_reason(exc)}")
    return _pass(f"PostgreSQL {row[0] if row else '?'} at {where}")


async def check_schema(settings: Settings, schema: str) -> CheckOutcome:
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


async def check_topics(settings: Settings) -> CheckOutcome:
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


async def check_jetstream(settings: Settings, timeout: float) -> CheckOutcome:
    urls = settings.jetstream_endpoint
    problems = await asyncio.gather(*(probe_tcp(*_port(url), timeout) for url in urls))
    reachable = [url for url, problem in zip(urls, problems) if problem is None]
    if reachable:
        return _pass(f"{len(reachable)} of {len(urls)} Jetstream endpoints reachable, first {reachable[0]}")
    return _warn(f"none of {len(urls)} Jetstream endpoints reachable: the ingest would wait and retry",
                 [f"{url}: {problem}" for url, problem in zip(urls, problems)])


async def check_atproto(settings: Settings, timeout: float) -> CheckOutcome:
    problem = await probe_tcp(*_port(settings.atproto_service), timeout)
    if problem is not None:
        return _warn(f"{settings.atproto_service} unreachable ({problem}): the crawl would fail until it is")
    return _pass(f"{settings.atproto_service} reachable")


def _partitions(count: int) -> str:
    return f"{count} partition{'' if count == 1 else 's'}"


async def check_tracing(timeout: float) -> CheckOutcome:
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


def check_python() -> CheckOutcome:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return _fail(f"Python {version}; {'.'.join(map(str, MIN_PYTHON))} or newer is required")
    return _pass(f"Python {version}")


def check_memory() -> CheckOutcome:
    memory = psutil.virtual_memory()
    message = f"{memory.available / GIB:.1f} GiB available of {memory.total / GIB:.1f} GiB"
    if memory.available < MEMORY_FAIL_BELOW:
        return _fail(f"{message}; at least {MEMORY_FAIL_BELOW // MIB} MiB are needed")
    if memory.available < MEMORY_WARN_BELOW:
        return _warn(f"{message}; below {MEMORY_WARN_BELOW // GIB} GiB the worker may swap")
    return _pass(message)


def check_state_dir(state_dir: Path | None) -> CheckOutcome:
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


def _explain(error: Exception, timed_out_after: float | None) -> str:
    """How a check that raised or timed out is reported (the registry's ``explain``)."""
    return f"no answer within {timed_out_after:g}s" if timed_out_after is not None else _reason(error)


def _returning(outcome: CheckOutcome) -> Check:
    async def check() -> CheckOutcome:
        return outcome

    return check


def _sync(check: Callable[[], CheckOutcome]) -> Check:
    async def run() -> CheckOutcome:
        return check()

    return run


def _load_config(env_file: str | Path | None) -> tuple[Settings | None, CheckOutcome]:
    try:
        return load_settings(env_file), _pass("every variable is valid")
    except ConfigError as exc:
        return None, _fail(f"{len(exc.lines)} invalid variable(s)", exc.lines)


def _checks(settings: Settings | None, config: CheckOutcome, schema: str | None,
            timeout: float) -> dict[str, Check]:
    """Every check by name; those needing the settings say they were not checked when the
    configuration is invalid."""
    quick = min(timeout, 3.0)
    if settings is None:
        not_checked = _returning(CheckOutcome.skipped("not checked: the configuration is invalid"))
        need_settings = dict.fromkeys(NEED_SETTINGS, not_checked)
        state_dir = Path(os.environ["BGE_STATE_DIR"]) if os.environ.get("BGE_STATE_DIR") else None
    else:
        s = settings
        need_settings = {
            "kafka": lambda: check_kafka(s),
            "postgres": lambda: check_postgres(s, timeout),
            "schema": lambda: check_schema(s, schema or s.db_schema),
            "topics": lambda: check_topics(s),
            "jetstream": lambda: check_jetstream(s, quick),
            "atproto": lambda: check_atproto(s, quick),
        }
        state_dir = s.bge_state_dir
    return {
        "config": _returning(config),
        **need_settings,
        "tracing": lambda: check_tracing(quick),
        "python": _sync(check_python),
        "memory": _sync(check_memory),
        "state-dir": _sync(lambda: check_state_dir(state_dir)),
    }


async def validate(
    only: Sequence[str] = (),
    *,
    schema: str | None = None,
    timeout: float = 10.0,
    env_file: str | Path | None = ".env",
) -> list[CheckResult]:
    """Run the checks named in ``only`` (all when empty) and return their results in
    :data:`CHECKS` order. Never raises for a failing check."""
    unknown = sorted(set(only) - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown checks: {', '.join(unknown)} (known: {', '.join(CHECKS)})")
    settings, config = _load_config(env_file)
    checks = _checks(settings, config, schema, timeout)
    registry = HealthRegistry(default_timeout=timeout, explain=_explain, quiet=True)
    for name in CHECKS:
        if not only or name in only or (name == "config" and config.status is HealthStatus.UNHEALTHY):
            needs = [DEPENDS_ON[name]] if DEPENDS_ON.get(name) in registry.services else []
            registry.register(name, checks[name], needs=needs)
    return (await registry.run()).checks


# --- output --------------------------------------------------------------------------------

_H, _D, _U, _S = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY, HealthStatus.SKIPPED
_WORDS = {_H: "pass", _D: "warning", _U: "fail", _S: "skipped"}
_LABELS = {_H: "PASS", _D: "WARN", _U: "FAIL", _S: "SKIP"}
_STYLES = {_H: "green", _D: "yellow", _U: "bold red", _S: "dim"}


def failed(results: Sequence[CheckResult]) -> bool:
    return any(r.status is HealthStatus.UNHEALTHY for r in results)


def to_json(result: CheckResult) -> dict[str, Any]:
    return {"name": result.service, "status": _WORDS[result.status], "message": result.message,
            "details": list(result.details), "duration_ms": round(result.response_time_ms, 1)}


def summary(results: Sequence[CheckResult]) -> str:
    counts = {status: sum(r.status is status for r in results) for status in _WORDS}
    parts = [f"{counts[s]} {_WORDS[s]}" for s in (_U, _D, _S) if counts[s]]
    verdict = "validation failed" if counts[_U] else "validation passed"
    return f"{verdict}: {counts[_H]} of {len(results)} passed" + (f", {', '.join(parts)}" if parts else "")


def render(results: Sequence[CheckResult], out: IO[str], *, as_json: bool = False, table: bool = False) -> None:
    """Write the results: one JSON object, a rich table, or plain lines."""
    if as_json:
        out.write(orjson.dumps({"ok": not failed(results), "summary": summary(results),
                                "checks": [to_json(r) for r in results]}, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if table:
        grid = Table(title="bge validate", title_justify="left")
        for column in ("check", "status", "result", "ms"):
            grid.add_column(column, justify="right" if column == "ms" else "left", overflow="fold")
        for r in results:
            text = "\n".join((r.message, *(f"  {line}" for line in r.details)))
            grid.add_row(r.service, f"[{_STYLES[r.status]}]{_LABELS[r.status]}[/]", text, f"{r.response_time_ms:.0f}")
        console = Console(file=out, highlight=False)
        console.print(grid)
        console.print(summary(results), style="bold red" if "failed" in summary(results) else "bold green")
        return
    width = max((len(r.service) for r in results), default=0)
    for r in results:
        out.write(f"{_LABELS[r.status]}  {r.service:<{width}}  {r.message} ({r.response_time_ms:.0f} ms)\n")
        for line in r.details:
            out.write(f"{'':6}{'':<{width}}  - {line}\n")
    out.write(summary(results) + "\n")


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
    results = asyncio.run(validate(args.only, schema=args.schema, timeout=args.timeout))
    render(results, out, as_json=args.json, table=not args.json and out.isatty())
    return 1 if failed(results) else 0


if __name__ == "__main__":
    sys.exit(main())
