"""Jetstream v1 events (``/subscribe`` wire) as pydantic models, and :func:`parse_event`.

An event is ``{did, time_us, kind}`` plus one of ``commit``, ``identity`` or ``account``.
Unknown top-level fields (such as the 2026 hosts' integer ``cursor``) are ignored. A commit's
``record`` is kept as the raw dict: it is validated against its lexicon only when the
collection is collected (see :mod:`domain.records`), so commits of other collections cost
nothing beyond the envelope.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from returns.result import Failure, Result, Success, safe

from domain.identity import Source, SourceCoordinates, commit_source, sequence_source
from domain.rejections import Rejection, RejectionCode, describe_validation_error
from domain.syntax import Did, Handle, Nsid, RecordKey, Tid, record_uri

Operation = Literal["create", "update", "delete"]

ACCOUNT_STATUSES: frozenset[str] = frozenset(
    {"takendown", "suspended", "deleted", "deactivated", "desynchronized", "throttled"}
)
"""Account statuses the protocol defines; others are passed through as they come."""


class _Envelope(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class Commit(_Envelope):
    """A repository operation. ``record`` and ``cid`` are absent on deletes."""

    rev: Tid
    operation: Operation
    collection: Nsid
    rkey: RecordKey
    record: dict[str, Any] | None = None
    cid: str | None = None


class CommitEvent(_Envelope):
    did: Did
    time_us: int = Field(ge=0)
    kind: Literal["commit"]
    commit: Commit

    @property
    def uri(self) -> str:
        """The at-uri of the record this commit touches."""
        return record_uri(self.did, self.commit.collection, self.commit.rkey)

    def source(self, coordinates: SourceCoordinates | None = None) -> Source:
        c = self.commit
        return commit_source(self.did, c.rev, c.collection, c.rkey, c.operation, self.time_us, coordinates)


class Identity(_Envelope):
    did: Did
    seq: int
    time: str
    handle: Handle | None = None


class IdentityEvent(_Envelope):
    """An identity change (handle or DID document). ``handle`` may be absent."""

    did: Did
    time_us: int = Field(ge=0)
    kind: Literal["identity"]
    identity: Identity

    def source(self, coordinates: SourceCoordinates | None = None) -> Source:
        return sequence_source(self.did, "identity", self.identity.seq, self.time_us, coordinates)


class Account(_Envelope):
    active: bool
    did: Did
    seq: int
    time: str
    status: str | None = None


class AccountEvent(_Envelope):
    """A change of hosting status; ``status`` says why an account is inactive."""

    did: Did
    time_us: int = Field(ge=0)
    kind: Literal["account"]
    account: Account

    def source(self, coordinates: SourceCoordinates | None = None) -> Source:
        return sequence_source(self.did, "account", self.account.seq, self.time_us, coordinates)


JetstreamEvent = CommitEvent | IdentityEvent | AccountEvent

_MODELS: dict[str, type[CommitEvent] | type[IdentityEvent] | type[AccountEvent]] = {
    "commit": CommitEvent,
    "identity": IdentityEvent,
    "account": AccountEvent,
}


@safe(exceptions=(orjson.JSONDecodeError, TypeError))
def _loads(raw: bytes) -> Any:
    return orjson.loads(raw)


def _invalid_json(error: Exception) -> Rejection:
    return Rejection(RejectionCode.INVALID_JSON, f"not JSON: {error}")


def load_json(raw: bytes) -> Result[Any, Rejection]:
    """Decode ``raw`` with orjson (``invalid_json`` if it is not UTF-8 JSON)."""
    return _loads(raw).alt(_invalid_json)


def require_event_shape(data: Any) -> Result[dict[str, Any], Rejection]:
    """``invalid_json`` unless a JSON object; ``not_an_event`` unless it has ``did``,
    ``time_us``, a known ``kind`` and that kind's object; ``invalid_event`` for a create or
    update commit without a record."""
    if not isinstance(data, dict):
        return Failure(Rejection(RejectionCode.INVALID_JSON, f"JSON {type(data).__name__} is not an object"))
    missing = [name for name in ("did", "time_us", "kind") if name not in data]
    if missing:
        return Failure(Rejection(RejectionCode.NOT_AN_EVENT, f"missing {', '.join(missing)}"))
    kind = data["kind"]
    if not isinstance(kind, str) or kind not in _MODELS:
        return Failure(
            Rejection(RejectionCode.NOT_AN_EVENT, f"kind {str(kind)[:50]!r} is not commit, identity or account")
        )
    body = data.get(kind)
    if not isinstance(body, dict):
        return Failure(Rejection(RejectionCode.NOT_AN_EVENT, f"a {kind} event without a {kind} object"))
    if kind == "commit" and body.get("operation") in ("create", "update") and body.get("record") is None:
        return Failure(Rejection(RejectionCode.INVALID_EVENT, f"a {body['operation']} commit without a record"))
    return Success(data)


@safe(exceptions=(ValidationError,))
def _validate_event(data: dict[str, Any]) -> JetstreamEvent:
    return _MODELS[data["kind"]].model_validate(data)


def _invalid_event(error: ValidationError) -> Rejection:
    return Rejection(RejectionCode.INVALID_EVENT, describe_validation_error(error))


def validate_event(data: dict[str, Any]) -> Result[JetstreamEvent, Rejection]:
    """Validate an event-shaped object against its kind's model (``invalid_event`` if not)."""
    return _validate_event(data).alt(_invalid_event)


_EVENT_VALIDATOR = TypeAdapter(Annotated[JetstreamEvent, Field(discriminator="kind")]).validator
"""Every kind's model in one validator, chosen by ``kind`` (the models :func:`validate_event` uses)."""


def valid_event(raw: bytes) -> JetstreamEvent | None:
    """The common case, fast: a frame that is a valid event, in one validation of the decoded
    JSON (no shape checks first, no containers), or ``None`` for anything else; then
    :func:`parse_event` takes the general path to say why. Decodes with orjson like
    :func:`load_json`, and accepts exactly what the general path accepts."""
    try:
        event: JetstreamEvent = _EVENT_VALIDATOR.validate_python(orjson.loads(raw))
    except (orjson.JSONDecodeError, TypeError, ValidationError):
        return None
    if type(event) is CommitEvent and event.commit.record is None and event.commit.operation != "delete":
        return None  # require_event_shape refuses a create or update without a record
    return event


def parse_event(raw: bytes) -> Result[JetstreamEvent, Rejection]:
    """Parse one raw Jetstream frame (JSON bytes). Never raises.

    Failures: ``invalid_json``, ``not_an_event``, ``invalid_event``. The record of a commit is
    not validated here (see :func:`domain.records.parse_record`).
    """
    event = valid_event(raw)
    if event is not None:
        return Success(event)
    return load_json(raw).bind(require_event_shape).bind(validate_event)
