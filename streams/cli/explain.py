"""What the current domain pipeline makes of recorded raw events, and how that differs from what
the domain event topic holds. Writes nothing anywhere.

- :class:`Explainer` (:mod:`streams.stages.explain`, shared with the dashboard's event journey) runs :func:`domain.pipeline.process` on raw events one after another,
  carrying the strategies' state from one to the next as a live run would (starting empty), and
  describes each result as JSON: the rejection (code, message), or the collected domain events
  and every strategy's decision (``success`` with its candidates, ``failure`` with its code
  and message).
- :func:`diff_source` compares the events the pipeline would emit now for one source event with
  the events stored for it (matched on ``source.id``; events matched on ``id``; content
  compared field by field, without the Kafka coordinates of the source, which say where an
  event was read, not what the code decided).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from domain.events import GROUP_SCHEMA
from domain.growth import StrategyConfig
from domain.rejections import describe_validation_error
from streams.cli.selection import SelectionError
from streams.stages.explain import Explainer, Explanation, as_collected, source_id_of

__all__ = [
    "EventChange",
    "as_collected",
    "Explainer",
    "Explanation",
    "FieldChange",
    "SourceDiff",
    "comparable",
    "diff_source",
    "field_changes",
    "load_strategy_config",
    "source_id_of",
    "stored_events",
]


def load_strategy_config(path: str | Path) -> StrategyConfig:
    """A :class:`StrategyConfig` from a JSON file (unknown keys are refused). Raises
    :class:`SelectionError` with the reason."""
    try:
        text = Path(path).read_bytes()
    except OSError as error:
        raise SelectionError(f"cannot read strategy config {str(path)!r}: {error.strerror}") from None
    try:
        return StrategyConfig.model_validate_json(text)
    except ValidationError as error:
        raise SelectionError(f"invalid strategy config {str(path)!r}: {describe_validation_error(error, 5)}") from None


# --- diff ----------------------------------------------------------------------------------

COORDINATES = ("topic", "partition", "offset")


def comparable(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event's JSON without its source's Kafka coordinates."""
    out = dict(event)
    source = out.get("source")
    if isinstance(source, dict):
        out["source"] = {k: v for k, v in source.items() if k not in COORDINATES}
    return out


@dataclass(frozen=True, slots=True)
class FieldChange:
    path: str
    stored: Any
    now: Any


@dataclass(frozen=True, slots=True)
class EventChange:
    id: str
    schema: str
    fields: tuple[FieldChange, ...]


_ABSENT = "<absent>"


def field_changes(stored: Any, now: Any, path: str = "") -> list[FieldChange]:
    """The differing leaves of two JSON values, by dotted path (list items by index)."""
    if isinstance(stored, dict) and isinstance(now, dict):
        changes: list[FieldChange] = []
        for key in sorted(set(stored) | set(now)):
            where = f"{path}.{key}" if path else key
            if key not in stored:
                changes.append(FieldChange(where, _ABSENT, now[key]))
            elif key not in now:
                changes.append(FieldChange(where, stored[key], _ABSENT))
            else:
                changes.extend(field_changes(stored[key], now[key], where))
        return changes
    if isinstance(stored, list) and isinstance(now, list) and len(stored) == len(now):
        return [c for i, (a, b) in enumerate(zip(stored, now, strict=True)) for c in field_changes(a, b, f"{path}.{i}")]
    return [] if stored == now and type(stored) is type(now) else [FieldChange(path, stored, now)]


@dataclass(slots=True)
class SourceDiff:
    """How the events of one source event differ: ``added`` (the pipeline would emit them now,
    the topic lacks them), ``removed`` (stored, no longer emitted), ``changed`` (same id, other
    content)."""

    source_id: str
    added: list[dict[str, Any]] = field(default_factory=list)
    removed: list[dict[str, Any]] = field(default_factory=list)
    changed: list[EventChange] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def to_json(self) -> dict[str, Any]:
        return {
            "source_id": self.source_id,
            "added": self.added,
            "removed": self.removed,
            "changed": [
                {"id": c.id, "schema": c.schema, "fields": [{"path": f.path, "stored": f.stored, "now": f.now} for f in c.fields]}
                for c in self.changed
            ],
        }


def diff_source(source_id: str, now: Iterable[Mapping[str, Any]], stored: Iterable[Mapping[str, Any]]) -> SourceDiff:
    """Compare the events of one source event (JSON dicts as :func:`domain.events.encode`
    writes them), ignoring duplicates of one id and the source's Kafka coordinates."""
    now_by_id = {event["id"]: comparable(event) for event in now}
    stored_by_id = {event["id"]: comparable(event) for event in stored if "id" in event}
    result = SourceDiff(source_id)
    for event_id, event in now_by_id.items():
        if event_id not in stored_by_id:
            result.added.append(event)
        elif stored_by_id[event_id] != event:
            result.changed.append(
                EventChange(event_id, str(event.get("schema")), tuple(field_changes(stored_by_id[event_id], event)))
            )
    result.removed = [event for event_id, event in stored_by_id.items() if event_id not in now_by_id]
    return result


def stored_events(value: bytes | None) -> list[tuple[str, dict[str, Any]]]:
    """``(source.id, event JSON)`` of each domain event in a stored message's bytes (one event, or a
    group of them with their source written once: each as :func:`domain.events.encode` writes
    it, source included); none if the bytes are not domain events."""
    if not value:
        return []
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    if not isinstance(document, dict):
        return []
    source = document.get("source")
    source_id = source.get("id") if isinstance(source, dict) else None
    if not isinstance(source_id, str):
        return []
    if document.get("schema") != GROUP_SCHEMA:
        return [(source_id, document)]
    events = document.get("events")
    return [
        (source_id, {**{key: event[key] for key in ("schema", "version", "id") if key in event}, "source": source, **event})
        for event in (events if isinstance(events, list) else ())
        if isinstance(event, dict)
    ]
