"""Growth analytics on hand-built data: each query answers what a person counting would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from projections import apply_batch, queries
from tests.integration.projection_support import NOW, Events, Offsets, conn, make_schema, schema  # noqa: F401

H = timedelta(hours=1)
A, B, C, D, E = (f"did:plc:{name}" for name in "abcde")
P, Q, R = "did:plc:poster", "did:plc:quoted", "did:plc:celebrity"


async def project(conn, events, partition: int = 0) -> None:  # noqa: F811
    """Apply ``events`` as one batch of a partition of its own (offsets from 0)."""
    await apply_batch(conn, "projector", Offsets().messages(events, partition=partition))


def followers(e: Events, subject: str, count: int, at: datetime, prefix: str) -> list[object]:
    return [e.follow(f"did:plc:{prefix}{i}", subject, at) for i in range(count)]


async def test_trending_counts_follows_within_24_hours_minus_unfollows(conn) -> None:  # noqa: F811
    e = Events()
    a_follows = followers(e, A, 3, NOW - H, "fa")
    c_follows = followers(e, C, 2, NOW - 3 * H, "fc")
    e_follow = e.follow("did:plc:fe", E, NOW - 48 * H)
    await project(conn, [
        *a_follows, e.removal(a_follows[0], NOW - H / 2),
        *followers(e, B, 5, NOW - 30 * H, "fb-old"), *followers(e, B, 1, NOW - 2 * H, "fb-new"),
        *c_follows, *(e.removal(f, NOW - 2 * H) for f in c_follows),
        *followers(e, D, 4, NOW + 2 * H, "fd"),  # after "now": not yet
        e_follow, e.removal(e_follow, NOW - H),
    ])
    trending = await queries.trending_accounts(conn, now=NOW)
    assert [(t["did"], t["gained"], t["lost"], t["net_gain"]) for t in trending] == [(A, 3, 1, 2), (B, 1, 0, 1)]
    assert trending[1]["follower_count"] == 6
    wider = await queries.trending_accounts(conn, now=NOW, hours=48)
    assert [(t["did"], t["net_gain"]) for t in wider] == [(B, 6), (A, 2)]


async def test_fastest_growing_is_relative_to_a_base_of_at_least_100_followers(conn) -> None:  # noqa: F811
    e = Events()
    old, new = NOW - 48 * H, NOW - H
    await project(conn, [
        *followers(e, "did:plc:x", 150, old, "xo"), *followers(e, "did:plc:x", 30, new, "xn"),  # 30 / 150
        *followers(e, "did:plc:y", 50, old, "yo"), *followers(e, "did:plc:y", 40, new, "yn"),  # base 50: too small
        *followers(e, "did:plc:z", 100, old, "zo"), *followers(e, "did:plc:z", 10, new, "zn"),  # 10 / 100
        *followers(e, "did:plc:w", 400, old, "wo"), *followers(e, "did:plc:w", 60, new, "wn"),  # 60 / 400
    ])
    fastest = await queries.fastest_growing_accounts(conn, now=NOW)
    assert [(f["did"], f["base"], round(f["relative_gain"], 3)) for f in fastest] == [
        ("did:plc:x", 150, 0.2), ("did:plc:w", 400, 0.15), ("did:plc:z", 100, 0.1),
    ]
    # Once the crawl has fetched Y's profile, the AppView's total is its follower count: base 1960.
    await project(conn, [e.appview_profile("did:plc:y", "y.test", 2000, NOW - H / 4)], partition=1)
    crawled = await queries.fastest_growing_accounts(conn, now=NOW)
    assert [(f["did"], f["base"], f["followers"]) for f in crawled][-1] == ("did:plc:y", 1960, 2000)
    anyone = await queries.fastest_growing_accounts(conn, now=NOW, min_base=1, limit=1)
    assert [(f["did"], round(f["relative_gain"], 2)) for f in anyone] == [("did:plc:x", 0.2)]
    trending = await queries.trending_accounts(conn, now=NOW)
    assert [t["did"] for t in trending] == ["did:plc:w", "did:plc:y", "did:plc:x", "did:plc:z"]


def engagement_world(e: Events) -> tuple[list[object], dict[str, str]]:
    recent = e.post(P, "recent post", NOW - H)
    old = e.post(P, "old post", NOW - 30 * H)
    quoted = e.post(Q, "worth quoting", NOW - 2 * H)
    quiet = e.post(R, "nobody cares", NOW - H)
    events = [
        *recent, *old, *quoted, *quiet,
        *(e.like(f"did:plc:l{i}", recent[0].uri, NOW - H / 2) for i in range(3)),
        e.repost("did:plc:r1", recent[0].uri, NOW - H / 2),
        *(e.like(f"did:plc:o{i}", old[0].uri, NOW - 29 * H) for i in range(10)),
        *e.post("did:plc:rep1", "reply one", NOW - H, reply_to=quoted[0].uri),
        *e.post("did:plc:rep2", "reply two", NOW - H, reply_to=quoted[0].uri),
        *e.post("did:plc:quo", "look at this", NOW - H, quote=quoted[0].uri),
        *followers(e, R, 20, NOW - 50 * H, "fan"),  # the most followed account gets no engagement
    ]
    return events, {"recent": recent[0].uri, "old": old[0].uri, "quoted": quoted[0].uri, "quiet": quiet[0].uri}


async def test_engagement_leaders_rank_by_engagement_received_not_followers(conn) -> None:  # noqa: F811
    events, _ = engagement_world(Events())
    await project(conn, events)
    leaders = await queries.engagement_leaders(conn)
    assert [(u["did"], u["engagement"], u["likes_received"], u["replies_received"]) for u in leaders] == [
        (P, 14, 13, 0), (Q, 3, 0, 2),
    ]


async def test_top_posts_of_24_hours_weigh_likes_reposts_replies_and_quotes(conn) -> None:  # noqa: F811
    events, uris = engagement_world(Events())
    await project(conn, events)
    top = await queries.top_posts(conn, now=NOW)
    assert [(p["uri"], p["score"]) for p in top] == [(uris["quoted"], 3 * 2 + 2 * 1), (uris["recent"], 3 + 2 * 1)]
    assert (top[0]["reply_count"], top[0]["quote_count"]) == (2, 1)
    assert [p["uri"] for p in await queries.top_posts(conn, now=NOW, hours=48, limit=1)] == [uris["old"]]


async def test_hashtag_trends_count_per_hour_within_the_window(conn) -> None:  # noqa: F811
    e = Events()
    await project(conn, [
        *e.post(A, "#python #rust", NOW - H / 2, hashtags=["python", "rust"]),
        *e.post(B, "#python", NOW - 1.5 * H, hashtags=["python"]),
        *e.post(C, "#python", NOW - 2.5 * H, hashtags=["python"]),
        *e.post(D, "#old", NOW - 30 * H, hashtags=["old"]),
    ])
    trends = await queries.hashtag_trends(conn, now=NOW, hours=24)
    hour = NOW.replace(minute=0)
    assert trends == [
        {"tag": "python", "total": 3, "hourly": [
            {"hour": hour - 3 * H, "count": 1}, {"hour": hour - 2 * H, "count": 1}, {"hour": hour - H, "count": 1},
        ]},
        {"tag": "rust", "total": 1, "hourly": [{"hour": hour - H, "count": 1}]},
    ]


async def test_activity_heatmap_places_actions_by_weekday_and_hour(conn) -> None:  # noqa: F811
    e = Events()
    saturday_15h = datetime(2026, 7, 4, 15, 10, tzinfo=UTC)
    await project(conn, [e.activity(A, saturday_15h), e.activity(A, saturday_15h + timedelta(minutes=20)),
                         e.activity(A, saturday_15h + timedelta(days=1, hours=2)), e.activity(B, saturday_15h)])
    heatmap = await queries.activity_heatmap(conn, A)
    assert heatmap["total"] == 3
    assert heatmap["grid"][5][15] == 2 and heatmap["grid"][6][17] == 1
    assert heatmap["peak"] == {"iso_weekday": 6, "hour": 15, "events": 2}
    assert (await queries.activity_heatmap(conn, "did:plc:nobody"))["peak"] is None


async def test_network_stats_count_the_network_and_recent_events(conn) -> None:  # noqa: F811
    e = Events()
    await project(conn, [
        *e.post(A, "hi", NOW - H), e.follow(A, B), e.follow(B, A), e.like(B, "at://did:plc:a/app.bsky.feed.post/x"),
        *(e.activity(A, NOW - timedelta(minutes=m)) for m in (1, 2, 3, 4, 30)),
    ])
    stats = await queries.network_stats(conn, now=NOW, minutes=5)
    assert {key: stats[key] for key in ("users", "follows", "posts", "likes", "reposts", "blocks")} == {
        "users": 2, "follows": 2, "posts": 1, "likes": 1, "reposts": 0, "blocks": 0,
    }
    assert stats["events_per_minute"] == 4 / 5
    assert stats["approximate"] == []


async def test_user_profile_has_counts_status_candidate_reasons_and_recent_activity(conn) -> None:  # noqa: F811
    e = Events()
    post = e.post(P, "about me", NOW - H)
    await project(conn, [
        e.seen(P, NOW - 2 * H), e.seen(P, NOW - H), e.handle(P, "poster.test", 1), e.status(P, True, "active", 2),
        *post, e.activity(P, NOW - H, "app.bsky.feed.post"), e.like(A, post[0].uri),
        *followers(e, P, 3, NOW - H, "pf"),
        e.candidate(P, "interests", 2.5, ["posts about #python"], actor=P),
        e.candidate(P, "newcomers", 0.3, ["first seen today"], actor=P),
        e.growth_action("did:plc:engine", "follow", P, "candidate of interests", NOW - H / 2),
    ])
    profile = await queries.user_profile(conn, "@Poster.test", now=NOW)
    assert profile is not None
    assert (profile["did"], profile["handle"], profile["active"], profile["status"]) == (P, "poster.test", True, "active")
    assert (profile["follower_count"], profile["post_count"], profile["likes_received"]) == (3, 1, 1)
    assert (profile["first_seen_at"], profile["last_seen_at"]) == (NOW - 2 * H, NOW - H)
    assert [(c["strategy"], c["reasons"]) for c in profile["candidates"]] == [
        ("interests", ["posts about #python"]), ("newcomers", ["first seen today"]),
    ]
    assert profile["strategies"] == ["interests", "newcomers"]
    assert profile["follower_gain_24h"] == {"gained": 3, "lost": 0, "net": 3}
    assert [(a["collection"], a["occurred_at"]) for a in profile["recent_activity"]] == [("app.bsky.feed.post", NOW - H)]
    assert [(p["text"], p["like_count"]) for p in profile["recent_posts"]] == [("about me", 1)]
    assert [(a["action"], a["reason"]) for a in profile["growth_actions"]] == [("follow", "candidate of interests")]
    recent = await queries.growth_actions(conn, now=NOW)
    assert [(a["action"], a["subject_did"], a["subject_handle"]) for a in recent] == [("follow", P, "poster.test")]
    assert (await queries.user_profile(conn, P, now=NOW))["handle"] == "poster.test"
    assert await queries.user_profile(conn, "did:plc:unknown", now=NOW) is None


async def test_candidates_by_strategy_best_first(conn) -> None:  # noqa: F811
    e = Events()
    await project(conn, [
        e.candidate(A, "interests", 1.0, ["a"], actor=A), e.candidate(B, "interests", 3.0, ["b"], actor=B),
        e.candidate(C, "interests", 2.0, ["c"], actor=C), e.candidate(D, "newcomers", 9.0, ["d"], actor=D),
        e.handle(B, "b.test", 1),
    ])
    found = await queries.candidates_by_strategy(conn, "interests")
    assert [(c["did"], c["score"]) for c in found] == [(B, 3.0), (C, 2.0), (A, 1.0)]
    assert found[0]["handle"] == "b.test"
    assert [c["did"] for c in await queries.candidates_by_strategy(conn, "interests", min_score=1.5)] == [B, C]
    assert [(s["strategy"], s["candidates"]) for s in await queries.candidate_strategies(conn)] == [
        ("interests", 3), ("newcomers", 1),
    ]


async def test_parameters_out_of_bounds_are_refused(conn) -> None:  # noqa: F811
    with pytest.raises(ValueError, match="limit"):
        await queries.trending_accounts(conn, now=NOW, limit=0)
    with pytest.raises(ValueError, match="hours"):
        await queries.top_posts(conn, now=NOW, hours=10_000)
    with pytest.raises(ValueError, match="timezone-aware"):
        await queries.hashtag_trends(conn, now=datetime(2026, 7, 4))
