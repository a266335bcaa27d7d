"""The one thing ``returns`` lacks at our async I/O edges: awaiting a call into a plain ``Result``.

``returns`` is the product's Result type (``Success``, ``Failure``, ``Result``); use it directly.
For synchronous third-party code that raises, ``returns.result.safe`` is the edge. For async code
``returns.future.future_safe`` exists, but it returns a ``FutureResult`` that awaits to an
``IOResult``: getting back to the plain ``Result`` the pipelines use would take
``unsafe_perform_io`` at every call site, and keeping ``IO`` would nest containers. :func:`attempt`
does that one step directly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from returns.result import Failure, Result, Success

__all__ = ["attempt"]

T = TypeVar("T")
P = ParamSpec("P")


async def attempt(fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> Result[T, Exception]:
    """Await ``fn(*args, **kwargs)``: ``Success(value)``, or ``Failure(exc)`` if it raised.

    Only ``Exception`` subclasses become a ``Failure``; ``BaseException`` such as
    ``asyncio.CancelledError`` and ``KeyboardInterrupt`` propagate, so cancellation still works.
    """
    try:
        return Success(await fn(*args, **kwargs))
    except Exception as exc:  # noqa: BLE001 - this is the I/O edge that turns raising into values
        return Failure(exc)
