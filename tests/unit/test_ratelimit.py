"""Outbound token bucket and inbound per-client limiter."""

from __future__ import annotations

import asyncio
import gc
import io
import logging
import time
import tracemalloc
from email.utils import formatdate

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.observability.log import configure_logging
from streams.adapters.ratelimit import Decision, InboundRateLimiter, TokenBucket

WALL = 1_750_000_000.0  # a unix time for the injected wall clock


class FakeTime:
    """A monotonic clock whose sleep advances it (only the bucket's head waiter ever sleeps)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def bucket(t: FakeTime, rate: float = 10.0, burst: float = 1.0, **kw) -> TokenBucket:
    return TokenBucket(rate, burst, clock=t.clock, sleep=t.sleep, wall_clock=lambda: WALL, **kw)


# -- TokenBucket ------------------------------------------------------------------------------


async def test_the_bucket_starts_full_and_serves_the_burst_without_waiting():
    t = FakeTime()
    b = bucket(t, rate=10, burst=3)
    for _ in range(3):
        await b.acquire()
    assert t.sleeps == []
    await b.acquire()
    assert t.sleeps == [pytest.approx(0.1)]


async def test_default_burst_is_one_second_of_tokens():
    assert TokenBucket().burst == 10.0 and TokenBucket().rate == 10.0
    assert TokenBucket(rate=2.5).burst == 2.5


async def test_sustained_rate_is_the_configured_rate_with_one_sleep_per_token():
    t = FakeTime()
    b = bucket(t, rate=10, burst=1)
    start = t.now
    for _ in range(21):
        await b.acquire()
    assert t.now - start == pytest.approx(2.0)  # 1 from the burst, then 20 at 10/s
    assert len(t.sleeps) == 20  # no polling: each token costs exactly one sleep


async def test_waiters_are_served_in_arrival_order():
    t = FakeTime()
    b = bucket(t, rate=5, burst=1)
    order: list[int] = []

    async def worker(i: int) -> None:
        await b.acquire()
        order.append(i)

    tasks = [asyncio.create_task(worker(i)) for i in range(20)]
    await asyncio.gather(*tasks)
    assert order == list(range(20))
    assert t.now - 100.0 == pytest.approx(19 / 5)


async def test_a_cancelled_waiter_takes_no_token_and_leaves_the_queue():
    gate = asyncio.Event()
    t = FakeTime()

    async def blocking_sleep(seconds: float) -> None:
        await gate.wait()
        t.now += seconds

    b = TokenBucket(10, 1, clock=t.clock, sleep=blocking_sleep)
    await b.acquire()  # empties the bucket
    first = asyncio.create_task(b.acquire())
    second = asyncio.create_task(b.acquire())
    await asyncio.sleep(0)
    assert b.waiting == 2
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    gate.set()
    await second
    assert b.waiting == 0


async def test_a_429_with_retry_after_pauses_every_caller():
    t = FakeTime()
    b = bucket(t, rate=100, burst=10)
    assert b.observe(429, {"Retry-After": "3"}) == 3.0
    assert b.paused_for == pytest.approx(3.0)
    started = t.now
    await asyncio.gather(b.acquire(), b.acquire(), b.acquire())
    assert t.now - started >= 3.0
    assert t.now - started == pytest.approx(3.0 + 3 / 100)  # empty after the pause, then at rate


async def test_a_429_without_retry_after_uses_ratelimit_reset_as_unix_time():
    t = FakeTime()
    b = bucket(t)
    assert b.observe(429, {"RateLimit-Reset": str(int(WALL) + 42)}) == pytest.approx(42.0)


async def test_remaining_zero_pauses_until_the_reset_even_on_success():
    t = FakeTime()
    b = bucket(t)
    pause = b.observe(200, {"ratelimit-limit": "3000", "ratelimit-remaining": "0",
                            "ratelimit-reset": str(int(WALL) + 17)})
    assert pause == pytest.approx(17.0)
    started = t.now
    await b.acquire()
    assert t.now - started >= 17.0


@pytest.mark.parametrize(
    ("status", "headers", "pause"),
    [
        (200, {"ratelimit-remaining": "5", "ratelimit-reset": str(int(WALL) + 60)}, 0.0),
        (200, {}, 0.0),
        (429, {"ratelimit-reset": "30"}, 30.0),  # small value: delta seconds
        (429, {"retry-after": formatdate(WALL + 8, usegmt=True)}, 8.0),  # HTTP date
        (429, {}, 5.0),  # default pause
        (429, {"retry-after": "soon"}, 5.0),  # unparsable: ignored
        (429, {"retry-after": "99999"}, 3600.0),  # capped at max_pause
        (503, {"retry-after": "2"}, 2.0),
        (503, {}, 0.0),
        (200, {"ratelimit-remaining": "0", "ratelimit-reset": str(int(WALL) - 5)}, 0.0),  # past
    ],
)
def test_observe_interprets_rate_limit_headers(status, headers, pause):
    t = FakeTime()
    assert bucket(t).observe(status, headers) == pytest.approx(pause)


def test_a_pause_is_logged_as_a_rate_limit_hit():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    try:
        bucket(FakeTime(), name="appview").observe(429, {"retry-after": "7", "ratelimit-limit": "3000"})
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    (record,) = [orjson.loads(line) for line in stream.getvalue().splitlines()]
    assert record["message"] == "rate limit hit" and record["level"] == "WARNING"
    assert record["limiter"] == "appview" and record["retry_after"] == 7.0
    assert record["status"] == 429 and record["limit"] == 3000.0


def test_pauses_only_extend():
    t = FakeTime()
    b = bucket(t)
    b.observe(429, {"retry-after": "10"})
    b.observe(429, {"retry-after": "2"})
    assert b.paused_for == pytest.approx(10.0)


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (10, 0.5)])
def test_invalid_bucket_parameters_are_rejected(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst)


async def test_real_time_rate_is_achieved_within_tolerance():
    b = TokenBucket(rate=20, burst=5)
    start = time.perf_counter()
    await asyncio.gather(*(b.acquire() for _ in range(50)))
    elapsed = time.perf_counter() - start
    expected = (50 - 5) / 20  # 2.25 s: the burst is free, the other 45 come at 20/s
    assert expected - 0.05 <= elapsed <= expected + 0.35


# -- InboundRateLimiter -----------------------------------------------------------------------


def test_allows_the_limit_at_once_then_refuses_with_remaining_counting_down():
    limiter = InboundRateLimiter(limit=5, window_seconds=10)
    decisions = [limiter.check("ip-1", now=50.0) for _ in range(6)]
    assert [d.allowed for d in decisions] == [True] * 5 + [False]
    assert [d.remaining for d in decisions] == [4, 3, 2, 1, 0, 0]
    assert all(d.limit == 5 for d in decisions)
    assert decisions[0].reset_at == 52.0 and decisions[4].reset_at == 60.0
    assert decisions[5].retry_after == 2.0 and decisions[4].retry_after == 0.0


def test_the_next_request_is_allowed_exactly_at_the_emission_interval():
    limiter = InboundRateLimiter(limit=100, window_seconds=60)
    for _ in range(100):
        assert limiter.check("c", now=0.0).allowed
    refused = limiter.check("c", now=0.0)
    assert not refused.allowed and refused.retry_after == 0.6
    assert not limiter.check("c", now=0.599999).allowed
    assert limiter.check("c", now=0.6).allowed


def test_the_full_allowance_is_back_exactly_one_window_after_a_burst():
    limiter = InboundRateLimiter(limit=3, window_seconds=1)
    for _ in range(3):
        last = limiter.check("c", now=10.0)
    assert last.reset_at == 11.0
    probe = InboundRateLimiter(limit=3, window_seconds=1)
    for _ in range(3):
        probe.check("c", now=10.0)
    # One microsecond before reset_at the allowance is not yet full.
    assert probe.check("c", now=10.999999).remaining == 1
    assert limiter.check("c", now=11.0).remaining == 2  # full again: this call leaves 2


def test_refused_requests_do_not_consume_allowance():
    limiter = InboundRateLimiter(limit=1, window_seconds=1)
    assert limiter.check("c", now=0.0).allowed
    for i in range(100):
        assert not limiter.check("c", now=0.5 + i * 0.001).allowed
    assert limiter.check("c", now=1.0).allowed


def test_clients_are_limited_independently():
    limiter = InboundRateLimiter(limit=1, window_seconds=60)
    assert limiter.check("a", now=0).allowed
    assert not limiter.check("a", now=0).allowed
    assert limiter.check("b", now=0).allowed


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 1000),
    window=st.floats(0.001, 86_400, allow_nan=False),
    start=st.floats(0, 10_000_000, allow_nan=False),
    burst=st.integers(1, 50),
)
def test_a_refused_client_is_allowed_exactly_at_now_plus_retry_after(limit, window, start, burst):
    limiter = InboundRateLimiter(limit=limit, window_seconds=window)
    for _ in range(limit + burst):
        decision = limiter.check("c", now=start)
    assert not decision.allowed and decision.retry_after > 0
    # the limiter keeps time in whole microseconds: add in microseconds, not in float seconds
    # (start + retry_after in floats can land a rounding step before the exact instant)
    allowed_us = round(start * 1_000_000) + round(decision.retry_after * 1_000_000)
    assert not limiter.check("c", now=(allowed_us - 1) / 1_000_000).allowed
    assert limiter.check("c", now=allowed_us / 1_000_000).allowed


def test_expired_clients_are_dropped_deterministically_without_losing_anything():
    limiter = InboundRateLimiter(limit=10, window_seconds=1, max_clients=1000)
    for i in range(500):
        limiter.check(f"c{i}", now=0.0)
    assert len(limiter) == 500
    # Each check drops up to two expired entries from the least-recent end.
    for i in range(250):
        limiter.check("newcomer", now=5.0 + i * 0.001)
    assert len(limiter) == 1 and limiter.evictions == 0


def test_a_million_distinct_clients_never_grow_the_store_beyond_its_cap():
    cap = 10_000
    limiter = InboundRateLimiter(limit=100, window_seconds=60, max_clients=cap)
    check = limiter.check
    for block in range(10):
        for i in range(block * 100_000, (block + 1) * 100_000):
            check(f"client-{i}", 1.0)
        assert len(limiter) == cap
    assert limiter.evictions == 1_000_000 - cap
    # The most recent clients are the ones kept, and they keep their state.
    assert check("client-999999", 1.0).remaining == 98
    assert check("client-0", 1.0).remaining == 99  # evicted long ago: starts afresh


def test_traced_memory_stops_growing_once_the_cap_is_reached():
    # tracemalloc makes each check ~10x slower, so this traces 60k clients (12x the cap);
    # the untraced test above covers the full million.
    cap = 5_000
    keys = [f"client-{i}" for i in range(60_000)]  # owned by the caller, not the limiter
    gc.collect()
    tracemalloc.start()
    try:
        limiter = InboundRateLimiter(limit=100, window_seconds=60, max_clients=cap)
        check = limiter.check
        for key in keys[:10_000]:
            check(key, 1.0)
        at_2x_cap, _ = tracemalloc.get_traced_memory()
        for key in keys[10_000:]:
            check(key, 1.0)
        at_12x_cap, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(limiter) == cap
    assert at_12x_cap - at_2x_cap < 32 * 1024  # 6x more clients, no more memory
    assert peak < 2 * 1024 * 1024  # about 5k entries' worth


def test_decision_headers_for_allowed_and_refused_requests():
    allowed = Decision(True, 100, 42, reset_at=130.2, retry_after=0.0)
    assert allowed.headers(now=100.0) == {
        "RateLimit-Limit": "100", "RateLimit-Remaining": "42", "RateLimit-Reset": "31"}
    refused = Decision(False, 100, 0, reset_at=160.0, retry_after=0.25)
    assert refused.headers(now=100.0)["Retry-After"] == "1"


@pytest.mark.parametrize(
    "kwargs", [{"limit": 0}, {"window_seconds": 0}, {"window_seconds": -1}, {"max_clients": 0}]
)
def test_invalid_limiter_parameters_are_rejected(kwargs):
    with pytest.raises(ValueError):
        InboundRateLimiter(**kwargs)
