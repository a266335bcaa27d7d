"""Keyed strategy state, partitioned like an agent's input topic and kept in a compacted changelog.

Why not Faust tables: their recovery has open defects upstream, and on this stack a memory table
declared with raw values came back after a restart with values decoded as JSON objects and with
only part of the changelog applied (``tests/integration/test_strategy_state.py`` caught it). This
store does one thing, in the open:

- ``view(partition)`` is the state of one input partition, a plain mapping the domain reads;
- ``put(partition, key, value, outbox)`` updates it and adds the value for the same partition of
  the changelog topic ``<prefix>state.<name>`` (compacted) to the stage's outbox, which is sent
  and acknowledged with the rest of its batch before the input's offsets are committed;
- the first time an agent touches a partition, ``ensure(partition)`` reads that changelog partition
  from the beginning to its end offset; when Faust revokes partitions, ``forget`` drops them, so a
  partition that comes back is read again (another worker may have changed it meanwhile).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from returns.result import Result

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.config import Settings
from streams.kafka.clients import Outbox, Sender, new_reader
from streams.observability.log import ContextLogger, get_logger
from streams.topology import changelog_topic

__all__ = ["ChangelogState", "DecodedView", "StateBatch"]


V = TypeVar("V")


class DecodedView(Mapping[str, V], Generic[V]):
    """A read-only mapping over encoded state values, decoding each on access (an undecodable
    value reads as absent)."""

    def __init__(self, data: Mapping[str, bytes], decode: Callable[[bytes], Result[V, Any]]) -> None:
        self._data = data
        self._decode = decode

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        raw = self._data.get(key)
        return default if raw is None else self._decode(raw).value_or(default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class StateBatch(Generic[V]):
    """One input batch's reads and writes of a keyed state (a :class:`ChangelogState`, or anything
    with its ``view`` and ``put``): values decoded once, changes held until :meth:`flush`.

    ``view(partition)`` is the partition's state as the batch has changed it so far, decoded
    (an undecodable value reads as absent); ``put`` changes it for the rest of the batch only;
    ``flush`` encodes each changed key's last value once and hands it to the state's ``put``,
    which updates the state and adds one changelog record per key to the outbox. Until then the
    state itself is unchanged."""

    def __init__(self, state: Any, decode: Callable[[bytes], Result[V, Any]], encode: Callable[[V], bytes]) -> None:
        self._state = state
        self._decode = decode
        self._encode = encode
        self._views: dict[int, _BatchView[V]] = {}

    def view(self, partition: int) -> Mapping[str, V]:
        """The state of ``partition`` with this batch's changes (the state must hold the partition)."""
        return self._view(partition)

    def put(self, partition: int, key: str, value: V | None) -> None:
        """Set (or, with ``None``, delete) ``key`` of ``partition`` for the rest of the batch."""
        self._view(partition).written[key] = value

    def _view(self, partition: int) -> _BatchView[V]:
        view = self._views.get(partition)
        if view is None:
            view = self._views[partition] = _BatchView(self._state.view(partition), self._decode)
        return view

    def flush(self, outbox: Outbox) -> None:
        """Apply the batch's changes to the state, one changelog record per changed key added to
        ``outbox``. The batch starts afresh."""
        for partition, view in self._views.items():
            for key, value in view.written.items():
                self._state.put(partition, key, None if value is None else self._encode(value), outbox)
        self._views = {}


_UNREAD: Any = object()


class _BatchView(DecodedView[V]):
    """A partition's encoded state under one batch's changes (``written``, ``None`` for a key
    deleted), each value decoded at most once."""

    def __init__(self, data: Mapping[str, bytes], decode: Callable[[bytes], Result[V, Any]]) -> None:
        super().__init__(data, decode)
        self._read: dict[str, V | None] = {}
        self.written: dict[str, V | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        value = self.written.get(key, _UNREAD)
        if value is _UNREAD:
            value = self._read.get(key, _UNREAD)
            if value is _UNREAD:
                raw = self._data.get(key)
                value = self._read[key] = None if raw is None else self._decode(raw).value_or(None)
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:
        written = self.written
        for key in self._data:
            if written.get(key, _UNREAD) is not None:
                yield key
        for key, value in written.items():
            if value is not None and key not in self._data:
                yield key

    def __len__(self) -> int:
        return sum(1 for _ in self)


class ChangelogState:
    """The keyed state of one agent (see the module docstring)."""

    def __init__(self, name: str, settings: Settings, sender: Sender, *,
                 logger: ContextLogger | None = None) -> None:
        """``sender`` sends the changelog records (the stage's outboxes go through it)."""
        self.name = name
        self.settings = settings
        self.topic = settings.topic(changelog_topic(name))
        self._sender = sender
        self._partitions: dict[int, dict[str, bytes]] = {}
        self._topic_ready = False
        self.log = logger or get_logger("state").child(name)

    def view(self, partition: int) -> Mapping[str, bytes]:
        """The state of ``partition`` (call :meth:`ensure` first)."""
        return self._partitions[partition]

    def __len__(self) -> int:
        return sum(len(data) for data in self._partitions.values())

    async def ensure(self, partition: int) -> None:
        """Recover ``partition`` from the changelog unless it is already held."""
        if partition not in self._partitions:
            self._partitions[partition] = await self._recover(partition)
            await self._sender.open(self.topic)

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._partitions.pop(partition, None)

    def put(self, partition: int, key: str, value: bytes | None, outbox: Outbox) -> None:
        """Set (or, with ``None``, delete) ``key`` in ``partition``, and add the changelog record
        to ``outbox``."""
        data = self._partitions[partition]
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
        outbox.add(self.topic, key.encode(), value, partition=partition)

    async def _create_topic(self) -> None:
        if self._topic_ready:
            return
        admin = AIOKafkaAdminClient(**self.settings.kafka_client_options())
        await admin.start()
        try:
            if self.topic not in set(await admin.list_topics()):
                await admin.create_topics([NewTopic(
                    self.topic, num_partitions=self.settings.bge_topic_partitions, replication_factor=1,
                    topic_configs={"cleanup.policy": "compact"},
                )])
        except TopicAlreadyExistsError:
            pass
        finally:
            await admin.close()
        self._topic_ready = True

    async def _recover(self, partition: int) -> dict[str, bytes]:
        await self._create_topic()
        reader = new_reader(self.settings)
        await reader.start()
        data: dict[str, bytes] = {}
        read = 0
        try:
            tp = TopicPartition(self.topic, partition)
            reader.assign([tp])
            end = (await reader.end_offsets([tp]))[tp]
            await reader.seek_to_beginning(tp)
            while await reader.position(tp) < end:
                for message in (await reader.getmany(tp, timeout_ms=1000, max_records=10_000)).get(tp, []):
                    if message.offset >= end:
                        break
                    read += 1
                    key = message.key.decode()
                    if message.value is None:
                        data.pop(key, None)
                    else:
                        data[key] = message.value
        finally:
            await reader.stop()
        self.log.info("state partition recovered", topic=self.topic, partition=partition, keys=len(data),
                      changelog_messages=read)
        return data
