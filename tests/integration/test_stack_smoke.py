"""The real services answer: a message through Kafka, a table in Postgres, a span in Jaeger."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import urllib.request

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor


async def test_a_message_produced_to_kafka_is_consumed_back(kafka_bootstrap: str, unique: str) -> None:
    topic = f"smoke-{unique}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b'{"hello":"kafka"}', key=b"did:plc:smoke", headers=[("kind", b"test")])
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        message = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()

    assert (message.partition, message.offset) == (sent.partition, sent.offset)
    assert message.value == b'{"hello":"kafka"}'
    assert message.key == b"did:plc:smoke"
    assert message.headers == (("kind", b"test"),)


def test_postgres_creates_writes_and_reads_a_table(database_url: str, unique: str) -> None:
    schema = f"smoke_{unique}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        try:
            conn.execute(f"CREATE TABLE {schema}.t (id int PRIMARY KEY, name text NOT NULL)")
            with conn.transaction():
                conn.cursor().executemany(f"INSERT INTO {schema}.t VALUES (%s, %s)", [(1, "one"), (2, "two")])
            rows = conn.execute(f"SELECT id, name FROM {schema}.t ORDER BY id").fetchall()
        finally:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert rows == [(1, "one"), (2, "two")]


def _jaeger_get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_a_span_exported_over_otlp_is_found_in_jaeger(otlp_endpoint: str, jaeger_query_url: str, unique: str) -> None:
    service = f"bge-smoke-{unique}"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint, insecure=True)))
    with provider.get_tracer("smoke").start_as_current_span("smoke-span") as span:
        span.set_attribute("bge.test", unique)
        trace_id = format(span.get_span_context().trace_id, "032x")
    provider.shutdown()

    deadline = time.monotonic() + 30
    traces: list[dict] = []
    while time.monotonic() < deadline and not traces:
        traces = _jaeger_get(f"{jaeger_query_url}/api/traces?service={service}&limit=10").get("data") or []
        if not traces:
            time.sleep(0.5)
    assert [t["traceID"] for t in traces] == [trace_id]
    span_names = [s["operationName"] for s in traces[0]["spans"]]
    assert span_names == ["smoke-span"]
    assert service in _jaeger_get(f"{jaeger_query_url}/api/services")["data"]


def test_the_jaeger_configuration_of_docker_compose_is_one_the_built_jaeger_accepts() -> None:
    # the binary infra/stack built is the same Jaeger release as the compose file's image
    import os
    from pathlib import Path

    from tests.conftest import ROOT

    jaeger = Path(os.environ.get("BGE_STATE_DIR") or ROOT / ".state") / "jaeger" / "bin" / "jaeger"
    config = ROOT / "infra" / "jaeger" / "compose-config.yaml"
    result = subprocess.run([str(jaeger), "validate", "--config", str(config)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
