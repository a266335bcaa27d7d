"""Health registry: concurrent checks with timeouts, and the aggregation rule."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import orjson
import pytest

from streams.health.report import (
    CheckOutcome,
    HealthRegistry,
    HealthReport,
    HealthStatus,
    overall_status,
)

H, D, U = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY
STAMP = datetime(2026, 7, 4, 12, 0, tzinfo=UTC)


def registry(**kw) -> HealthRegistry:
    return HealthRegistry(now=lambda: STAMP, **kw)


def returning(outcome: CheckOutcome):
    async def check() -> CheckOutcome:
        return outcome

    return check


@pytest.mark.parametrize(
    ("statuses", "overall"),
    [([], U), ([H], H), ([H, H], H), ([H, D], D), ([D, D], D), ([H, U], U), ([D, U, H], U)],
)
def test_overall_status_is_the_worst_and_unhealthy_when_nothing_is_checked(statuses, overall):
    assert overall_status(statuses) is overall


async def test_an_empty_registry_reports_unhealthy():
    report = await registry().run()
    assert report.status is U and report.checks == [] and report.http_status == 503


async def test_results_carry_service_status_message_time_and_timestamp():
    reg = registry()
    reg.register("kafka", returning(CheckOutcome.healthy("3 brokers")))
    reg.register("postgres", returning(CheckOutcome.degraded("replica lag 12s")))
    report = await reg.run()
    assert report.status is D and report.http_status == 200
    kafka, postgres = report.checks
    assert (kafka.service, kafka.status, kafka.message) == ("kafka", H, "3 brokers")
    assert (postgres.service, postgres.status, postgres.message) == ("postgres", D, "replica lag 12s")
    assert kafka.timestamp == STAMP and kafka.response_time_ms >= 0


async def test_a_check_that_raises_is_unhealthy_with_the_reason_and_credentials_masked():
    async def broken() -> CheckOutcome:
        raise ConnectionRefusedError("connect to postgresql://bge:hunter2@db:5432/bge failed")

    reg = registry()
    reg.register("postgres", broken)
    reg.register("kafka", returning(CheckOutcome.healthy()))
    report = await reg.run()
    assert report.status is U
    result = report.checks[0]
    assert result.status is U
    assert result.message == "ConnectionRefusedError: connect to postgresql://bge:***@db:5432/bge failed"


async def test_a_check_that_times_out_is_unhealthy_and_does_not_hold_up_the_others():
    async def hangs() -> CheckOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    reg = registry(default_timeout=5.0)
    reg.register("jetstream", hangs, timeout=0.05)
    reg.register("kafka", returning(CheckOutcome.healthy()))
    start = time.perf_counter()
    report = await reg.run()
    assert time.perf_counter() - start < 1.0
    jetstream, kafka = report.checks
    assert jetstream.status is U and jetstream.message == "timed out after 0.05s"
    assert jetstream.response_time_ms >= 50 * 0.9
    assert kafka.status is H


async def test_a_timeout_raised_by_the_check_itself_is_reported_as_its_error():
    async def socket_timeout() -> CheckOutcome:
        raise TimeoutError("read timed out")

    reg = registry()
    reg.register("appview", socket_timeout)
    assert (await reg.run_one("appview")).message == "TimeoutError: read timed out"


async def test_checks_run_concurrently():
    async def slow() -> CheckOutcome:
        await asyncio.sleep(0.2)
        return CheckOutcome.healthy()

    reg = registry()
    for name in ("a", "b", "c", "d", "e"):
        reg.register(name, slow)
    start = time.perf_counter()
    report = await reg.run()
    assert time.perf_counter() - start < 0.6  # not 5 x 0.2 s
    assert report.status is H and [c.service for c in report.checks] == ["a", "b", "c", "d", "e"]


async def test_a_check_returning_something_else_is_unhealthy():
    async def sloppy():
        return True

    reg = registry()
    reg.register("sloppy", sloppy)  # type: ignore[arg-type]
    result = await reg.run_one("sloppy")
    assert result.status is U and "not a CheckOutcome" in result.message


async def test_response_time_comes_from_the_injected_clock():
    ticks = iter([1.0, 1.25])
    reg = registry(clock=lambda: next(ticks))
    reg.register("x", returning(CheckOutcome.healthy()))
    assert (await reg.run_one("x")).response_time_ms == 250.0


async def test_the_report_is_json_serialisable():
    reg = registry()
    reg.register("kafka", returning(CheckOutcome.unhealthy("no brokers")))
    report = await reg.run()
    data = report.model_dump(mode="json")
    assert orjson.loads(orjson.dumps(data)) == {
        "status": "unhealthy",
        "timestamp": "2026-07-04T12:00:00Z",
        "checks": [{"service": "kafka", "status": "unhealthy", "message": "no brokers",
                    "response_time_ms": data["checks"][0]["response_time_ms"],
                    "timestamp": "2026-07-04T12:00:00Z"}],
    }
    assert HealthReport.model_validate_json(report.model_dump_json()) == report


def test_registration_rejects_duplicates_and_bad_timeouts():
    reg = registry()
    reg.register("kafka", returning(CheckOutcome.healthy()))
    with pytest.raises(ValueError, match="already registered"):
        reg.register("kafka", returning(CheckOutcome.healthy()))
    with pytest.raises(ValueError, match="timeout"):
        reg.register("pg", returning(CheckOutcome.healthy()), timeout=0)
    reg.unregister("kafka")
    assert reg.services == []


async def test_cancelling_the_run_cancels_the_checks():
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow() -> CheckOutcome:
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return CheckOutcome.healthy()

    reg = registry()
    reg.register("slow", slow)
    task = asyncio.create_task(reg.run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


# --- needs, skipped outcomes, details, wording (shared with `bge validate`) -----------------

S = HealthStatus.SKIPPED


async def test_a_check_needing_a_failed_one_is_skipped_and_not_run():
    ran = []

    async def topics() -> CheckOutcome:
        ran.append("topics")
        return CheckOutcome.healthy()

    reg = registry()
    reg.register("kafka", returning(CheckOutcome.unhealthy("no brokers")))
    reg.register("topics", topics, needs=["kafka"])
    reg.register("python", returning(CheckOutcome.healthy()))
    report = await reg.run()
    kafka, skipped, python = report.checks
    assert ran == []
    assert (skipped.service, skipped.status, skipped.message) == ("topics", S, "not checked: kafka failed")
    assert skipped.response_time_ms == 0.0 and skipped.timestamp == STAMP
    assert (kafka.status, python.status, report.status) == (U, H, U)


async def test_a_check_starts_after_its_needs_and_runs_when_they_pass_or_degrade():
    order = []

    def recording(name: str, outcome: CheckOutcome, delay: float = 0.0):
        async def check() -> CheckOutcome:
            await asyncio.sleep(delay)
            order.append(name)
            return outcome

        return check

    reg = registry()
    reg.register("postgres", recording("postgres", CheckOutcome.healthy(), delay=0.05))
    reg.register("memory", recording("memory", CheckOutcome.degraded("low")))
    reg.register("schema", recording("schema", CheckOutcome.healthy("at version 7")), needs=["postgres", "memory"])
    report = await reg.run()
    assert order == ["memory", "postgres", "schema"]
    assert [c.service for c in report.checks] == ["postgres", "memory", "schema"]  # registration order
    assert report.checks[2].status is H and report.status is D


async def test_a_skip_passes_its_reason_on_and_does_not_count_towards_the_status():
    reg = registry()
    reg.register("postgres", returning(CheckOutcome.skipped("not checked: the configuration is invalid")))
    reg.register("schema", returning(CheckOutcome.healthy()), needs=["postgres"])
    reg.register("python", returning(CheckOutcome.healthy()))
    report = await reg.run()
    assert [(c.status, c.message) for c in report.checks[:2]] == [
        (S, "not checked: the configuration is invalid"), (S, "not checked: the configuration is invalid")]
    assert report.status is H and report.http_status == 200
    assert overall_status([S]) is U and overall_status([S, D]) is D


def test_needs_must_be_registered_first_and_unregistering_drops_them():
    reg = registry()
    with pytest.raises(ValueError, match="not registered: kafka"):
        reg.register("topics", returning(CheckOutcome.healthy()), needs=["kafka"])
    assert reg.services == []
    reg.register("kafka", returning(CheckOutcome.unhealthy("down")))
    reg.register("topics", returning(CheckOutcome.healthy()), needs=["kafka"])
    reg.unregister("kafka")
    report = asyncio.run(reg.run())
    assert [(c.service, c.status) for c in report.checks] == [("topics", H)]


async def test_details_are_kept_for_text_output_but_not_serialised():
    reg = registry()
    reg.register("topics", returning(CheckOutcome.unhealthy("2 topics missing", ["a: missing", "b: missing"])))
    report = await reg.run()
    assert report.checks[0].details == ("a: missing", "b: missing")
    assert "details" not in report.model_dump(mode="json")["checks"][0]
    assert "details" not in HealthReport.model_json_schema(mode="serialization")["$defs"]["CheckResult"]["properties"]


async def test_the_failure_wording_is_the_registrys_and_quiet_registries_log_nothing(caplog):
    async def hangs() -> CheckOutcome:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def broken() -> CheckOutcome:
        raise OSError("line one\n  line two")

    def explain(error: Exception, timed_out_after: float | None) -> str:
        return f"no answer within {timed_out_after:g}s" if timed_out_after else f"{type(error).__name__}!"

    reg = registry(explain=explain, quiet=True)
    reg.register("slow", hangs, timeout=0.01)
    reg.register("broken", broken)
    with caplog.at_level("WARNING"):
        report = await reg.run()
    assert [c.message for c in report.checks] == ["no answer within 0.01s", "OSError!"]
    assert caplog.records == []
    loud = registry()
    loud.register("broken", broken)
    with caplog.at_level("WARNING"):
        assert (await loud.run()).checks[0].message == "OSError: line one\n  line two"
    assert [r.getMessage() for r in caplog.records] == ["health check not healthy"]
