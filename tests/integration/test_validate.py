"""``bge validate`` against the real services: it passes when everything is in place, and fails
with a clear message for each broken dependency, broken one at a time (a dead port, a schema at
the wrong version, a missing or mis-partitioned topic); an unreachable OTLP endpoint is only a
warning."""

from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest
from psycopg import sql

from projections import latest_version, migrate
from projections.migrate import load_migrations
from streams.health.checks import kafka_admin
from streams.config import Settings, load_settings
from streams.topology import Topic
from streams.kafka.clients import PRODUCT_TOPICS, ensure_topics
from streams.cli.validate import main
from tests.conftest import ROOT
from tests.integration.api_support import drop_schema, free_port


async def create_topics(settings: Settings, topics: list[Topic]) -> None:
    """Create ``topics`` and wait until the cluster's metadata lists them all."""
    await ensure_topics(settings, topics)
    names = {settings.topic(t) for t in topics}
    async with kafka_admin(settings) as admin:
        for _ in range(50):
            if names <= set(await admin.list_topics()):
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"topics {sorted(names)} never appeared")


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[str, str]]:
    """A topic prefix whose topics all exist (2 partitions, jetstream.ops 1) and a migrated schema."""
    unique = uuid.uuid4().hex[:10]
    prefix, schema = f"val{unique}.", f"val_{unique}"
    asyncio.run(create_topics(load_settings(None, bge_topic_prefix=prefix, bge_topic_partitions=2), list(PRODUCT_TOPICS)))
    asyncio.run(migrate(os.environ["DATABASE_URL"], schema))
    yield prefix, schema
    asyncio.run(drop_schema(os.environ["DATABASE_URL"], schema))


@pytest.fixture(scope="module")
def listener() -> Iterator[int]:
    """A listening TCP port (the kernel completes connections without an accept loop)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, deployment: tuple[str, str], listener: int) -> pytest.MonkeyPatch:
    """The deployment's settings; Jetstream and the AppView are local listeners (no Internet here)."""
    prefix, _ = deployment
    monkeypatch.setenv("JETSTREAM_ENDPOINT", f"ws://127.0.0.1:{listener}")
    monkeypatch.setenv("ATPROTO_SERVICE", f"http://127.0.0.1:{listener}")
    monkeypatch.setenv("BGE_TOPIC_PREFIX", prefix)
    monkeypatch.setenv("BGE_TOPIC_PARTITIONS", "2")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"])
    monkeypatch.delenv("OTEL_SDK_DISABLED", raising=False)
    return monkeypatch


def run(*argv: str) -> tuple[int, dict[str, dict[str, object]]]:
    out = io.StringIO()
    code = main(["--json", *argv], stdout=out)
    report = orjson.loads(out.getvalue())
    return code, {check["name"]: check for check in report["checks"]}


def test_everything_in_place_passes(env: pytest.MonkeyPatch, deployment: tuple[str, str]) -> None:
    code, checks = run("--schema", deployment[1])
    assert code == 0
    assert {name: check["status"] for name, check in checks.items()} == {
        name: "pass" for name in ("config", "kafka", "postgres", "schema", "topics", "jetstream", "atproto",
                                  "tracing", "python", "memory", "state-dir")}
    assert checks["schema"]["message"] == f"schema '{deployment[1]}' is at version {latest_version()}, this code's"
    assert checks["topics"]["message"].startswith(f"all {len(PRODUCT_TOPICS)} topics present")


def test_kafka_on_a_dead_port_fails_and_topics_are_not_checked(env: pytest.MonkeyPatch) -> None:
    env.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, checks = run("--only", "kafka", "--only", "topics")
    assert code == 1
    assert checks["kafka"]["status"] == "fail"
    assert str(checks["kafka"]["message"]).startswith("cannot reach Kafka at 127.0.0.1:1: KafkaConnectionError")
    assert checks["topics"] == checks["topics"] | {"status": "skipped", "message": "not checked: kafka failed"}


def test_postgres_on_a_dead_port_fails_with_the_reason_and_no_password(
        env: pytest.MonkeyPatch, deployment: tuple[str, str]) -> None:
    env.setenv("DATABASE_URL", "postgresql://bge:s3cret@127.0.0.1:1/bge")
    code, checks = run("--only", "postgres", "--only", "schema", "--schema", deployment[1])
    assert code == 1
    message = str(checks["postgres"]["message"])
    assert checks["postgres"]["status"] == "fail" and message.startswith("cannot connect to Postgres at 127.0.0.1:1/bge")
    assert "Connection refused" in message and "s3cret" not in message
    assert checks["schema"]["status"] == "skipped"


async def _make_schema(database_url: str, schema: str, *, migrated: bool, extra_version: int | None = None) -> None:
    if migrated:
        await migrate(database_url, schema)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        if extra_version is not None:
            await conn.execute(sql.SQL("INSERT INTO {}.schema_migrations (version, name, checksum) "
                                       "VALUES (%s, 'future', 'x')").format(sql.Identifier(schema)), (extra_version,))


def test_a_missing_schema_or_one_at_the_wrong_version_fails(env: pytest.MonkeyPatch) -> None:
    database_url = os.environ["DATABASE_URL"]
    missing, empty, newer = (f"val_{kind}_{uuid.uuid4().hex[:8]}" for kind in ("missing", "empty", "newer"))
    asyncio.run(_make_schema(database_url, empty, migrated=False))
    asyncio.run(_make_schema(database_url, newer, migrated=True, extra_version=999))
    try:
        expected = {missing: f"schema {missing!r} does not exist: run `bge migrate` first",
                    empty: f"schema {empty!r} lacks migrations {[m.version for m in load_migrations()]}: "
                           "run `bge migrate` first"}
        for schema, message in expected.items():
            code, checks = run("--only", "schema", "--schema", schema)
            assert (code, checks["schema"]["status"], checks["schema"]["message"]) == (1, "fail", message)
        code, checks = run("--only", "schema", "--schema", newer)
        assert code == 1
        assert f"is at version 999, newer than this code knows ({latest_version()})" in str(checks["schema"]["message"])
    finally:
        for schema in (empty, newer):
            asyncio.run(drop_schema(database_url, schema))


def test_a_missing_or_mis_partitioned_topic_fails_naming_it(env: pytest.MonkeyPatch) -> None:
    prefix = f"valmiss{uuid.uuid4().hex[:8]}."
    settings = load_settings(None, bge_topic_prefix=prefix, bge_topic_partitions=2)
    asyncio.run(create_topics(settings, [t for t in PRODUCT_TOPICS if t is not Topic.GROWTH_CRAWL]))
    env.setenv("BGE_TOPIC_PREFIX", prefix)
    code, checks = run("--only", "topics")
    assert code == 1
    assert checks["topics"]["details"] == [
        f"{prefix}growth.crawl: missing (expected with 2 partitions; `bge topics` creates it)"]
    env.setenv("BGE_TOPIC_PARTITIONS", "3")
    code, checks = run("--only", "topics")
    assert code == 1
    details = checks["topics"]["details"]
    assert f"{prefix}growth.events: 2 partitions, expected 3" in details  # type: ignore[operator]
    assert not any("jetstream.ops" in line for line in details)  # type: ignore[union-attr]  # ops has 1


def test_unreachable_jetstream_and_appview_are_warnings(env: pytest.MonkeyPatch, listener: int) -> None:
    dead = free_port()
    env.setenv("JETSTREAM_ENDPOINT", f"ws://127.0.0.1:{dead},ws://127.0.0.1:{listener}")
    code, checks = run("--only", "jetstream")
    assert (code, checks["jetstream"]["status"]) == (0, "pass")
    assert checks["jetstream"]["message"] == f"1 of 2 Jetstream endpoints reachable, first ws://127.0.0.1:{listener}"
    env.setenv("JETSTREAM_ENDPOINT", f"ws://127.0.0.1:{dead}")
    env.setenv("ATPROTO_SERVICE", f"http://127.0.0.1:{dead}")
    code, checks = run("--only", "jetstream", "--only", "atproto")
    assert code == 0 and checks["jetstream"]["status"] == checks["atproto"]["status"] == "warning"
    assert checks["jetstream"]["details"] == [f"ws://127.0.0.1:{dead}: ConnectionRefusedError: Connection refused"]
    assert checks["atproto"]["message"] == (f"http://127.0.0.1:{dead} unreachable (ConnectionRefusedError: "
                                            "Connection refused): the crawl would fail until it is")


def test_an_unreachable_otlp_endpoint_is_a_warning_not_a_failure(env: pytest.MonkeyPatch) -> None:
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
    code, checks = run("--only", "tracing", "--only", "python")
    assert code == 0
    assert checks["tracing"]["status"] == "warning"
    assert checks["tracing"]["message"] == ("OTLP endpoint http://127.0.0.1:1 unreachable "
                                            "(ConnectionRefusedError: Connection refused): spans would be dropped")


def test_the_command_prints_one_line_per_check_and_exits_non_zero_on_a_failure(deployment: tuple[str, str]) -> None:
    env = {**os.environ, "BGE_TOPIC_PREFIX": deployment[0], "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    done = subprocess.run([sys.executable, "-m", "streams.cli.main", "validate", "--only", "kafka", "--only", "python"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("FAIL  kafka   cannot reach Kafka at 127.0.0.1:1")
    assert lines[1].startswith("PASS  python  Python 3.")
    assert lines[-1] == "validation failed: 1 of 2 passed, 1 fail"
