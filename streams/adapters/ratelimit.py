"""Rate limiting: a token bucket for our outbound calls and a per-client limiter for inbound ones.

- :class:`TokenBucket` paces calls we make (to the AT Protocol AppView): ``await acquire()``
  before each request, and ``observe(status, headers)`` after each response so that the
  server's own limits (``ratelimit-remaining``/``ratelimit-reset``, HTTP 429 ``retry-after``)
  pause every caller until the server's reset.
- :class:`InboundRateLimiter` decides, per client key (an IP, a token), whether a request to our
  HTTP API is allowed: GCRA with exact integer arithmetic, one integer per client, and a hard
  cap on the number of clients tracked with deterministic eviction.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Final, NamedTuple

from streams.observability.log import ContextLogger, get_logger

__all__ = ["Decision", "InboundRateLimiter", "TokenBucket"]

# A ``ratelimit-reset`` value at or above this is a unix time in seconds (2001-09-09 onwards);
# below it, a number of seconds from now.
EPOCH_THRESHOLD: Final = 1_000_000_000
_EPSILON: Final = 1e-9


class TokenBucket:
    """An asyncio token bucket: ``rate`` tokens per second, at most ``burst`` stored.

    Contracts:

    - :meth:`acquire` returns once a token is taken. Waiters are served strictly in arrival
      order (FIFO) and each sleeps exactly until its token is due; there is no polling loop.
      A cancelled waiter takes no token and leaves the queue.
    - :meth:`observe` applies the server's view: a 429 (or 503) with ``retry-after`` or
      ``ratelimit-reset``, or any response with ``ratelimit-remaining: 0`` and a reset, pauses
      ALL callers until that reset (at most ``max_pause`` seconds); a 429 without either header
      pauses ``default_pause`` seconds. Pauses only ever extend. After a pause the bucket
      starts empty, so calls resume at ``rate`` rather than in a burst.
    - The bucket starts full. ``clock`` gives monotonic seconds and ``sleep`` waits (both
      injectable for tests); ``wall_clock`` gives unix seconds to interpret epoch resets.
    """

    def __init__(
        self,
        rate: float = 10.0,
        burst: float | None = None,
        *,
        name: str = "outbound",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        wall_clock: Callable[[], float] = time.time,
        default_pause: float = 5.0,
        max_pause: float = 3600.0,
        logger: ContextLogger | None = None,
    ) -> None:
        """``burst`` defaults to one second's worth of tokens (``max(1, rate)``)."""
        if rate <= 0:
            raise ValueError(f"rate must be > 0 tokens per second, got {rate}")
        burst = max(1.0, rate) if burst is None else burst
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        if default_pause < 0 or max_pause < 0:
            raise ValueError("default_pause and max_pause must be >= 0")
        self.name = name
        self.rate = float(rate)
        self.burst = float(burst)
        self.default_pause = default_pause
        self.max_pause = max_pause
        self._clock = clock
        self._sleep = sleep
        self._wall_clock = wall_clock
        self._log = (logger or get_logger("ratelimit")).bind(limiter=name)
        self._tokens = self.burst
        self._last = clock()
        self._paused_until = float("-inf")
        self._lock = asyncio.Lock()  # asyncio.Lock wakes its waiters in FIFO order
        self._waiting = 0

    @property
    def tokens(self) -> float:
        """Tokens available now (fractional)."""
        self._refill(self._clock())
        return self._tokens

    @property
    def paused_for(self) -> float:
        """Seconds left of a server-imposed pause (0 when none)."""
        return max(0.0, self._paused_until - self._clock())

    @property
    def waiting(self) -> int:
        """Number of callers inside :meth:`acquire` (queued or sleeping)."""
        return self._waiting

    async def acquire(self) -> None:
        """Take one token, waiting in FIFO order for it and for any server-imposed pause."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    now = self._clock()
                    if now < self._paused_until:
                        await self._sleep(self._paused_until - now)
                        continue
                    self._refill(now)
                    if self._tokens >= 1.0 - _EPSILON:
                        self._tokens = max(0.0, self._tokens - 1.0)
                        return
                    await self._sleep((1.0 - self._tokens) / self.rate)
        finally:
            self._waiting -= 1

    def observe(self, status: int, headers: Mapping[str, str]) -> float:
        """Apply a response's rate-limit signals; return the pause it imposed in seconds
        (0.0 when none). Header names are matched case-insensitively; unparsable values are
        ignored."""
        h = {k.lower(): v for k, v in headers.items()}
        wall = self._wall_clock()
        reset_in = _reset_in(h.get("ratelimit-reset"), wall)
        pause: float | None = None
        if status in (429, 503):
            pause = _retry_after(h.get("retry-after"), wall)
            if pause is None:
                pause = reset_in
            if pause is None and status == 429:
                pause = self.default_pause
        if pause is None:
            remaining = _number(h.get("ratelimit-remaining"))
            if remaining is not None and remaining <= 0:
                pause = reset_in if reset_in is not None else self.default_pause
        if pause is None or pause <= 0:
            return 0.0
        pause = min(pause, self.max_pause)
        until = self._clock() + pause
        if until > self._paused_until:
            self._paused_until = until
            self._tokens = 0.0
            self._last = until
            self._log.rate_limit_hit(self.name, limit=_number(h.get("ratelimit-limit")),
                                     retry_after=round(pause, 3), status=status)
        return pause

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(self.burst, self._tokens + elapsed * self.rate)
            self._last = now


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _reset_in(value: str | None, wall: float) -> float | None:
    """Seconds until a ``ratelimit-reset`` (unix seconds, or delta seconds when small)."""
    number = _number(value)
    if number is None:
        return None
    return max(0.0, number - wall if number >= EPOCH_THRESHOLD else number)


def _retry_after(value: str | None, wall: float) -> float | None:
    """Seconds from a ``retry-after`` header: delta seconds or an HTTP date."""
    if value is None:
        return None
    number = _number(value)
    if number is not None:
        return max(0.0, number)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - wall)


# --------------------------------------------------------------------------------------------
# Inbound


class Decision(NamedTuple):
    """The verdict on one request (an immutable tuple: cheap on the hot path).

    ``limit``: requests per window; ``remaining``: further requests allowed right now;
    ``reset_at``: limiter-clock time when the client's full allowance is back; ``retry_after``:
    seconds until the next request will be allowed (0.0 when this one was).
    """

    allowed: bool
    limit: int
    remaining: int
    reset_at: float
    retry_after: float

    def headers(self, now: float) -> dict[str, str]:
        """HTTP headers for the response: ``RateLimit-Limit``, ``RateLimit-Remaining``,
        ``RateLimit-Reset`` (whole seconds from ``now``) and, when refused, ``Retry-After``."""
        out = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(max(0.0, self.reset_at - now))),
        }
        if not self.allowed:
            out["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return out


class InboundRateLimiter:
    """``limit`` requests per ``window_seconds`` per client, by GCRA (generic cell rate).

    A client may burst ``limit`` requests, then one more every ``window_seconds / limit``; a
    client idle for ``window_seconds`` has its full allowance back.

    Contracts:

    - Exact at the edges, to the microsecond: times are converted to integer microseconds and
      all arithmetic is on integers, so a request at ``now + retry_after`` (or at ``reset_at``)
      is decided as the earlier decision promised, and one microsecond earlier is refused.
    - Bounded memory: one integer per tracked client in an ``OrderedDict`` ordered by last use,
      never more than ``max_clients`` entries. Each check drops up to two expired entries
      (clients whose allowance is full again, which is lossless) from the least-recent end; when
      a new client arrives at the cap, the least recently seen client is evicted even if not
      expired (counted in :attr:`evictions`): under overload the cap wins over exactness. No
      randomness anywhere.
    - Synchronous and not thread-safe; use from one event loop.
    """

    def __init__(self, limit: int = 100, window_seconds: float = 60.0, *,
                 max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        window_us = round(window_seconds * 1_000_000)
        if window_us < 1:
            raise ValueError(f"window_seconds must be >= 1 microsecond, got {window_seconds}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.limit = limit
        self.window_seconds = window_seconds
        self.max_clients = max_clients
        self._clock = clock
        # Time unit: 1/limit microsecond, so the emission interval (window/limit) is an integer.
        self._interval = window_us
        self._window = window_us * limit
        self._tolerance = self._window - self._interval
        self._tat: OrderedDict[str, int] = OrderedDict()  # client -> theoretical arrival time
        self.evictions = 0

    def __len__(self) -> int:
        """Number of clients currently tracked (never more than ``max_clients``)."""
        return len(self._tat)

    def check(self, client: str, now: float | None = None) -> Decision:
        """Decide whether ``client`` may make a request at ``now`` (the limiter clock when None)
        and, if allowed, count it."""
        limit = self.limit
        now_us = round((self._clock() if now is None else now) * 1_000_000)
        now_u = now_us * limit
        store = self._tat
        # Drop up to two expired entries (full allowance again: lossless) from the old end.
        for _ in range(2):
            if not store:
                break
            oldest = next(iter(store))
            if store[oldest] > now_u:
                break
            del store[oldest]
        stored = store.get(client)
        tat = now_u if stored is None or stored < now_u else stored
        allow_at = tat - self._tolerance
        if now_u < allow_at:
            store.move_to_end(client)
            return Decision(False, limit, 0, -(-tat // limit) / 1_000_000,
                            (-(-allow_at // limit) - now_us) / 1_000_000)
        new_tat = tat + self._interval
        if stored is None:
            if len(store) >= self.max_clients:
                self._make_room(now_u)
            store[client] = new_tat
        else:
            store[client] = new_tat
            store.move_to_end(client)
        remaining = (self._window - new_tat + now_u) // self._interval
        return Decision(True, limit, remaining, -(-new_tat // limit) / 1_000_000, 0.0)

    def forget(self, client: str) -> None:
        """Drop a client's state (its full allowance is back)."""
        self._tat.pop(client, None)

    def _make_room(self, now_u: int) -> None:
        store = self._tat
        while len(store) >= self.max_clients:
            _, tat = store.popitem(last=False)
            if tat > now_u:
                self.evictions += 1
