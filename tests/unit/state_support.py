"""Keyed state for stage tests: the in-memory state, recording what it would write to its changelog."""

from __future__ import annotations

from typing import Any

from streams.bench.throughput import MemoryState


class RecordingState(MemoryState):
    """The in-memory state, recording what would go to the changelog (``None``: a tombstone)."""

    def __init__(self) -> None:
        super().__init__()
        self.changelog: list[tuple[int, str, bytes | None]] = []

    def put(self, partition: int, key: str, value: bytes | None, outbox: Any) -> None:
        super().put(partition, key, value, outbox)
        self.changelog.append((partition, key, value))
