"""``bge demo``: the whole pipeline on the embedded default, ending with what it found.

1. migrates Postgres and creates the topics (``BGE_TOPIC_PREFIX``, default ``demo.``);
2. serves the bundled real Jetstream recording, then generated events at live pace, from a local
   Jetstream-compatible server on 127.0.0.1;
3. runs the ingest (in this process) and a Faust worker (a background process serving the API);
4. waits until Postgres holds everything, then prints the API's address, what was collected
   and, last, the dashboard's address
   (users, posts, candidates by strategy, trending accounts) and where to find the traces.

The worker keeps running after the demo ends, so the API can be explored; its pid is in
``<state>/run/worker.pid`` and ``infra/stack down`` stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from projections import connect, migrate, queries
from streams.config import Settings, load_settings
from streams.topology import Topic
from streams.local import corpus
from streams.ingest.session import Ingest, run_ingest
from streams.local.jetstream_server import JetstreamServer
from streams.kafka.clients import end_offsets, ensure_topics

__all__ = ["main"]

DEMO_PREFIX = "demo."


def _sample_lines() -> list[bytes]:
    data = resources.files("streams").joinpath("data", "sample-2026-07-04.jsonl").read_bytes()
    return [line for line in data.splitlines() if line.strip()]


def _state_dir(settings: Settings) -> Path:
    return Path(settings.bge_state_dir or os.environ.get("BGE_STATE_DIR") or Path.cwd() / ".state")


async def _end_offsets(settings: Settings, topic: Topic) -> int:
    return sum((await end_offsets(settings, settings.topic(topic))).values())


async def _projected(settings: Settings) -> int:
    async with await connect(settings.database_url, settings.db_schema) as conn:
        row = await (await conn.execute("SELECT coalesce(sum(next_offset), 0) FROM projection_offsets")).fetchone()
        return int(row[0]) if row else 0


def _start_worker(settings: Settings, state: Path, env: dict[str, str]) -> subprocess.Popen:
    (state / "run").mkdir(parents=True, exist_ok=True)
    (state / "logs").mkdir(parents=True, exist_ok=True)
    pidfile = state / "run" / "worker.pid"
    if pidfile.exists():
        try:
            os.kill(int(pidfile.read_text()), 15)
            time.sleep(2)
        except (ProcessLookupError, ValueError):
            pass
    log = open(state / "logs" / "worker.log", "ab")  # noqa: SIM115 - the worker outlives this process
    process = subprocess.Popen([sys.executable, "-m", "streams.cli.main", "worker", "-l", "warn"], env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    pidfile.write_text(str(process.pid))
    return process


async def run(settings: Settings, *, seconds: float, rate: float, console: Console) -> int:
    state = _state_dir(settings)
    console.print(f"[bold]Bluesky Growth Engine demo[/bold]  (topics {settings.bge_topic_prefix}*, "
                  f"Postgres schema {settings.db_schema})")
    await migrate(settings.database_url, settings.db_schema)
    await ensure_topics(settings)
    sample = _sample_lines()
    generated = list(corpus.generate(int(seconds * rate), seed=int(time.time()), accounts=2000,
                                     start_time_us=int(time.time() * 1e6), rate_per_s=rate))
    async with JetstreamServer(sample + generated, rate=rate) as server:
        settings = settings.model_copy(update={"jetstream_endpoint": [server.url]})
        env = {**os.environ, **{k: v for k, v in settings.summary().items() if v and not k.startswith("OTEL_")}}
        env["DATABASE_URL"] = settings.database_url
        env.setdefault("OTEL_SERVICE_NAME", "bge-worker")
        worker = _start_worker(settings, state, env)
        console.print(f"local Jetstream server {server.url}: the real recording ({len(sample)} events), "
                      f"then {len(generated)} generated events, at {rate:g} events/s")
        console.print("[dim](a second run resumes from the cursor kept in Kafka; this local server has no events "
                      "for the time in between, and the ingest reports that as a gap, as it would live)[/dim]")
        stop = asyncio.Event()
        holder: dict[str, Ingest] = {}
        ingest = asyncio.create_task(run_ingest(settings, stop=stop, on_start=lambda i: holder.setdefault("i", i)))
        total = len(sample) + len(generated)
        with console.status("streaming live-paced events through ingest → collect → project ...") as status:
            deadline = time.monotonic() + total / rate + 60
            while time.monotonic() < deadline and not ingest.done():
                stats = holder["i"].stats if holder else None
                received = stats.events_in if stats else 0
                if received >= total:
                    break
                status.update(f"ingested {received}/{total} events; projected {await _projected(settings)} "
                              "domain events")
                await asyncio.sleep(1)
        stop.set()
        await ingest
    # wait until the worker has projected everything the collect stage produced
    with console.status("projecting ..."):
        await _until(lambda: _caught_up(settings), lambda ok: ok, 120)
    await _summary(settings, console, worker)
    return 0


async def _caught_up(settings: Settings) -> bool:
    end = await _end_offsets(settings, Topic.GROWTH_EVENTS)
    return end > 0 and await _projected(settings) >= end


async def _until(probe, done, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if done(await probe()):
            return
        await asyncio.sleep(0.5)


async def _summary(settings: Settings, console: Console, worker: subprocess.Popen) -> None:
    now = datetime.now(UTC)
    async with await connect(settings.database_url, settings.db_schema) as conn:
        stats = await queries.network_stats(conn, now=now, minutes=5)
        strategies = await queries.candidate_strategies(conn)
        trending = await queries.trending_accounts(conn, now=now, hours=24, limit=5)
        top = await queries.top_posts(conn, now=now, hours=24, limit=3)
    collected = Table(title="What was collected", show_header=True)
    for column in ("users", "posts", "likes", "reposts", "follows", "blocks", "events/min (5 min)"):
        collected.add_column(column, justify="right")
    collected.add_row(*(str(stats[k]) for k in ("users", "posts", "likes", "reposts", "follows", "blocks")),
                      f"{stats['events_per_minute']:.0f}")
    console.print(collected)
    candidates = Table(title="Candidates by strategy")
    candidates.add_column("strategy")
    candidates.add_column("candidates", justify="right")
    for row in strategies:
        candidates.add_row(row["strategy"], str(row["candidates"]))
    console.print(candidates)
    accounts = Table(title="Trending accounts (net follower gain, 24 h)")
    for column in ("account", "gained", "lost", "net"):
        accounts.add_column(column)
    for row in trending:
        accounts.add_row(row.get("handle") or row["did"], str(row["gained"]), str(row["lost"]), str(row["net_gain"]))
    console.print(accounts)
    if top:
        console.print("Top post: " + str(top[0].get("uri")))
    api = f"http://{settings.api_host}:{settings.api_port}"
    jaeger = os.environ.get("JAEGER_QUERY_URL", "http://127.0.0.1:16686")
    console.print(f"\n[bold]API[/bold]      {api}/health   {api}/api/trending   {api}/api/candidates   "
                  f"{api}/openapi.json")
    console.print(f"[bold]Traces[/bold]   {jaeger}/api/traces?service=bge-ingest&limit=5   "
                  f"(services: {jaeger}/api/services)")
    metrics = os.environ.get("METRICS_URL")
    if metrics:
        console.print(f"[bold]Metrics[/bold]  {metrics}   (exported every OTEL_METRIC_EXPORT_INTERVAL ms, 60,000 by default)")
    console.print(f"[bold]Replay[/bold]   BGE_TOPIC_PREFIX={settings.bge_topic_prefix} bge replay raw --limit 5 -o table")
    console.print(f"The worker (pid {worker.pid}) keeps serving the API; `infra/stack down` stops it with the stack.")
    console.print(f"\n[bold]Dashboard[/bold]  {api}/   (live: overview, growth, candidates and their event journeys, crawls)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bge demo", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="live-paced generated events for this long")
    parser.add_argument("--rate", type=float, default=500.0, help="generated events per second")
    args = parser.parse_args(argv)
    os.environ.setdefault("BGE_TOPIC_PREFIX", DEMO_PREFIX)
    os.environ.setdefault("DB_SCHEMA", "demo")
    strategies = resources.files("streams").joinpath("data", "demo-strategies.json")
    os.environ.setdefault("BGE_STRATEGIES_FILE", str(strategies))
    settings = load_settings()
    from streams.observability.log import configure_logging

    from streams.observability.metrics import setup_metrics
    from streams.observability.tracing import setup_tracing

    configure_logging("WARNING")
    setup_tracing("ingest")
    setup_metrics("ingest")
    return asyncio.run(run(settings, seconds=args.seconds, rate=args.rate, console=Console()))
