"""Fixtures and builders shared by the projection tests (``test_projections_*.py``).

Every test works in its own scratch schemas (``proj_<unique>_...``), migrated on demand and
dropped afterwards, in the real PostgreSQL of the local stack.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from domain import events as ev
from domain.events import encode
from domain.identity import commit_source, sequence_source
from projections import Message, connect, migrate

TOPIC = "growth.events"
VOLATILE = {("projection_offsets", "updated_at"), ("dead_letters", "recorded_at")}
"""Bookkeeping columns set from the database clock; left out of dumps."""

SchemaFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def make_schema(database_url: str, unique: str) -> AsyncIterator[SchemaFactory]:
    """``await make_schema("name", migrated=True)`` → a scratch schema name; all are dropped after."""
    created: list[str] = []

    async def make(suffix: str = "main", *, migrated: bool = True) -> str:
        name = f"proj_{unique}_{suffix}"
        created.append(name)
        if migrated:
            await migrate(database_url, name)
        return name

    yield make
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for name in created:
            for candidate in (name, f"{name}_retired"):
                await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(candidate)))


@pytest.fixture
async def schema(make_schema: SchemaFactory) -> str:
    return await make_schema()


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    connection = await connect(database_url, schema)
    try:
        yield connection
    finally:
        await connection.close()


# --- dumps ---------------------------------------------------------------------------------


async def dump(conn: psycopg.AsyncConnection[Any], *, skip: Iterable[str] = ("schema_migrations",)) -> dict[str, list[tuple[Any, ...]]]:
    """Every base table of the connection's schema, all rows sorted, volatile columns left out."""
    skipped = set(skip)
    cur = await conn.execute(
        "SELECT table_name, array_agg(column_name::text ORDER BY ordinal_position) "
        "FROM information_schema.columns c JOIN information_schema.tables t USING (table_schema, table_name) "
        "WHERE table_schema = current_schema() AND t.table_type = 'BASE TABLE' GROUP BY table_name ORDER BY table_name"
    )
    tables = await cur.fetchall()
    result: dict[str, list[tuple[Any, ...]]] = {}
    for table, columns in tables:
        if table in skipped:
            continue
        kept = [column for column in columns if (table, column) not in VOLATILE]
        query = sql.SQL("SELECT {} FROM {} ORDER BY {}").format(
            sql.SQL(", ").join(map(sql.Identifier, kept)),
            sql.Identifier(table),
            sql.SQL(", ").join(sql.SQL(str(i + 1)) for i in range(len(kept))),
        )
        result[table] = await (await conn.execute(query)).fetchall()
    return result


def non_empty(tables: dict[str, list[tuple[Any, ...]]]) -> dict[str, int]:
    return {table: len(rows) for table, rows in tables.items() if rows}


async def scalar(conn: psycopg.AsyncConnection[Any], query: str, params: Sequence[Any] = ()) -> Any:
    row = await (await conn.execute(query, params)).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


# --- building domain events ----------------------------------------------------------------

NOW = datetime(2026, 7, 4, 15, 0, 0, tzinfo=UTC)
"""'Now' of the hand-built data (the sample's events are from 2026-07-04 14:38 UTC)."""


def us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


class Events:
    """Builds domain events as the collect step would (deterministic ids from commit sources)."""

    def __init__(self) -> None:
        self._revs = itertools.count(1)
        self._rkeys = itertools.count(1)

    def rkey(self) -> str:
        return f"3rk{next(self._rkeys):010d}"

    def source(self, did: str, collection: str, rkey: str, operation: str, at: datetime) -> Any:
        return commit_source(did, f"3rev{next(self._revs):09d}", collection, rkey, operation, us(at))

    def uri(self, did: str, collection: str, rkey: str) -> str:
        return f"at://{did}/{collection}/{rkey}"

    # -- engagement and graph --

    def like(self, did: str, subject_uri: str, at: datetime = NOW, rkey: str | None = None) -> ev.LikeAdded:
        return self._engage(ev.LikeAdded, "app.bsky.feed.like", did, subject_uri, at, rkey)

    def repost(self, did: str, subject_uri: str, at: datetime = NOW, rkey: str | None = None) -> ev.RepostAdded:
        return self._engage(ev.RepostAdded, "app.bsky.feed.repost", did, subject_uri, at, rkey)

    def _engage(self, kind: Any, collection: str, did: str, subject_uri: str, at: datetime, rkey: str | None) -> Any:
        rkey = rkey or self.rkey()
        subject_did, subject_collection = subject_uri[5:].split("/")[:2]
        return kind.derive(
            self.source(did, collection, rkey, "create", at),
            uri=self.uri(did, collection, rkey),
            rkey=rkey,
            subject_uri=subject_uri,
            subject_did=subject_did,
            subject_collection=subject_collection,
            subject_cid="bafyfake",
        )

    def follow(self, did: str, subject_did: str, at: datetime = NOW, rkey: str | None = None) -> ev.FollowAdded:
        rkey = rkey or self.rkey()
        return ev.FollowAdded.derive(
            self.source(did, "app.bsky.graph.follow", rkey, "create", at),
            uri=self.uri(did, "app.bsky.graph.follow", rkey),
            rkey=rkey,
            subject_did=subject_did,
        )

    def block(self, did: str, subject_did: str, at: datetime = NOW, rkey: str | None = None) -> ev.BlockAdded:
        rkey = rkey or self.rkey()
        return ev.BlockAdded.derive(
            self.source(did, "app.bsky.graph.block", rkey, "create", at),
            uri=self.uri(did, "app.bsky.graph.block", rkey),
            rkey=rkey,
            subject_did=subject_did,
        )

    def removal(self, added: Any, at: datetime = NOW) -> Any:
        """The removal event of the record ``added`` created (PostDeleted for posts)."""
        kind = REMOVAL_OF[type(added)]
        collection = added.uri[5:].split("/")[1]
        rkey = added.uri.rsplit("/", 1)[1]
        return kind.derive(self.source(added.did, collection, rkey, "delete", at), uri=added.uri, rkey=rkey)

    # -- posts --

    def post(
        self,
        did: str,
        text: str = "hello",
        at: datetime = NOW,
        *,
        rkey: str | None = None,
        reply_to: str | None = None,
        quote: str | None = None,
        hashtags: Sequence[str] = (),
        mentions: Sequence[str] = (),
        links: Sequence[str] = (),
        images: int = 0,
        update: bool = False,
    ) -> list[Any]:
        """PostCreated (or PostUpdated), PostEnriched and, on create, ReplyAdded / QuoteAdded."""
        rkey = rkey or self.rkey()
        collection = "app.bsky.feed.post"
        uri = self.uri(did, collection, rkey)
        source = self.source(did, collection, rkey, "update" if update else "create", at)
        out: list[Any] = [
            (ev.PostUpdated if update else ev.PostCreated).derive(
                source,
                uri=uri,
                rkey=rkey,
                cid="bafypost",
                text=text,
                created_at=at.isoformat().replace("+00:00", "Z"),
                created_at_us=us(at),
                langs=("en",),
                reply_root_uri=reply_to,
                reply_parent_uri=reply_to,
                quote_uri=quote,
                embed_type="app.bsky.embed.record" if quote else ("app.bsky.embed.images" if images else None),
            )
        ]
        root = reply_to or uri
        out.append(
            ev.PostEnriched.derive(
                source,
                uri=uri,
                thread=ev.Thread(
                    root_uri=root,
                    root_did=root[5:].split("/")[0],
                    parent_uri=reply_to,
                    parent_did=reply_to[5:].split("/")[0] if reply_to else None,
                    depth=1 if reply_to else 0,
                ),
                mentions=tuple(mentions),
                hashtags=tuple(hashtags),
                links=tuple(ev.Link(uri=link, domain=link.split("/")[2]) for link in links),
                media=tuple(
                    ev.Media(kind="image", embed_type="app.bsky.embed.images", cid=f"bafyimg{i}", mime_type="image/jpeg")
                    for i in range(images)
                ),
                quote=ev.RecordRef(uri=quote, did=quote[5:].split("/")[0], collection=collection) if quote else None,
                langs=("en",),
            )
        )
        if reply_to and not update:
            parent_did = reply_to[5:].split("/")[0]
            out.append(
                ev.ReplyAdded.derive(
                    source, uri=uri, parent_uri=reply_to, parent_did=parent_did, root_uri=reply_to, root_did=parent_did
                )
            )
        if quote and not update:
            out.append(ev.QuoteAdded.derive(source, uri=uri, subject_uri=quote, subject_did=quote[5:].split("/")[0]))
        return out

    # -- other records --

    def upsert(self, kind: Any, did: str, at: datetime = NOW, *, rkey: str | None = None, update: bool = False, **fields: Any) -> Any:
        collection = UPSERT_COLLECTION[kind]
        rkey = rkey or ("self" if kind is ev.ProfileUpdated else self.rkey())
        return kind.derive(
            self.source(did, collection, rkey, "update" if update else "create", at),
            uri=self.uri(did, collection, rkey),
            rkey=rkey,
            created_at=at.isoformat(),
            **fields,
        )

    # -- accounts and growth --

    def seen(self, did: str, at: datetime = NOW) -> ev.UserSeen:
        return ev.UserSeen.derive(self.source(did, "app.bsky.feed.like", self.rkey(), "create", at), time_us=us(at))

    def activity(self, did: str, at: datetime = NOW, collection: str = "app.bsky.feed.like") -> ev.ActivityRecorded:
        source = self.source(did, collection, self.rkey(), "create", at)
        return ev.ActivityRecorded.derive(
            source, hour=at.hour, iso_weekday=at.isoweekday(), collection=collection, operation="create", time_us=us(at)
        )

    def handle(self, did: str, handle: str | None, seq: int, at: datetime = NOW) -> ev.HandleChanged:
        return ev.HandleChanged.derive(sequence_source(did, "identity", seq, us(at)), handle=handle, seq=seq, time=at.isoformat())

    def status(self, did: str, active: bool, status: str, seq: int, at: datetime = NOW) -> ev.AccountStatusChanged:
        return ev.AccountStatusChanged.derive(
            sequence_source(did, "account", seq, us(at)), active=active, status=status, seq=seq, time=at.isoformat()
        )

    def candidate(
        self, did: str, strategy: str, score: float, reasons: Sequence[str], actor: str, at: datetime = NOW
    ) -> ev.CandidateFound:
        source = self.source(actor, "app.bsky.feed.like", self.rkey(), "create", at)
        return ev.CandidateFound.derive(
            source, discriminator=f"{strategy}|{did}", did=did, strategy=strategy, score=score, reasons=tuple(reasons)
        )


    # -- the crawl and the engine's own account --

    def appview_profile(self, did: str, handle: str, followers: int | None, at: datetime = NOW, **fields: Any) -> Any:
        """ProfileEnriched: the AppView's answer for ``did`` (a crawl request as the source)."""
        source = self.source(did, "app.bsky.actor.profile", self.rkey(), "crawl", at)
        return ev.ProfileEnriched.derive(source, handle=handle, followers_count=followers, **fields)

    def growth_action(self, actor: str, action: str, subject_did: str, reason: str, at: datetime = NOW,
                      subject_uri: str | None = None) -> Any:
        collection = "app.bsky.graph.follow" if action == "follow" else "app.bsky.feed.like"
        rkey = self.rkey()
        return ev.GrowthActionTaken.derive(
            self.source(actor, collection, rkey, "create", at),
            action=action,
            subject_did=subject_did,
            subject_uri=subject_uri,
            record_uri=self.uri(actor, collection, rkey),
            reason=reason,
        )


UPSERT_COLLECTION: dict[Any, str] = {
    ev.ListUpserted: "app.bsky.graph.list",
    ev.ListItemUpserted: "app.bsky.graph.listitem",
    ev.StarterPackUpserted: "app.bsky.graph.starterpack",
    ev.FeedGeneratorUpserted: "app.bsky.feed.generator",
    ev.ThreadgateUpserted: "app.bsky.feed.threadgate",
    ev.LabelerServiceUpserted: "app.bsky.labeler.service",
    ev.ProfileUpdated: "app.bsky.actor.profile",
}

REMOVAL_OF: dict[Any, Any] = {
    ev.LikeAdded: ev.LikeRemoved,
    ev.RepostAdded: ev.RepostRemoved,
    ev.FollowAdded: ev.FollowRemoved,
    ev.BlockAdded: ev.BlockRemoved,
    ev.PostCreated: ev.PostDeleted,
    ev.ListUpserted: ev.ListRemoved,
    ev.ListItemUpserted: ev.ListItemRemoved,
    ev.StarterPackUpserted: ev.StarterPackRemoved,
    ev.FeedGeneratorUpserted: ev.FeedGeneratorRemoved,
    ev.ThreadgateUpserted: ev.ThreadgateRemoved,
    ev.LabelerServiceUpserted: ev.LabelerServiceRemoved,
    ev.ProfileUpdated: ev.ProfileRemoved,
}


class Offsets:
    """Hands out consecutive offsets per partition, as Kafka would."""

    def __init__(self, topic: str = TOPIC) -> None:
        self.topic = topic
        self.next: dict[int, int] = {}

    def messages(self, events: Iterable[Any], partition: int = 0) -> list[Message]:
        out = []
        for event in events:
            offset = self.next.get(partition, 0)
            self.next[partition] = offset + 1
            out.append(Message(self.topic, partition, offset, encode(event)))
        return out

    def raw(self, value: bytes | None, partition: int = 0) -> Message:
        offset = self.next.get(partition, 0)
        self.next[partition] = offset + 1
        return Message(self.topic, partition, offset, value)
