"""The raw events on their way to Kafka: an open batch being filled, and the batches handed to the
producer that Kafka has not acknowledged yet, oldest first.

A send per event (``producer.send``) costs 15-40 µs and a future of its own; the ingest instead
appends each event to the open batch (:class:`~streams.kafka.clients.Outbox`: a few µs, grouped
by partition into aiokafka batch builders) and hands the batch over when it holds
:data:`MAX_BATCH` events, when :data:`LINGER_S` has passed since its first event, or when the
ingest must wait for Kafka anyway. Each batch handed over is one entry here, settled when
Kafka acknowledged all of it.

The bound the ingest's resume relies on (``streams.ingest.resume``) counts every event not yet
acknowledged, in the open batch or handed over: at most ``max_count`` of them, spanning at most
``max_span_us`` in ``time_us`` from the oldest (by arrival) to the next.
"""

from __future__ import annotations

import asyncio
from collections import deque

from streams.kafka.clients import Outbox, Sender, delivered

__all__ = ["LINGER_S", "MAX_BATCH", "DeliveryFailed", "Outgoing"]

MAX_BATCH = 1_000
"""Events per batch handed to the producer at most (a few hundred KiB of JSON)."""
LINGER_S = 0.005
"""How long the open batch waits for more events after its first: the latency it adds at most."""


class DeliveryFailed(Exception):
    """Kafka did not acknowledge an event within the delivery timeout."""


class Outgoing:
    """Events sent to ``topic`` through ``sender`` and not yet acknowledged."""

    def __init__(self, sender: Sender, topic: str, *, max_count: int, max_span_us: int,
                 max_batch: int = MAX_BATCH, linger_s: float = LINGER_S) -> None:
        self.sender = sender
        self.topic = topic
        self.max_count = max_count
        self.max_span_us = max_span_us
        self.max_batch = max_batch
        self.linger_s = linger_s
        self._sent: deque[tuple[int, int, asyncio.Future[None]]] = deque()  # (first time_us, events, acknowledged)
        self._sent_events = 0
        self._open: Outbox | None = None
        self._open_events = 0
        self._open_first_us = 0
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        """Events not acknowledged yet (open or handed over)."""
        return self._sent_events + self._open_events

    def add(self, key: bytes, value: bytes, headers: list[tuple[str, bytes]], time_us: int) -> None:
        """Append one event to the open batch (call :meth:`make_room` first)."""
        if self._open is None:
            self._open = self.sender.outbox()
            self._open_first_us = time_us
            self._timer = asyncio.get_running_loop().call_later(self.linger_s, self.flush)
        self._open.add(self.topic, key, value, headers)
        self._open_events += 1
        if self._open_events >= self.max_batch:
            self.flush()

    def flush(self) -> None:
        """Hand the open batch to the producer (nothing when it is empty)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._open is None:
            return
        acknowledged = asyncio.ensure_future(delivered(self.sender.submit(self._open)))
        self._sent.append((self._open_first_us, self._open_events, acknowledged))
        self._sent_events += self._open_events
        self._open, self._open_events = None, 0

    def settle_done(self) -> int:
        """Forget acknowledged batches from the front; the number of events they held. Raises
        :class:`DeliveryFailed` on a batch Kafka did not take."""
        settled = 0
        sent = self._sent
        while sent and sent[0][2].done():
            _, events, acknowledged = sent.popleft()
            self._sent_events -= events
            if acknowledged.exception() is not None:
                raise DeliveryFailed(f"Kafka did not take an event: {acknowledged.exception()!r}")
            settled += events
        return settled

    def _full(self, next_time_us: int) -> bool:
        """Whether the event at ``next_time_us`` must wait (called for every event: no helpers)."""
        if self._sent:
            oldest = self._sent[0][0]
        elif self._open is not None:
            oldest = self._open_first_us
        else:
            return False
        return (self._sent_events + self._open_events >= self.max_count
                or next_time_us - oldest > self.max_span_us)

    async def make_room(self, next_time_us: int) -> int:
        """Wait until one more event fits: fewer than ``max_count`` unacknowledged and the span
        from the oldest of them to ``next_time_us`` within ``max_span_us``. Returns the number
        of events acknowledged meanwhile."""
        sent = self._sent
        settled = self.settle_done() if sent and sent[0][2].done() else 0
        while self._full(next_time_us):
            if not self._sent:
                self.flush()  # the open batch is what must be acknowledged first
            await asyncio.wait([self._sent[0][2]])
            settled += self.settle_done()
        return settled

    async def drain(self) -> int:
        """Hand over the open batch and wait for every acknowledgement."""
        self.flush()
        settled = 0
        while self._sent:
            await asyncio.wait([self._sent[0][2]])
            settled += self.settle_done()
        return settled
