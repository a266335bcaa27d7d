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
    bge bench replay ingest --repeat 5              # five runs each, product and baseline alternated: medians

Needs the local stack (``infra/stack up``); the Quix Streams baseline needs its own venv
(``infra/bench/quix-venv``). Exit code 0 when every bench ran (targets met or not), 1 when the
soak's database differs from the clean run's, 2 on a usage error, 3 when a bench failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
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
from streams.bench.targets import measured

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
                        help="latency, catchup, memory: run the worker's stages as two processes (WORKER_AGENTS "
                             "collect,popularity and project) instead of one")
    parser.add_argument("--tracing", metavar="off|on|RATIO",
                        help="tracing in the product processes: off (default), on (every span to Jaeger), "
                             "or a sampling ratio such as 0.01; latency runs its own modes unless given")
    parser.add_argument("--seed", type=int, default=7, help="corpus seed (default 7)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run each bench N times in a row and show each figure's median, its range and "
                             "its ratio to the baseline in every run (for a machine whose speed moves)")
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


def merge_repeats(runs: Sequence[Sequence[Figure]]) -> list[Figure]:
    """One figure per label over repeated runs of one bench: the median of the runs' values (every
    run's in ``extra["runs"]``), a product figure's ratio to its baseline in each run, and ``met``
    when more than half the runs met the target. With one run, that run's figures as they are."""
    if len(runs) == 1:
        return list(runs[0])
    by_label: dict[str, list[Figure]] = {}
    for figures in runs:
        for figure in figures:
            by_label.setdefault(figure.label, []).append(figure)
    baselines = [{f.label: f.value for f in figures if f.role == "baseline"} for figures in runs]
    merged = []
    for label, seen in by_label.items():
        values = [f.value for f in seen]
        measured_values = [v for v in values if measured(v)]
        first = seen[0]
        notes = [f"median of {len(measured_values)} of {len(runs)} runs"]
        if measured_values:
            notes.append(f"{_number(min(measured_values), first.unit)}-{_number(max(measured_values), first.unit)}")
        extra: dict[str, Any] = {"runs": values, "failed": any(f.extra.get("failed") for f in seen),
                                 "each_run": [f.extra for f in seen]}
        if first.baseline is not None:
            ratios = [f.value / base[first.baseline] for f, base in zip(seen, baselines, strict=False)
                      if measured(f.value) and measured(base.get(first.baseline)) and base[first.baseline]]
            if ratios:
                extra["ratios"] = ratios
                notes.append("of the baseline: " + ", ".join(f"{r:.0%}" for r in ratios))
        cpu = [f.extra["cpu_us_per_event"] for f in seen if f.extra.get("cpu_us_per_event")]
        if cpu:
            extra["cpu_us_per_event"] = {name: statistics.median(run[name] for run in cpu) for name in cpu[0]}
            notes.append("CPU per event, medians: " + ", ".join(f"{name} {us:.1f} µs" for name, us in extra["cpu_us_per_event"].items()))
        decided = [f.met for f in seen if f.met is not None]
        met = None if not decided else sum(decided) * 2 > len(runs)
        if decided:
            notes.append(f"met in {sum(decided)} of {len(runs)}")
        merged.append(Figure(first.bench, label, statistics.median(measured_values) if measured_values else None, first.unit,
                             role=first.role, baseline=first.baseline, target=first.target, met=met,
                             notes="; ".join(notes), extra=extra))
    return merged


async def run(names: Sequence[str], opts: Options, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    from streams.bench import catchup, longrun, pipeline, soak, throughput
    from streams.bench import domain_cost as domain_bench

    def events(name: str) -> int:
        return args.events or DEFAULT_EVENTS[name]

    figures: list[Figure] = []
    details: dict[str, Any] = {}
    runners: dict[str, Callable[[Options], Awaitable[list[Figure]]]] = {
        "ingest": lambda o: throughput.bench_ingest(o, events("ingest")),
        "collect": lambda o: throughput.bench_collect(o, events("collect")),
        "project": lambda o: throughput.bench_project(o, events("project")),
        "replay": lambda o: throughput.bench_replay(o, events("replay")),
        "latency": lambda o: pipeline.bench_latency(o, pipeline.latency_runs(args.rate, args.tracing), args.seconds),
        "catchup": lambda o: catchup.bench_catchup(o, events("catchup")),
        "memory": lambda o: pipeline.bench_memory(o, events("memory"), args.accounts or max(events("memory") // 5, 100)),
        "soak": lambda o: soak.bench_soak(o, events("soak"), accounts=args.accounts,
                                          restart_kafka=not args.no_kafka_restart,
                                          restart_postgres=not args.no_postgres_restart),
        "domain": lambda o: domain_bench.bench_domain(o, events("domain")),
        "longrun": lambda o: longrun.bench_longrun(o, events("longrun"), args.days),
    }
    for name in names:
        started = time.monotonic()
        runs = []
        for attempt in range(1, args.repeat + 1):
            opts.log(f"--- {name}" + (f" (run {attempt} of {args.repeat})" if args.repeat > 1 else ""))
            try:
                # each run its own topics and schema: a deleted topic's name is not free again at once
                again = opts if attempt == 1 else dataclasses.replace(opts, run_id=f"{opts.run_id}r{attempt}")
                runs.append(await runners[name](again))
            except Exception as error:  # noqa: BLE001 - one failed bench does not hide the others
                traceback.print_exc(file=sys.stderr)
                runs.append([Figure(name, f"{name} failed", None, "",
                                    notes=f"{type(error).__name__}: {str(error)[:300]}", extra={"failed": True})])
        details[name] = {"seconds": time.monotonic() - started, "runs": len(runs)}
        if any(f.bench == "soak" and f.met is False and f.extra.get("equality") for found in runs for f in found):
            details[name]["unequal"] = True  # a soak that ended unequal in any run
        figures.extend(merge_repeats(runs))
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
    if abs(value) < 10 and value != int(value):
        return f"{value:.2f}"  # a few cores, records per event: the fraction is the figure
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat is 1 or more")
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
    if any(bench.get("unequal") for bench in details.values()):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
