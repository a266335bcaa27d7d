"""The contextual logger: structured logs that also land on the current OpenTelemetry span.

Built on the standard :mod:`logging` package. A :class:`ContextLogger` names a context
(``"ingest"``, ``"breaker.appview"``) and carries bound fields; every call takes a message and
keyword fields::

    log = get_logger("ingest").child("jetstream", host="jetstream1.us-east.bsky.network")
    with correlation():                    # a fresh correlation id for this unit of work
        log.info("connected", cursor=1720000000000000)
        with log.timer("handshake"):       # logs the duration in ms when the block ends
            ...

Contracts:

- ``configure_logging(level)`` installs a formatter that writes ONE JSON object per line with
  ``ts`` (ISO 8601, UTC), ``level``, ``context``, ``message``, ``correlation_id``, the fields and,
  when a span is recording, its ``trace_id`` (32 hex) and ``span_id`` (16 hex).
- When a call is enabled for its level, its fields (bound and given) are also recorded on the
  current span, if one is recording: set as span attributes (values coerced to str/int/float/bool)
  and added as one span event named by the message, so repeated calls all remain visible.
  A call filtered out by the level touches neither the log nor the span.
- Secrets are masked in logs and spans alike: values of fields whose names say they are secret
  (password, secret, token, api_key, authorization, cookie, jwt, credentials...), credentials
  inside URLs (``scheme://user:***@host``), secret query parameters and ``Bearer`` tokens.
- Logger names are ``"bge." + context``, so standard logging configuration applies per context.

Nothing happens at import time: no handler is installed until :func:`configure_logging` is called.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from enum import Enum
from types import TracebackType
from typing import IO, Any, Final

import orjson
from opentelemetry import trace

__all__ = [
    "ContextLogger",
    "JsonFormatter",
    "Timer",
    "configure_logging",
    "correlation",
    "current_correlation_id",
    "get_logger",
    "is_secret_key",
    "mask_fields",
    "mask_text",
    "mask_url",
    "new_correlation_id",
]

MASK: Final = "***"
LOGGER_PREFIX: Final = "bge"
LEVELS: Final = {"DEBUG": logging.DEBUG, "INFO": logging.INFO, "WARNING": logging.WARNING,
                 "ERROR": logging.ERROR}

# --------------------------------------------------------------------------------------------
# Correlation id

_correlation_id: ContextVar[str | None] = ContextVar("bge_correlation_id", default=None)


def new_correlation_id() -> str:
    """Return a fresh random correlation id (32 lowercase hex characters)."""
    return uuid.uuid4().hex


def current_correlation_id() -> str | None:
    """Return the correlation id bound in the current context, or None outside any."""
    return _correlation_id.get()


@contextlib.contextmanager
def correlation(correlation_id: str | None = None) -> Iterator[str]:
    """Bind a correlation id for the duration of the block and yield it.

    Without an argument a fresh id is generated. The id lives in a context variable, so it
    follows asyncio tasks created inside the block and is restored when the block ends.
    Usable in sync and async code alike (a plain ``with`` never blocks).
    """
    cid = correlation_id or new_correlation_id()
    token = _correlation_id.set(cid)
    try:
        yield cid
    finally:
        _correlation_id.reset(token)


# --------------------------------------------------------------------------------------------
# Masking

_SECRET_KEY = re.compile(
    r"(?:^|_)(?:password|passwd|pwd|passphrase|secret|token|api_?key|apikey|authorization|auth"
    r"|credentials?|cookie|set_cookie|jwt|private_?key|access_?key|session_?key|signature)(?:_|$)"
)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/\s:@]*):(?P<pw>[^/\s@]+)@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|secret|token|access_token|refresh_token|api_?key|apikey"
    r"|sslpassword|auth|signature|sig)=)(?P<value>[^&;#\s]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"\b(?P<kind>Bearer|Basic)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)


def is_secret_key(key: str) -> bool:
    """True when a field name says its value is secret.

    The name is split into words (snake_case, kebab-case, dotted and camelCase alike), and a
    word such as ``password``, ``token``, ``secret``, ``api_key``, ``authorization``, ``jwt``
    marks it secret: ``db_password``, ``accessJwt``, ``X-Api-Key`` are secret, ``tokens`` and
    ``author`` are not.
    """
    normal = _CAMEL.sub("_", key).lower().replace("-", "_").replace(".", "_")
    return _SECRET_KEY.search(normal) is not None


def mask_url(url: str) -> str:
    """Mask the password of a URL's userinfo and the values of secret query parameters.

    ``postgresql://bge:s3cret@host/db`` becomes ``postgresql://bge:***@host/db``. Text that is
    not a URL comes back unchanged.
    """
    return mask_text(url)


def mask_text(text: str) -> str:
    """Mask credentials found anywhere in free text: URL passwords, secret query parameters
    and ``Bearer``/``Basic`` authorization values."""
    if "://" in text:
        text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(lambda m: f"{m['key']}{MASK}", text)
    if "earer" in text or "asic" in text:
        text = _BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    return text


def _mask_value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret_key(key):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, Mapping):
        return {str(k): _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_mask_value(key, v) for v in value]
    return value


def mask_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``fields`` with secret values masked (recursively into dicts and lists).

    Values of secret-named keys become ``"***"``; strings anywhere have URL credentials,
    secret query parameters and bearer tokens masked. Other values are returned as they are.
    """
    return {k: _mask_value(k, v) for k, v in fields.items()}


# --------------------------------------------------------------------------------------------
# Span recording

_AttrValue = str | bool | int | float


def _span_value(value: Any) -> _AttrValue:
    """Coerce a (masked) field value to a type OpenTelemetry accepts as an attribute."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Enum):
        return _span_value(value.value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}"
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:
        return str(value)


def _span_attributes(fields: Mapping[str, Any]) -> dict[str, _AttrValue]:
    # OpenTelemetry has no null attribute value, so a None field is left off the span.
    return {k: _span_value(v) for k, v in fields.items() if v is not None}


def _record_on_span(message: str, level: str, context: str, fields: Mapping[str, Any]) -> None:
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes = _span_attributes(fields)
    if attributes:
        span.set_attributes(attributes)
    event_attributes: dict[str, _AttrValue] = {"log.level": level, "log.context": context}
    cid = _correlation_id.get()
    if cid is not None:
        event_attributes["correlation_id"] = cid
    event_attributes.update(attributes)
    span.add_event(message, attributes=event_attributes)


def _exception_fields(exc: BaseException) -> dict[str, Any]:
    return {"error_type": type(exc).__name__, "error_message": str(exc)}


# --------------------------------------------------------------------------------------------
# The logger


class ContextLogger:
    """A logger for one context with fields bound to every call.

    Instances are cheap and immutable: :meth:`child` returns a new logger. Field names are
    free-form keyword arguments; ``exc`` is reserved on :meth:`error` and :meth:`api_error`.
    """

    __slots__ = ("_context", "_fields", "_logger")

    def __init__(self, context: str, fields: Mapping[str, Any] | None = None) -> None:
        self._context = context
        self._fields: dict[str, Any] = dict(fields or {})
        self._logger = logging.getLogger(f"{LOGGER_PREFIX}.{context}" if context else LOGGER_PREFIX)

    @property
    def context(self) -> str:
        """The dotted context name, e.g. ``"ingest.jetstream"``."""
        return self._context

    @property
    def fields(self) -> dict[str, Any]:
        """A copy of the bound fields."""
        return dict(self._fields)

    @property
    def logger(self) -> logging.Logger:
        """The underlying standard logger (named ``"bge." + context``)."""
        return self._logger

    def child(self, sub_context: str, **fields: Any) -> ContextLogger:
        """A logger for ``"<context>.<sub_context>"`` with these fields bound in addition to
        this logger's (a field given here overrides one of the same name)."""
        context = f"{self._context}.{sub_context}" if self._context else sub_context
        return ContextLogger(context, {**self._fields, **fields})

    def bind(self, **fields: Any) -> ContextLogger:
        """A logger for the same context with these fields bound in addition to this one's."""
        return ContextLogger(self._context, {**self._fields, **fields})

    def is_enabled_for(self, level: int) -> bool:
        """True when a call at this standard logging level would be emitted."""
        return self._logger.isEnabledFor(level)

    # -- plain levels ---------------------------------------------------------------------

    def debug(self, msg: str, **fields: Any) -> None:
        """Log at DEBUG."""
        self._emit(logging.DEBUG, msg, fields)

    def info(self, msg: str, **fields: Any) -> None:
        """Log at INFO."""
        self._emit(logging.INFO, msg, fields)

    def warning(self, msg: str, **fields: Any) -> None:
        """Log at WARNING."""
        self._emit(logging.WARNING, msg, fields)

    def error(self, msg: str, exc: BaseException | None = None, **fields: Any) -> None:
        """Log at ERROR; with ``exc`` the fields gain ``error_type`` and ``error_message`` and
        the log line carries its traceback."""
        if exc is not None:
            fields = {**_exception_fields(exc), **fields}
        self._emit(logging.ERROR, msg, fields, exc_info=exc)

    def exception(self, msg: str, **fields: Any) -> None:
        """Log at ERROR with the exception being handled (call from an ``except`` block)."""
        exc = sys.exc_info()[1]
        if exc is not None:
            fields = {**_exception_fields(exc), **fields}
        self._emit(logging.ERROR, msg, fields, exc_info=exc)

    # -- domain helpers (the original engine's Logger vocabulary) ---------------------------

    def api_error(self, endpoint: str, exc: BaseException | str, *, status: int | None = None,
                  **fields: Any) -> None:
        """An outbound or inbound API call failed: ERROR ``"api error"`` with ``endpoint``,
        ``status`` and the error."""
        err = _exception_fields(exc) if isinstance(exc, BaseException) else {"error_message": exc}
        self._emit(logging.ERROR, "api error", {"endpoint": endpoint, "status": status, **err, **fields},
                   exc_info=exc if isinstance(exc, BaseException) else None)

    def user_action(self, action: str, did: str | None = None, **fields: Any) -> None:
        """Something was done for or about an account: INFO ``"user action"``."""
        self._emit(logging.INFO, "user action", {"action": action, "did": did, **fields})

    def rate_limit_hit(self, key: str, *, limit: float | None = None,
                       retry_after: float | None = None, **fields: Any) -> None:
        """A rate limit refused or paused calls: WARNING ``"rate limit hit"``."""
        self._emit(logging.WARNING, "rate limit hit",
                   {"key": key, "limit": limit, "retry_after": retry_after, **fields})

    def breaker_opened(self, name: str, *, failures: int,
                       next_attempt_in: float | None = None, **fields: Any) -> None:
        """A circuit breaker opened: WARNING ``"circuit breaker opened"``."""
        self._emit(logging.WARNING, "circuit breaker opened",
                   {"breaker": name, "failures": failures, "next_attempt_in": next_attempt_in,
                    **fields})

    def timer(self, name: str, *, level: int = logging.INFO, **fields: Any) -> Timer:
        """A context manager (``with`` or ``async with``) that logs ``name`` when the block
        ends, with ``duration_ms`` and ``outcome`` (``"ok"``, or ``"error"`` with the error at
        ERROR level; the exception propagates)."""
        return Timer(self, name, level, fields)

    # -- internals -------------------------------------------------------------------------

    def _emit(self, level: int, msg: str, fields: Mapping[str, Any],
              exc_info: BaseException | None = None) -> None:
        if not self._logger.isEnabledFor(level):
            return
        merged = mask_fields({**self._fields, **fields}) if (self._fields or fields) else {}
        msg = mask_text(msg)
        level_name = logging.getLevelName(level)
        _record_on_span(msg, level_name, self._context, merged)
        self._logger.log(
            level, msg, exc_info=exc_info, stacklevel=3,
            extra={"bge_context": self._context, "bge_fields": merged,
                   "bge_correlation_id": _correlation_id.get(), **_trace_ids()},
        )

    def __repr__(self) -> str:
        return f"ContextLogger({self._context!r}, fields={sorted(self._fields)})"


class Timer:
    """Measures a block and logs its duration; see :meth:`ContextLogger.timer`.

    ``elapsed_ms`` is available after the block ends.
    """

    __slots__ = ("_fields", "_level", "_log", "_name", "_start", "elapsed_ms")

    def __init__(self, log: ContextLogger, name: str, level: int, fields: dict[str, Any]) -> None:
        self._log, self._name, self._level, self._fields = log, name, level, fields
        self._start = 0.0
        self.elapsed_ms: float | None = None

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.elapsed_ms = (time.perf_counter() - self._start) * 1000.0
        fields = {**self._fields, "duration_ms": round(self.elapsed_ms, 3)}
        if exc is None:
            self._log._emit(self._level, self._name, {**fields, "outcome": "ok"})
        else:
            self._log._emit(logging.ERROR, self._name,
                            {**fields, "outcome": "error", **_exception_fields(exc)})

    async def __aenter__(self) -> Timer:
        return self.__enter__()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.__exit__(exc_type, exc, tb)


def get_logger(context: str) -> ContextLogger:
    """The logger for a context (a dotted name such as ``"ingest"`` or ``"api.http"``)."""
    return ContextLogger(context)


# --------------------------------------------------------------------------------------------
# JSON output


def _trace_ids() -> dict[str, str]:
    span = trace.get_current_span()
    if not span.is_recording():
        return {}
    ctx = span.get_span_context()
    return {"bge_trace_id": trace.format_trace_id(ctx.trace_id),
            "bge_span_id": trace.format_span_id(ctx.span_id)}


_RESERVED: Final = frozenset(
    {"ts", "level", "context", "logger", "message", "correlation_id", "trace_id", "span_id",
     "exception"}
)


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line.

    Keys: ``ts``, ``level``, ``context``, ``message``, ``correlation_id``, then ``trace_id`` and
    ``span_id`` when a span was recording, the fields (a field whose name collides with one of
    these keys is written as ``field_<name>``) and ``exception`` (the traceback) if any.
    Records from other libraries are formatted too: their context is the logger name and the
    trace and correlation ids are read when the record is formatted.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "level": record.levelname,
            "context": getattr(record, "bge_context", record.name),
            "message": mask_text(record.getMessage()),
        }
        if hasattr(record, "bge_context"):
            data["correlation_id"] = getattr(record, "bge_correlation_id", None)
            trace_id = getattr(record, "bge_trace_id", None)
            span_id = getattr(record, "bge_span_id", None)
        else:  # a record from a third-party logger, formatted where it was emitted
            data["correlation_id"] = _correlation_id.get()
            ids = _trace_ids()
            trace_id, span_id = ids.get("bge_trace_id"), ids.get("bge_span_id")
        if trace_id is not None:
            data["trace_id"] = trace_id
            data["span_id"] = span_id
        for key, value in getattr(record, "bge_fields", {}).items():
            data[f"field_{key}" if key in _RESERVED else key] = value
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = mask_text(self.formatException(record.exc_info))
        return orjson.dumps(data, default=_json_default).decode()


def _json_default(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


_HANDLER_MARK: Final = "_bge_json_handler"


def configure_logging(level: str = "INFO", stream: IO[str] | None = None, *,
                      only_product: bool = False) -> logging.Handler:
    """Install the JSON formatter on the root logger at ``level`` and return its handler.

    ``only_product=True`` installs it on the product's ``bge`` logger instead, which then stops
    propagating: a Faust worker keeps its own format for Faust's lines, ours stay JSON.

    ``level`` is DEBUG, INFO, WARNING or ERROR in any case (``ValueError`` otherwise). Output goes
    to ``stream`` (standard error by default). Calling again replaces the handler installed by a
    previous call; handlers installed by others are left alone.
    """
    name = level.strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    root = logging.getLogger(LOGGER_PREFIX if only_product else None)
    if only_product:
        root.propagate = False
    for handler in list(root.handlers):
        if getattr(handler, _HANDLER_MARK, False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(LEVELS[name])
    return handler
