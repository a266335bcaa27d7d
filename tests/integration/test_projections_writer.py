"""The batch writer: exactly-once effect through offsets, exact undo of deletes, accumulated
counts, dead letters, and no deadlocks between concurrent workers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest

from domain import events as ev
from domain.identity import commit_source
from projections import apply_batch, connect
from projections.plan import PROJECTED_TYPES
from tests.integration.projection_support import (  # noqa: F401  (fixtures)
    NOW,
    Events,
    Offsets,
    conn,
    dump,
    make_schema,
    non_empty,
    scalar,
    schema,
)

CONSUMER = "projector"
ALICE, BOB, CAROL, DAVE = (f"did:plc:{name}" for name in ("alice", "bob", "carol", "dave"))


def mixed_events(e: Events) -> list[object]:
    """A bit of everything, including removals, updates and an unfollow."""
    post = e.post(ALICE, "first #hello post", hashtags=["hello"], links=["https://example.com/a"], images=2)
    reply = e.post(BOB, "a reply", reply_to=post[0].uri, mentions=[ALICE])
    quote = e.post(CAROL, "a quote", quote=post[0].uri)
    follow = e.follow(BOB, ALICE)
    like = e.like(CAROL, post[0].uri)
    return [
        e.seen(ALICE), e.activity(ALICE), *post,
        e.seen(BOB), e.activity(BOB), *reply,
        *quote,
        follow, e.follow(CAROL, ALICE), e.removal(follow, NOW + timedelta(minutes=1)),
        like, e.like(DAVE, post[0].uri), e.repost(BOB, post[0].uri), e.removal(like),
        e.like(DAVE, "at://did:plc:elsewhere/app.bsky.feed.post/3unseen"),
        e.block(DAVE, CAROL),
        e.upsert(ev.ProfileUpdated, ALICE, display_name="Alice", description="hi"),
        e.upsert(ev.ListUpserted, BOB, name="friends", purpose="app.bsky.graph.defs#curatelist"),
        e.handle(ALICE, "alice.test", 10), e.status(ALICE, True, "active", 11),
        e.candidate(ALICE, "interests", 0.5, ["likes #hello"], actor=ALICE),
        e.appview_profile(CAROL, "carol.test", 1200, display_name="Carol", avatar="https://cdn/x.jpg"),
        e.growth_action("did:plc:engine", "follow", CAROL, "candidate of interests"),
    ]


async def test_the_same_batch_twice_leaves_the_database_as_once(conn) -> None:  # noqa: F811
    offsets = Offsets()
    batch = offsets.messages(mixed_events(Events())) + [offsets.raw(b"not json")]
    first = await apply_batch(conn, CONSUMER, batch)
    once = await dump(conn)
    second = await apply_batch(conn, CONSUMER, batch)
    assert await dump(conn) == once
    assert (first.applied, first.skipped, first.dead_lettered) == (len(batch), 0, 1)
    assert (second.applied, second.skipped, second.rows) == (0, len(batch), {})
    assert second.next_offsets == {("growth.events", 0): len(batch)}


async def test_a_batch_replayed_after_a_crash_before_commit_applies_exactly_once(
    database_url, make_schema  # noqa: F811
) -> None:
    events = mixed_events(Events())
    batch = Offsets().messages(events)
    crashed, control = await make_schema("crashed"), await make_schema("control")

    reference = await connect(database_url, control)
    await apply_batch(reference, CONSUMER, batch)
    expected = await dump(reference)
    await reference.close()

    victim = await connect(database_url, crashed)
    before = await dump(victim)
    admin = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    with pytest.raises(psycopg.OperationalError):
        async with victim.transaction():  # the worker's outer transaction: written, never committed
            await apply_batch(victim, CONSUMER, batch)
            await admin.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
            await victim.execute("SELECT 1")  # the worker dies here, before COMMIT
    await admin.close()

    worker = await connect(database_url, crashed)
    assert await dump(worker) == before  # nothing of the crashed attempt is visible
    result = await apply_batch(worker, CONSUMER, batch)
    assert result.applied == len(batch)
    assert await dump(worker) == expected
    await apply_batch(worker, CONSUMER, batch)  # and the redelivery after it is a no-op
    assert await dump(worker) == expected
    await worker.close()


async def test_events_redelivered_at_new_offsets_are_not_counted_twice(conn) -> None:  # noqa: F811
    events = mixed_events(Events())
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages(events))
    once = await dump(conn, skip=("schema_migrations", "projection_offsets"))
    result = await apply_batch(conn, CONSUMER, offsets.messages(events))  # the same events, later offsets
    assert result.applied == len(events)
    assert await dump(conn, skip=("schema_migrations", "projection_offsets")) == once


def every_collection(e: Events) -> list[list[object]]:
    """For each of the 12 collected collections, the events of creating one record."""
    return [
        e.post(ALICE, "a post #tag", hashtags=["tag"], mentions=[BOB], links=["https://x.org/"], images=1),
        e.post(BOB, "a reply quoting", reply_to="at://did:plc:far/app.bsky.feed.post/3p", quote="at://did:plc:far/app.bsky.feed.post/3q"),
        [e.like(ALICE, "at://did:plc:far/app.bsky.feed.post/3p")],
        [e.repost(ALICE, "at://did:plc:far/app.bsky.feed.post/3p")],
        [e.follow(ALICE, BOB)],
        [e.block(ALICE, CAROL)],
        [e.upsert(ev.ListUpserted, ALICE, name="l", purpose="app.bsky.graph.defs#modlist", description="d")],
        [e.upsert(ev.ListItemUpserted, ALICE, list_uri="at://did:plc:alice/app.bsky.graph.list/3l", subject_did=BOB)],
        [e.upsert(ev.StarterPackUpserted, ALICE, name="sp", list_uri="at://did:plc:alice/app.bsky.graph.list/3l",
                  feed_uris=("at://did:plc:alice/app.bsky.feed.generator/f",))],
        [e.upsert(ev.FeedGeneratorUpserted, ALICE, service_did="did:web:feed.example", display_name="Feed")],
        [e.upsert(ev.ThreadgateUpserted, ALICE, post_uri="at://did:plc:alice/app.bsky.feed.post/3x", allow=("mention",))],
        [e.upsert(ev.LabelerServiceUpserted, ALICE, label_values=("spam",), reason_types=None)],
        [e.upsert(ev.ProfileUpdated, ALICE, display_name="Alice", avatar_cid="bafyavatar")],
    ]


def removals_of(e: Events, created: list[list[object]]) -> list[object]:
    return [e.removal(events[0], NOW + timedelta(minutes=5)) for events in created]


BOOKKEEPING = {"projection_offsets"}



@pytest.mark.parametrize("together", [False, True], ids=["separate-batches", "one-batch"])
async def test_create_then_delete_of_every_collection_leaves_no_row_and_no_count(conn, together) -> None:  # noqa: F811
    e = Events()
    created = every_collection(e)
    creates = [event for events in created for event in events]
    removes = removals_of(e, created)
    offsets = Offsets()
    if together:
        await apply_batch(conn, CONSUMER, offsets.messages(creates + removes))
    else:
        await apply_batch(conn, CONSUMER, offsets.messages(creates))
        during = non_empty(await dump(conn))
        assert {"posts", "likes", "reposts", "follows", "blocks", "replies", "quotes", "lists", "list_items",
                "starter_packs", "feed_generators", "threadgates", "labeler_services", "users",
                "engagement_counts", "threads", "mentions", "hashtags", "links", "media"} <= during.keys()
        await apply_batch(conn, CONSUMER, offsets.messages(removes))
    left = non_empty(await dump(conn))
    history = {table: left.pop(table, 0) for table in ("follower_gains_hourly", "follow_events")}
    assert left.keys() == BOOKKEEPING, left
    # The follow history keeps that a follow and its unfollow happened; they cancel out.
    assert history == {"follower_gains_hourly": 1, "follow_events": 2}
    assert await (await conn.execute("SELECT gained, lost FROM follower_gains_hourly")).fetchall() == [(1, 1)]


async def test_removals_of_records_never_stored_change_nothing(conn) -> None:  # noqa: F811
    e = Events()
    like = e.like(ALICE, "at://did:plc:far/app.bsky.feed.post/3p")
    follow = e.follow(BOB, ALICE)
    await apply_batch(conn, CONSUMER, Offsets().messages([like, follow]))
    before = await dump(conn, skip=("schema_migrations", "projection_offsets"))
    strangers = [
        e.removal(e.like(ALICE, "at://did:plc:far/app.bsky.feed.post/3p")),
        e.removal(e.follow(BOB, ALICE)),
        e.removal(e.post(ALICE)[0]),
    ]
    await apply_batch(conn, "other", Offsets().messages(strangers))
    assert await dump(conn, skip=("schema_migrations", "projection_offsets")) == before


async def test_counts_accumulate_and_deletes_undo_exactly_what_they_counted(conn) -> None:  # noqa: F811
    e = Events()
    [created, enriched] = e.post(ALICE, "popular")
    likes = [e.like(did, created.uri) for did in (BOB, CAROL, DAVE)]
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([created, enriched, *likes]))
    await apply_batch(conn, CONSUMER, offsets.messages([e.like(BOB, created.uri), e.repost(CAROL, created.uri)]))
    await apply_batch(conn, CONSUMER, offsets.messages([e.removal(likes[0]), e.removal(likes[0])]))
    counts = await (await conn.execute(
        "SELECT like_count, repost_count FROM posts_with_counts WHERE uri = %s", (created.uri,)
    )).fetchone()
    assert counts == (3, 1)  # 4 likes - 1 (removed twice, undone once) ; 1 repost
    received = await (await conn.execute(
        "SELECT likes_received, reposts_received, post_count FROM users WHERE did = %s", (ALICE,)
    )).fetchone()
    assert received == (3, 1, 1)


async def test_a_like_of_a_post_never_seen_is_stored_and_counted(conn) -> None:  # noqa: F811
    subject = "at://did:plc:far/app.bsky.feed.post/3unseen"
    await apply_batch(conn, CONSUMER, Offsets().messages([Events().like(ALICE, subject)]))
    assert await scalar(conn, "SELECT count(*) FROM likes WHERE subject_uri = %s", (subject,)) == 1
    assert await scalar(conn, "SELECT count(*) FROM posts") == 0
    assert await scalar(conn, "SELECT like_count FROM engagement_counts WHERE subject_uri = %s", (subject,)) == 1
    assert await scalar(conn, "SELECT likes_received FROM users WHERE did = 'did:plc:far'") == 1


async def test_deleting_a_post_undoes_its_reply_and_quote(conn) -> None:  # noqa: F811
    e = Events()
    parent = e.post(ALICE, "parent")
    answer = e.post(BOB, "answer", reply_to=parent[0].uri, quote=parent[0].uri)
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([*parent, *answer]))
    row = "SELECT reply_count, quote_count FROM engagement_counts WHERE subject_uri = %s"
    assert await (await conn.execute(row, (parent[0].uri,))).fetchone() == (1, 1)
    await apply_batch(conn, CONSUMER, offsets.messages([e.removal(answer[0])]))
    assert await (await conn.execute(row, (parent[0].uri,))).fetchone() is None
    assert await scalar(conn, "SELECT replies_received + quotes_received FROM users WHERE did = %s", (ALICE,)) == 0
    assert await scalar(conn, "SELECT count(*) FROM users WHERE did = %s", (BOB,)) == 0  # nothing left of Bob


async def test_updates_replace_and_a_duplicate_create_counts_once(conn) -> None:  # noqa: F811
    e = Events()
    original = e.post(ALICE, "v1", rkey="3post", hashtags=["one"])
    edited = e.post(ALICE, "v2", NOW + timedelta(minutes=1), rkey="3post", hashtags=["two"], update=True)
    profile = e.upsert(ev.ProfileUpdated, ALICE, display_name="A")
    profile2 = e.upsert(ev.ProfileUpdated, ALICE, NOW + timedelta(minutes=1), display_name="B", update=True)
    lst = e.upsert(ev.ListUpserted, ALICE, rkey="3list", name="n1", purpose="p")
    lst2 = e.upsert(ev.ListUpserted, ALICE, NOW + timedelta(minutes=1), rkey="3list", name="n2", purpose="p", update=True)
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([*original, profile, lst]))
    await apply_batch(conn, CONSUMER, offsets.messages([*edited, profile2, lst2]))
    # A redelivery replays a suffix of the stream in order: the duplicate create, then the update.
    await apply_batch(conn, CONSUMER, offsets.messages([*original, *original]))
    await apply_batch(conn, CONSUMER, offsets.messages([*edited, profile2, lst2]))
    assert await (await conn.execute("SELECT text, updated_at IS NOT NULL FROM posts")).fetchall() == [("v2", True)]
    assert await (await conn.execute("SELECT tag FROM hashtags")).fetchall() == [("two",)]
    assert await scalar(conn, "SELECT post_count FROM users WHERE did = %s", (ALICE,)) == 1
    assert await scalar(conn, "SELECT display_name FROM users WHERE did = %s", (ALICE,)) == "B"
    assert await (await conn.execute("SELECT name, indexed_at < updated_at FROM lists")).fetchall() == [("n2", True)]


async def test_handle_and_status_follow_sequence_numbers(conn) -> None:  # noqa: F811
    e = Events()
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([e.handle(ALICE, "new.test", 20), e.status(ALICE, False, "deactivated", 21)]))
    await apply_batch(conn, CONSUMER, offsets.messages([
        e.handle(ALICE, "old.test", 5), e.status(ALICE, True, "active", 6), e.handle(ALICE, None, 22),
    ]))
    row = await (await conn.execute("SELECT handle, identity_seq, active, status FROM users")).fetchone()
    assert row == ("new.test", 22, False, "deactivated")


async def test_candidates_take_the_latest_decision_and_accumulate_strategies(conn) -> None:  # noqa: F811
    e = Events()
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([
        e.candidate(BOB, "interests", 1.0, ["likes #python"], ALICE, NOW),
        e.candidate(BOB, "newcomers", 0.3, ["first seen"], BOB, NOW),
    ]))
    await apply_batch(conn, CONSUMER, offsets.messages([
        e.candidate(BOB, "interests", 9.0, ["replayed"], CAROL, NOW - timedelta(hours=1)),
        e.candidate(BOB, "interests", 2.0, ["likes #python", "posts #rust"], CAROL, NOW + timedelta(hours=1)),
    ]))
    rows = await (await conn.execute(
        "SELECT strategy, score, reasons, first_seen_at, last_seen_at FROM candidates ORDER BY strategy"
    )).fetchall()
    assert rows == [
        ("interests", 2.0, ["likes #python", "posts #rust"], NOW - timedelta(hours=1), NOW + timedelta(hours=1)),
        ("newcomers", 0.3, ["first seen"], NOW, NOW),
    ]
    assert await scalar(conn, "SELECT strategies FROM users WHERE did = %s", (BOB,)) == ["interests", "newcomers"]


async def test_activity_patterns_accumulate_per_weekday_and_hour(conn) -> None:  # noqa: F811
    e = Events()
    offsets = Offsets()
    saturday_15h = NOW  # 2026-07-04 is a Saturday
    events = [e.activity(ALICE, saturday_15h), e.activity(ALICE, saturday_15h + timedelta(minutes=5)),
              e.activity(ALICE, saturday_15h + timedelta(days=1, hours=2))]
    await apply_batch(conn, CONSUMER, offsets.messages(events[:2]))
    await apply_batch(conn, CONSUMER, offsets.messages(events))  # two of them re-delivered
    rows = await (await conn.execute("SELECT iso_weekday, hour, events FROM activity_patterns ORDER BY 1, 2")).fetchall()
    assert rows == [(6, 15, 2), (7, 17, 1)]


async def test_undecodable_messages_are_dead_lettered_and_their_offsets_advance(conn) -> None:  # noqa: F811
    offsets = Offsets()
    good = offsets.messages([Events().follow(ALICE, BOB)])
    bad = [
        offsets.raw(b"\xff\xfe not json"),
        offsets.raw(orjson.dumps({"schema": "Unheard", "version": 1})),
        offsets.raw(orjson.dumps({"schema": "FollowAdded", "version": 1, "id": "x"})),
        offsets.raw(None),
    ]
    far = commit_source(BOB, "3rev", "app.bsky.graph.follow", "3far", "create", time_us=10**18)  # year 33658
    bad += offsets.messages([ev.FollowAdded.derive(far, uri=f"at://{BOB}/app.bsky.graph.follow/3far", rkey="3far", subject_did=ALICE)])
    result = await apply_batch(conn, CONSUMER, [*good, *bad])
    assert (result.applied, result.dead_lettered) == (6, 5)
    rows = await (await conn.execute(
        "SELECT kafka_offset, code, payload FROM dead_letters ORDER BY kafka_offset"
    )).fetchall()
    assert [(offset, code) for offset, code, _ in rows] == [
        (1, "invalid_json"), (2, "unknown_schema"), (3, "invalid_domain_event"), (4, "invalid_json"),
        (5, "unprojectable"),
    ]
    assert bytes(rows[0][2]) == b"\xff\xfe not json"
    assert await scalar(conn, "SELECT next_offset FROM projection_offsets") == 6
    assert await scalar(conn, "SELECT count(*) FROM follows") == 1


async def test_a_group_of_one_source_events_is_applied_whole_or_dead_lettered_whole(conn) -> None:  # noqa: F811
    offsets = Offsets()
    source = commit_source(ALICE, "3rev", "app.bsky.graph.follow", "3f1", "create", time_us=int(NOW.timestamp() * 1e6))
    follow = ev.FollowAdded.derive(source, uri=f"at://{ALICE}/app.bsky.graph.follow/3f1", rkey="3f1", subject_did=BOB)
    seen = ev.UserSeen.derive(source, time_us=source.time_us)
    far = commit_source(BOB, "3rev", "app.bsky.graph.follow", "3far", "create", time_us=10**18)  # year 33658
    far_seen = ev.UserSeen.derive(far, time_us=source.time_us)  # storable alone, but its source is not
    far_follow = ev.FollowAdded.derive(far, uri=f"at://{BOB}/app.bsky.graph.follow/3far", rkey="3far", subject_did=ALICE)
    batch = [offsets.raw(ev.encode_group([seen, follow])), offsets.raw(ev.encode_group([far_seen, far_follow]))]
    result = await apply_batch(conn, CONSUMER, batch)
    assert (result.applied, result.events, result.dead_lettered) == (2, 2, 1)
    assert await scalar(conn, "SELECT count(*) FROM follows") == 1
    assert await scalar(conn, "SELECT follow_count FROM users WHERE did = %s", (ALICE,)) == 1
    assert await scalar(conn, "SELECT count(*) FROM users WHERE did = %s", (BOB,)) == 1  # the follow's subject
    rows = await (await conn.execute("SELECT kafka_offset, code, payload FROM dead_letters")).fetchall()
    assert [(offset, code) for offset, code, _ in rows] == [(1, "unprojectable")]
    assert bytes(rows[0][2]) == batch[1].value  # the whole group, as it was, for a re-drive
    again = await apply_batch(conn, CONSUMER, batch)  # re-delivered: skipped
    assert (again.applied, again.skipped) == (0, 2)


async def test_offsets_are_kept_per_consumer_topic_and_partition(conn) -> None:  # noqa: F811
    e = Events()
    zero, one = Offsets(), Offsets()
    batch = zero.messages([e.follow(ALICE, BOB)], partition=0) + one.messages([e.follow(BOB, ALICE)] * 2, partition=1)
    result = await apply_batch(conn, CONSUMER, batch)
    assert result.next_offsets == {("growth.events", 0): 1, ("growth.events", 1): 2}
    other = await apply_batch(conn, "rebuild", batch)  # another consumer applies on its own marks
    assert other.applied == 3
    rows = await (await conn.execute(
        "SELECT consumer, topic, partition, next_offset FROM projection_offsets ORDER BY 1, 3"
    )).fetchall()
    assert rows == [
        ("projector", "growth.events", 0, 1), ("projector", "growth.events", 1, 2),
        ("rebuild", "growth.events", 0, 1), ("rebuild", "growth.events", 1, 2),
    ]


async def test_concurrent_workers_sharing_counters_neither_deadlock_nor_lose_counts(database_url, schema) -> None:  # noqa: F811
    e = Events()
    posts = [f"at://did:plc:author{i}/app.bsky.feed.post/3p{i}" for i in range(30)]
    authors = [f"did:plc:author{i}" for i in range(30)]
    rounds = 8
    offsets = Offsets()
    batches: list[list[list[object]]] = [[], []]
    for _ in range(rounds):
        # Both partitions touch the same posts, authors and followed accounts, in opposite orders.
        batches[0].append(offsets.messages(
            [e.like("did:plc:w0", uri) for uri in posts] + [e.follow("did:plc:w0", did) for did in authors], partition=0))
        batches[1].append(offsets.messages(
            [e.like("did:plc:w1", uri) for uri in reversed(posts)] + [e.follow("did:plc:w1", did) for did in reversed(authors)],
            partition=1))
    workers = [await connect(database_url, schema) for _ in range(2)]

    async def work(index: int) -> None:
        for batch in batches[index]:
            await apply_batch(workers[index], CONSUMER, batch)  # no retry: a deadlock would fail the test

    await asyncio.gather(work(0), work(1))
    for worker in workers:
        await worker.close()
    check = await connect(database_url, schema)
    assert await scalar(check, "SELECT sum(like_count) FROM engagement_counts") == 2 * rounds * len(posts)
    assert await scalar(check, "SELECT min(follower_count) FROM users WHERE did LIKE 'did:plc:author%%'") == 2 * rounds
    assert await scalar(check, "SELECT min(likes_received) FROM users WHERE did LIKE 'did:plc:author%%'") == 2 * rounds
    await check.close()


async def test_a_users_row_another_worker_prunes_meanwhile_is_created_again_and_counted(database_url, schema) -> None:  # noqa: F811
    """A users stub can vanish while a batch waits to lock it (another worker pruned it): the
    batch creates it again once that worker commits, and no count is lost."""
    setup, pruner, worker = [await connect(database_url, schema) for _ in range(3)]
    await setup.execute("INSERT INTO users (did) VALUES (%s)", (BOB,))  # a stub: nothing refers to it
    deleted, pruned = asyncio.Event(), asyncio.Event()

    async def prune() -> None:
        async with pruner.transaction():
            await pruner.execute("DELETE FROM users WHERE did = %s", (BOB,))
            deleted.set()
            await pruned.wait()

    async def waiting_for_a_lock(pid: int) -> bool:
        for _ in range(100):
            if await scalar(setup, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)):
                return True
            await asyncio.sleep(0.1)
        return False

    pruning = asyncio.create_task(prune())
    await asyncio.wait_for(deleted.wait(), 10)  # the pruner's open transaction holds BOB's row
    applying = asyncio.create_task(apply_batch(worker, CONSUMER, Offsets().messages([Events().follow(ALICE, BOB)])))
    assert await waiting_for_a_lock(worker.info.backend_pid)  # the batch waits for the row the pruner deletes
    assert not applying.done()
    pruned.set()
    await pruning
    result = await asyncio.wait_for(applying, 10)
    assert result.applied == 1
    rows = await (await setup.execute("SELECT did, follower_count, follow_count FROM users ORDER BY did")).fetchall()
    assert rows == [(ALICE, 0, 1), (BOB, 1, 0)]
    for connection in (setup, pruner, worker):
        await connection.close()


@pytest.mark.parametrize("size", [1, 3, 7])
async def test_the_outcome_does_not_depend_on_how_the_stream_is_cut_into_batches(database_url, make_schema, size) -> None:  # noqa: F811
    e = Events()
    created = every_collection(e)
    stream = mixed_events(e) + [event for events in created for event in events] + removals_of(e, created)
    stream += [e.follow(DAVE, ALICE, NOW + timedelta(hours=2)), e.handle(BOB, None, 30), e.handle(BOB, "late.test", 25)]
    messages = Offsets().messages(stream)
    whole, cut = await make_schema("whole"), await make_schema("cut")
    one, many = await connect(database_url, whole), await connect(database_url, cut)
    await apply_batch(one, CONSUMER, messages)
    for start in range(0, len(messages), size):
        await apply_batch(many, CONSUMER, messages[start : start + size])
    assert await dump(many) == await dump(one)
    await one.close()
    await many.close()


async def test_nul_characters_which_postgres_text_cannot_hold_are_dropped(conn) -> None:  # noqa: F811
    e = Events()
    events = e.post(ALICE, "nul\x00byte and a literal \\u0000", hashtags=["ta\x00g", "tag"])
    await apply_batch(conn, CONSUMER, Offsets().messages(events))
    assert await scalar(conn, "SELECT text FROM posts") == "nulbyte and a literal \\u0000"
    assert await (await conn.execute("SELECT tag FROM hashtags")).fetchall() == [("tag",)]


async def test_the_appview_profile_replaces_what_it_covers_in_kafka_order(conn) -> None:  # noqa: F811
    e = Events()
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([
        e.handle(CAROL, "carol.old", 7),
        e.upsert(ev.ProfileUpdated, CAROL, NOW - timedelta(hours=1), display_name="From the record", pronouns="she/her"),
        e.appview_profile(CAROL, "carol.new", 1500, display_name="From the AppView", follows_count=20, posts_count=300,
                          created_at="2024-01-02T03:04:05Z", labels=("!no-unauthenticated",)),
    ]))
    row = await (await conn.execute(
        "SELECT handle, display_name, pronouns, appview_followers_count, appview_follows_count, appview_posts_count, "
        "account_created_at, appview_labels, appview_fetched_at, follower_count FROM users WHERE did = %s", (CAROL,)
    )).fetchone()
    assert row == ("carol.new", "From the AppView", "she/her", 1500, 20, 300,
                   datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), ["!no-unauthenticated"], NOW, 0)
    await apply_batch(conn, CONSUMER, offsets.messages([
        e.upsert(ev.ProfileUpdated, CAROL, NOW + timedelta(hours=1), display_name="Edited later", update=True),
        e.handle(CAROL, "carol.older", 6),  # an identity event older than the one stored: ignored
    ]))
    row = await (await conn.execute(
        "SELECT handle, display_name, pronouns, appview_followers_count FROM users WHERE did = %s", (CAROL,)
    )).fetchone()
    assert row == ("carol.new", "Edited later", None, 1500)


async def test_growth_actions_are_recorded_once(conn) -> None:  # noqa: F811
    e = Events()
    action = e.growth_action("did:plc:engine", "like", BOB, "popular post", subject_uri=f"at://{BOB}/app.bsky.feed.post/3p")
    offsets = Offsets()
    await apply_batch(conn, CONSUMER, offsets.messages([action, action]))
    await apply_batch(conn, CONSUMER, offsets.messages([action]))
    rows = await (await conn.execute("SELECT did, action, subject_did, subject_uri, reason, occurred_at FROM growth_actions")).fetchall()
    assert rows == [("did:plc:engine", "like", BOB, f"at://{BOB}/app.bsky.feed.post/3p", "popular post", NOW)]


async def test_observed_edges_give_the_graph_a_base_and_a_crawled_loss_is_an_unfollow_once(conn) -> None:  # noqa: F811
    from domain.crawl import FOLLOWERS, crawl_source, observed_graph

    e, offsets = Events(), Offsets()
    at = int(NOW.timestamp() * 1e6)
    first = observed_graph(ALICE, FOLLOWERS, [BOB, CAROL, DAVE], True, set(), crawl_source("r1", ALICE, at))
    await apply_batch(conn, CONSUMER, offsets.messages(first.events))
    rows = await (await conn.execute("SELECT did, subject_did, observed_at FROM observed_follows ORDER BY did")).fetchall()
    assert rows == [(BOB, ALICE, NOW), (CAROL, ALICE, NOW), (DAVE, ALICE, NOW)]
    assert await scalar(conn, "SELECT count(*) FROM follow_events") == 0  # an observation is no gain

    # a later read of the whole list without BOB: a loss, counted once even if delivered twice
    later = NOW + timedelta(hours=2)
    second = observed_graph(ALICE, FOLLOWERS, [CAROL, DAVE], True, {BOB, CAROL, DAVE},
                            crawl_source("r2", ALICE, int(later.timestamp() * 1e6)))
    assert [(x.did, x.subject_did) for x in second.lost] == [(BOB, ALICE)]
    await apply_batch(conn, CONSUMER, offsets.messages([*second.events, *second.events]))
    await apply_batch(conn, CONSUMER, offsets.messages(second.events))
    assert await scalar(conn, "SELECT count(*) FROM observed_follows") == 2
    assert await (await conn.execute("SELECT did, kind, occurred_at FROM follow_events")).fetchall() == [(BOB, "unfollow", later)]
    assert await (await conn.execute("SELECT did, gained, lost FROM follower_gains_hourly")).fetchall() == [(ALICE, 0, 1)]

    # CAROL's follow seen on the firehose and undone there: the observed edge is forgotten, so a
    # crawl finding it gone later does not count the unfollow a second time
    follow = e.follow(CAROL, ALICE)
    await apply_batch(conn, CONSUMER, offsets.messages([follow, e.removal(follow, later)]))
    third = observed_graph(ALICE, FOLLOWERS, [DAVE], True, {CAROL, DAVE},
                           crawl_source("r3", ALICE, int((later + timedelta(hours=1)).timestamp() * 1e6)))
    await apply_batch(conn, CONSUMER, offsets.messages(third.events))
    kinds = await (await conn.execute("SELECT did, kind FROM follow_events ORDER BY occurred_at, kind")).fetchall()
    assert sorted(kinds) == [(BOB, "unfollow"), (CAROL, "follow"), (CAROL, "unfollow")]
    assert await (await conn.execute("SELECT did, subject_did FROM observed_follows")).fetchall() == [(DAVE, ALICE)]


def test_every_domain_event_type_has_a_projection() -> None:
    missing = {event_type.__name__ for event_type in ev.EVENT_TYPES} - {t.__name__ for t in PROJECTED_TYPES}
    assert not missing, f"teach projections.plan to project {sorted(missing)}"
