"""A batch's view of keyed state: reads see the batch's own writes, each value is decoded once, and
the state and its changelog see one record per changed key, the last, only when the batch flushes."""

from __future__ import annotations

from returns.result import Failure, Result, Success

from streams.kafka.state import StateBatch
from tests.unit.state_support import RecordingState


decoded: list[bytes] = []


def decode(raw: bytes) -> Result[int, str]:
    decoded.append(raw)
    return Success(int(raw)) if raw.isdigit() else Failure("not a number")


def encode(value: int) -> bytes:
    return str(value).encode()


async def state_with(partition: int, **values: bytes) -> RecordingState:
    state = RecordingState()
    await state.ensure(partition)
    state.view(partition).update(values)
    return state


async def test_reads_see_the_batch_s_writes_and_the_state_sees_them_at_flush() -> None:
    state = await state_with(0, a=b"1", b=b"2")
    batch = StateBatch(state, decode, encode)
    view = batch.view(0)
    batch.put(0, "a", view["a"] + 10)
    batch.put(0, "c", 3)
    batch.put(0, "b", None)
    assert (view.get("a"), view.get("b"), view.get("c"), view.get("d", -1)) == (11, None, 3, -1)
    assert batch.view(0) is view and dict(view) == {"a": 11, "c": 3} and len(view) == 2
    assert state.view(0) == {"a": b"1", "b": b"2"} and state.changelog == []  # nothing until the flush

    batch.flush(outbox=None)
    assert state.view(0) == {"a": b"11", "c": b"3"}
    assert sorted(state.changelog) == [(0, "a", b"11"), (0, "b", None), (0, "c", b"3")]


async def test_a_key_changed_many_times_is_written_once_with_its_last_value() -> None:
    state = await state_with(2, hits=b"0")
    batch = StateBatch(state, decode, encode)
    for _ in range(5):
        batch.put(2, "hits", batch.view(2)["hits"] + 1)
    batch.flush(outbox=None)
    assert state.changelog == [(2, "hits", b"5")]
    batch.flush(outbox=None)  # a flushed batch starts afresh: nothing written twice
    assert state.changelog == [(2, "hits", b"5")]
    assert StateBatch(state, decode, encode).view(2)["hits"] == 5


async def test_each_value_is_decoded_at_most_once_and_an_undecodable_one_reads_as_absent() -> None:
    state = await state_with(0, a=b"1", junk=b"not a number")
    batch = StateBatch(state, decode, encode)
    decoded.clear()
    view = batch.view(0)
    assert [view.get("a"), view.get("a"), view.get("junk"), view.get("junk"), view.get("absent")] == [1, 1, None, None, None]
    assert sorted(decoded) == [b"1", b"not a number"]
    assert "junk" not in view and "a" in view
    batch.put(0, "junk", 7)
    assert view["junk"] == 7
