"""A local Jetstream-compatible server: the real v1 ``/subscribe`` wire over a replayed corpus.

It stands in for Bluesky's Jetstream (out of reach from tests) and speaks its wire exactly:
query parameters ``cursor``, ``wantedCollections`` (repeatable, at most 100, ``app.bsky.*``
prefixes; identity and account events always pass), ``wantedDids`` (repeatable, at most
10,000), ``compress=true`` (each binary frame one standalone zstd frame made with the
dictionary), ``requireHello=true`` and ``maxMessageSizeBytes`` (larger events are skipped);
client ``options_update`` text frames replace the filters, an invalid one disconnects. No
websocket extension is ever negotiated, and (like the 2026 hosts) a ``compress=true`` request
that offers permessage-deflate is answered HTTP 400.

The corpus is a JSONL file or a list of raw lines. Events go out as the original bytes of each
line unless the server imitates another host's clock (``time_offset_us``), in which case
``time_us`` is rewritten. Where a connection starts:

- ``cursor`` (unix µs, in the server's clock): the first event, in corpus order, whose
  ``time_us >= cursor``, then everything after it in corpus order;
- a cursor older than the oldest retained event (see ``retention_start_us``) silently starts
  at the oldest retained event, as the real service does, so clients can detect the gap;
- a cursor newer than the newest event is a live tail: only events appended after connect;
- no cursor: from the oldest retained event if ``default_from_start`` (a static corpus has no
  "now"), else a live tail.

Pacing is per connection: ``rate`` events/s, or ``live`` (the corpus's own ``time_us`` gaps
divided by ``speed``), or as fast as the socket takes them. :meth:`JetstreamServer.append`
adds events to a running server; connections waiting at the end receive them.

Faults on command, as methods or as plain HTTP ``GET /_control/<fault>`` on the same port:
``drop_connections`` (TCP abort, no close frame: the client sees 1006), ``send_malformed``,
``send_not_event``, ``send_oversized?n_bytes=N``, ``send_bad_compression``,
``stall?seconds=S``, ``fail_with_503?n=N``; ``GET /_control/stats`` reports counters.
A fault meant for "the next frame" reaches every open connection, or the next one to open
when none is.

Usage::

    async with JetstreamServer("events.jsonl", rate=5000) as srv:
        async with websockets.connect(srv.subscribe_url + "?compress=true", compression=None) as ws:
            ...

Command line: ``python -m streams.local.jetstream_server --corpus events.jsonl --port 6008``.

One module of about 1,000 lines: a stand-in, never part of the runtime; it speaks the whole v1 wire
(parameters, options updates, zstd, faults on command) in one server.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import http
import itertools
import json
import logging
import os
import re
import signal
import sys
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State

from streams.ingest import codec

__all__ = ["JetstreamServer", "SubscriberOptions", "main", "parse_options_update", "parse_subscribe_query"]

log = logging.getLogger(__name__)

MAX_WANTED_COLLECTIONS = 100
MAX_WANTED_DIDS = 10_000
MAX_CLIENT_MESSAGE = 10_000_000  # the real service ignores larger client messages
_BATCH = 256  # events sent between yields to the event loop

_NSID = re.compile(r"^[a-zA-Z]([a-zA-Z0-9-]{0,62})?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,62})?)+$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]$")
_TIME_US = re.compile(rb'"time_us":(-?\d+)')
_COLLECTION = b'"collection":"'

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_BAD_COMPRESSION = _ZSTD_MAGIC + b"\x00this is not a zstd frame, whatever the magic says"
_MALFORMED = b'{"did":"did:plc:malformedmalformedmalform","time_us":17831758'
_NOT_EVENT = b'{"type":"info","message":"valid JSON that is not a Jetstream event"}'
_BASE32 = bytes(ord("abcdefghijklmnopqrstuvwxyz234567"[b & 31]) for b in range(256))


# ------------------------------------------------------------------------------ options


@dataclass(frozen=True, slots=True)
class SubscriberOptions:
    """What one subscriber asked for. ``None`` filters mean "everything"."""

    wanted_collections: frozenset[str] | None = None  # full NSIDs
    wanted_prefixes: tuple[str, ...] = ()  # "app.bsky." for "app.bsky.*"
    wanted_dids: frozenset[str] | None = None
    max_message_size: int = 0  # 0: no limit
    compress: bool = False
    cursor: int | None = None
    require_hello: bool = False

    @property
    def filters_collections(self) -> bool:
        return self.wanted_collections is not None

    def wants_collection(self, collection: str) -> bool:
        """Identity and account events (no collection) always pass, as on the real service."""
        if self.wanted_collections is None or not collection:
            return True
        return collection in self.wanted_collections or collection.startswith(self.wanted_prefixes)


def _parse_filters(collections: Sequence[str], dids: Sequence[str]) -> tuple[frozenset[str] | None, tuple[str, ...], frozenset[str] | None]:
    full: set[str] = set()
    prefixes: list[str] = []
    for wanted in collections:
        if not isinstance(wanted, str):
            raise ValueError(f"invalid collection: {wanted!r}")
        if wanted.endswith(".*"):
            prefixes.append(wanted[:-1])
        elif _NSID.match(wanted):
            full.add(wanted)
        else:
            raise ValueError(f"invalid subscriber options: invalid collection: {wanted}")
    if len(full) + len(prefixes) > MAX_WANTED_COLLECTIONS:
        raise ValueError("invalid subscriber options: too many wanted collections")
    wanted_dids: set[str] = set()
    for did in dids:
        if not isinstance(did, str) or not _DID.match(did):
            raise ValueError(f"invalid subscriber options: invalid DID: {did!r}")
        wanted_dids.add(did)
    if len(wanted_dids) > MAX_WANTED_DIDS:
        raise ValueError("invalid subscriber options: too many wanted DIDs")
    has_collections = bool(full or prefixes)
    return (
        frozenset(full) if has_collections else None,
        tuple(sorted(prefixes, key=len)),
        frozenset(wanted_dids) if wanted_dids else None,
    )


def _parse_max_size(value: object) -> int:
    """The real service's rule: negative or unparsable means 0 (no limit)."""
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return max(int(value), 0)
    return 0


def parse_subscribe_query(query: str, headers: Headers | None = None) -> SubscriberOptions:
    """Parse a ``/subscribe`` query string; raises :class:`ValueError` (HTTP 400) when invalid."""
    params = parse_qs(query, keep_blank_values=True)
    cursor: int | None = None
    raw_cursor = params.get("cursor", [""])[0]
    if raw_cursor:
        try:
            cursor = int(raw_cursor)
        except ValueError:
            raise ValueError(f"invalid cursor: {raw_cursor}") from None
    socket_encoding = headers.get("Socket-Encoding", "") if headers is not None else ""
    full, prefixes, dids = _parse_filters(params.get("wantedCollections", []), params.get("wantedDids", []))
    return SubscriberOptions(
        wanted_collections=full,
        wanted_prefixes=prefixes,
        wanted_dids=dids,
        max_message_size=_parse_max_size(params.get("maxMessageSizeBytes", [""])[0]),
        compress=params.get("compress", [""])[0] == "true" or "zstd" in socket_encoding,
        cursor=cursor,
        require_hello=params.get("requireHello", [""])[0] == "true",
    )


def parse_options_update(message: str | bytes, current: SubscriberOptions) -> SubscriberOptions | None:
    """Apply a client text frame to ``current``.

    Returns the new options for an ``options_update``, ``None`` for another message type
    (ignored, as the real service does); raises :class:`ValueError` when the frame is not
    valid JSON or the update is invalid (the connection must then be closed).
    """
    try:
        decoded = orjson.loads(message)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"failed to unmarshal subscriber sourced message: {exc}") from None
    if not isinstance(decoded, dict):
        raise ValueError("failed to unmarshal subscriber sourced message: not an object")
    if decoded.get("type") != "options_update":
        return None
    payload = decoded.get("payload")
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ValueError("failed to unmarshal subscriber options update: payload is not an object")
    collections = payload.get("wantedCollections") or []
    dids = payload.get("wantedDids") or []
    if not isinstance(collections, list) or not isinstance(dids, list):
        raise ValueError("failed to unmarshal subscriber options update: filters must be lists")
    max_size = payload.get("maxMessageSizeBytes", 0)
    if max_size is not None and (isinstance(max_size, bool) or not isinstance(max_size, int)):
        raise ValueError("failed to unmarshal subscriber options update: maxMessageSizeBytes must be an integer")
    full, prefixes, wanted_dids = _parse_filters(collections, dids)
    return SubscriberOptions(
        wanted_collections=full,
        wanted_prefixes=prefixes,
        wanted_dids=wanted_dids,
        max_message_size=_parse_max_size(max_size or 0),
        compress=current.compress,  # fixed for the connection's lifetime
        cursor=current.cursor,
        require_hello=current.require_hello,
    )


# ------------------------------------------------------------------------------ events


def _split_lines(data: bytes) -> list[bytes]:
    return [line for line in (raw.strip() for raw in data.split(b"\n")) if line]


def _as_bytes(line: bytes | str) -> bytes:
    return line.encode() if isinstance(line, str) else bytes(line)


def _time_span(line: bytes) -> tuple[int, int] | None:
    """Where the top-level ``time_us`` digits are, when the line is in Jetstream key order."""
    if not line.startswith(b'{"did":"'):
        return None
    did_end = line.find(b'"', 8)
    if did_end < 0 or not line.startswith(b',"time_us":', did_end + 1):
        return None
    match = _TIME_US.match(line, did_end + 2)
    return (match.start(1), match.end(1)) if match else None


def _time_of(line: bytes, fallback: int) -> int:
    span = _time_span(line)
    if span is not None:
        return int(line[span[0] : span[1]])
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return fallback
    value = decoded.get("time_us") if isinstance(decoded, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else fallback


def _with_time(line: bytes, time_us: int) -> bytes:
    """The event with ``time_us`` replaced; key order and everything else unchanged."""
    span = _time_span(line)
    if span is not None:
        return line[: span[0]] + str(time_us).encode() + line[span[1] :]
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return line
    if isinstance(decoded, dict) and "time_us" in decoded:
        decoded["time_us"] = time_us
        return orjson.dumps(decoded)
    return line


def _peek(line: bytes) -> tuple[str, str]:
    """(did, collection) without parsing the JSON; collection is "" for identity/account."""
    if line.startswith(b'{"did":"'):
        did_end = line.find(b'"', 8)
        did = line[8:did_end].decode("utf-8", "replace")
        kind_at = line.find(b'"kind":"', did_end)
        if kind_at >= 0 and line.startswith(b"commit", kind_at + 8):
            start = line.find(_COLLECTION, kind_at)
            if start >= 0:
                start += len(_COLLECTION)
                return did, line[start : line.find(b'"', start)].decode("utf-8", "replace")
        if kind_at >= 0:
            return did, ""
    try:
        decoded = orjson.loads(line)
    except orjson.JSONDecodeError:
        return "", ""
    if not isinstance(decoded, dict):
        return "", ""
    commit = decoded.get("commit")
    collection = commit.get("collection", "") if isinstance(commit, dict) else ""
    return str(decoded.get("did", "")), str(collection)


def _oversized_event(n_bytes: int, time_us: int) -> bytes:
    head = (
        b'{"did":"did:plc:oversizedframe2222222222","time_us":%d,"kind":"commit","commit":{"rev":"3mptbypluud2a",'
        b'"operation":"create","collection":"app.bsky.feed.post","rkey":"3mptbypluud2a","record":{'
        b'"$type":"app.bsky.feed.post","createdAt":"2026-07-04T14:38:08.999Z","text":"' % time_us
    )
    tail = b'"},"cid":"bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i"}}'
    padding = n_bytes - len(head) - len(tail)
    if padding < 0:
        raise ValueError(f"n_bytes must be at least {len(head) + len(tail)}")
    return head + os.urandom(padding).translate(_BASE32) + tail  # random text: barely compressible


# ------------------------------------------------------------------------------ server


async def _write_frames(ws: ServerConnection, frames: list[bytes], *, text: bool) -> None:
    """Send several messages with one transport write instead of one system call each.

    The frames are serialised by the connection's Sans-I/O protocol (websockets' public
    ``protocol`` API), written together, then flow control is honoured as in ``send``. When the
    connection is no longer open, ``send`` takes over so the usual ``ConnectionClosed`` is raised.
    """
    protocol = ws.protocol
    if protocol.state is not State.OPEN or ws.transport.is_closing():
        for frame in frames:
            await ws.send(frame, text=text)
        return
    send = protocol.send_text if text else protocol.send_binary
    for frame in frames:
        send(frame)
    ws.transport.write(b"".join(protocol.data_to_send()))
    await ws.drain()


@dataclass(eq=False)
class _Subscriber:
    id: int
    ws: ServerConnection
    options: SubscriberOptions
    position: int  # absolute index of the next event to consider
    tail: bool
    hello: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    faults: deque[tuple[str, int]] = field(default_factory=deque)
    closed: bool = False
    sent: int = 0
    updates: int = 0  # options_update frames applied
    last_time_us: int = 0
    drop_after: int | None = None  # drop_connections(after_events=N): events left before the abort
    pace_anchor: tuple[float, int] | None = None  # (loop time, time_us) for live pacing
    next_due: float = 0.0  # for rate pacing


class JetstreamServer:
    """A Jetstream ``/subscribe`` server over a corpus; see the module docstring.

    Args:
        corpus: a JSONL path, or raw lines (bytes or str), or ``None`` for an empty log.
        host, port: where to listen (port 0: an ephemeral port).
        rate: events per second per connection; ``None`` sends as fast as the socket allows.
        live: pace by the corpus's own ``time_us`` gaps divided by ``speed`` (overrides rate).
        default_from_start: without a cursor, replay from the oldest retained event (True)
            or live-tail (False, the real service's behaviour).
        retention_start_us: events older than this (server clock) count as expired; may be
            changed on a running server.
        time_offset_us: imitate another host: every served ``time_us`` is shifted by this.
        loop: when a connection reaches the end, the corpus repeats with ``time_us`` moved
            past the previous cycle (old cycles are then forgotten, like retention).
        reject_deflate_with_compress: answer 400 to ``compress=true`` offering permessage-deflate.
        drop_slow_tail_after: drop (TCP abort) a live-tail connection this many events behind.
        write_content_size: put the content size in zstd frame headers (the wire allows both).
    """

    def __init__(
        self,
        corpus: str | Path | Iterable[bytes | str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate: float | None = None,
        live: bool = False,
        speed: float = 1.0,
        default_from_start: bool = True,
        retention_start_us: int | None = None,
        time_offset_us: int = 0,
        loop: bool = False,
        reject_deflate_with_compress: bool = True,
        drop_slow_tail_after: int | None = None,
        write_content_size: bool = True,
        ping_interval: float | None = 30.0,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.host = host
        self._requested_port = port
        self.rate = rate
        self.live = live
        self.speed = speed
        self.default_from_start = default_from_start
        self.retention_start_us = retention_start_us
        self.time_offset_us = time_offset_us
        self.loop = loop
        self.reject_deflate_with_compress = reject_deflate_with_compress
        self.drop_slow_tail_after = drop_slow_tail_after
        self.write_content_size = write_content_size
        self.ping_interval = ping_interval

        self._lines: list[bytes] = []
        self._times: list[int] = []
        self._meta: list[tuple[str, str] | None] = []
        self._frames: list[bytes | None] = []  # compressed frames, made on first use
        self._base = 0  # absolute index of self._lines[0]
        self._monotone = True
        self._newest = -(2**63)

        self._cycle: list[bytes] = []  # loop mode: the corpus as loaded, and where we are in it
        self._cycle_times: list[int] = []
        self._cycle_index = 0
        self._cycle_number = 0
        self._cycle_period = 0

        self._server: Server | None = None
        self._subscribers: set[_Subscriber] = set()
        self._pending_faults: list[tuple[str, int]] = []
        self._stall_until = 0.0
        self._fail_503 = 0
        self._next_id = itertools.count(1)
        self._connected: asyncio.Condition | None = None  # created on start(), inside the loop
        self.counters: dict[str, int] = {
            "connections_total": 0,
            "events_sent": 0,
            "bytes_sent": 0,
            "faults_sent": 0,
            "handshakes_503": 0,
            "handshakes_rejected": 0,
            "dropped": 0,
        }

        if corpus is not None:
            raw = _split_lines(Path(corpus).read_bytes()) if isinstance(corpus, (str, Path)) else [
                line for line in (_as_bytes(item).strip() for item in corpus) if line
            ]
            self._add(raw, time_offset_us)
            if loop:
                self._start_cycle()

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Listen; :attr:`url` is valid afterwards."""
        if self._server is not None:
            return
        self._connected = asyncio.Condition()
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            compression=None,  # never negotiate permessage-deflate
            max_size=MAX_CLIENT_MESSAGE,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_interval,
            write_limit=2**18,
        )

    async def stop(self) -> None:
        """Close every connection (close frame 1001) and stop listening."""
        if self._server is None:
            return
        for sub in list(self._subscribers):
            sub.closed = True
            sub.wake.set()
            sub.hello.set()
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> JetstreamServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:<port>``; subscribe at :attr:`subscribe_url` (``/`` also works)."""
        return f"ws://{self.host}:{self.port}"

    @property
    def subscribe_url(self) -> str:
        return f"{self.url}/subscribe"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.port}/_control"

    # -------------------------------------------------------------- the log

    def _add(self, raw: list[bytes], offset: int) -> None:
        """Append raw lines, shifting their ``time_us`` by ``offset`` (0: original bytes)."""
        times = self._times
        previous = times[-1] if times else None
        for line in raw:
            time_us = _time_of(line, previous if previous is not None else 0)
            if offset:
                time_us += offset
                line = _with_time(line, time_us)
            if previous is not None and time_us < previous:
                self._monotone = False
            if time_us > self._newest:
                self._newest = time_us
            self._lines.append(line)
            times.append(time_us)
            previous = time_us
        added = len(raw)
        self._meta.extend(itertools.repeat(None, added))
        self._frames.extend(itertools.repeat(None, added))

    def append(self, lines: Iterable[bytes | str]) -> int:
        """Add events at the end of the log (from the event loop's thread); returns how many.

        Connections waiting at the end (live tails, finished replays) receive them.
        """
        raw = [line for line in (_as_bytes(item).strip() for item in lines) if line]
        if raw:
            self._add(raw, self.time_offset_us)
            for sub in self._subscribers:
                sub.wake.set()
        return len(raw)

    @property
    def head(self) -> int:
        """Absolute position after the newest event."""
        return self._base + len(self._lines)

    def __len__(self) -> int:
        return len(self._lines)

    def _start_cycle(self) -> None:
        self._cycle = list(self._lines)
        self._cycle_times = list(self._times)
        if self._cycle_times:
            low, high = min(self._cycle_times), max(self._cycle_times)
            gap = (high - low) // max(len(self._cycle_times) - 1, 1)
            self._cycle_period = high - low + max(gap, 1)
        self._cycle_number = 1
        self._cycle_index = 0

    def _extend_loop(self, chunk: int = 10_000) -> None:
        """Loop mode: append the next part of the corpus with times moved to the next cycle."""
        if not self._cycle:
            return
        shift = self._cycle_number * self._cycle_period
        stop = min(self._cycle_index + chunk, len(self._cycle))
        part = [
            _with_time(line, time_us + shift)
            for line, time_us in zip(self._cycle[self._cycle_index : stop], self._cycle_times[self._cycle_index : stop])
        ]
        self._add(part, 0)  # the cycle's lines already carry the offset
        self._cycle_index = stop
        if stop == len(self._cycle):
            self._cycle_index = 0
            self._cycle_number += 1
        excess = len(self._lines) - max(2 * len(self._cycle), 20_000)
        if excess > 0:  # forget old cycles: they are past retention now
            del self._lines[:excess], self._times[:excess], self._meta[:excess], self._frames[:excess]
            self._base += excess
            self._monotone = all(a <= b for a, b in itertools.pairwise(self._times))
        for sub in self._subscribers:
            sub.wake.set()

    def _first_at_or_after(self, time_us: int) -> int:
        """Index (relative) of the first event with ``time_us`` at or after the given time."""
        times = self._times
        if self._monotone:
            return bisect.bisect_left(times, time_us)
        for index, value in enumerate(times):
            if value >= time_us:
                return index
        return len(times)

    def _start_position(self, cursor: int | None) -> tuple[int, bool]:
        """(absolute position, is live tail) for a new connection."""
        retained = 0 if self.retention_start_us is None else self._first_at_or_after(self.retention_start_us)
        if cursor is None:
            if self.default_from_start:
                return self._base + retained, False
            return self.head, True
        if not self._times or cursor > self._newest:
            return self.head, True
        return self._base + max(retained, self._first_at_or_after(cursor)), False

    # -------------------------------------------------------------- faults

    def _inject(self, fault: str, argument: int = 0) -> int:
        subs = [sub for sub in self._subscribers if not sub.closed]
        if not subs:
            self._pending_faults.append((fault, argument))
            return 0
        for sub in subs:
            self._give(sub, fault, argument)
        return len(subs)

    @staticmethod
    def _give(sub: _Subscriber, fault: str, argument: int) -> None:
        if fault == "drop":
            sub.drop_after = argument
        else:
            sub.faults.append((fault, argument))
            sub.wake.set()

    def drop_connections(self, after_events: int = 0) -> int:
        """Abort every open connection's TCP transport (no close frame: code 1006).

        With ``after_events``, each connection is dropped after sending that many more events.
        Returns the number of connections affected.
        """
        if after_events > 0:
            return self._inject("drop", after_events)
        dropped = 0
        for sub in list(self._subscribers):
            if not sub.closed:
                self._abort(sub)
                dropped += 1
        return dropped

    def send_malformed(self) -> int:
        """The next frame of each connection is not valid JSON (compressed on compress=true)."""
        return self._inject("malformed")

    def send_not_event(self) -> int:
        """The next frame is valid JSON that is not a Jetstream event."""
        return self._inject("not_event")

    def send_oversized(self, n_bytes: int) -> int:
        """The next frame is an event of ``n_bytes`` bytes (before compression), whatever the
        subscriber's ``maxMessageSizeBytes``."""
        _oversized_event(n_bytes, 0)  # validate now, not in the connection
        return self._inject("oversized", n_bytes)

    def send_bad_compression(self) -> int:
        """The next frame is binary, starts with the zstd magic, and is not valid zstd."""
        return self._inject("bad_compression")

    def stall(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (sockets stay open and keep answering pings)."""
        loop = asyncio.get_running_loop()
        self._stall_until = max(self._stall_until, loop.time() + seconds)

    def fail_with_503(self, n: int = 1) -> None:
        """Answer the next ``n`` websocket handshakes with HTTP 503 (a host warming up)."""
        self._fail_503 += n

    def stats(self) -> dict[str, Any]:
        """Counters: current and total connections, events and bytes sent, faults, log size."""
        loop_time = asyncio.get_running_loop().time() if self._server is not None else 0.0
        return {
            "connections": sum(1 for sub in self._subscribers if not sub.closed),
            **self.counters,
            "log_events": len(self._lines),
            "head": self.head,
            "pending_503": self._fail_503,
            "stalled": self._stall_until > loop_time,
            "subscribers": [
                {
                    "id": sub.id,
                    "sent": sub.sent,
                    "position": sub.position,
                    "tail": sub.tail,
                    "compress": sub.options.compress,
                    "options_updates": sub.updates,
                }
                for sub in self._subscribers
            ],
        }

    async def wait_connected(self, count: int = 1, timeout: float = 5.0) -> None:
        """Wait until at least ``count`` subscribers are connected (for tests)."""
        assert self._connected is not None, "server not started"
        async with asyncio.timeout(timeout):
            async with self._connected:
                await self._connected.wait_for(lambda: sum(not s.closed for s in self._subscribers) >= count)

    def _abort(self, sub: _Subscriber) -> None:
        self.counters["dropped"] += 1
        sub.closed = True
        sub.wake.set()
        sub.hello.set()
        transport = sub.ws.transport
        if transport is not None:
            transport.abort()

    # -------------------------------------------------------------- HTTP side

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path.startswith("/_control/"):
            return self._control(connection, path[len("/_control/") :], query)
        if path not in ("/subscribe", "/"):
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        if self._fail_503 > 0:
            self._fail_503 -= 1
            self.counters["handshakes_503"] += 1
            response = connection.respond(http.HTTPStatus.SERVICE_UNAVAILABLE, "Service Unavailable\n")
            response.headers["Retry-After"] = "1"
            return response
        try:
            options = parse_subscribe_query(query, request.headers)
        except ValueError as exc:
            self.counters["handshakes_rejected"] += 1
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        offered = ",".join(request.headers.get_all("Sec-WebSocket-Extensions"))
        if options.compress and self.reject_deflate_with_compress and "permessage-deflate" in offered:
            self.counters["handshakes_rejected"] += 1
            return connection.respond(
                http.HTTPStatus.BAD_REQUEST, "compress=true cannot be combined with permessage-deflate\n"
            )
        connection.jetstream_options = options  # type: ignore[attr-defined]
        return None

    def _control(self, connection: ServerConnection, name: str, query: str) -> Response:
        params = {key: values[0] for key, values in parse_qs(query).items()}
        try:
            if name == "stats":
                body: dict[str, Any] = self.stats()
            elif name == "drop_connections":
                body = {"connections": self.drop_connections(int(params.get("after_events", 0)))}
            elif name == "send_malformed":
                body = {"connections": self.send_malformed()}
            elif name == "send_not_event":
                body = {"connections": self.send_not_event()}
            elif name == "send_oversized":
                body = {"connections": self.send_oversized(int(params.get("n_bytes", 2_000_000)))}
            elif name == "send_bad_compression":
                body = {"connections": self.send_bad_compression()}
            elif name == "stall":
                self.stall(float(params.get("seconds", 5)))
                body = {}
            elif name == "fail_with_503":
                self.fail_with_503(int(params.get("n", 1)))
                body = {"pending_503": self._fail_503}
            else:
                return connection.respond(http.HTTPStatus.NOT_FOUND, f"unknown control {name!r}\n")
        except ValueError as exc:
            return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        body = {"ok": True, "control": name, **body}
        response = connection.respond(http.HTTPStatus.OK, json.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    # -------------------------------------------------------------- websocket side

    async def _handle(self, ws: ServerConnection) -> None:
        options: SubscriberOptions = ws.jetstream_options  # type: ignore[attr-defined]
        position, tail = self._start_position(options.cursor)
        sub = _Subscriber(id=next(self._next_id), ws=ws, options=options, position=position, tail=tail)
        if not options.require_hello:
            sub.hello.set()
        for fault, argument in self._pending_faults:
            self._give(sub, fault, argument)
        self._pending_faults.clear()
        self._subscribers.add(sub)
        self.counters["connections_total"] += 1
        log.debug("subscriber %d connected at %d (tail=%s): %s", sub.id, position, tail, options)
        if self._connected is not None:
            async with self._connected:
                self._connected.notify_all()
        reader = asyncio.create_task(self._read_client(sub), name=f"jetstream-sub-{sub.id}-reader")
        try:
            await sub.hello.wait()
            await self._pump(sub)
        except ConnectionClosed:
            pass
        finally:
            sub.closed = True
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            self._subscribers.discard(sub)

    async def _read_client(self, sub: _Subscriber) -> None:
        try:
            async for message in sub.ws:
                if isinstance(message, bytes):
                    continue  # the real service ignores binary client frames
                try:
                    update = parse_options_update(message, sub.options)
                except ValueError as exc:
                    sub.closed = True
                    sub.wake.set()
                    sub.hello.set()
                    reason = str(exc).encode()[:120].decode("utf-8", "ignore")  # close reasons: <= 123 bytes
                    await sub.ws.close(1000, reason)
                    return
                if update is not None:
                    sub.options = update
                    sub.updates += 1
                    sub.hello.set()
        except ConnectionClosed:
            pass
        finally:
            sub.closed = True
            sub.wake.set()
            sub.hello.set()

    async def _pump(self, sub: _Subscriber) -> None:
        """Send events to one subscriber until the connection ends."""
        loop = asyncio.get_running_loop()
        ws = sub.ws
        lines, times, metas, frames = self._lines, self._times, self._meta, self._frames
        counters = self.counters
        while not sub.closed:
            if sub.faults:
                await self._send_fault(sub, *sub.faults.popleft())
                continue
            if self._stall_until:
                remaining = self._stall_until - loop.time()
                if remaining > 0:
                    sub.wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(sub.wake.wait(), remaining)
                    sub.pace_anchor = None
                    continue
                self._stall_until = 0.0
            if sub.position < self._base:  # fell behind retention (loop mode): a gap, like the real service
                sub.position = self._base
            if sub.position >= self._base + len(lines):
                if self.loop and self._cycle:
                    self._extend_loop()
                    continue
                sub.wake.clear()
                sub.pace_anchor = None
                await sub.wake.wait()
                continue
            limit = self.drop_slow_tail_after
            if sub.tail and limit is not None and self.head - sub.position > limit:
                self._abort(sub)
                return

            options = sub.options
            collections = options.wanted_collections
            prefixes = options.wanted_prefixes
            dids = options.wanted_dids
            filtering = collections is not None or dids is not None
            compress = options.compress
            max_size = options.max_message_size
            rate = self.rate
            live = self.live
            paced = live or rate is not None
            pending: list[bytes] = []  # unpaced: the batch goes out in one write
            drop_now = False
            stop = min(self._base + len(lines), sub.position + _BATCH)
            while sub.position < stop:
                index = sub.position - self._base
                if index < 0:
                    break
                sub.position += 1
                if filtering:
                    meta = metas[index]
                    if meta is None:
                        meta = metas[index] = _peek(lines[index])
                    if dids is not None and meta[0] not in dids:
                        continue
                    if collections is not None and meta[1] and meta[1] not in collections and not meta[1].startswith(prefixes):
                        continue
                if compress:
                    frame = frames[index]
                    if frame is None:
                        frame = frames[index] = codec.compress(lines[index], write_content_size=self.write_content_size)
                else:
                    frame = lines[index]
                if max_size and len(frame) > max_size:
                    continue
                time_us = times[index]
                if live:
                    anchor = sub.pace_anchor
                    if anchor is None:
                        anchor = sub.pace_anchor = (loop.time(), time_us)
                    delay = anchor[0] + (time_us - anchor[1]) / 1e6 / self.speed - loop.time()
                    if delay > 0.0005:
                        await asyncio.sleep(delay)
                elif rate is not None:
                    now = loop.time()
                    if sub.next_due < now - 0.05:
                        sub.next_due = now  # do not burst to make up for a pause
                    if sub.next_due - now > 0.0005:
                        await asyncio.sleep(sub.next_due - now)
                    sub.next_due += 1.0 / rate
                if paced:
                    await ws.send(frame, text=not compress)
                else:
                    pending.append(frame)
                sub.sent += 1
                sub.last_time_us = time_us
                counters["events_sent"] += 1
                counters["bytes_sent"] += len(frame)
                if sub.drop_after is not None:
                    sub.drop_after -= 1
                    if sub.drop_after <= 0:
                        drop_now = True
                        break
                if sub.faults or self._stall_until or sub.closed:
                    break
            if pending:
                await _write_frames(ws, pending, text=not compress)
            if drop_now:
                self._abort(sub)
                return
            await asyncio.sleep(0)  # let other connections, readers and control requests run

    async def _send_fault(self, sub: _Subscriber, fault: str, argument: int) -> None:
        compress = sub.options.compress
        payload: bytes
        if fault == "bad_compression":
            await sub.ws.send(_BAD_COMPRESSION, text=False)
            self.counters["faults_sent"] += 1
            return
        if fault == "malformed":
            payload = _MALFORMED
        elif fault == "not_event":
            payload = _NOT_EVENT
        elif fault == "oversized":
            payload = _oversized_event(argument, sub.last_time_us)
        else:  # pragma: no cover - internal
            raise ValueError(fault)
        if compress:
            await sub.ws.send(codec.compress(payload, write_content_size=self.write_content_size), text=False)
        else:
            await sub.ws.send(payload, text=True)
        self.counters["faults_sent"] += 1


# ------------------------------------------------------------------------------ command line


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jetstream-serve",
        description="Serve a JSONL corpus over Jetstream's /subscribe wire on 127.0.0.1 (for tests and demos).",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--corpus", type=Path, help="JSONL file, one Jetstream event per line")
    source.add_argument(
        "--generate", type=int, metavar="N", help="serve N generated events (streams.local.corpus) instead"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for --generate")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6008, help="0 for an ephemeral port (default 6008)")
    parser.add_argument("--rate", type=float, default=None, help="events/s per connection (default: unpaced)")
    parser.add_argument("--live", action="store_true", help="pace by the corpus's time_us gaps")
    parser.add_argument("--speed", type=float, default=1.0, help="speed factor for --live")
    parser.add_argument("--retention-start-us", type=int, default=None, help="events before this are expired")
    parser.add_argument("--time-offset-us", type=int, default=0, help="shift every served time_us (another host)")
    parser.add_argument("--loop", action="store_true", help="repeat the corpus forever with increasing time_us")
    parser.add_argument(
        "--tail-by-default",
        action="store_true",
        help="without a cursor, live-tail like the real service instead of replaying from the start",
    )
    return parser


async def _serve_forever(server: JetstreamServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    async with server:
        print(
            f"jetstream-serve: {len(server)} events at {server.subscribe_url} "
            f"(controls: {server.control_url}/<fault>, stats: {server.control_url}/stats)",
            file=sys.stderr,
            flush=True,
        )
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    """``bge jetstream-serve``: run a :class:`JetstreamServer` until interrupted."""
    args = _build_parser().parse_args(argv)
    corpus: Path | list[bytes]
    if args.corpus is not None:
        corpus = args.corpus
    else:
        from streams.local import corpus as generated

        corpus = list(generated.generate(args.generate or 10_000, seed=args.seed))
    server = JetstreamServer(
        corpus,
        host=args.host,
        port=args.port,
        rate=args.rate,
        live=args.live,
        speed=args.speed,
        retention_start_us=args.retention_start_us,
        time_offset_us=args.time_offset_us,
        loop=args.loop,
        default_from_start=not args.tail_by_default,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(server))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
