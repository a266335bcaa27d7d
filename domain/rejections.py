"""Typed reasons for input the domain refuses.

A :class:`Rejection` is a value, never an exception: parsing, collection and decoding return
``Failure(Rejection(...))`` and the runtime sends the original bytes to a dead-letter topic with
``code`` and ``message`` in its headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RejectionCode(StrEnum):
    """Why input was refused. Values are stable: they appear in dead-letter headers."""

    INVALID_JSON = "invalid_json"
    """The bytes are not UTF-8 JSON, or the JSON is not an object."""
    NOT_AN_EVENT = "not_an_event"
    """A JSON object, but not a Jetstream v1 event (missing ``did``/``time_us``, unknown ``kind``)."""
    INVALID_EVENT = "invalid_event"
    """A Jetstream event whose envelope breaks the protocol (bad DID, rev, rkey, NSID, ...)."""
    INVALID_RECORD = "invalid_record"
    """A commit of a collected collection whose record breaks its lexicon."""
    UNSUPPORTED_COLLECTION = "unsupported_collection"
    """A record of a collection this product has no model for (see ``records.parse_record``)."""
    UNKNOWN_SCHEMA = "unknown_schema"
    """Domain event bytes naming a schema or version this code does not know."""
    INVALID_DOMAIN_EVENT = "invalid_domain_event"
    """Domain event bytes of a known schema whose fields do not validate."""
    INVALID_STATE = "invalid_state"
    """Stored strategy state (see ``growth.decode_*``) that does not validate."""
    SERVICE_REFUSED = "service_refused"
    """A crawl request the AppView refused for good (a 4xx, an answer breaking its lexicon)."""


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refusal: a stable ``code``, a human-readable ``message``."""

    code: RejectionCode
    message: str

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


def describe_validation_error(error: Exception, limit: int = 3) -> str:
    """A short, single-line summary of a pydantic ``ValidationError`` (first ``limit`` errors)."""
    errors = getattr(error, "errors", None)
    if errors is None:
        return str(error)[:500]
    parts = []
    for item in errors(include_url=False)[:limit]:
        location = ".".join(str(part) for part in item.get("loc", ())) or "(root)"
        if item.get("type") == "string_pattern_mismatch":  # the pattern itself says little
            parts.append(f"{location}: invalid syntax {str(item.get('input'))[:80]!r}")
        else:
            parts.append(f"{location}: {item.get('msg', '')}")
    count = error.error_count()  # type: ignore[attr-defined]
    more = f" (+{count - limit} more)" if count > limit else ""
    return "; ".join(parts) + more
