"""The original engine's production-readiness checks, as tests against the real services and a
running worker: error handling, configuration errors, inbound and outbound rate limits, logs
with context (and the trace behind them in Jaeger), circuit breaker opening and recovery,
health monitoring, database query latency, and memory under a burst of requests."""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg
import pytest
from aiohttp import web
from psycopg import sql

from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState
from streams.health.checks import breaker_check
from streams.config import ConfigError, load_settings
from streams.health.report import HealthRegistry, HealthStatus
from streams.adapters.ratelimit import TokenBucket
from streams.cli.validate import validate
from tests.integration.api_support import (
    api_worker,
    AT,
    STAR,
    Worker,
    api_in_process,
    client,
    free_port,
    get,
)

RATE_LIMIT = 20
HEX32 = re.compile(r"^[0-9a-f]{32}$")
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    with api_worker("prod", tmp_path_factory.mktemp("prod"), rate_limit=RATE_LIMIT) as running:
        yield running


_addresses = itertools.count(1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with client(f"127.0.3.{next(_addresses)}") as session:  # a new client (address) for each test
        yield session


async def wait_for_line(worker: Worker, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
    """The first JSON log line of the worker with these field values (waiting for it)."""
    deadline = time.monotonic() + timeout
    while True:
        for line in worker.lines():
            if all(line.get(key) == value for key, value in fields.items()):
                return line
        if time.monotonic() > deadline:
            raise AssertionError(f"no log line with {fields}")
        await asyncio.sleep(0.1)


# --- error handling ------------------------------------------------------------------------


async def test_a_failing_query_answers_a_500_envelope_and_logs_the_error_with_context(
        worker: Worker, http: aiohttp.ClientSession) -> None:
    schema = worker.env["DB_SCHEMA"]
    async with await psycopg.AsyncConnection.connect(os.environ["DATABASE_URL"], autocommit=True) as conn:
        rename = "ALTER TABLE {}.users RENAME TO {}"
        await conn.execute(sql.SQL(rename).format(sql.Identifier(schema), sql.Identifier("users_hidden")))
        try:
            reply = await get(http, f"{worker.base_url}/api/engagement-leaders?limit=5",
                              headers={"X-Request-Id": "prod-fail-1"})
        finally:
            await conn.execute(sql.SQL("ALTER TABLE {}.users_hidden RENAME TO users").format(sql.Identifier(schema)))
    assert reply.status == 500
    assert reply.body == {"success": False, "data": None, "meta": reply.body["meta"], "error": {
        "code": "INTERNAL_ERROR", "message": "Internal server error; quote request id prod-fail-1.", "details": None}}
    line = await wait_for_line(worker, message="request failed", request_id="prod-fail-1")
    assert line["level"] == "ERROR" and line["context"] == "api"
    assert (line["error_type"], line["route"], line["query"]) == ("UndefinedTable", "/api/engagement-leaders", {"limit": "5"})
    assert line["correlation_id"] == "prod-fail-1" and HEX32.match(line["trace_id"])
    assert "UndefinedTable" in line["exception"]  # the traceback stays in the log
    # and the worker still answers
    assert (await get(http, f"{worker.base_url}/api/engagement-leaders?limit=5")).status == 200


# --- configuration -------------------------------------------------------------------------

INVALID = [
    ("API_PORT", "0"), ("API_PORT", "http"), ("API_RATE_LIMIT", "0"), ("DATABASE_URL", "mysql://db/x"),
    ("KAFKA_BOOTSTRAP_SERVERS", "no-port"), ("LOG_LEVEL", "LOUD"), ("DB_POOL_MAX", "0"),
    ("BREAKER_FAILURE_THRESHOLD", "-1"), ("JETSTREAM_ENDPOINT", "http://not-a-websocket"),
    ("BGE_TOPIC_PREFIX", "has space"), ("ENABLE_RATE_LIMIT", "perhaps"),
]


@pytest.mark.parametrize(("variable", "value"), INVALID)
def test_an_invalid_variable_is_rejected_by_name(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as rejected:
        load_settings(None)
    assert [line.split(":")[0] for line in rejected.value.lines] == [variable]


async def test_the_validator_lists_every_invalid_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable, value in dict(INVALID).items():
        monkeypatch.setenv(variable, value)
    reports = await validate(["config", "kafka"], env_file=None)
    config, kafka = reports
    assert config.status is HealthStatus.UNHEALTHY and kafka.status is HealthStatus.SKIPPED
    assert kafka.message == "not checked: the configuration is invalid"
    assert sorted(line.split(":")[0] for line in config.details) == sorted(dict(INVALID))


# --- rate limits ---------------------------------------------------------------------------


async def test_the_inbound_limit_answers_429_with_retry_after(worker: Worker, http: aiohttp.ClientSession) -> None:
    replies = [await get(http, f"{worker.base_url}/api/network-stats?at={AT}") for _ in range(RATE_LIMIT)]
    assert [r.status for r in replies] == [200] * RATE_LIMIT
    assert [int(r.headers["X-RateLimit-Remaining"]) for r in replies] == list(range(RATE_LIMIT - 1, -1, -1))
    refused = await get(http, f"{worker.base_url}/api/network-stats?at={AT}")
    assert refused.status == 429 and refused.body["error"]["code"] == "RATE_LIMITED"
    retry_after = int(refused.headers["Retry-After"])
    # the next request is allowed one emission interval (60 s / limit) after the burst began: the wait
    # left is that interval minus the time the burst took, rounded up
    assert 1 <= retry_after <= 60 // RATE_LIMIT
    logged = await wait_for_line(worker, message="rate limit hit", path="/api/network-stats")
    assert logged["level"] == "WARNING" and logged["key"].startswith("127.0.3.") and logged["limit"] == RATE_LIMIT
    await asyncio.sleep(retry_after + 0.05)
    assert (await get(http, f"{worker.base_url}/api/network-stats?at={AT}")).status == 200


async def test_the_outbound_token_bucket_paces_calls_and_honours_the_servers_pause() -> None:
    bucket = TokenBucket(rate=20, burst=1, name="test")
    started = time.monotonic()
    for _ in range(21):
        await bucket.acquire()
    elapsed = time.monotonic() - started
    assert 0.95 <= elapsed < 1.3  # 20 intervals of 50 ms after the first token
    assert bucket.observe(429, {"Retry-After": "1"}) == 1.0
    started = time.monotonic()
    await bucket.acquire()
    assert 0.95 <= time.monotonic() - started < 1.3


# --- logs and traces -----------------------------------------------------------------------


async def test_each_request_logs_a_json_line_with_its_request_id_and_trace_id_and_is_traced(
        worker: Worker, http: aiohttp.ClientSession) -> None:
    reply = await get(http, f"{worker.base_url}/api/trending?at={AT}", headers={"X-Request-Id": "prod-log-1"})
    assert reply.status == 200
    line = await wait_for_line(worker, message="request", request_id="prod-log-1")
    assert line["level"] == "INFO" and line["correlation_id"] == "prod-log-1"
    assert (line["method"], line["route"], line["status"]) == ("GET", "/api/trending", 200)
    assert HEX32.match(line["trace_id"]) and line["duration_ms"] > 0
    trace_id = line["trace_id"]
    jaeger = os.environ["JAEGER_QUERY_URL"]
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as query:
        while True:
            async with query.get(f"{jaeger}/api/traces/{trace_id}") as response:
                traces = (await response.json()).get("data") or [] if response.status == 200 else []
            spans = [span for trace in traces for span in trace["spans"]]
            if spans or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
    assert spans, f"trace {trace_id} never reached Jaeger"
    server = next(span for span in spans if span["operationName"] == "GET /api/trending")
    tags = {tag["key"]: tag["value"] for tag in server["tags"]}
    assert tags["request_id"] == "prod-log-1" and tags["http.route"] == "/api/trending"
    assert tags["http.response.status_code"] == 200 and tags["span.kind"] == "server"


# --- circuit breaker -----------------------------------------------------------------------


@pytest.fixture
async def live_service() -> AsyncIterator[str]:
    """A real HTTP service answering 200."""
    app = web.Application()
    async def profile(request: web.Request) -> web.Response:
        return web.json_response({"did": STAR})

    app.router.add_get("/xrpc/app.bsky.actor.getProfile", profile)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/xrpc/app.bsky.actor.getProfile"
    finally:
        await runner.cleanup()


async def test_the_breaker_opens_on_failures_fails_fast_and_recovers_through_one_probe(live_service: str) -> None:
    breaker = CircuitBreaker("atproto", BreakerConfig(failure_threshold=3, failure_rate_threshold=None,
                                                      recovery_timeout=0.5, recovery_jitter=0.0))
    health = HealthRegistry()
    health.register("breaker.atproto", breaker_check(breaker))
    dead = f"http://127.0.0.1:{free_port()}/xrpc/app.bsky.actor.getProfile"
    async with aiohttp.ClientSession() as http:

        async def fetch(url: str) -> Any:
            async with http.get(url) as response:
                response.raise_for_status()
                return await response.json()

        for _ in range(3):
            assert isinstance((await breaker.call(fetch, dead)).failure(), aiohttp.ClientConnectionError)
        assert breaker.state is CircuitState.OPEN
        assert (await health.run()).status is HealthStatus.UNHEALTHY
        started = time.perf_counter()
        refused = await breaker.call(fetch, live_service)  # not even tried
        assert isinstance(refused.failure(), CircuitOpenError) and time.perf_counter() - started < 0.01

        await asyncio.sleep(0.55)
        assert breaker.state is CircuitState.HALF_OPEN
        assert (await health.run()).status is HealthStatus.DEGRADED
        probe, other = await asyncio.gather(breaker.call(fetch, live_service), breaker.call(fetch, live_service))
        assert probe.unwrap() == {"did": STAR}  # exactly one probe went through...
        assert isinstance(other.failure(), CircuitOpenError)  # ...the concurrent call was refused
        assert breaker.state is CircuitState.CLOSED
        assert (await health.run()).status is HealthStatus.HEALTHY
        assert (await breaker.call(fetch, live_service)).unwrap() == {"did": STAR}


# --- health, latency, memory ---------------------------------------------------------------


async def test_health_answers_200_while_serving_and_503_when_postgres_is_unreachable(
        worker: Worker, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    serving = await get(http, f"{worker.base_url}/health")
    assert serving.status == 200 and serving.body["success"] is True
    assert serving.data["overall"] in ("healthy", "degraded")
    settings = load_settings(None, api_port=free_port(), database_url="postgresql://bge:secret@127.0.0.1:1/bge",
                             bge_topic_prefix=worker.env["BGE_TOPIC_PREFIX"], bge_state_dir=tmp_path)
    async with api_in_process(settings) as base_url:
        down = await get(http, f"{base_url}/health")
    assert down.status == 503 and down.body["success"] is False
    checks = {check["service"]: check for check in down.data["services"]}
    assert checks["postgres"]["status"] == "unhealthy" and "port 1 failed" in checks["postgres"]["message"]
    assert "secret" not in str(down.body)
    assert checks["kafka"]["status"] == "healthy"  # the other checks still report on their own


async def test_query_latency_is_measured_for_the_apis_queries(worker: Worker, http: aiohttp.ClientSession) -> None:
    before = (await get(http, f"{worker.base_url}/api/stats/database")).data["queries"]
    for path in ("/api/trending", "/api/posts/top", "/api/hashtags/trending", f"/api/users/{STAR}"):
        assert (await get(http, f"{worker.base_url}{path}?at={AT}")).status == 200
    after = (await get(http, f"{worker.base_url}/api/stats/database")).data
    queries = after["queries"]
    assert queries["total_queries"] - before["total_queries"] >= 4 + 6  # the profile takes six
    assert 0 < queries["avg_duration_ms"] < 250 and queries["max_duration_ms"] >= queries["avg_duration_ms"]
    assert after["pool"]["max"] == 10 and 1 <= after["pool"]["size"] <= 10


async def test_memory_stays_bounded_under_bursts_of_requests(worker: Worker) -> None:
    process = psutil.Process(worker.process.pid)
    paths = [f"/api/trending?at={AT}", f"/api/users/{STAR}?at={AT}", f"/api/posts/top?at={AT}",
             f"/api/hashtags/trending?at={AT}", f"/api/network-stats?at={AT}", "/api/candidates?strategy=interests",
             "/api/engagement-leaders?limit=100", "/api/nothing-here", "/api/trending?limit=0"]

    async def burst(network: str, clients: int = 50, each: int = 10) -> list[int]:
        async def one_client(number: int) -> list[int]:
            async with client(f"{network}.{number + 1}") as http:
                return [(await get(http, f"{worker.base_url}{paths[(number + i) % len(paths)]}")).status
                        for i in range(each)]

        return [status for statuses in await asyncio.gather(*(one_client(n) for n in range(clients)))
                for status in statuses]

    await burst("127.0.4")  # warm up: pools, caches, allocator arenas
    settled = process.memory_info().rss
    statuses = await burst("127.0.5")  # new clients, each within its limit
    grown = process.memory_info().rss - settled
    assert set(statuses) == {200, 400, 404}  # no 5xx, and no client over its limit
    assert grown < 30 * MIB, f"RSS grew {grown / MIB:.1f} MiB over {len(statuses)} requests"
    assert process.memory_info().rss < 512 * MIB
