"""The parts of the health checks that need no service: thresholds, lag arithmetic, the breaker
check, the OTLP endpoint the SDK would use, and the TCP probe (on local sockets)."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiokafka import TopicPartition

from streams.adapters.breaker import BreakerConfig, CircuitBreaker
from streams.health.checks import HealthThresholds, _lag, _lag_outcome, breaker_check, otlp_endpoint, probe_tcp
from streams.health.report import HealthStatus


def test_thresholds_must_be_ordered_and_positive() -> None:
    with pytest.raises(ValueError, match="lag_degraded <= lag_unhealthy"):
        HealthThresholds(lag_degraded=10, lag_unhealthy=5)
    with pytest.raises(ValueError, match="tcp_timeout_s"):
        HealthThresholds(tcp_timeout_s=0)


def test_lag_counts_unread_messages_and_a_partition_without_position_from_its_beginning() -> None:
    tp0, tp1 = TopicPartition("t", 0), TopicPartition("t", 1)
    lag = _lag({tp0: 10, tp1: 0}, {tp0: 100, tp1: 7}, {0: 95})
    assert lag == {0: 5, 1: 7}
    thresholds = HealthThresholds(lag_degraded=10, lag_unhealthy=20)
    assert _lag_outcome("stage", lag, thresholds).status is HealthStatus.DEGRADED
    assert _lag_outcome("stage", lag, thresholds).message == "stage: lag 12 messages over 2 partitions (largest: partition 1, 7)"
    assert _lag_outcome("stage", {0: 0}, thresholds).status is HealthStatus.HEALTHY
    assert _lag_outcome("stage", {0: 25}, thresholds).status is HealthStatus.UNHEALTHY


async def test_the_breaker_check_follows_the_breaker() -> None:
    now = [0.0]
    breaker = CircuitBreaker("atproto", BreakerConfig(failure_threshold=2, recovery_timeout=10, recovery_jitter=0),
                             clock=lambda: now[0])
    check = breaker_check(breaker)
    assert (await check()).status is HealthStatus.HEALTHY
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure(RuntimeError("boom"))
    outcome = await check()
    assert outcome.status is HealthStatus.UNHEALTHY and "next probe in 10.0s" in outcome.message
    assert "RuntimeError: boom" in outcome.message
    now[0] = 10.0
    assert (await check()).status is HealthStatus.DEGRADED
    assert breaker.try_acquire()
    breaker.record_success()
    assert (await check()).status is HealthStatus.HEALTHY


def test_the_otlp_endpoint_is_read_as_the_sdk_reads_it() -> None:
    assert otlp_endpoint({}) is not None and otlp_endpoint({}).port == 4317  # type: ignore[union-attr]
    endpoint = otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317",
                              "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://traces.example.com"})
    assert endpoint is not None and (endpoint.host, endpoint.port) == ("traces.example.com", 443)
    assert otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}).host == "collector"  # type: ignore[union-attr]
    assert otlp_endpoint({"OTEL_SDK_DISABLED": "true"}) is None
    assert otlp_endpoint({"OTEL_TRACES_EXPORTER": "none"}) is None
    with pytest.raises(ValueError, match="names no host"):
        otlp_endpoint({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://"})


async def test_the_tcp_probe_connects_or_says_why_not() -> None:
    server = await asyncio.start_server(lambda reader, writer: writer.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await probe_tcp("127.0.0.1", port, 1.0) is None
    finally:
        server.close()
        await server.wait_closed()
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed = unused.getsockname()[1]
    assert await probe_tcp("127.0.0.1", closed, 1.0) == "ConnectionRefusedError: Connection refused"
