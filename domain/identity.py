"""Deterministic identity of source events and of the domain events derived from them.

- A Jetstream commit is identified by ``(did, rev, collection, rkey, operation)``; identity and
  account events by ``(did, kind, seq)``. :class:`Source` holds that identity (as the canonical
  string ``Source.id``), the event's ``time_us`` and, optionally, where the raw event was read
  in Kafka (:class:`SourceCoordinates`).
- A domain event's id is ``uuid5(DOMAIN_EVENT_NAMESPACE, "<source id>|<schema>|<discriminator>")``:
  the same source event always yields the same domain event ids, on any host, in any replay.
  Kafka coordinates and ``time_us`` are deliberately not part of it, because Jetstream hosts
  disagree on ``time_us`` and a re-delivered event sits at another offset.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Literal

from domain.values import value


DOMAIN_EVENT_NAMESPACE = uuid.UUID("6b3e4892-82f6-5e97-a20a-54b29d6a16b0")
"""``uuid5(NAMESPACE_URL, "urn:bluesky-growth-engine:domain-event")``. Never change it."""

SourceKind = Literal["commit", "identity", "account"]


@value
class SourceCoordinates:
    """Where the runtime read a raw event: Kafka topic, partition and offset."""

    topic: str
    partition: int
    offset: int


def commit_source_id(did: str, rev: str, collection: str, rkey: str, operation: str) -> str:
    """Canonical identity string of a commit event (``|`` never occurs in its parts)."""
    return f"commit|{did}|{rev}|{collection}|{rkey}|{operation}"


def sequence_source_id(did: str, kind: str, seq: int) -> str:
    """Canonical identity string of an identity or account event."""
    return f"{kind}|{did}|{seq}"


@value(kw_only=True)
class Source:
    """The source event a domain event derives from, and where it was read."""

    id: str
    kind: SourceKind
    did: str
    time_us: int
    rev: str | None = None
    collection: str | None = None
    rkey: str | None = None
    operation: str | None = None
    seq: int | None = None
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def commit_source(
    did: str,
    rev: str,
    collection: str,
    rkey: str,
    operation: str,
    time_us: int,
    coordinates: SourceCoordinates | None = None,
) -> Source:
    """The :class:`Source` of a commit event."""
    return Source(
        id=commit_source_id(did, rev, collection, rkey, operation),
        kind="commit",
        did=did,
        time_us=time_us,
        rev=rev,
        collection=collection,
        rkey=rkey,
        operation=operation,
        topic=coordinates.topic if coordinates else None,
        partition=coordinates.partition if coordinates else None,
        offset=coordinates.offset if coordinates else None,
    )


def sequence_source(
    did: str,
    kind: Literal["identity", "account"],
    seq: int,
    time_us: int,
    coordinates: SourceCoordinates | None = None,
) -> Source:
    """The :class:`Source` of an identity or account event."""
    return Source(
        id=sequence_source_id(did, kind, seq),
        kind=kind,
        did=did,
        time_us=time_us,
        seq=seq,
        topic=coordinates.topic if coordinates else None,
        partition=coordinates.partition if coordinates else None,
        offset=coordinates.offset if coordinates else None,
    )


def domain_event_id(source_id: str, schema: str, discriminator: str = "") -> str:
    """The id of the domain event of type ``schema`` derived from source event ``source_id``.

    ``discriminator`` tells apart several events of one type from one source event (for
    example the strategy and candidate of a ``CandidateFound``); it is empty otherwise.
    """
    return uuid5_string(f"{source_id}|{schema}|{discriminator}")


_NAMESPACE_HASH = hashlib.sha1(DOMAIN_EVENT_NAMESPACE.bytes)


def uuid5_string(name: str) -> str:
    """``str(uuid.uuid5(DOMAIN_EVENT_NAMESPACE, name))``, computed without ``uuid.UUID`` (faster)."""
    digest = _NAMESPACE_HASH.copy()
    digest.update(name.encode())
    h = digest.hexdigest()
    # RFC 4122: version 5 in the 13th hex digit, variant 10xx in the 17th.
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
