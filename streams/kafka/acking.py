"""At-least-once acknowledgement for Faust agents.

Faust acknowledges an event when the agent's ``async for`` moves past it, and also in a
``finally`` when the agent is cancelled (a rebalance or a shutdown), even if the event was never
processed; ``Stream.take_events`` does the same for a whole buffer. Offsets committed that way
lose events. An :class:`AckBatcher` takes acknowledgement over: the stream's own acks are turned
off, and a batch of events is acknowledged only after its ``settle`` coroutine succeeded (the
collect agent: Kafka acknowledged every send; the projector: the Postgres transaction
committed). A cancelled or failed batch is simply not acknowledged, so its events are delivered
again to whoever owns the partition next.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import faust

__all__ = ["AckBatcher", "all_acknowledged"]

T = TypeVar("T")


class AckBatcher(Generic[T]):
    """Pending events, each with an item for ``settle``; flushed by size (:meth:`add` returns
    True when due) and by age (call :meth:`flush_if_older` from a timer)."""

    def __init__(self, stream: faust.StreamT, settle: Callable[[list[T]], Awaitable[Any]], *,
                 max_events: int, max_seconds: float) -> None:
        stream.enable_acks = False  # type: ignore[attr-defined]
        self._stream = stream
        self._settle = settle
        self._events: list[faust.EventT] = []
        self._items: list[T] = []
        self._first_at: float | None = None
        self._lock = asyncio.Lock()
        self.max_events = max_events
        self.max_seconds = max_seconds
        self.acknowledged = 0  # events acknowledged so far (metrics read it)

    def add(self, event: faust.EventT, item: T) -> bool:
        """Record a processed event; True when the batch is due for a flush."""
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._events.append(event)
        self._items.append(item)
        return len(self._events) >= self.max_events

    async def flush(self) -> int:
        """Settle the batch, then acknowledge its events; returns how many were acknowledged.
        If settling raises, the events stay unacknowledged (they will be delivered again)."""
        async with self._lock:
            events, items = self._events, self._items
            self._events, self._items, self._first_at = [], [], None
            if items:
                await self._settle(items)
            for event in events:
                await self._stream.ack(event)
            self.acknowledged += len(events)
            return len(events)

    async def flush_if_older(self) -> int:
        """Flush when the oldest pending event waited longer than ``max_seconds``."""
        if self._first_at is not None and time.monotonic() - self._first_at >= self.max_seconds:
            return await self.flush()
        return 0


async def all_acknowledged(sends: list[list[Awaitable[Any]]]) -> None:
    """``settle`` for agents that send: every send of every event acknowledged by Kafka."""
    await asyncio.gather(*(ack for acks in sends for ack in acks))
