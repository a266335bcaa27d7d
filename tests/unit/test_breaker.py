"""The circuit breaker's state machine, driven by an injected clock."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Iterator

import orjson
import pytest
from returns.result import Failure, Success

from streams.adapters.breaker import BreakerConfig, CircuitBreaker, CircuitOpenError, CircuitState
from streams.observability.log import configure_logging


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    pass


async def ok(value: int = 1) -> int:
    return value


async def fail() -> int:
    raise Boom("down")


def make(clock: Clock, *, random: float = 0.0, **config) -> CircuitBreaker:
    defaults = {"failure_threshold": 3, "failure_rate_threshold": None, "recovery_timeout": 10.0,
                "recovery_jitter": 0.0}
    return CircuitBreaker("appview", BreakerConfig(**{**defaults, **config}), clock=clock,
                          random=lambda: random)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


async def test_a_closed_breaker_passes_calls_and_returns_their_value(clock):
    breaker = make(clock)
    assert await breaker.call(ok, 7) == Success(7)
    assert breaker.state is CircuitState.CLOSED


async def test_a_raising_call_returns_failure_with_the_exception(clock):
    breaker = make(clock)
    result = await breaker.call(fail)
    assert isinstance(result, Failure) and isinstance(result.failure(), Boom)


async def test_opens_after_the_configured_consecutive_failures(clock):
    breaker = make(clock, failure_threshold=3)
    for _ in range(2):
        await breaker.call(fail)
    assert breaker.state is CircuitState.CLOSED
    await breaker.call(fail)
    assert breaker.state is CircuitState.OPEN
    assert breaker.stats().times_opened == 1


async def test_a_success_resets_the_consecutive_count(clock):
    breaker = make(clock, failure_threshold=3)
    for _ in range(2):
        await breaker.call(fail)
    await breaker.call(ok)
    for _ in range(2):
        await breaker.call(fail)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().consecutive_failures == 2


async def test_an_open_breaker_fails_fast_with_its_name_and_next_attempt_time(clock):
    breaker = make(clock, failure_threshold=1, recovery_timeout=10.0)
    await breaker.call(fail)
    called = False

    async def probe() -> int:
        nonlocal called
        called = True
        return 1

    clock.advance(4.0)
    result = await breaker.call(probe)
    assert not called
    error = result.failure()
    assert isinstance(error, CircuitOpenError)
    assert error.name == "appview" and error.state is CircuitState.OPEN
    assert error.next_attempt_at == 1010.0
    assert error.retry_after == pytest.approx(6.0)
    assert "appview" in str(error)
    assert breaker.stats().rejected_calls == 1


async def test_opens_on_failure_rate_over_the_window_once_minimum_calls_are_reached(clock):
    breaker = make(clock, failure_threshold=100, failure_rate_threshold=0.5,
                   minimum_calls=10, window_seconds=60.0)
    # Alternating outcomes never make 2 consecutive failures, but the rate is 50%.
    for i in range(9):
        await breaker.call(fail if i % 2 == 0 else ok)
    assert breaker.state is CircuitState.CLOSED  # 5/9 failures, but fewer than 10 calls
    await breaker.call(ok)
    assert breaker.state is CircuitState.CLOSED  # 10 calls, 5 failures: closed until a failure is recorded
    await breaker.call(fail)
    assert breaker.state is CircuitState.OPEN  # 6/11 >= 0.5


async def test_failures_older_than_the_window_do_not_count_toward_the_rate(clock):
    breaker = make(clock, failure_threshold=100, failure_rate_threshold=0.5,
                   minimum_calls=4, window_seconds=60.0)
    for _ in range(3):
        await breaker.call(fail)  # 3 calls: below minimum_calls, so no rate yet
    clock.advance(60.0)  # exactly one window later the old calls have left it
    await breaker.call(ok)
    await breaker.call(fail)
    # Counting the old calls would make 4 failures in 5 calls; the window holds 1 in 2.
    stats = breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert (stats.window_calls, stats.window_failures) == (2, 1)


async def test_after_the_recovery_timeout_it_is_half_open(clock):
    breaker = make(clock, failure_threshold=1, recovery_timeout=10.0)
    await breaker.call(fail)
    clock.advance(9.999)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.001)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_recovery_timeout_gets_jitter_from_the_random_source(clock):
    breaker = make(clock, failure_threshold=1, recovery_timeout=10.0, recovery_jitter=0.2,
                   random=0.5)
    await breaker.call(fail)
    assert breaker.stats().next_attempt_at == pytest.approx(1000.0 + 10.0 * 1.1)
    clock.advance(10.5)
    assert breaker.state is CircuitState.OPEN
    clock.advance(0.5)
    assert breaker.state is CircuitState.HALF_OPEN


async def test_half_open_lets_exactly_one_probe_through_and_concurrent_callers_fail_fast(clock):
    breaker = make(clock, failure_threshold=1)
    await breaker.call(fail)
    clock.advance(10.0)
    release = asyncio.Event()
    entered = 0

    async def slow_probe() -> str:
        nonlocal entered
        entered += 1
        await release.wait()
        return "ok"

    probe = asyncio.create_task(breaker.call(slow_probe))
    await asyncio.sleep(0)
    others = await asyncio.gather(*(breaker.call(slow_probe) for _ in range(5)))
    assert entered == 1
    for result in others:
        error = result.failure()
        assert isinstance(error, CircuitOpenError) and error.state is CircuitState.HALF_OPEN
        assert error.retry_after is None  # waiting on the probe
    assert breaker.state is CircuitState.HALF_OPEN
    release.set()
    assert await probe == Success("ok")
    assert breaker.state is CircuitState.CLOSED


async def test_the_probe_success_closes_and_clears_counters(clock):
    breaker = make(clock, failure_threshold=2)
    await breaker.call(fail)
    await breaker.call(fail)
    clock.advance(10.0)
    await breaker.call(ok)
    stats = breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert stats.consecutive_failures == 0 and stats.next_attempt_at is None
    # It takes a full new streak to open again.
    await breaker.call(fail)
    assert breaker.state is CircuitState.CLOSED


async def test_a_probe_failure_reopens_with_a_fresh_timeout(clock):
    breaker = make(clock, failure_threshold=1, recovery_timeout=10.0)
    await breaker.call(fail)
    clock.advance(15.0)  # half-open since t+10
    result = await breaker.call(fail)
    assert isinstance(result.failure(), Boom)
    stats = breaker.stats()
    assert stats.state is CircuitState.OPEN
    assert stats.next_attempt_at == 1015.0 + 10.0
    assert stats.times_opened == 2
    clock.advance(9.9)
    assert breaker.state is CircuitState.OPEN


async def test_a_cancelled_probe_frees_the_slot_for_the_next_caller(clock):
    breaker = make(clock, failure_threshold=1)
    await breaker.call(fail)
    clock.advance(10.0)
    hang = asyncio.Event()

    async def stuck() -> None:
        await hang.wait()

    probe = asyncio.create_task(breaker.call(stuck))
    await asyncio.sleep(0)
    assert isinstance((await breaker.call(ok)).failure(), CircuitOpenError)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert breaker.state is CircuitState.HALF_OPEN
    assert await breaker.call(ok) == Success(1)
    assert breaker.state is CircuitState.CLOSED


async def test_a_straggler_that_started_before_opening_does_not_close_the_breaker(clock):
    breaker = make(clock, failure_threshold=1)
    release = asyncio.Event()

    async def slow_ok() -> int:
        await release.wait()
        return 1

    straggler = asyncio.create_task(breaker.call(slow_ok))
    await asyncio.sleep(0)
    await breaker.call(fail)  # opens
    clock.advance(10.0)
    assert breaker.state is CircuitState.HALF_OPEN
    release.set()
    assert await straggler == Success(1)
    assert breaker.state is CircuitState.HALF_OPEN  # still waiting for a real probe
    assert breaker.stats().total_successes == 1


async def test_exceptions_the_predicate_excludes_do_not_count_as_failures(clock):
    breaker = CircuitBreaker("appview", BreakerConfig(failure_threshold=1), clock=clock,
                             is_failure=lambda exc: not isinstance(exc, KeyError))

    async def not_found() -> None:
        raise KeyError("no such profile")

    result = await breaker.call(not_found)
    assert isinstance(result.failure(), KeyError)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().total_successes == 1


def test_low_level_acquire_and_record_drive_the_same_state_machine(clock):
    breaker = make(clock, failure_threshold=2)
    for _ in range(2):
        assert breaker.try_acquire()
        breaker.record_failure(ConnectionError("ws closed"))
    assert breaker.state is CircuitState.OPEN
    assert not breaker.try_acquire()
    assert breaker.retry_after() == pytest.approx(10.0)
    clock.advance(10.0)
    assert breaker.try_acquire()  # the probe
    assert not breaker.try_acquire()  # exactly one
    breaker.record_success()
    assert breaker.state is CircuitState.CLOSED
    stats = breaker.stats()
    assert stats.last_error == "ConnectionError: ws closed" and stats.last_failure_at == 1000.0


def test_release_gives_back_the_probe_slot(clock):
    breaker = make(clock, failure_threshold=1)
    breaker.try_acquire()
    breaker.record_failure()
    clock.advance(10.0)
    assert breaker.try_acquire()
    breaker.release()
    assert breaker.state is CircuitState.HALF_OPEN
    assert breaker.try_acquire()


async def test_stats_count_calls_outcomes_and_openings(clock):
    breaker = make(clock, failure_threshold=2)
    await breaker.call(ok)
    await breaker.call(fail)
    clock.advance(1.0)
    await breaker.call(fail)
    await breaker.call(ok)  # rejected
    stats = breaker.stats()
    assert stats.name == "appview" and stats.state is CircuitState.OPEN
    assert (stats.total_calls, stats.total_successes, stats.total_failures) == (3, 1, 2)
    assert stats.rejected_calls == 1 and stats.times_opened == 1
    assert stats.consecutive_failures == 2
    assert stats.last_failure_at == 1001.0 and stats.next_attempt_at == 1011.0
    assert stats.state_changed_at == 1001.0


async def test_force_open_holds_open_until_force_closed(clock):
    breaker = make(clock)
    breaker.force_open()
    clock.advance(10_000.0)
    assert breaker.state is CircuitState.OPEN
    error = (await breaker.call(ok)).failure()
    assert isinstance(error, CircuitOpenError) and error.next_attempt_at is None
    assert "held open" in str(error)
    breaker.force_closed()
    assert await breaker.call(ok) == Success(1)


async def test_force_closed_keeps_totals_and_reset_clears_everything(clock):
    breaker = make(clock, failure_threshold=1)
    await breaker.call(fail)
    breaker.force_closed()
    assert breaker.state is CircuitState.CLOSED
    assert breaker.stats().total_failures == 1 and breaker.stats().consecutive_failures == 0
    await breaker.call(fail)
    assert breaker.state is CircuitState.OPEN  # counting resumes
    breaker.reset()
    stats = breaker.stats()
    assert stats.state is CircuitState.CLOSED
    assert (stats.total_calls, stats.total_failures, stats.times_opened) == (0, 0, 0)


async def test_a_disabled_breaker_is_a_pass_through(clock):
    breaker = make(clock, failure_threshold=1, enabled=False)
    for _ in range(10):
        assert isinstance((await breaker.call(fail)).failure(), Boom)
    assert breaker.state is CircuitState.CLOSED
    assert await breaker.call(ok) == Success(1)
    assert breaker.stats().total_failures == 10


async def test_cancellation_propagates_out_of_call(clock):
    breaker = make(clock)

    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    assert breaker.stats().total_failures == 0


async def test_every_state_change_is_logged(clock, log_lines):
    breaker = make(clock, failure_threshold=1)
    await breaker.call(fail)
    clock.advance(10.0)
    await breaker.call(ok)
    records = [orjson.loads(line) for line in log_lines.getvalue().splitlines()]
    changes = [(r["message"], r.get("from_state"), r.get("to_state")) for r in records]
    assert changes == [
        ("circuit breaker opened", "closed", "open"),
        ("circuit breaker state changed", "open", "half_open"),
        ("circuit breaker state changed", "half_open", "closed"),
    ]
    assert records[0]["breaker"] == "appview" and records[0]["reason"] == "consecutive failures"
    assert records[0]["context"] == "breaker" and records[0]["next_attempt_in"] == 10.0


@pytest.mark.parametrize(
    ("field", "value"),
    [("failure_threshold", 0), ("failure_rate_threshold", 0.0), ("failure_rate_threshold", 1.5),
     ("window_seconds", 0), ("minimum_calls", 0), ("recovery_timeout", 0),
     ("recovery_jitter", -0.1), ("recovery_jitter", 2.0)],
)
def test_invalid_config_is_rejected_naming_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        BreakerConfig(**{field: value})
