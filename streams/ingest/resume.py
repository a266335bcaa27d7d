"""Resuming the ingest from Kafka itself: the cursor and the identities of recent events.

No side file: the raw topic is the source of truth. On start the ingest reads the tail of every
partition of the raw topic, takes the largest ``time_us`` it finds (the ``time_us`` header) and
rewinds it by the safety window; the identities of the events at or after that point seed the
duplicate filter, so the re-delivered overlap is dropped instead of produced twice.

Why rewinding by the window is enough: the ingest never lets the events it has sent but not yet
seen acknowledged span more than half the window in ``time_us`` (see ``ingest.InFlight``), so every
event older than ``newest - window/2`` is in Kafka, and the resume point lies before the first
event that could be missing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.ingest.frames import BadFrame, read_facts

__all__ = ["RecentIdentities", "TailState", "read_tail"]

TAIL_CHUNK = 2_000


class RecentIdentities:
    """Identities of recently produced events, bounded in time and in count.

    Insertion order follows arrival, which follows ``time_us`` closely, so eviction pops from
    the front: identities older than the horizon go first, and the oldest go when the count
    limit is reached.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        # an OrderedDict: reading and removing the oldest entry is O(1) (a dict rescans the slots
        # already deleted from its front on every `next(iter(...))`, quadratic over a long run)
        self._seen: OrderedDict[str, int] = OrderedDict()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, identity: str) -> bool:
        return identity in self._seen

    def add(self, identity: str, time_us: int) -> bool:
        """Remember ``identity``; False when it was already remembered (a duplicate)."""
        if identity in self._seen:
            return False
        self._seen[identity] = time_us
        if len(self._seen) > self._max:
            self._seen.popitem(last=False)
        return True

    def forget(self, identity: str) -> None:
        self._seen.pop(identity, None)

    def forget_older_than(self, horizon_us: int) -> None:
        """Drop identities whose ``time_us`` is before ``horizon_us`` (from the front only)."""
        seen = self._seen
        while seen:
            _, time_us = next(iter(seen.items()))
            if time_us >= horizon_us:
                return
            seen.popitem(last=False)


@dataclass
class TailState:
    """What the raw topic's tail says: where to resume, and what is already there."""

    newest_time_us: int | None = None
    identities: list[tuple[str, int]] = field(default_factory=list)
    messages_read: int = 0

    def cursor(self, rewind_us: int) -> int | None:
        return None if self.newest_time_us is None else max(self.newest_time_us - rewind_us, 0)


def header_time_us(headers: tuple[tuple[str, bytes], ...] | list[tuple[str, bytes]]) -> int | None:
    for name, value in headers or ():
        if name == "time_us":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_tail(
    consumer_factory: Callable[[], AIOKafkaConsumer | Awaitable[AIOKafkaConsumer]],
    topic: str,
    rewind_us: int,
) -> TailState:
    """Read the tail of every partition of ``topic`` back to the rewind point.

    ``consumer_factory`` returns a started consumer without a group (offsets are never
    committed). Memory stays bounded by the events of one rewind window.
    """
    made = consumer_factory()
    consumer: AIOKafkaConsumer = await made if isinstance(made, Awaitable) else made
    state = TailState()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return state
        consumer.assign(tps)
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        # 1. the newest time_us: the last message of each partition
        for tp in tps:
            if end[tp] > begin[tp]:
                for message in await _read_range(consumer, tp, end[tp] - 1, end[tp]):
                    t = header_time_us(message.headers)
                    if t is not None:
                        state.newest_time_us = max(state.newest_time_us or 0, t)
        if state.newest_time_us is None:
            return state
        horizon = state.newest_time_us - rewind_us
        # 2. every identity at or after the rewind point, reading each partition backwards in chunks
        for tp in tps:
            stop = end[tp]
            while stop > begin[tp]:
                start = max(begin[tp], stop - TAIL_CHUNK)
                chunk = await _read_range(consumer, tp, start, stop)
                state.messages_read += len(chunk)
                reached_horizon = False
                for message in chunk:
                    t = header_time_us(message.headers)
                    if t is None or t < horizon:
                        reached_horizon = True
                        continue
                    try:
                        state.identities.append((read_facts(message.value).identity, t))
                    except BadFrame:
                        continue
                if reached_horizon:
                    break
                stop = start
        state.identities.sort(key=lambda item: item[1])
        return state
    finally:
        await consumer.stop()


async def _read_range(consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, stop: int) -> list:
    """Messages of one partition with offsets in ``[start, stop)``."""
    consumer.seek(tp, start)
    out: list = []
    while True:
        position = await consumer.position(tp)
        if position >= stop:
            break
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=TAIL_CHUNK)
        for message in batches.get(tp, []):
            if message.offset < stop:
                out.append(message)
        if not batches and await consumer.position(tp) < stop:
            # compacted or transactional gaps never yield messages for some offsets
            end = (await consumer.end_offsets([tp]))[tp]
            if end <= await consumer.position(tp):
                break
    return out
