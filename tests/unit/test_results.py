"""attempt(): awaiting a raising call into a plain Result at an I/O edge."""

from __future__ import annotations

import asyncio

import pytest
from returns.result import Failure, Success

from streams.results import attempt


async def fetch(x: int, *, scale: int = 1) -> int:
    return x * scale


async def refuse(reason: str) -> int:
    raise ConnectionError(reason)


async def test_a_returned_value_becomes_success():
    assert await attempt(fetch, 2, scale=3) == Success(6)


async def test_a_raised_exception_becomes_failure_carrying_it():
    result = await attempt(refuse, "reset by peer")
    assert isinstance(result, Failure)
    error = result.failure()
    assert isinstance(error, ConnectionError) and str(error) == "reset by peer"


async def test_cancellation_is_not_turned_into_a_value():
    async def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await attempt(cancelled)


async def test_the_result_composes_with_returns_pipelines():
    result = (await attempt(fetch, 21)).map(lambda v: v * 2).alt(str)
    assert result == Success(42)
    assert (await attempt(refuse, "x")).alt(str) == Failure("x")
