"""The stages' Sender: outboxes handed to the producer in order, failures reaching the stage, and
what was submitted sent before the producer closes (no Kafka needed: the producer is a recorder)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from streams.config import Settings
from streams.kafka import clients
from streams.kafka.clients import Sender, delivered


class RefusedBatch(Exception):
    pass


class Undeliverable(Exception):
    pass


class Builder:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []
        self.closed = False

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes | None, headers: list[Any]) -> object:
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True


class Producer:
    """Records what it is sent; a batch whose first value is ``refused``
    fails ``send_batch``, one whose first value is ``lost`` fails its delivery."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int, list[bytes | None]]] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stopped = False
        self.client = SimpleNamespace(_wait_on_metadata=self._metadata)

    async def _metadata(self, topic: str) -> set[int]:
        return {1, 0}

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()

    async def stop(self) -> None:
        self.stopped = True

    def create_batch(self) -> Builder:
        return Builder()

    async def send_batch(self, builder: Builder, topic: str, *, partition: int) -> asyncio.Future[Any]:
        assert asyncio.get_running_loop() is self.loop, "send_batch off the producer's loop"
        values = [value for _, value in builder.records]
        if values[0] == b"refused":
            raise RefusedBatch(topic)
        self.sent.append((topic, partition, values))
        delivery = self.loop.create_future()
        if values[0] == b"lost":
            self.loop.call_later(0.01, delivery.set_exception, Undeliverable(topic))
        else:
            self.loop.call_later(0.01, delivery.set_result, (topic, partition, len(self.sent)))
        return delivery


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Producer:
    made = Producer()
    monkeypatch.setattr(clients, "new_producer", lambda settings, **options: made)
    return made


def outbox_of(sender: Sender, *values: bytes, partition: int = 0) -> clients.Outbox:
    outbox = sender.outbox()
    for value in values:
        outbox.add("out", None, value, partition=partition)
    return outbox


async def test_outboxes_are_sent_in_order_one_future_per_builder(producer: Producer) -> None:
    sender = Sender(Settings())
    await sender.start()
    await sender.open("out")
    assert sender.partition_of("out", None) in (0, 1)
    first = sender.submit(outbox_of(sender, b"a", b"b"))
    second = sender.submit(outbox_of(sender, b"c", partition=1))
    await delivered(first + second)
    assert [(await future).result() for future in first + second] == [("out", 0, 1), ("out", 1, 2)]
    assert producer.sent == [("out", 0, [b"a", b"b"]), ("out", 1, [b"c"])]
    await sender.stop()
    assert producer.stopped


async def test_a_refused_batch_and_a_failed_delivery_reach_the_stage(producer: Producer) -> None:
    sender = Sender(Settings())
    await sender.start()
    await sender.open("out")
    try:
        with pytest.raises(RefusedBatch):
            await delivered(sender.submit(outbox_of(sender, b"refused")))
        with pytest.raises(Undeliverable):
            await delivered(sender.submit(outbox_of(sender, b"lost")))
        await delivered(sender.submit(outbox_of(sender, b"fine")))  # the sender goes on
    finally:
        await sender.stop()
    assert [values for _, _, values in producer.sent] == [[b"lost"], [b"fine"]]


async def test_stop_sends_what_was_submitted_before_it_closes_the_producer(producer: Producer) -> None:
    sender = Sender(Settings())
    await sender.start()
    await sender.open("out")
    handed = [sender.submit(outbox_of(sender, b"%d" % n)) for n in range(20)]
    await sender.stop()
    assert [values for _, _, values in producer.sent] == [[b"%d" % n] for n in range(20)]
    assert all(future.done() for futures in handed for future in futures) and producer.stopped
