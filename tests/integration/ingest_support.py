"""Helpers for tests of the ingest against the real Kafka and the local Jetstream server."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

from aiokafka import TopicPartition

from streams.config import Settings, load_settings
from streams.topology import Topic
from streams.ingest.frames import BadFrame, read_facts
from streams.ingest.session import Ingest, run_ingest
from streams.kafka.clients import end_offsets, ensure_topics, new_reader
from tests.conftest import ROOT


def ingest_settings(prefix: str, endpoints: list[str], **overrides: object) -> Settings:
    """Settings of one test: its own topic prefix, the given Jetstream endpoints."""
    return load_settings(
        env_file=None,
        bge_topic_prefix=f"t{prefix}.",
        bge_topic_partitions=overrides.pop("bge_topic_partitions", 4),
        jetstream_endpoint=endpoints,
        jetstream_collections=overrides.pop("jetstream_collections", ["app.bsky.*", "fm.teal.*"]),
        **overrides,
    )


async def read_all(settings: Settings, topic: Topic) -> list:
    """Every message of a product topic, from the earliest offset to the current end."""
    name = settings.topic(topic)
    reader = new_reader(settings)
    await reader.start()
    try:
        partitions = reader.partitions_for_topic(name) or set()
        if not partitions:
            await reader._client.force_metadata_update()  # noqa: SLF001
            partitions = reader.partitions_for_topic(name) or set()
        tps = [TopicPartition(name, p) for p in sorted(partitions)]
        if not tps:
            return []
        reader.assign(tps)
        end = await reader.end_offsets(tps)
        await reader.seek_to_beginning(*tps)
        out: list = []
        deadline = time.monotonic() + 60
        while any([await reader.position(tp) < end[tp] for tp in tps]) and time.monotonic() < deadline:
            for messages in (await reader.getmany(timeout_ms=500, max_records=10_000)).values():
                out.extend(m for m in messages if m.offset < end[TopicPartition(m.topic, m.partition)])
        return out
    finally:
        await reader.stop()


async def count_in(settings: Settings, topic: Topic) -> int:
    return len(await read_all(settings, topic))


def identities(messages: list) -> Counter[str]:
    counts: Counter[str] = Counter()
    for message in messages:
        try:
            counts[read_facts(message.value).identity] += 1
        except BadFrame:
            counts["<bad>"] += 1
    return counts


async def wait_until(predicate: Callable[[], object], timeout: float, message: str, interval: float = 0.5) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


@contextlib.asynccontextmanager
async def running_ingest(settings: Settings) -> AsyncIterator[dict]:
    """Run the ingest in this process; yields a dict holding the :class:`Ingest` once started.
    Leaving the block stops it the way SIGTERM does and checks it exited 0."""
    await ensure_topics(settings)
    stop = asyncio.Event()
    holder: dict = {}

    def started(ingest: Ingest) -> None:
        holder["ingest"] = ingest

    task = asyncio.create_task(run_ingest(settings, stop=stop, on_start=started))
    await wait_until(lambda: "ingest" in holder or task.done(), 60, "ingest started")
    if task.done():
        task.result()
    try:
        yield holder
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 60)
        holder["exit_code"] = code
    assert code == 0


def env_for(settings: Settings) -> dict[str, str]:
    """Environment variables that give a `bge` subprocess the same settings."""
    env = dict(os.environ)
    for key, value in settings.summary().items():
        if key.startswith("OTEL_") or value == "" or key == "KAFKA_SASL_PASSWORD":
            continue
        env[key] = value
    env["DATABASE_URL"] = settings.database_url
    env["LOG_LEVEL"] = "WARNING"
    env.setdefault("OTEL_SDK_DISABLED", "true")
    return env


def start_bge(args: list[str], settings: Settings, log_path: str, **env: str) -> subprocess.Popen:
    """Start ``bge <args>`` as its own process (so it can be SIGKILLed), logging to a file; ``env``
    overrides variables (``LOG_LEVEL="INFO"`` to see the product's own info lines)."""
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen([sys.executable, "-m", "streams.cli.main", *args], env={**env_for(settings), **env},
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


def kill(process: subprocess.Popen, sig: int = signal.SIGKILL) -> int:
    process.send_signal(sig)
    return process.wait(timeout=60)


async def end_offsets_total(settings: Settings, topic: Topic) -> int:
    """The number of messages ever written to a product topic (sum of end offsets): a cheap count."""
    return sum((await end_offsets(settings, settings.topic(topic))).values())
