"""The collect stage reads and writes the accounts' state a batch at a time: a batch decides as
the same raw events one batch each would, and writes each changed account to the changelog once."""

from __future__ import annotations

from typing import Any

from domain.growth import NewcomersConfig, StrategyConfig
from streams.bench.throughput import Consumed
from streams.local import corpus
from streams.stages.collect import Collector
from tests.unit.state_support import RecordingState


class Outbox:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    def add(self, topic: str, key: bytes | None, value: bytes | None, headers: Any = (), partition: int | None = None) -> None:
        self.sent.append((topic, key, value))


async def collect(batches: list[list[Consumed]]) -> tuple[RecordingState, list[Any], list[list[str]]]:
    """What collect sends, its accounts' state, and the accounts each batch wrote to the changelog."""
    accounts = RecordingState()
    config = StrategyConfig(newcomers=NewcomersConfig(first_seen_from_us=0))
    collector = Collector(config=config, accounts=accounts, events_topic="events", dlq_topic="dlq")
    outbox = Outbox()
    written: list[list[str]] = []
    for batch in batches:
        before = len(accounts.changelog)
        await collector.handle_batch(batch, [0], outbox)
        written.append([key for _, key, _ in accounts.changelog[before:]])
    return accounts, outbox.sent, written


async def test_a_batch_decides_like_one_raw_event_at_a_time_and_writes_each_account_once() -> None:
    lines = list(corpus.generate(2_000, seed=11, accounts=150))
    records = [Consumed("raw", 0, offset, line) for offset, line in enumerate(lines)]
    batched, batched_sent, batched_written = await collect([records[:1000], records[1000:]])
    one_by_one, one_by_one_sent, one_by_one_written = await collect([[record] for record in records])

    assert batched_sent == one_by_one_sent
    assert sum(b'"CandidateFound"' in (value or b"") for _, _, value in batched_sent) > 0
    assert batched.view(0) == one_by_one.view(0) and len(batched.view(0)) > 100
    assert all(len(keys) == len(set(keys)) for keys in batched_written)
    assert sum(map(len, batched_written)) < sum(map(len, one_by_one_written))
