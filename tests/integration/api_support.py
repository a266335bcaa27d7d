"""What the API tests share: the data they read (the real 2026-07-04 sample, projected, plus
hand-built follows, posts and candidates whose numbers are counted by hand), a real Faust worker
serving the API (a subprocess of ``streams.app``), the API served in-process
by the Faust app's own web server (for configurations such as a dead Postgres), and HTTP clients
bound to distinct loopback addresses (distinct clients for the rate limiter)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
from aiokafka import AIOKafkaProducer
from multidict import CIMultiDict
from psycopg import sql

from domain.events import encode, partition_key
from domain.growth import StrategyConfig, StrategyState
from domain.pipeline import process
from projections import Message, apply_batch, connect, migrate
from streams.bench.harness import free_port
from tests.conftest import ROOT, SAMPLE_JSONL
from tests.integration.projection_support import Events

# --- the data ------------------------------------------------------------------------------

AT = "2026-07-04T15:00:00Z"
NOW = datetime(2026, 7, 4, 15, 0, tzinfo=UTC)
SAMPLE_AT = "2026-07-04T14:40:00Z"
"""The sample's events are from 2026-07-04 14:38 UTC."""

STAR = "did:plc:apistar2222222222222222222"
STAR_HANDLE = "star.example.com"
RISER = "did:plc:apiriser333333333333333333"
RISER_HANDLE = "riser.example.com"
ENGINE = "did:plc:apiengine44444444444444444"
FANS = [f"did:plc:apifan{i:02d}5555555555555555555" for i in range(8)]
STAR_FOLLOWERS_APPVIEW = 150
RISER_FOLLOWERS_APPVIEW = 102


def sample_messages(partitions: int = 4) -> list[Message]:
    """The sample's domain events as the collect agent publishes them (keyed, partitioned)."""
    offsets = [0] * partitions
    messages = []
    for line in SAMPLE_JSONL.read_bytes().splitlines():
        if not line.strip():
            continue
        for event in process(line, config=StrategyConfig(), state=StrategyState()).unwrap().all_events:
            partition = zlib.crc32(partition_key(event)) % partitions
            messages.append(Message("growth.events", partition, offsets[partition], encode(event)))
            offsets[partition] += 1
    return messages


def hand_built_events() -> list[Any]:
    """Between 14:00 and 15:00 on 2026-07-04:

    - STAR: followed by 5 fans (gained 5), AppView says 150 followers (base 145); posts
      "#growth #bluesky" liked 3 times and reposted once (score 5); chosen by ``interests``
      (0.9); followed by the engine; one activity at 14:10.
    - RISER: followed by 3 fans, one unfollows (gained 3, lost 1, net 2), AppView 102 followers
      (base 100); posts "#growth" liked once (score 1); chosen by ``interests`` (0.5).
    """
    b = Events()
    at = lambda minute: NOW.replace(hour=14, minute=minute)  # noqa: E731
    events: list[Any] = [b.appview_profile(STAR, STAR_HANDLE, STAR_FOLLOWERS_APPVIEW, at(1), display_name="Star"),
                         b.appview_profile(RISER, RISER_HANDLE, RISER_FOLLOWERS_APPVIEW, at(1))]
    events += [b.follow(fan, STAR, at(5 + i)) for i, fan in enumerate(FANS[:5])]
    riser_follows = [b.follow(fan, RISER, at(20 + i)) for i, fan in enumerate(FANS[5:8])]
    events += [*riser_follows, b.removal(riser_follows[0], at(30))]
    star_post = b.post(STAR, "Hello #growth #bluesky", at(10), hashtags=("growth", "bluesky"))
    riser_post = b.post(RISER, "#growth again", at(20), hashtags=("growth",))
    star_uri, riser_uri = star_post[0].uri, riser_post[0].uri
    events += [*star_post, *riser_post]
    events += [b.like(fan, star_uri, at(40 + i)) for i, fan in enumerate(FANS[:3])]
    events += [b.repost(FANS[3], star_uri, at(45)), b.like(FANS[4], riser_uri, at(46))]
    events += [b.candidate(STAR, "interests", 0.9, ("posts about #growth",), FANS[0], at(50)),
               b.candidate(RISER, "interests", 0.5, ("posts about #growth",), FANS[1], at(51)),
               b.growth_action(ENGINE, "follow", STAR, "follows back accounts that grow", at(52)),
               b.activity(STAR, at(10), "app.bsky.feed.post")]
    return events


async def load_growth_data(database_url: str, schema: str) -> None:
    """Migrate ``schema`` and project the sample and the hand-built events into it."""
    await migrate(database_url, schema)
    messages = sample_messages()
    offset = max(m.offset for m in messages) + 1
    messages += [Message("growth.events", 7, offset + i, encode(e)) for i, e in enumerate(hand_built_events())]
    conn = await connect(database_url, schema)
    try:
        for start in range(0, len(messages), 200):
            await apply_batch(conn, "projector", messages[start:start + 200])
    finally:
        await conn.close()


async def drop_schema(database_url: str, schema: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --- HTTP ----------------------------------------------------------------------------------


def client(source_ip: str = "127.0.0.1") -> aiohttp.ClientSession:
    """A session whose connections come from ``source_ip`` (any 127.x.y.z): one client to the
    rate limiter, which keys on the peer address."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source_ip, 0)),
                                 timeout=aiohttp.ClientTimeout(total=30))


@dataclass
class Reply:
    status: int
    headers: CIMultiDict[str]
    body: dict[str, Any]

    @property
    def data(self) -> Any:
        return self.body["data"]

    @property
    def error(self) -> dict[str, Any] | None:
        return self.body["error"]


async def get(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> Reply:
    async with session.get(url, **kwargs) as response:
        return Reply(response.status, CIMultiDict(response.headers), orjson.loads(await response.read()))


# --- a worker serving the API ----------------------------------------------------------------


@dataclass
class Worker:
    """A Faust worker subprocess with the API; its output (JSON log lines included) in ``log``."""

    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    env: dict[str, str]

    def lines(self) -> list[dict[str, Any]]:
        """The JSON lines the worker logged so far."""
        out = []
        for line in self.log.read_bytes().splitlines():
            start = line.find(b'{"ts"')
            if start >= 0:
                with contextlib.suppress(orjson.JSONDecodeError):
                    out.append(orjson.loads(line[start:]))
        return out

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def worker_env(unique: str, schema: str, tmp: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BGE_", "API_", "OTEL_", "DB_", "CRAWL_"))}
    env.update({
        "BGE_TOPIC_PREFIX": f"api{unique}.",
        "BGE_TOPIC_PARTITIONS": "2",
        "BGE_STATE_DIR": str(tmp / "state"),
        "DB_SCHEMA": schema,
        "API_HOST": "127.0.0.1",
        "API_PORT": str(free_port()),
        "LOG_LEVEL": "INFO",
        "OTEL_SERVICE_NAME": f"bge-api-test-{unique}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(overrides)
    return env


async def start_worker(env: dict[str, str], log: Path, *, timeout: float = 60.0) -> Worker:
    """Start ``faust -A streams.app worker`` and wait until the API answers
    with its pool open (``/api/stats/database`` shows a connection)."""
    faust = str(Path(sys.executable).with_name("faust"))
    Path(env["BGE_STATE_DIR"]).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([faust, "-A", "streams.app", "worker", "-l", "warn"],
                               cwd=ROOT, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    worker = Worker(process, f"http://127.0.0.1:{env['API_PORT']}", log, env)
    deadline = time.monotonic() + timeout
    async with client() as http:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"worker exited with {process.returncode}:\n{log.read_text()[-4000:]}")
            with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                reply = await get(http, f"{worker.base_url}/api/stats/database")
                if reply.status == 200:
                    return worker
            if time.monotonic() > deadline:
                worker.stop()
                raise TimeoutError(f"the worker's API did not answer within {timeout}s:\n{log.read_text()[-4000:]}")
            await asyncio.sleep(0.2)


async def produce_raw_event(env: dict[str, str], *, time_us: int | None = None) -> None:
    """One real sample line into the worker's raw topic, stamped ``time_us`` (now by default) as
    the ingest stamps them."""
    line = next(line for line in SAMPLE_JSONL.read_bytes().splitlines() if b'"kind":"commit"' in line)
    stamp = time_us if time_us is not None else int(time.time() * 1_000_000)
    producer = AIOKafkaProducer(bootstrap_servers=os.environ["KAFKA_BOOTSTRAP_SERVERS"])
    await producer.start()
    try:
        await producer.send_and_wait(f"{env['BGE_TOPIC_PREFIX']}jetstream.events", line, key=b"did:plc:sample",
                                     headers=[("kind", b"commit"), ("time_us", str(stamp).encode())])
    finally:
        await producer.stop()


# --- the API in-process ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_in_process(settings: Any) -> AsyncIterator[str]:
    """The product's Faust app with its API, only its web server started, in this process (no
    Kafka consumer): for configurations a worker would take long to reach. Yields the base URL."""
    from streams.api.routes import serve_api
    from streams.app import create_app

    app = create_app(settings)
    serve_api(app, settings)
    await app.web.start()
    try:
        yield f"http://127.0.0.1:{settings.api_port}"
    finally:
        await app.web.stop()


@contextlib.contextmanager
def api_worker(label: str, tmp: Path, *, rate_limit: int) -> Iterator[Worker]:
    """A worker serving the API on a scratch schema ``<label>_<unique>`` loaded with the growth
    data, with ``rate_limit`` requests per client and minute; stopped and dropped afterwards."""
    database_url = os.environ["DATABASE_URL"]
    unique = uuid.uuid4().hex[:10]
    schema = f"{label}_{unique}"
    asyncio.run(load_growth_data(database_url, schema))
    env = worker_env(unique, schema, tmp, API_RATE_LIMIT=str(rate_limit), API_RATE_WINDOW_SECONDS="60")
    running = asyncio.run(start_worker(env, tmp / "worker.log"))
    try:
        yield running
    finally:
        running.stop()
        asyncio.run(drop_schema(database_url, schema))
