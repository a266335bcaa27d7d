"""AT Protocol identifier syntax: DIDs, handles, NSIDs, record keys, TIDs and at-uris.

Checks follow the atproto specifications (https://atproto.com/specs). They are syntax checks
only: nothing here resolves an identifier. Every checker is total (returns ``bool`` or ``None``)
and the ``Annotated`` aliases make pydantic apply the same patterns to model fields.
"""

from __future__ import annotations

import re
from typing import Annotated, NamedTuple

from pydantic import StringConstraints

DID_PATTERN = r"did:[a-z]+:[a-zA-Z0-9._:%-]*[a-zA-Z0-9._-]"
HANDLE_PATTERN = (
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
NSID_PATTERN = (
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
# Record keys: 1-512 of [a-zA-Z0-9._:~-], but not "." or "..".
RKEY_PATTERN = (
    r"(?:[a-zA-Z0-9_:~-][a-zA-Z0-9._:~-]{0,511}"
    r"|\.[a-zA-Z0-9_:~-][a-zA-Z0-9._:~-]{0,510}"
    r"|\.\.[a-zA-Z0-9._:~-]{1,510})"
)
TID_PATTERN = r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}"
RECORD_URI_PATTERN = f"at://{DID_PATTERN}/{NSID_PATTERN}/{RKEY_PATTERN}"
AT_URI_PATTERN = f"at://(?:{DID_PATTERN}|{HANDLE_PATTERN})(?:/{NSID_PATTERN}(?:/{RKEY_PATTERN})?)?"

_DID = re.compile(DID_PATTERN)
_NSID = re.compile(NSID_PATTERN)
_RKEY = re.compile(RKEY_PATTERN)
_TID = re.compile(TID_PATTERN)
_AT_URI = re.compile(AT_URI_PATTERN)

MAX_DID_LENGTH = 2048
MAX_HANDLE_LENGTH = 253
MAX_NSID_LENGTH = 317
MAX_AT_URI_LENGTH = 8192


def is_did(value: str) -> bool:
    """True when ``value`` has DID syntax (``did:method:identifier``)."""
    return len(value) <= MAX_DID_LENGTH and _DID.fullmatch(value) is not None


def is_nsid(value: str) -> bool:
    """True when ``value`` has NSID syntax (reversed domain authority plus a name)."""
    return len(value) <= MAX_NSID_LENGTH and _NSID.fullmatch(value) is not None


def is_record_key(value: str) -> bool:
    """True when ``value`` is a valid record key (``.`` and ``..`` are not)."""
    return value not in (".", "..") and _RKEY.fullmatch(value) is not None


def is_tid(value: str) -> bool:
    """True when ``value`` is a timestamp identifier (the syntax of repo revisions)."""
    return _TID.fullmatch(value) is not None


class RecordUri(NamedTuple):
    """The three parts of ``at://did/collection/rkey``: a reference to one record."""

    did: str
    collection: str
    rkey: str

    def __str__(self) -> str:
        return f"at://{self.did}/{self.collection}/{self.rkey}"


def record_uri(did: str, collection: str, rkey: str) -> str:
    """The at-uri of a record: ``at://did/collection/rkey``."""
    return f"at://{did}/{collection}/{rkey}"


def parse_record_uri(value: str) -> RecordUri | None:
    """Split a record at-uri whose authority is a DID, or ``None`` when it is not one.

    Handle authorities, query strings and fragments are refused: strong references and the
    product's keys always name records by DID.
    """
    if not value.startswith("at://"):
        return None
    parts = value[5:].split("/")
    if len(parts) != 3:
        return None
    did, collection, rkey = parts
    if is_did(did) and is_nsid(collection) and is_record_key(rkey):
        return RecordUri(did, collection, rkey)
    return None


def split_record_uri(value: str) -> RecordUri:
    """Split an at-uri already validated as a record at-uri (e.g. a :data:`RecordAtUri` field)
    without checking it again. Use :func:`parse_record_uri` for untrusted strings."""
    did, collection, rkey = value[5:].split("/")
    return RecordUri(did, collection, rkey)


def is_at_uri(value: str) -> bool:
    """True when ``value`` is an at-uri naming a repo, a collection or a record.

    The authority may be a DID or a handle; queries and fragments are not accepted.
    """
    return len(value) <= MAX_AT_URI_LENGTH and _AT_URI.fullmatch(value) is not None


# Pydantic field types: the same patterns, checked by pydantic-core's regex engine (fast).
Did = Annotated[str, StringConstraints(pattern=f"^{DID_PATTERN}$", max_length=MAX_DID_LENGTH)]
Handle = Annotated[str, StringConstraints(pattern=f"^{HANDLE_PATTERN}$", max_length=MAX_HANDLE_LENGTH)]
Nsid = Annotated[str, StringConstraints(pattern=f"^{NSID_PATTERN}$", max_length=MAX_NSID_LENGTH)]
RecordKey = Annotated[str, StringConstraints(pattern=f"^{RKEY_PATTERN}$")]
Tid = Annotated[str, StringConstraints(pattern=f"^{TID_PATTERN}$")]
AtUri = Annotated[str, StringConstraints(pattern=f"^{AT_URI_PATTERN}$", max_length=MAX_AT_URI_LENGTH)]
RecordAtUri = Annotated[str, StringConstraints(pattern=f"^{RECORD_URI_PATTERN}$", max_length=MAX_AT_URI_LENGTH)]
"""An at-uri of one record whose authority is a DID: ``at://did/collection/rkey``."""
