"""The projector's unit of work: one batch of Kafka messages, one Postgres transaction.

:func:`apply_batch` is the contract the runtime relies on for exactly-once effect:

1. lock the batch's ``(consumer, topic, partition)`` rows of ``projection_offsets``
   (``SELECT ... ORDER BY ... FOR UPDATE``) and skip every message whose offset is below the
   stored ``next_offset`` (applied by an earlier transaction);
2. decode the rest with :func:`domain.events.decode_all` (a message holds one domain event or a
   group of them); a message that does not decode, or holds an event that cannot be stored
   (:func:`~projections.plan.unprojectable`), goes to ``dead_letters`` whole, with its bytes
   and reason, and its offset still advances;
3. reduce the events to a :class:`~projections.plan.BatchPlan` and apply it with one
   set-based statement per table and operation (rows passed as one JSON document read by
   ``json_to_recordset``), the statements that do not wait for each other's results sent
   together in psycopg's pipeline mode, so a batch of any size costs four round trips;
4. advance the marks; commit.

Counting rules: a counter moves only by rows this transaction actually inserted
(``INSERT ... ON CONFLICT DO NOTHING RETURNING``) or deleted (``DELETE ... RETURNING``), so a
duplicate create adds nothing and a delete of a row never stored subtracts nothing. Counts are
always added, never overwritten.

Lock order: record tables are written first, in key order (their rows belong to one author,
hence to one partition and one worker); then the tables several workers share, each by
exactly one sorted statement, always in the order ``engagement_counts``,
``follower_gains_hourly``, ``users`` (users rows are created and locked in DID order before
they are updated). Every transaction takes its row locks in the same global order, so
concurrent workers wait but do not deadlock; :func:`project_batch` still retries deadlocks
and serialization failures, as a backstop.

The outcome does not depend on how the stream is cut into batches: applying a batch equals
applying its messages one by one (see :mod:`projections.plan`).

One module of about 800 lines: the SQL of every table (declared as data), the batch transaction and
its retry sit together because the lock order across them is the contract.
"""

from __future__ import annotations

import base64
import re
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple, Protocol

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from returns.result import Failure, Result, Success

from domain.events import DomainEvent, decode_all
from domain.rejections import Rejection
from projections.migrate import SCHEMA_LOCK_NAMESPACE
from projections.db import RetryPolicy, with_retry
from projections.plan import (
    ASSIGNED_COLUMNS,
    TABLE_KEYS,
    BatchPlan,
    hour_of,
    plan_batch,
    record_collection,
    unprojectable,
)

__all__ = ["BatchResult", "Decoded", "Message", "Prepared", "Record", "apply_batch", "decode_messages", "project_batch"]


class Record(Protocol):
    """One Kafka message of a domain event topic, as the writer reads it: an aiokafka
    ``ConsumerRecord`` is one, so is Faust's ``event.message`` and a :class:`Message`."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def value(self) -> bytes | None: ...


class Message(NamedTuple):
    """A :class:`Record` made by hand (tools, tests, benches)."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class BatchResult:
    """What one :func:`apply_batch` did.

    ``applied``: messages applied now (decoded or dead-lettered); ``skipped``: messages below
    the stored marks (applied before); ``rows``: rows inserted, updated or deleted by table;
    ``marks_before``: each partition's mark when the transaction began (a message below it was
    skipped); ``dead_letters``: (topic, partition, offset) -> code of each message dead-lettered.
    """

    applied: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    events: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    marks_before: dict[tuple[str, int], int] = field(default_factory=dict)
    dead_letters: dict[tuple[str, int, int], str] = field(default_factory=dict)

    def merge(self, other: BatchResult) -> BatchResult:
        rows = Counter(self.rows)
        rows.update(other.rows)
        return BatchResult(
            applied=self.applied + other.applied,
            skipped=self.skipped + other.skipped,
            dead_lettered=self.dead_lettered + other.dead_lettered,
            events=self.events + other.events,
            rows=dict(rows),
            duration_s=self.duration_s + other.duration_s,
            next_offsets={**self.next_offsets, **other.next_offsets},
            marks_before={**other.marks_before, **self.marks_before},
            dead_letters={**self.dead_letters, **other.dead_letters},
        )


# --- SQL -----------------------------------------------------------------------------------

TEXT, TS, BIGINT, INT, BOOL, TEXTS, FLOAT, UUID = (
    "text", "timestamptz", "bigint", "integer", "boolean", "text[]", "double precision", "uuid",
)

COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "likes": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("subject_uri", TEXT), ("subject_did", TEXT),
        ("subject_collection", TEXT), ("subject_cid", TEXT), ("via_uri", TEXT), ("created_at", TS),
    ),
    "follows": (("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("subject_did", TEXT), ("created_at", TS)),
    "replies": (
        ("uri", TEXT), ("did", TEXT), ("parent_uri", TEXT), ("parent_did", TEXT), ("root_uri", TEXT),
        ("root_did", TEXT), ("created_at", TS),
    ),
    "quotes": (
        ("uri", TEXT), ("did", TEXT), ("subject_uri", TEXT), ("subject_did", TEXT), ("subject_cid", TEXT),
        ("created_at", TS),
    ),
    "posts": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("cid", TEXT), ("text", TEXT), ("created_at", TS),
        ("created_at_raw", TEXT), ("indexed_at", TS), ("updated_at", TS), ("reply_root_uri", TEXT),
        ("reply_parent_uri", TEXT), ("quote_uri", TEXT), ("embed_kind", TEXT), ("langs", TEXTS), ("labels", TEXTS),
    ),
    "lists": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("name", TEXT), ("purpose", TEXT), ("description", TEXT),
        ("created_at", TS), ("indexed_at", TS), ("updated_at", TS),
    ),
    "list_items": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("list_uri", TEXT), ("subject_did", TEXT),
        ("created_at", TS), ("indexed_at", TS), ("updated_at", TS),
    ),
    "starter_packs": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("name", TEXT), ("description", TEXT), ("list_uri", TEXT),
        ("feed_uris", TEXTS), ("created_at", TS), ("indexed_at", TS), ("updated_at", TS),
    ),
    "feed_generators": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("service_did", TEXT), ("display_name", TEXT),
        ("description", TEXT), ("accepts_interactions", BOOL), ("content_mode", TEXT),
        ("created_at", TS), ("indexed_at", TS), ("updated_at", TS),
    ),
    "threadgates": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("post_uri", TEXT), ("allow", TEXTS),
        ("hidden_replies", TEXTS), ("created_at", TS), ("indexed_at", TS), ("updated_at", TS),
    ),
    "labeler_services": (
        ("uri", TEXT), ("did", TEXT), ("rkey", TEXT), ("label_values", TEXTS), ("reason_types", TEXTS),
        ("subject_types", TEXTS), ("subject_collections", TEXTS), ("created_at", TS), ("indexed_at", TS),
        ("updated_at", TS),
    ),
    "threads": (
        ("post_uri", TEXT), ("did", TEXT), ("root_uri", TEXT), ("root_did", TEXT), ("parent_uri", TEXT),
        ("parent_did", TEXT), ("depth", INT), ("indexed_at", TS),
    ),
    "mentions": (("post_uri", TEXT), ("subject_did", TEXT), ("did", TEXT), ("position", INT), ("created_at", TS)),
    "hashtags": (("post_uri", TEXT), ("tag", TEXT), ("did", TEXT), ("created_at", TS)),
    "links": (
        ("post_uri", TEXT), ("position", INT), ("did", TEXT), ("uri", TEXT), ("domain", TEXT), ("created_at", TS),
    ),
    "media": (
        ("post_uri", TEXT), ("position", INT), ("did", TEXT), ("kind", TEXT), ("embed_type", TEXT), ("cid", TEXT),
        ("mime_type", TEXT), ("size", BIGINT), ("alt", TEXT), ("width", INT), ("height", INT), ("uri", TEXT),
        ("domain", TEXT), ("title", TEXT), ("created_at", TS),
    ),
    "follow_events": (
        ("event_id", UUID), ("did", TEXT), ("subject_did", TEXT), ("kind", TEXT), ("occurred_at", TS),
    ),
    "activity_events": (
        ("event_id", UUID), ("did", TEXT), ("occurred_at", TS), ("collection", TEXT), ("operation", TEXT),
    ),
    "activity_patterns": (
        ("did", TEXT), ("iso_weekday", "smallint"), ("hour", "smallint"), ("events", BIGINT), ("last_at", TS),
    ),
    "candidates": (
        ("did", TEXT), ("strategy", TEXT), ("score", FLOAT), ("reasons", TEXTS), ("subject_uri", TEXT),
        ("source_did", TEXT), ("first_seen_at", TS), ("last_seen_at", TS), ("source_topic", TEXT),
        ("source_partition", INT), ("source_offset", BIGINT),
    ),
    "engagement_counts": (
        ("subject_uri", TEXT), ("subject_did", TEXT), ("subject_collection", TEXT), ("like_count", BIGINT),
        ("repost_count", BIGINT), ("reply_count", BIGINT), ("quote_count", BIGINT),
    ),
    "follower_gains_hourly": (("did", TEXT), ("hour", TS), ("gained", BIGINT), ("lost", BIGINT)),
    "observed_follows": (("did", TEXT), ("subject_did", TEXT), ("observed_at", TS), ("event_id", UUID)),
    "growth_actions": (
        ("record_uri", TEXT), ("did", TEXT), ("action", TEXT), ("subject_did", TEXT), ("subject_uri", TEXT),
        ("reason", TEXT), ("occurred_at", TS),
    ),
}
COLUMNS["reposts"] = COLUMNS["likes"]
COLUMNS["blocks"] = COLUMNS["follows"]

KEYS: dict[str, tuple[str, ...]] = {
    **TABLE_KEYS,
    "activity_events": ("event_id",),
    "follow_events": ("event_id",),
    "activity_patterns": ("did", "iso_weekday", "hour"),
    "candidates": ("did", "strategy"),
    "engagement_counts": ("subject_uri",),
    "follower_gains_hourly": ("did", "hour"),
}


def _recordset(table: str) -> str:
    spec = ", ".join(f"{name} {kind}" for name, kind in COLUMNS[table])
    return f"json_to_recordset(%s::json) AS r({spec})"


def _select_list(table: str) -> str:
    arrays_not_null = {"langs", "labels", "feed_uris", "hidden_replies", "label_values", "reasons"}
    return ", ".join(
        f"coalesce(r.{name}, '{{}}')" if name in arrays_not_null else f"r.{name}" for name, _ in COLUMNS[table]
    )


def insert_sql(table: str, *, on_conflict: str = "DO NOTHING", returning: str = "") -> str:
    """``INSERT INTO table SELECT ... FROM json_to_recordset(%s) ORDER BY key ON CONFLICT ...``."""
    columns = ", ".join(name for name, _ in COLUMNS[table])
    key = ", ".join(KEYS[table])
    order = ", ".join(f"r.{name}" for name in KEYS[table])
    tail = f" RETURNING {returning}" if returning else ""
    return (
        f"INSERT INTO {table} AS t ({columns}) SELECT {_select_list(table)} FROM {_recordset(table)} "
        f"ORDER BY {order} ON CONFLICT ({key}) {on_conflict}{tail}"
    )


def upsert_sql(table: str, *, keep: tuple[str, ...], returning: str = "") -> str:
    """An upsert replacing every column but the key and ``keep`` (the last write wins)."""
    assignments = ", ".join(
        f"{name} = excluded.{name}" for name, _ in COLUMNS[table] if name not in KEYS[table] and name not in keep
    )
    return insert_sql(table, on_conflict=f"DO UPDATE SET {assignments}", returning=returning)


def delete_sql(table: str, key: str, returning: str) -> str:
    """Delete the rows whose ``key`` is in ``%b`` (text[], sent in binary), locking them in key order first.

    The keys are joined (``unnest``), not matched with ``= ANY(...)``: for ``= ANY`` the planner
    chose sequential scans of the growing tables, each row compared with every key."""
    return (
        f"WITH doomed AS (SELECT t.ctid FROM {table} t JOIN unnest(%b::text[]) AS x(k) ON t.{key} = x.k "
        f"ORDER BY t.{key} FOR UPDATE OF t) "
        f"DELETE FROM {table} t USING doomed WHERE t.ctid = doomed.ctid RETURNING {returning}"
    )


def accumulate_sql(table: str, counters: tuple[str, ...], extra: str = "") -> str:
    assignments = ", ".join(f"{name} = t.{name} + excluded.{name}" for name in counters)
    return insert_sql(table, on_conflict=f"DO UPDATE SET {assignments}{extra}")


_COUNTERS = {
    "follower_count": "d_followers",
    "follow_count": "d_follows",
    "post_count": "d_posts",
    "likes_received": "d_likes",
    "reposts_received": "d_reposts",
    "replies_received": "d_replies",
    "quotes_received": "d_quotes",
}
_PATCH_COLUMNS = (
    "did text, first_seen_at timestamptz, last_seen_at timestamptz, identity_seq bigint, handle text, "
    "handle_seq bigint, handle_forced boolean, status_seq bigint, active boolean, status text, assigned text[], "
    + "".join(f"{name} {kind}, " for name, kind in ASSIGNED_COLUMNS.items())
    + "strategies text[], "
    + ", ".join(f"{delta} bigint" for delta in _COUNTERS.values())
)
_WHEN_NEWER_STATUS = "p.status_seq >= coalesce(u.status_seq, p.status_seq)"
USERS_UPDATE = (
    "UPDATE users AS u SET "
    "first_seen_at = LEAST(u.first_seen_at, p.first_seen_at), "
    "last_seen_at = GREATEST(u.last_seen_at, p.last_seen_at), "
    "handle = CASE WHEN p.handle_forced THEN p.handle "
    "WHEN p.handle_seq >= coalesce(u.identity_seq, p.handle_seq) THEN p.handle ELSE u.handle END, "
    "identity_seq = GREATEST(u.identity_seq, p.identity_seq), "
    f"active = CASE WHEN {_WHEN_NEWER_STATUS} THEN p.active ELSE u.active END, "
    f"status = CASE WHEN {_WHEN_NEWER_STATUS} THEN p.status ELSE u.status END, "
    "status_seq = GREATEST(u.status_seq, p.status_seq), "
    + "".join(
        f"{name} = CASE WHEN '{name}' = ANY(p.assigned) THEN p.{name} ELSE u.{name} END, "
        for name in ASSIGNED_COLUMNS
    )
    + "".join(f"{column} = u.{column} + coalesce(p.{delta}, 0), " for column, delta in _COUNTERS.items())
    + "strategies = CASE WHEN cardinality(p.strategies) > 0 "
    "THEN ARRAY(SELECT DISTINCT s FROM unnest(u.strategies || p.strategies) AS s ORDER BY s) "
    "ELSE u.strategies END "
    f"FROM json_to_recordset(%s::json) AS p({_PATCH_COLUMNS}) "
    "WHERE u.did = p.did"
)
"""One statement for every change of a batch to ``users`` (see :class:`~projections.plan.UserPatch`)."""

_UPSERTED_RECORDS = ("lists", "list_items", "starter_packs", "feed_generators", "threadgates", "labeler_services")

# Array parameters are sent in binary (%b): psycopg's text array dumper quotes element by element in
# Python, about 1.8 µs per DID or uri against 0.25 µs in binary, and a batch of 5,000 domain events
# sends about 7,000 of them (users.ensure, users.prune, the deletes).
SQL: dict[str, str] = {
    "likes.delete": delete_sql("likes", "uri", "t.subject_uri, t.subject_did, t.subject_collection"),
    "likes.insert": insert_sql("likes", returning="t.subject_uri, t.subject_did, t.subject_collection"),
    "reposts.delete": delete_sql("reposts", "uri", "t.subject_uri, t.subject_did, t.subject_collection"),
    "reposts.insert": insert_sql("reposts", returning="t.subject_uri, t.subject_did, t.subject_collection"),
    "follows.delete": delete_sql("follows", "uri", "t.uri, t.did, t.subject_did"),
    "follows.insert": insert_sql("follows", returning="t.uri, t.did, t.subject_did, t.created_at"),
    "follow_events.insert": insert_sql("follow_events", returning="t.subject_did, t.kind, t.occurred_at"),
    "observed_follows.insert": insert_sql("observed_follows"),
    # edges (did, subject_did) a crawl found gone, or the firehose showed unfollowed: locked in key order
    "observed_follows.delete": (
        "WITH gone AS (SELECT o.ctid FROM observed_follows o JOIN json_to_recordset(%s::json) AS r(did text, subject_did text) "
        "ON o.did = r.did AND o.subject_did = r.subject_did ORDER BY o.did, o.subject_did FOR UPDATE OF o) "
        "DELETE FROM observed_follows t USING gone WHERE t.ctid = gone.ctid RETURNING t.did, t.subject_did"
    ),
    "blocks.delete": delete_sql("blocks", "uri", "t.uri"),
    "blocks.insert": insert_sql("blocks", returning="t.uri"),
    "posts.delete": delete_sql("posts", "uri", "t.did"),
    # The last write in Kafka order wins; only a row actually inserted counts as a new post.
    "posts.upsert": upsert_sql("posts", keep=("indexed_at",), returning="t.did, (t.xmax = 0) AS inserted"),
    "replies.delete": delete_sql("replies", "uri", "t.parent_uri, t.parent_did"),
    "replies.insert": insert_sql("replies", returning="t.parent_uri, t.parent_did"),
    "quotes.delete": delete_sql("quotes", "uri", "t.subject_uri, t.subject_did"),
    "quotes.insert": insert_sql("quotes", returning="t.subject_uri, t.subject_did"),
    **{
        f"{table}.delete": delete_sql(table, "uri", "t.uri") for table in _UPSERTED_RECORDS
    },
    **{
        f"{table}.upsert": upsert_sql(table, keep=("indexed_at",), returning="t.uri")
        for table in _UPSERTED_RECORDS
    },
    **{
        f"{table}.clear": delete_sql(table, "post_uri", "t.post_uri")
        for table in ("threads", "mentions", "hashtags", "links", "media")
    },
    **{f"{table}.insert": insert_sql(table) for table in ("threads", "mentions", "hashtags", "links", "media")},
    "activity_events.insert": insert_sql("activity_events", returning="t.event_id::text"),
    "growth_actions.insert": insert_sql("growth_actions"),
    "activity_patterns.add": accumulate_sql(
        "activity_patterns", ("events",), ", last_at = GREATEST(t.last_at, excluded.last_at)"
    ),
    "candidates.upsert": insert_sql(
        "candidates",
        on_conflict=(
            "DO UPDATE SET "
            + ", ".join(f"{name} = excluded.{name}" for name in ("score", "reasons", "subject_uri", "source_did", "source_topic",
                                                                "source_partition", "source_offset"))
            + ", first_seen_at = LEAST(t.first_seen_at, excluded.first_seen_at)"
            + ", last_seen_at = GREATEST(t.last_seen_at, excluded.last_seen_at)"
        ),
    ),
    "engagement_counts.add": accumulate_sql(
        "engagement_counts", ("like_count", "repost_count", "reply_count", "quote_count")
    ),
    "engagement_counts.prune": (
        "DELETE FROM engagement_counts WHERE subject_uri = ANY(%b::text[]) "
        "AND like_count = 0 AND repost_count = 0 AND reply_count = 0 AND quote_count = 0"
    ),
    "follower_gains_hourly.add": accumulate_sql("follower_gains_hourly", ("gained", "lost")),
    # Creates the missing rows and locks every one, in DID order, in one statement: ON CONFLICT DO UPDATE
    # locks the row it conflicts with even when its WHERE updates nothing, and retries the insert when
    # that row was deleted meanwhile (another worker pruned an emptied stub), so no row can vanish between
    # its creation and its lock. An INSERT ... DO NOTHING then a SELECT ... FOR UPDATE probed the index
    # twice per DID: 10 ms against 6 ms for 1,600 DIDs.
    "users.ensure": (
        "INSERT INTO users AS u (did) SELECT d FROM unnest(%b::text[]) AS d ORDER BY d "
        "ON CONFLICT (did) DO UPDATE SET did = u.did WHERE false"
    ),
    "users.update": USERS_UPDATE,
    # A users row that nothing refers to any more (a follow's subject after the unfollow, ...). The prunes
    # keep = ANY, unlike delete_sql: as IN (SELECT unnest(...)) they were slower in a catch-up (6.4 against
    # 3.7 ms a batch here).
    "users.prune": (
        "DELETE FROM users WHERE did = ANY(%b::text[]) "
        "AND first_seen_at IS NULL AND last_seen_at IS NULL AND handle IS NULL AND identity_seq IS NULL "
        "AND status_seq IS NULL AND "
        + " AND ".join(f"{name} IS NULL" for name in ASSIGNED_COLUMNS)
        + " AND follower_count = 0 AND follow_count = 0 AND post_count = 0 AND likes_received = 0"
        " AND reposts_received = 0 AND replies_received = 0 AND quotes_received = 0 AND strategies = '{}'"
    ),
    "offsets.ensure": (
        "INSERT INTO projection_offsets (consumer, topic, partition) "
        "SELECT %s, x.topic, x.partition FROM unnest(%b::text[], %b::integer[]) AS x(topic, partition) "
        "ORDER BY x.topic, x.partition ON CONFLICT (consumer, topic, partition) DO NOTHING"
    ),
    "offsets.lock": (
        "SELECT o.topic, o.partition, o.next_offset FROM projection_offsets o "
        "JOIN unnest(%b::text[], %b::integer[]) AS x(topic, partition) "
        "ON o.topic = x.topic AND o.partition = x.partition "
        "WHERE o.consumer = %s ORDER BY o.topic, o.partition FOR UPDATE OF o"
    ),
    "offsets.advance": (
        "UPDATE projection_offsets o SET next_offset = GREATEST(o.next_offset, x.next_offset), updated_at = now() "
        "FROM unnest(%b::text[], %b::integer[], %b::bigint[]) AS x(topic, partition, next_offset) "
        "WHERE o.consumer = %s AND o.topic = x.topic AND o.partition = x.partition"
    ),
    "dead_letters.insert": (
        "INSERT INTO dead_letters (consumer, topic, partition, kafka_offset, code, reason, payload) "
        "SELECT r.consumer, r.topic, r.partition, r.kafka_offset, r.code, r.reason, decode(r.payload, 'base64') "
        "FROM json_to_recordset(%s::json) AS r(consumer text, topic text, partition integer, kafka_offset bigint, "
        "code text, reason text, payload text) ORDER BY r.topic, r.partition, r.kafka_offset "
        "ON CONFLICT (consumer, topic, partition, kafka_offset) DO NOTHING"
    ),
}


_ESCAPED_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
"""``\u0000`` where it is an escape in JSON text (preceded by an even number of backslashes)."""


def _json(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as one JSON array for ``json_to_recordset``. NUL characters, which Postgres text
    cannot hold, are dropped from every string."""
    data = orjson.dumps(rows)
    if b"\\u0000" in data:
        data = _ESCAPED_NUL.sub(rb"\1", data)
    return data.decode()


# --- deltas --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Deltas:
    """Counter changes learnt from rows inserted and deleted in this transaction."""

    engagement: dict[str, list[Any]] = field(default_factory=dict)
    gains: defaultdict[tuple[str, datetime], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))

    def engage(self, uri: str, did: str, collection: str, index: int, amount: int) -> None:
        entry = self.engagement.get(uri)
        if entry is None:
            entry = self.engagement[uri] = [did, collection or record_collection(uri), 0, 0, 0, 0]
        entry[2 + index] += amount

    def engagement_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "subject_uri": uri,
                "subject_did": did,
                "subject_collection": collection,
                "like_count": likes,
                "repost_count": reposts,
                "reply_count": replies,
                "quote_count": quotes,
            }
            for uri, (did, collection, likes, reposts, replies, quotes) in sorted(self.engagement.items())
            if (likes, reposts, replies, quotes) != (0, 0, 0, 0)
        ]

    def gain_rows(self) -> list[dict[str, Any]]:
        return [
            {"did": did, "hour": hour, "gained": gained, "lost": lost}
            for (did, hour), (gained, lost) in sorted(self.gains.items())
        ]


LIKE, REPOST, REPLY, QUOTE = range(4)


def _pairs(edges: Mapping[tuple[str, str], Any]) -> list[dict[str, str]]:
    return [{"did": did, "subject_did": subject} for did, subject in sorted(edges)]


def _follow_change(event_id: str, did: str, subject: str, kind: str, moment: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "did": did, "subject_did": subject, "kind": kind, "occurred_at": moment}


# --- the unit of work ----------------------------------------------------------------------


class _Sent(NamedTuple):
    """A statement sent in a pipeline, whose result is read once the pipeline is synced."""

    cursor: psycopg.AsyncCursor[Any]
    table: str


class _Writer:
    """The statements of one batch, sent in a few pipelines (psycopg's pipeline mode): each
    pipeline is one round trip holding every statement that does not need an earlier one's
    result. In one worker the projector shares its event loop with the other stages, so each
    round trip it saves is also a wait behind their work that it saves."""

    def __init__(self, conn: psycopg.AsyncConnection[Any], plan: BatchPlan) -> None:
        self.conn = conn
        self.plan = plan
        self.deltas = _Deltas()
        self.rows: Counter[str] = Counter()
        self._uncounted: list[_Sent] = []

    async def send(self, sql: str, params: Sequence[Any], table: str) -> _Sent:
        sent = _Sent(await self.conn.execute(sql, params), table)  # type: ignore[arg-type]
        self._uncounted.append(sent)
        return sent

    def count_rows(self) -> None:
        """Count the rows changed by the statements sent so far (after their pipeline synced)."""
        for sent in self._uncounted:
            if sent.cursor.rowcount > 0:
                self.rows[sent.table] += sent.cursor.rowcount
        self._uncounted.clear()

    @staticmethod
    async def result(sent: _Sent | None) -> list[tuple[Any, ...]]:
        """The rows ``sent`` returned (after its pipeline synced)."""
        if sent is None or sent.cursor.description is None:
            return []
        return await sent.cursor.fetchall()

    async def rows_of(self, table: str, sql_name: str) -> _Sent | None:
        rows = self.plan.rows.get(table)
        return await self.send(SQL[sql_name], (_json(rows),), table) if rows else None

    async def removed(self, table: str, uris: list[str] | None = None) -> _Sent | None:
        """Delete the batch's removed records of ``table`` (or ``uris``), returning what they counted."""
        uris = self.plan.removed_uris(table) if uris is None else uris
        return await self.send(SQL[f"{table}.delete"], (uris,), table) if uris else None

    async def apply(self) -> None:
        """Every change of the plan but the shared counters (:meth:`finish`)."""
        plan, deltas = self.plan, self.deltas
        user = plan.user

        # 1. The record tables, whose rows belong to one author (one partition, one worker): one pipeline.
        async with self.conn.pipeline():
            edges = [(table, index, attribute, await self.removed(table), await self.rows_of(table, f"{table}.insert"))
                     for table, index, attribute in (("likes", LIKE, "likes_received"),
                                                     ("reposts", REPOST, "reposts_received"))]
            follows = [
                (round_,
                 await self.send(SQL["follows.delete"], (sorted(round_.removed),), "follows") if round_.removed else None,
                 await self.send(SQL["follows.insert"], (_json(round_.rows),), "follows") if round_.rows else None)
                for round_ in plan.follow_rounds
            ]
            lost = (await self.send(SQL["observed_follows.delete"], (_json(_pairs(plan.observed_lost)),), "observed_follows")
                    if plan.observed_lost else None)
            await self.rows_of("observed_follows", "observed_follows.insert")
            await self.removed("blocks")
            await self.rows_of("blocks", "blocks.insert")
            removed_posts = plan.removed_uris("posts")
            posts = (await self.removed("posts"), await self.rows_of("posts", "posts.upsert"))
            answers = [(table, index, attribute, await self.removed(table, uris=removed_posts),
                        await self.rows_of(table, f"{table}.insert"))
                       for table, index, attribute in (("replies", REPLY, "replies_received"),
                                                       ("quotes", QUOTE, "quotes_received"))]
            for table in ("threads", "mentions", "hashtags", "links", "media"):
                if plan.enrichment_cleared:
                    await self.send(SQL[f"{table}.clear"], (plan.enrichment_cleared,), table)
                await self.rows_of(table, f"{table}.insert")
            # lists, starter packs, feed generators, threadgates, labelers: the last write wins
            for table in _UPSERTED_RECORDS:
                await self.removed(table)
                await self.rows_of(table, f"{table}.upsert")
            activity = (await self.send(SQL["activity_events.insert"], (_json(plan.activity),), "activity_events")
                        if plan.activity else None)
            if plan.candidates:
                await self.send(SQL["candidates.upsert"], (_json(plan.candidates),), "candidates")
            await self.rows_of("growth_actions", "growth_actions.insert")
        self.count_rows()
        for table, index, attribute, removed, inserted in (*edges, *answers):
            for sign, found in ((-1, await self.result(removed)), (1, await self.result(inserted))):
                for subject_uri, subject_did, *collection in found:
                    deltas.engage(subject_uri, subject_did, collection[0] if collection else "", index, sign)
                    patch = user(subject_did)
                    setattr(patch, attribute, getattr(patch, attribute) + sign)
        for (did,) in await self.result(posts[0]):
            user(did).posts -= 1
        for did, inserted in await self.result(posts[1]):
            if inserted:
                user(did).posts += 1
        # The follow graph: counts on both ends from rows stored and deleted; gains by the hour
        # they happened, from the follow_events ledger (so a re-delivered follow and unfollow,
        # which store and delete the row again, are not gains and losses twice).
        changes: list[dict[str, Any]] = []
        for round_, removed, inserted in follows:
            for uri, follower, subject in await self.result(removed):
                user(follower).follows -= 1
                user(subject).followers -= 1
                moment, event_id = round_.removed[uri]
                changes.append(_follow_change(event_id, follower, subject, "unfollow", moment))
            event_ids = {row["uri"]: row["event_id"] for row in round_.rows}
            for uri, follower, subject, created_at in await self.result(inserted):
                user(follower).follows += 1
                user(subject).followers += 1
                changes.append(_follow_change(event_ids[uri], follower, subject, "follow", created_at))
        # an observed edge a crawl found gone is an unfollow (the ledger counts it once); one the
        # firehose showed unfollowed is forgotten, so a later crawl does not count it again
        for follower, subject in await self.result(lost):
            moment, event_id = plan.observed_lost[(follower, subject)]
            changes.append(_follow_change(event_id, follower, subject, "unfollow", moment))
        for follower, subject, moment, event_id in plan.observed_lost_here:
            changes.append(_follow_change(event_id, follower, subject, "unfollow", moment))
        unfollowed = sorted({(c["did"], c["subject_did"]) for c in changes if c["kind"] == "unfollow"}
                            - set(plan.observed_lost) - {(d, s) for d, s, _, _ in plan.observed_lost_here})

        # 2. The event-id ledgers' consequences: accumulate only what the ledgers had not recorded yet.
        patterns = _activity_patterns(plan.activity, await self.result(activity))
        async with self.conn.pipeline():
            if unfollowed:
                await self.send(SQL["observed_follows.delete"], (_json([{"did": d, "subject_did": s} for d, s in unfollowed]),),
                                "observed_follows")
            if changes:
                changes.sort(key=lambda change: change["event_id"])
                follow_events = await self.send(SQL["follow_events.insert"], (_json(changes),), "follow_events")
            if patterns:
                await self.send(SQL["activity_patterns.add"], (_json(patterns),), "activity_patterns")
        self.count_rows()
        if changes:
            for subject, kind, occurred_at in await self.result(follow_events):
                deltas.gains[(subject, hour_of(occurred_at))][0 if kind == "follow" else 1] += 1

    async def finish(self) -> None:
        """The counters several workers share, each by one sorted statement, always in this order,
        ending with the ``users`` rows (created where missing and locked, then updated): sent in
        the caller's last pipeline, beside the marks' advance."""
        engagement = self.deltas.engagement_rows()
        if engagement:
            await self.send(SQL["engagement_counts.add"], (_json(engagement),), "engagement_counts")
            await self.send(SQL["engagement_counts.prune"], ([row["subject_uri"] for row in engagement],),
                            "engagement_counts")
        gains = self.deltas.gain_rows()
        if gains:
            await self.send(SQL["follower_gains_hourly.add"], (_json(gains),), "follower_gains_hourly")
        if self.plan.users:
            dids = sorted(self.plan.users)
            await self.send(SQL["users.ensure"], (dids,), "users")
            await self.send(SQL["users.update"], (_json([self.plan.users[did].as_row() for did in dids]),), "users")
            await self.send(SQL["users.prune"], (dids,), "users")


def _activity_patterns(activity: list[dict[str, Any]], fresh: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """The ``activity_patterns`` increments of the activity rows the ledger newly recorded (``fresh``)."""
    by_id = {row["event_id"]: row for row in activity}
    patterns: dict[tuple[str, int, int], list[Any]] = {}
    for (event_id,) in fresh:
        row = by_id[event_id]
        key = (row["did"], row["iso_weekday"], row["hour"])
        entry = patterns.setdefault(key, [0, row["occurred_at"]])
        entry[0] += 1
        entry[1] = max(entry[1], row["occurred_at"])
    return [
        {"did": did, "iso_weekday": weekday, "hour": hour, "events": events, "last_at": last_at}
        for (did, weekday, hour), (events, last_at) in sorted(patterns.items())
    ]


Decoded = Mapping[tuple[str, int, int], Result[tuple[DomainEvent, ...], Rejection]]
"""Messages' decoded values by (topic, partition, offset): what :func:`decode_messages` gives."""


def decode_messages(messages: Sequence[Record]) -> dict[tuple[str, int, int], Result[tuple[DomainEvent, ...], Rejection]]:
    """Each message's events decoded (:func:`domain.events.decode_all`), by its coordinates: the
    Python work of a batch that needs no transaction, so a caller can do it for the next batch
    while Postgres still runs the previous one (:class:`Prepared`)."""
    return {(m.topic, m.partition, m.offset): decode_all(m.value or b"") for m in messages}


def _decode_all(
    consumer: str, messages: Sequence[Record], decoded: Decoded
) -> tuple[list[Any], list[dict[str, Any]]]:
    events: list[Any] = []
    dead: list[dict[str, Any]] = []
    for message in messages:
        outcome = decoded.get((message.topic, message.partition, message.offset))
        match decode_all(message.value or b"") if outcome is None else outcome:
            case Success(found):
                problem = next((p for p in map(unprojectable, found) if p is not None), None)
                if problem is None:
                    events.extend(found)
                else:
                    dead.append(dead_letter_row(consumer, message, "unprojectable", problem))
            case Failure(rejection):
                dead.append(dead_letter_row(consumer, message, rejection.code.value, rejection.message))
    return events, dead


class Prepared:
    """A batch's Python work done before its transaction, so a caller can do it while Postgres still
    runs the previous batch's: its messages decoded (:func:`decode_messages`) and, for the usual case
    where the transaction applies every one of them (none below the marks, none refused), its events,
    dead letters and plan (:func:`projections.plan.plan_batch`: a quarter of the projector's Python per
    message, which otherwise runs inside the transaction while Postgres waits). The plan serves one
    transaction (applying a plan changes it): a retry plans again."""

    def __init__(self, consumer: str, messages: Sequence[Record], decoded: Decoded) -> None:
        self.decoded = decoded
        ordered = sorted(messages, key=lambda m: (m.topic, m.partition, m.offset))
        self._keys = [(m.topic, m.partition, m.offset) for m in ordered]
        events, dead = _decode_all(consumer, ordered, decoded)
        self._whole: tuple[list[Any], list[dict[str, Any]], BatchPlan] | None = (events, dead, plan_batch(events))

    def take(self, applied: Sequence[Record]) -> tuple[list[Any], list[dict[str, Any]], BatchPlan] | None:
        """The events, dead letters and plan when ``applied`` (in order) are the batch's messages,
        once; otherwise None."""
        whole, self._whole = self._whole, None
        if whole is None or [(m.topic, m.partition, m.offset) for m in applied] != self._keys:
            return None
        return whole


def dead_letter_row(consumer: str, message: Record, code: str, reason: str) -> dict[str, Any]:
    return {
        "consumer": consumer,
        "topic": message.topic,
        "partition": message.partition,
        "kafka_offset": message.offset,
        "code": code,
        "reason": reason.replace("\x00", "")[:2000],
        "payload": base64.b64encode(message.value or b"").decode(),
    }


async def _lock_marks(
    conn: psycopg.AsyncConnection[Any], consumer: str, partitions: list[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    topics = [topic for topic, _ in partitions]
    numbers = [partition for _, partition in partitions]
    await conn.execute(SQL["offsets.ensure"], (consumer, topics, numbers))
    cur = await conn.execute(SQL["offsets.lock"], (topics, numbers, consumer))
    return {(topic, partition): next_offset for topic, partition, next_offset in await cur.fetchall()}


async def apply_batch(
    conn: psycopg.AsyncConnection[Any],
    consumer: str,
    messages: Sequence[Record],
    *,
    dead_letters: Sequence[tuple[Record, str, str]] = (),
    prepared: Prepared | None = None,
) -> BatchResult:
    """Apply ``messages`` (any order, any partitions) for ``consumer`` in one transaction.

    Messages below the stored high-water marks are skipped; the rest are applied in
    (topic, partition, offset) order and the marks advance past them, all or nothing.
    ``dead_letters`` — (message, code, reason) — are recorded instead of applied (the
    runtime's isolation of a message Postgres refused). ``prepared`` (:class:`Prepared`) holds
    values decoded before the transaction, and their plan; a message missing from it is decoded here.
    Raises on database errors (the transaction is rolled back: nothing was applied).
    """
    started = time.perf_counter()
    refused = {(m.topic, m.partition, m.offset): (m, code, reason) for m, code, reason in dead_letters}
    unique: dict[tuple[str, int, int], Record] = {}
    for m in (*messages, *(message for message, _, _ in refused.values())):
        unique.setdefault((m.topic, m.partition, m.offset), m)
    ordered = [unique[key] for key in sorted(unique)]
    partitions = sorted({(m.topic, m.partition) for m in ordered})
    result = BatchResult()
    if not partitions:
        return result

    async with conn.transaction():
        # shared with every other batch, exclusive against a schema swap or a migration of this
        # schema (projections.rebuild, projections.migrate): a batch never straddles a swap
        async with conn.pipeline():
            await conn.execute("SELECT pg_advisory_xact_lock_shared(hashtext(%s), hashtext(current_schema()))",
                               (SCHEMA_LOCK_NAMESPACE,))
            marks = await _lock_marks(conn, consumer, partitions)
        fresh = [m for m in ordered if m.offset >= marks[(m.topic, m.partition)]]
        result.skipped = len(ordered) - len(fresh)
        to_decode = [m for m in fresh if (m.topic, m.partition, m.offset) not in refused]
        planned = prepared.take(to_decode) if prepared is not None and not refused else None
        if planned is None:
            events, dead = _decode_all(consumer, to_decode, prepared.decoded if prepared else {})
            plan = plan_batch(events)
        else:
            events, dead, plan = planned
        dead = dead + [
            dead_letter_row(consumer, message, code, reason)
            for message, code, reason in (refused[k] for k in sorted(refused))
            if message.offset >= marks[(message.topic, message.partition)]
        ]
        writer = _Writer(conn, plan)
        await writer.apply()
        advance: dict[tuple[str, int], int] = {}
        for m in fresh:
            advance[(m.topic, m.partition)] = max(advance.get((m.topic, m.partition), 0), m.offset + 1)
        async with conn.pipeline():
            await writer.finish()
            if dead:
                await writer.send(SQL["dead_letters.insert"], (_json(dead),), "dead_letters")
            if advance:
                keys = sorted(advance)
                await conn.execute(
                    SQL["offsets.advance"],
                    ([t for t, _ in keys], [p for _, p in keys], [advance[k] for k in keys], consumer),
                )
        writer.count_rows()
        result.next_offsets = {key: max(marks[key], advance.get(key, 0)) for key in partitions}

    result.applied = len(fresh)
    result.events = len(events)
    result.dead_lettered = len(dead)
    result.marks_before = marks
    result.dead_letters = {(row["topic"], row["partition"], row["kafka_offset"]): row["code"] for row in dead}
    result.rows = dict(writer.rows)
    result.duration_s = time.perf_counter() - started
    return result


# --- with a pool: retry, and isolation of a message Postgres refuses ------------------------

_REFUSED = (psycopg.errors.DataError, psycopg.errors.IntegrityError)
"""Errors caused by the data of some message (not transient, not a bug of the whole batch)."""


async def project_batch(
    pool: AsyncConnectionPool,
    consumer: str,
    messages: Sequence[Record],
    *,
    retry: RetryPolicy = RetryPolicy(),
    prepared: Prepared | None = None,
) -> BatchResult:
    """:func:`apply_batch` on a pooled connection, re-run after transient errors (``prepared``:
    the messages decoded and planned before, see :class:`Prepared`).

    When Postgres refuses the batch's data (``DataError``/``IntegrityError``: a value out of
    range, ...), the messages are applied one by one and the ones refused are dead-lettered
    with code ``projection_refused``, so one bad message never stalls the stream.
    """

    async def attempt(batch: Sequence[Record], refused: Sequence[tuple[Record, str, str]] = ()) -> BatchResult:
        async with pool.connection() as conn:
            return await apply_batch(conn, consumer, batch, dead_letters=refused, prepared=prepared)

    try:
        return await with_retry(lambda: attempt(messages), retry)
    except _REFUSED:
        pass
    total = BatchResult()
    for message in sorted(messages, key=lambda m: (m.topic, m.partition, m.offset)):
        try:
            total = total.merge(await with_retry(lambda m=message: attempt([m]), retry))
        except _REFUSED as error:
            reason = f"{type(error).__name__}: {error}"
            total = total.merge(
                await with_retry(lambda m=message, r=reason: attempt([], [(m, "projection_refused", r)]), retry)
            )
    return total


async def stored_offsets(pool: AsyncConnectionPool, consumer: str, topic: str, *,
                         timeout_s: float | None = None) -> dict[int, int]:
    """``consumer``'s high-water marks on ``topic``: partition -> the next offset to apply. A
    consumer starts each partition there (what is below was applied)."""
    async with pool.connection(timeout=timeout_s) as conn:
        cur = await conn.execute(
            "SELECT partition, next_offset FROM projection_offsets WHERE consumer = %s AND topic = %s",
            (consumer, topic))
        return {int(partition): int(offset) for partition, offset in await cur.fetchall()}
