"""A circuit breaker for calls to one dependency (the AppView, a Jetstream host, Postgres...).

States and transitions:

- CLOSED: calls pass. It opens after ``failure_threshold`` consecutive failures, or when the
  failure rate over the last ``window_seconds`` reaches ``failure_rate_threshold`` with at least
  ``minimum_calls`` calls in that window.
- OPEN: calls fail fast with :class:`CircuitOpenError`. After the recovery timeout (with jitter:
  between ``recovery_timeout`` and ``recovery_timeout * (1 + recovery_jitter)``) the next
  consultation of the breaker moves it to HALF_OPEN.
- HALF_OPEN: EXACTLY ONE probe call is let through; concurrent callers fail fast. The probe's
  success closes the breaker (counters and window cleared); its failure re-opens it with a fresh
  timeout. A probe that ends with neither (cancelled, or :meth:`CircuitBreaker.release`) frees the
  slot for the next caller.

Outcomes of calls that started before the latest state change (stragglers) are counted in the
totals but never drive a transition when they come through :meth:`CircuitBreaker.call`.

Time comes from an injectable clock (monotonic seconds) and jitter from an injectable random
source, so the state machine is deterministic under test. All methods are meant for one event
loop thread; the state changes themselves are synchronous, so they are atomic under asyncio.
Every state change is logged through the contextual logger (context ``"breaker"``, with
the breaker's name in the ``breaker`` field).
"""

from __future__ import annotations

import random as _random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import ParamSpec, TypeVar

from returns.result import Failure, Result, Success

from streams.observability.log import ContextLogger, get_logger

__all__ = ["BreakerConfig", "BreakerStats", "CircuitBreaker", "CircuitOpenError", "CircuitState"]

T = TypeVar("T")
P = ParamSpec("P")


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitOpenError(Exception):
    """A call was refused because the breaker is open, or half-open with its probe in flight.

    ``next_attempt_at`` is the breaker clock's time when a probe will be allowed and
    ``retry_after`` the seconds until then; both are None when unknown (held open by
    :meth:`CircuitBreaker.force_open`, or waiting for the probe in flight).
    """

    def __init__(self, name: str, state: CircuitState, next_attempt_at: float | None,
                 retry_after: float | None) -> None:
        self.name = name
        self.state = state
        self.next_attempt_at = next_attempt_at
        self.retry_after = retry_after
        if retry_after is not None:
            detail = f"next attempt in {retry_after:.3f}s"
        elif state is CircuitState.HALF_OPEN:
            detail = "a recovery probe is in flight"
        else:
            detail = "held open until reset"
        super().__init__(f"circuit breaker {name!r} is {state.value}; {detail}")


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When a breaker opens and how long it stays open.

    ``failure_rate_threshold=None`` disables the rate criterion; ``enabled=False`` makes the
    breaker a pass-through that never opens (it still counts calls). Invalid values raise
    ``ValueError`` naming the field.
    """

    failure_threshold: int = 5
    failure_rate_threshold: float | None = 0.5
    window_seconds: float = 60.0
    minimum_calls: int = 20
    window_max_calls: int = 10_000
    recovery_timeout: float = 30.0
    recovery_jitter: float = 0.1
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.failure_threshold < 1:
            raise ValueError(f"failure_threshold must be >= 1, got {self.failure_threshold}")
        rate = self.failure_rate_threshold
        if rate is not None and not 0.0 < rate <= 1.0:
            raise ValueError(f"failure_rate_threshold must be in (0, 1], got {rate}")
        if self.window_seconds <= 0:
            raise ValueError(f"window_seconds must be > 0, got {self.window_seconds}")
        if self.minimum_calls < 1:
            raise ValueError(f"minimum_calls must be >= 1, got {self.minimum_calls}")
        if self.window_max_calls < self.minimum_calls:
            raise ValueError("window_max_calls must be >= minimum_calls, "
                             f"got {self.window_max_calls} < {self.minimum_calls}")
        if self.recovery_timeout <= 0:
            raise ValueError(f"recovery_timeout must be > 0, got {self.recovery_timeout}")
        if not 0.0 <= self.recovery_jitter <= 1.0:
            raise ValueError(f"recovery_jitter must be in [0, 1], got {self.recovery_jitter}")


@dataclass(frozen=True, slots=True)
class BreakerStats:
    """A snapshot of a breaker. Times are in the breaker clock's seconds.

    ``total_calls`` counts calls let through, ``rejected_calls`` those refused;
    ``window_calls``/``window_failures`` describe the sliding window used for the rate.
    """

    name: str
    state: CircuitState
    enabled: bool
    consecutive_failures: int
    total_calls: int
    total_successes: int
    total_failures: int
    rejected_calls: int
    times_opened: int
    window_calls: int
    window_failures: int
    last_failure_at: float | None
    last_error: str | None
    state_changed_at: float
    next_attempt_at: float | None


class CircuitBreaker:
    """One breaker guarding one dependency; see the module docstring for the state machine.

    Use :meth:`call` to wrap a single awaitable call. Callers that cannot wrap one call (a
    websocket session) use :meth:`try_acquire` and then exactly one of :meth:`record_success`,
    :meth:`record_failure` or :meth:`release`.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        is_failure: Callable[[Exception], bool] = lambda exc: True,
        logger: ContextLogger | None = None,
    ) -> None:
        """``is_failure`` decides, in :meth:`call`, whether an exception counts against the
        dependency (a 404 may not); one that does not counts as a success for the breaker but
        is still returned as a ``Failure``."""
        self.name = name
        self.config = config or BreakerConfig()
        self._clock = clock
        self._random = random
        self._is_failure = is_failure
        self._log = (logger or get_logger("breaker")).bind(breaker=name)
        self._reset_all()

    def _reset_all(self) -> None:
        self._state = CircuitState.CLOSED
        self._epoch = 0
        self._consecutive = 0
        self._window: deque[tuple[float, bool]] = deque()
        self._window_failures = 0
        self._probe_in_flight = False
        self._next_attempt_at: float | None = None
        self._state_changed_at = self._clock()
        self._total_calls = 0
        self._total_successes = 0
        self._total_failures = 0
        self._rejected = 0
        self._times_opened = 0
        self._last_failure_at: float | None = None
        self._last_error: str | None = None

    # -- the one-call API -------------------------------------------------------------------

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args,
                   **kwargs: P.kwargs) -> Result[T, Exception]:
        """Run ``await fn(*args, **kwargs)`` through the breaker.

        Returns ``Success(value)``; ``Failure(exc)`` if the call raised an ``Exception``; or,
        without calling ``fn``, ``Failure(CircuitOpenError)`` when the breaker refuses.
        Cancellation and other ``BaseException`` propagate and release the permit.
        """
        if not self.try_acquire():
            return Failure(self.open_error())
        epoch = self._epoch
        try:
            value = await fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - returned as a value
            self._record(not self._is_failure(exc), exc, epoch)
            return Failure(exc)
        except BaseException:
            self._release(epoch)
            raise
        self._record(True, None, epoch)
        return Success(value)

    # -- the low-level API ------------------------------------------------------------------

    def try_acquire(self) -> bool:
        """Ask to make a call now. True grants a permit the caller must settle with exactly one
        of :meth:`record_success`, :meth:`record_failure` or :meth:`release`. In HALF_OPEN only
        one permit (the probe) is granted until it is settled."""
        state = self._refresh()
        if state is CircuitState.CLOSED or not self.config.enabled:
            self._total_calls += 1
            return True
        if state is CircuitState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            self._total_calls += 1
            return True
        self._rejected += 1
        return False

    def record_success(self) -> None:
        """Settle a permit with a success: in HALF_OPEN this closes the breaker."""
        self._record(True, None, None)

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Settle a permit with a failure: it may open the breaker (CLOSED) or re-open it with
        a fresh timeout (HALF_OPEN)."""
        self._record(False, exc, None)

    def release(self) -> None:
        """Settle a permit without an outcome (the call was abandoned): a probe slot is freed."""
        self._release(None)

    def open_error(self) -> CircuitOpenError:
        """The error describing why calls are refused right now."""
        state = self._refresh()
        return CircuitOpenError(self.name, state, self._next_attempt_at, self.retry_after())

    def retry_after(self) -> float | None:
        """Seconds until a probe will be allowed: 0 when calls pass now, None when unknown
        (held open, or half-open with the probe in flight)."""
        state = self._refresh()
        if state is CircuitState.CLOSED or not self.config.enabled:
            return 0.0
        if state is CircuitState.HALF_OPEN:
            return None if self._probe_in_flight else 0.0
        if self._next_attempt_at is None:
            return None
        return max(0.0, self._next_attempt_at - self._clock())

    # -- state and operator controls ----------------------------------------------------------

    @property
    def state(self) -> CircuitState:
        """The current state (an OPEN breaker whose recovery time has passed reads HALF_OPEN)."""
        return self._refresh()

    def peek(self) -> tuple[CircuitState, int]:
        """The state :attr:`state` would read and the times opened, without changing anything
        (safe to call from another thread, such as the metrics exporter's)."""
        state = self._state
        if (state is CircuitState.OPEN and self._next_attempt_at is not None
                and self._clock() >= self._next_attempt_at):
            state = CircuitState.HALF_OPEN
        return state, self._times_opened

    def stats(self) -> BreakerStats:
        """A consistent snapshot of the counters and state."""
        state = self._refresh()
        self._prune(self._clock())
        return BreakerStats(
            name=self.name,
            state=state,
            enabled=self.config.enabled,
            consecutive_failures=self._consecutive,
            total_calls=self._total_calls,
            total_successes=self._total_successes,
            total_failures=self._total_failures,
            rejected_calls=self._rejected,
            times_opened=self._times_opened,
            window_calls=len(self._window),
            window_failures=self._window_failures,
            last_failure_at=self._last_failure_at,
            last_error=self._last_error,
            state_changed_at=self._state_changed_at,
            next_attempt_at=self._next_attempt_at,
        )

    def reset(self) -> None:
        """Back to the initial state: CLOSED with every counter and total at zero."""
        previous = self._state
        self._reset_all()
        self._log.info("circuit breaker reset", from_state=previous.value, to_state="closed")

    def force_open(self) -> None:
        """Open now and stay open (no recovery probes) until :meth:`force_closed` or
        :meth:`reset`. Has no effect on a disabled breaker's pass-through."""
        self._open(reason="forced", hold=True)

    def force_closed(self) -> None:
        """Close now, clearing the consecutive count and the window (totals are kept);
        failures from here on may open it again."""
        self._close(reason="forced")

    # -- internals --------------------------------------------------------------------------

    def _refresh(self) -> CircuitState:
        if (self._state is CircuitState.OPEN and self._next_attempt_at is not None
                and self._clock() >= self._next_attempt_at):
            self._transition(CircuitState.HALF_OPEN, reason="recovery timeout elapsed")
        return self._state

    def _record(self, ok: bool, exc: BaseException | None, epoch: int | None) -> None:
        now = self._clock()
        if ok:
            self._total_successes += 1
        else:
            self._total_failures += 1
            self._last_failure_at = now
            self._last_error = f"{type(exc).__name__}: {exc}" if exc is not None else "failure"
        if not self.config.enabled or (epoch is not None and epoch != self._epoch):
            return  # a pass-through breaker, or a straggler from before the last state change
        state = self._refresh()
        if state is CircuitState.CLOSED:
            self._record_closed(ok, now)
        elif state is CircuitState.HALF_OPEN:
            self._probe_in_flight = False
            if ok:
                self._close(reason="probe succeeded")
            else:
                self._consecutive += 1
                self._open(reason="probe failed")
        # OPEN: outcomes only count in the totals.

    def _record_closed(self, ok: bool, now: float) -> None:
        self._prune(now)
        if len(self._window) >= self.config.window_max_calls:
            _, failed = self._window.popleft()
            self._window_failures -= failed
        self._window.append((now, not ok))
        if ok:
            self._consecutive = 0
            return
        self._consecutive += 1
        self._window_failures += 1
        if self._consecutive >= self.config.failure_threshold:
            self._open(reason="consecutive failures")
            return
        rate_limit = self.config.failure_rate_threshold
        calls = len(self._window)
        if (rate_limit is not None and calls >= self.config.minimum_calls
                and self._window_failures / calls >= rate_limit):
            self._open(reason="failure rate")

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_seconds
        window = self._window
        while window and window[0][0] <= horizon:
            _, failed = window.popleft()
            self._window_failures -= failed

    def _release(self, epoch: int | None) -> None:
        if self._state is CircuitState.HALF_OPEN and (epoch is None or epoch == self._epoch):
            self._probe_in_flight = False

    def _open(self, reason: str, hold: bool = False) -> None:
        now = self._clock()
        if hold:
            self._next_attempt_at = None
        else:
            jitter = 1.0 + self.config.recovery_jitter * self._random()
            self._next_attempt_at = now + self.config.recovery_timeout * jitter
        if self._state is not CircuitState.OPEN:
            self._times_opened += 1
        self._transition(CircuitState.OPEN, reason=reason)

    def _close(self, reason: str) -> None:
        self._consecutive = 0
        self._window.clear()
        self._window_failures = 0
        self._next_attempt_at = None
        self._transition(CircuitState.CLOSED, reason=reason)

    def _transition(self, to: CircuitState, reason: str) -> None:
        previous = self._state
        self._state = to
        self._epoch += 1
        self._probe_in_flight = False
        now = self._clock()
        self._state_changed_at = now
        if to is CircuitState.OPEN:
            next_in = None if self._next_attempt_at is None else self._next_attempt_at - now
            self._log.breaker_opened(self.name, failures=self._consecutive,
                                     next_attempt_in=next_in, reason=reason,
                                     from_state=previous.value, to_state=to.value,
                                     window_calls=len(self._window),
                                     window_failures=self._window_failures)
        else:
            self._log.info("circuit breaker state changed", from_state=previous.value,
                           to_state=to.value, reason=reason)

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self._state.value})"
