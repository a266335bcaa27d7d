"""At-least-once acknowledgement for Faust agents.

Faust acknowledges an event when the agent's ``async for`` moves past it, and also in a
``finally`` when the agent is cancelled (a rebalance or a shutdown) — even if the event was never
processed. ``Stream.take_events`` does the same for a whole buffer. Offsets committed that way
lose events. An :class:`AckBatcher` takes acknowledgement over: the stream's own acks are turned
off, and events are acknowledged only after every Kafka send their processing caused has been
acknowledged by the broker. A cancelled batch is simply not acknowledged, so its events are
delivered again to whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Iterable
from typing import Any

import faust

__all__ = ["AckBatcher"]


class AckBatcher:
    """Collects processed events and the acknowledgements of what they sent; :meth:`flush`
    awaits those, then acknowledges the events. Flushes by size (:meth:`add` returns True when
    due) and by age (call :meth:`flush_if_older` from a timer)."""

    def __init__(self, stream: faust.StreamT, *, max_events: int, max_seconds: float) -> None:
        stream.enable_acks = False  # type: ignore[attr-defined]
        self._stream = stream
        self._events: list[faust.EventT] = []
        self._sends: list[Awaitable[Any]] = []
        self._first_at: float | None = None
        self._lock = asyncio.Lock()
        self.max_events = max_events
        self.max_seconds = max_seconds

    def add(self, event: faust.EventT, sends: Iterable[Awaitable[Any]]) -> bool:
        """Record a processed event; True when the batch is due for a flush."""
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._events.append(event)
        self._sends.extend(sends)
        return len(self._events) >= self.max_events

    async def flush(self) -> int:
        """Wait for the sends, then acknowledge the events; returns how many were acknowledged.
        A failed send raises, and the batch stays unacknowledged (it will be redelivered)."""
        async with self._lock:
            events, sends = self._events, self._sends
            self._events, self._sends, self._first_at = [], [], None
            if sends:
                await asyncio.gather(*sends)
            for event in events:
                await self._stream.ack(event)
            return len(events)

    async def flush_if_older(self) -> int:
        """Flush when the oldest pending event waited longer than ``max_seconds``."""
        if self._first_at is not None and time.monotonic() - self._first_at >= self.max_seconds:
            return await self.flush()
        return 0
