"""``bge bench``: run the benches, print a table of figures next to their baselines, write JSON.

::

    bge bench all                                   # every bench at its default size (minutes)
    bge bench ingest collect --events 200000        # some benches, more events
    bge bench memory --events 1000000 --accounts 200000   # the issue's full memory run
    bge bench soak --events 1000000                 # the long soak with faults
    bge bench latency --seconds 30 --json out.json  # 1k/s untraced and traced, 5k/s untraced
    bge bench latency --rate 2000 --tracing 0.01    # chosen rates, one tracing mode
    bge bench catchup --events 500000               # a raw backlog drained to rows by bge worker
    bge bench domain                                # process() per raw event, pure CPU (needs no service)
    bge bench longrun --days 6 --events 120000      # simulated days with retention: tables and RSS flat

Needs the local stack (``infra/stack up``); the Quix Streams baseline needs its own venv
(``infra/bench/quix-venv``). Exit code 0 when every bench ran (targets met or not), 1 when the
soak's database differs from the clean run's, 2 on a usage error, 3 when a bench failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streams.bench.harness import ROOT, Figure, Options

__all__ = ["BENCHES", "build_parser", "main", "render", "run"]

BENCHES = ("ingest", "collect", "project", "replay", "latency", "catchup", "memory", "soak", "domain", "longrun")

DEFAULT_EVENTS = {
    "ingest": 300_000,
    "collect": 50_000,
    "project": 50_000,
    "replay": 300_000,
    "catchup": 500_000,
    "memory": 100_000,
    "soak": 50_000,
    "domain": 50_000,
    "longrun": 120_000,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bge bench",
        description="Benchmarks on the real local stack, each next to a baseline measured in the same run.",
        epilog=__doc__.split("::", 1)[1].split("Needs", 1)[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("benches", nargs="+", choices=(*BENCHES, "all"), metavar="BENCH",
                        help=f"one or more of {', '.join(BENCHES)}, or all")
    parser.add_argument("--events", type=int, metavar="N",
                        help="events per bench (defaults: " + ", ".join(f"{k} {v:,}" for k, v in DEFAULT_EVENTS.items())
                        + "; latency: rate x seconds)")
    parser.add_argument("--accounts", type=int, metavar="N", help="distinct accounts (default: events / 5)")
    parser.add_argument("--rate", type=float, action="append", metavar="EVENTS_PER_S",
                        help="latency: fixed rates (repeatable; default: 1000 untraced, 1000 traced, 5000 "
                             "untraced; with --tracing, 1000 and 5000)")
    parser.add_argument("--days", type=int, default=6, help="longrun: simulated days the events span (default 6)")
    parser.add_argument("--seconds", type=float, default=20.0, help="latency: seconds at each rate (default 20)")
    parser.add_argument("--partitions", type=int, default=4, help="partitions of the bench topics (default 4)")
    parser.add_argument("--split-workers", action="store_true",
                        help="latency, catchup: run the worker's stages as two processes (WORKER_AGENTS "
                             "collect,popularity and project) instead of one")
    parser.add_argument("--tracing", metavar="off|on|RATIO",
                        help="tracing in the product processes: off (default), on (every span to Jaeger), "
                             "or a sampling ratio such as 0.01; latency runs its own modes unless given")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    parser.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the benches' topics and schemas")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default $BGE_STATE_DIR/bench/<run>)")
    parser.add_argument("--no-kafka-restart", action="store_true", help="soak: skip the Kafka restart")
    parser.add_argument("--no-postgres-restart", action="store_true", help="soak: skip the Postgres restart")
    return parser


def _check_loopback() -> None:
    """The benches generate load: only ever against this machine."""
    from streams.config import load_settings

    settings = load_settings(env_file=None)
    hosts = [server.rsplit(":", 1)[0] for server in settings.kafka_bootstrap_servers]
    from urllib.parse import urlsplit

    hosts.append(urlsplit(settings.database_url).hostname or "")
    for host in hosts:
        if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
            raise SystemExit(f"bge bench: refusing to load {host!r}: the benches only run against 127.0.0.1")


async def run(names: Sequence[str], opts: Options, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    from streams.bench import catchup, longrun, pipeline, soak, throughput
    from streams.bench import domain_cost as domain_bench

    def events(name: str) -> int:
        return args.events or DEFAULT_EVENTS[name]

    figures: list[Figure] = []
    details: dict[str, Any] = {}
    runners: dict[str, Callable[[], Awaitable[list[Figure]]]] = {
        "ingest": lambda: throughput.bench_ingest(opts, events("ingest")),
        "collect": lambda: throughput.bench_collect(opts, events("collect")),
        "project": lambda: throughput.bench_project(opts, events("project")),
        "replay": lambda: throughput.bench_replay(opts, events("replay")),
        "latency": lambda: pipeline.bench_latency(opts, pipeline.latency_runs(args.rate, args.tracing), args.seconds),
        "catchup": lambda: catchup.bench_catchup(opts, events("catchup")),
        "memory": lambda: pipeline.bench_memory(opts, events("memory"), args.accounts or max(events("memory") // 5, 100)),
        "soak": lambda: soak.bench_soak(opts, events("soak"), accounts=args.accounts,
                                        restart_kafka=not args.no_kafka_restart,
                                        restart_postgres=not args.no_postgres_restart),
        "domain": lambda: domain_bench.bench_domain(opts, events("domain")),
        "longrun": lambda: longrun.bench_longrun(opts, events("longrun"), args.days),
    }
    for name in names:
        opts.log(f"--- {name}")
        started = time.monotonic()
        try:
            found = await runners[name]()
        except Exception as error:  # noqa: BLE001 - one failed bench does not hide the others
            traceback.print_exc(file=sys.stderr)
            found = [Figure(name, f"{name} failed", None, "", notes=f"{type(error).__name__}: {str(error)[:300]}",
                            extra={"failed": True})]
        details[name] = {"seconds": time.monotonic() - started}
        figures.extend(found)
    return figures, details


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if value != value:  # NaN
        return "n/a"
    if value == float("inf"):
        return "∞ (not done)"
    if unit in ("ms", "MB", "s"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def render(figures: Sequence[Figure], console: Console) -> None:
    table = Table(title="bge bench (this machine; baselines measured in the same run)", show_lines=False)
    for column in ("bench", "measurement", "figure", "unit", "target", "met", "notes"):
        table.add_column(column, overflow="fold")
    previous = None
    for figure in figures:
        if previous is not None and figure.bench != previous:
            table.add_section()
        previous = figure.bench
        met = "" if figure.met is None else ("[green]yes[/]" if figure.met else "[red]no[/]")
        label = f"[dim]{figure.label}[/]" if figure.role == "baseline" else figure.label
        table.add_row(figure.bench, label, _number(figure.value, figure.unit), figure.unit, figure.target or "", met,
                      figure.notes)
    console.print(table)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = list(BENCHES) if "all" in args.benches else list(dict.fromkeys(args.benches))
    if args.tracing not in (None, "off", "on"):
        try:
            float(args.tracing)
        except ValueError:
            print("bge bench: --tracing is off, on or a ratio", file=sys.stderr)
            return 2
    _check_loopback()
    run_id = uuid.uuid4().hex[:8]
    state = Path(os.environ.get("BGE_STATE_DIR") or ROOT / ".state")
    workdir = args.workdir or state / "bench" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    opts = Options(run_id=run_id, workdir=workdir, partitions=args.partitions, tracing=args.tracing or "off", seed=args.seed,
                   split_workers=args.split_workers,
                   keep=args.keep)
    opts.log(f"run {run_id}: {', '.join(names)} (scratch: {workdir})")
    started = time.time()
    figures, details = asyncio.run(run(names, opts, args))
    render(figures, Console())
    report = {
        "run_id": run_id,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "seconds": time.time() - started,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "benches": details,
        "figures": [figure.as_dict() for figure in figures],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        opts.log(f"wrote {args.json}")
    if any(f.extra.get("failed") for f in figures):
        return 3
    if any(f.bench == "soak" and f.met is False and f.extra.get("equality") for f in figures):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
