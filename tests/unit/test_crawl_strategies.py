"""The crawl strategies' decisions, as pure functions: profile enrichment, snowball, popular
search, post interactions and the growth actions' plans."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from returns.result import Failure, Success

from domain.appview import (
    FeedViewPost,
    Notification,
    PostView,
    ProfileView,
    ProfileViewDetailed,
)
from domain.crawl import (
    DAY_US,
    FOLLOWERS,
    FOLLOWS,
    POPULAR_SEARCH,
    POST_INTERACTIONS,
    SNOWBALL,
    EnrichmentConfig,
    Interaction,
    InteractionsConfig,
    Neighbour,
    SearchConfig,
    SnowballConfig,
    batches,
    crawl_source,
    day_start_us,
    enrichment_decision,
    expansion_request,
    follower_bounds,
    interaction_candidates,
    interactions_request,
    new_neighbours,
    observed_graph,
    plan_follow_back,
    plan_like_mentions,
    popular_search_candidates,
    profiles_to_fetch,
    recent_posts,
    search_requests,
    snowball_params,
    snowball_request,
    snowball_step,
)
from domain.events import UserSeen
from domain.identity import sequence_source

T = 1_783_175_888_000_000  # 2026-07-04T14:38:08Z
ME = "did:plc:me0000000000000000000000"


def did(n: int) -> str:
    return f"did:plc:user{n:020d}"


def view(n: int, **extra: Any) -> ProfileView:
    return ProfileView.model_validate({"did": did(n), "handle": f"user{n}.test", **extra})


def detailed(n: int, followers: int | None, **extra: Any) -> ProfileViewDetailed:
    return ProfileViewDetailed.model_validate({"did": did(n), "handle": f"user{n}.test", "followersCount": followers,
                                               "followsCount": 1, "postsCount": 2, **extra})


def post_view(n: int, author: int, likes: int = 0, reposts: int = 0) -> PostView:
    return PostView.model_validate({"uri": f"at://{did(author)}/app.bsky.feed.post/3p{n:011d}", "cid": "bafyrei",
                                    "author": {"did": did(author), "handle": f"user{author}.test"},
                                    "record": {"text": f"post {n}"}, "likeCount": likes, "repostCount": reposts,
                                    "indexedAt": "2026-07-04T00:00:00.000Z"})


def seen(n: int, time_us: int = T) -> UserSeen:
    return UserSeen.derive(sequence_source(did(n), "account", 1, time_us), time_us=time_us)


# --- profile enrichment --------------------------------------------------------------------------


def test_a_newly_seen_account_gets_its_profile_requested_once_per_refresh_period() -> None:
    config = EnrichmentConfig(refresh_after_us=DAY_US)
    first = enrichment_decision(seen(1), None, config).unwrap()
    assert first.did == did(1) and first.origin.startswith("UserSeen ")
    declined = enrichment_decision(seen(1, T + 3600 * 10**6), T, config)
    assert isinstance(declined, Failure) and declined.failure().code == "fresh"
    later_same_period = enrichment_decision(seen(1, T + 1), None, config).unwrap()
    next_period = enrichment_decision(seen(1, T + DAY_US), T, config).unwrap()
    assert later_same_period.id == first.id != next_period.id  # a replay makes the same request
    off = enrichment_decision(seen(1), None, EnrichmentConfig(enabled=False))
    assert off.failure().code == "disabled"


def test_profiles_are_fetched_when_stale_once_per_batch_25_a_call() -> None:
    config = EnrichmentConfig(refresh_after_us=DAY_US)
    requests = [enrichment_decision(seen(n % 60), None, config).unwrap() for n in range(70)]
    fetched = {did(0): T - 10, did(1): T - 2 * DAY_US}  # 0 fresh, 1 stale
    todo, declined = profiles_to_fetch(requests, fetched, T, config)
    assert [r.did for r in todo] == [did(n) for n in range(1, 60)]
    assert sorted(d.code for _, d in declined) == ["duplicate"] * 9 + ["fresh"] * 2
    assert [len(chunk) for chunk in batches(todo, 25)] == [25, 25, 9]


# --- snowball ------------------------------------------------------------------------------------


def test_neighbours_are_followers_then_follows_once_each_without_known_accounts() -> None:
    found = new_neighbours(did(0), [view(1), view(2), view(0), view(3)], [view(2), view(4), view(3), view(5)],
                           known={did(3), did(5)})
    assert [n.did for n in found] == [did(1), did(2), did(4)]
    assert (found[1].follows_parent, found[1].followed_by_parent) == (True, True)
    assert (found[2].follows_parent, found[2].followed_by_parent) == (False, True)


def test_follower_bounds_use_the_real_counts() -> None:
    params = snowball_params(SnowballConfig(min_followers=2, max_followers=10))
    assert isinstance(follower_bounds(detailed(1, 2), params), Success)
    assert isinstance(follower_bounds(detailed(1, 10), params), Success)
    assert follower_bounds(detailed(1, 1), params).failure().code == "too_few_followers"
    assert follower_bounds(detailed(1, 11), params).failure().code == "too_many_followers"
    assert follower_bounds(detailed(1, None), params).failure().code == "no_count"  # lists carry no counts
    unbounded = snowball_params(SnowballConfig(max_followers=None))
    assert isinstance(follower_bounds(detailed(1, 10**9), unbounded), Success)


def _expansion(degree: int = 0, **bounds: Any):  # type: ignore[no-untyped-def]
    start = snowball_request(["user0.test"], SnowballConfig(**bounds), label="t", requested_at_us=T)
    return expansion_request(start.id, did(0), "user0.test", degree, "user0.test", start.params,
                             requested_at_us=T, parent_id=start.id)


def test_a_snowball_step_keeps_accounts_within_bounds_and_expands_them_below_the_max_degree() -> None:
    request = _expansion(0, min_followers=1, max_followers=100, max_degree=2)
    neighbours = [Neighbour(did=did(n), handle=f"user{n}.test", follows_parent=True) for n in (1, 2, 3, 4)]
    profiles = {did(1): detailed(1, 5), did(2): detailed(2, 0), did(3): detailed(3, 500)}  # 4: no profile
    source = crawl_source(request.id, did(0), T)
    step = snowball_step(request, neighbours, profiles, 0, source, T)
    assert [c.did for c in step.candidates] == [did(1)]
    (kept,) = step.candidates
    assert kept.strategy == SNOWBALL and kept.score == 1.0 and kept.source.did == did(0)
    assert kept.reasons == ("follows user0.test", "degree 1 of the snowball from user0.test",
                            "5 followers (bounds 1-100)")
    assert [(e.did, e.degree, e.crawl_id) for e in step.expansions] == [(did(1), 1, request.crawl_id)]
    assert [(d.did, d.accepted, d.reason) for d in step.discoveries] == [
        (did(1), True, "kept"), (did(2), False, "too_few_followers"), (did(3), False, "too_many_followers"),
        (did(4), False, "no_profile")]
    assert [p.did for p in step.profiles] == [did(1), did(2), did(3)]  # what was fetched is kept too
    assert snowball_step(request, neighbours, profiles, 0, source, T) == step  # deterministic ids


def test_a_snowball_step_at_the_last_degree_expands_nothing_and_stops_at_max_users() -> None:
    last = _expansion(1, max_degree=2, max_users=3)
    neighbours = [Neighbour(did=did(n), handle=f"user{n}.test", followed_by_parent=True) for n in range(1, 6)]
    profiles = {did(n): detailed(n, 5) for n in range(1, 6)}
    step = snowball_step(last, neighbours, profiles, 1, crawl_source(last.id, did(0), T), T)
    assert [c.did for c in step.candidates] == [did(1), did(2)]  # 1 kept before: 3 at most
    assert step.expansions == ()
    assert [d.reason for d in step.discoveries] == ["kept", "kept", "max_users", "max_users", "max_users"]
    assert step.candidates[0].score == 0.5 and step.candidates[0].reasons[0] == "followed by user0.test"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 50)), max_size=30), st.integers(0, 10), st.integers(1, 12),
       st.integers(0, 20), st.integers(0, 40))
def test_a_snowball_step_never_keeps_more_than_max_users_nor_outside_the_bounds(
        counts: list[int | None], before: int, max_users: int, low: int, span: int) -> None:
    request = _expansion(0, max_users=max_users, min_followers=low, max_followers=low + span)
    neighbours = [Neighbour(did=did(n), handle=f"user{n}.test") for n in range(len(counts))]
    profiles = {did(n): detailed(n, c) for n, c in enumerate(counts) if c is not None or n % 2}
    step = snowball_step(request, neighbours, profiles, before, crawl_source(request.id, did(99), T), T)
    assert len(step.candidates) <= max(0, max_users - before)
    assert len(step.discoveries) == len(neighbours)
    for found in step.candidates:
        count = profiles[found.did].followers_count
        assert count is not None and low <= count <= low + span


# --- popular search ------------------------------------------------------------------------------


def test_popular_search_keeps_authors_of_posts_with_enough_likes_one_candidate_each() -> None:
    (request,) = search_requests(SearchConfig(queries=("#art",), min_likes=10), label="t", requested_at_us=T)
    posts = [post_view(1, 1, likes=12), post_view(2, 1, likes=30, reposts=2), post_view(3, 2, likes=9),
             post_view(4, 3, likes=10), post_view(2, 1, likes=30)]
    found = popular_search_candidates(request, posts, T).unwrap()
    assert [(c.did, c.score) for c in found] == [(did(1), 30.0), (did(3), 10.0)]
    best = found[0]
    assert best.strategy == POPULAR_SEARCH and best.subject_uri == posts[1].uri
    assert best.reasons == (f"{posts[1].uri}: 30 likes, 2 reposts (search '#art')",
                            f"{posts[0].uri}: 12 likes, 0 reposts (search '#art')")
    nothing = popular_search_candidates(request, [post_view(3, 2, likes=9)], T)
    assert nothing.failure().code == "below_threshold"


# --- post interactions ---------------------------------------------------------------------------


def test_recent_posts_are_the_actors_own_posts_not_its_reposts() -> None:
    mine = [post_view(n, 0) for n in range(4)]
    feed = [FeedViewPost(post=mine[0], reason={"$type": "app.bsky.feed.defs#reasonPin"}),
            FeedViewPost(post=post_view(9, 7), reason={"$type": "app.bsky.feed.defs#reasonRepost",
                                                       "by": {"did": did(0), "handle": "user0.test"}}),
            FeedViewPost(post=mine[0]), FeedViewPost(post=mine[1]), FeedViewPost(post=mine[2]),
            FeedViewPost(post=mine[3])]
    assert [p.uri for p in recent_posts(feed, did(0), 3)] == [mine[0].uri, mine[1].uri, mine[2].uri]


def test_everyone_who_interacted_is_a_candidate_scored_by_weighted_interactions() -> None:
    request = interactions_request("user0.test", InteractionsConfig(), label="t", requested_at_us=T)
    uri = post_view(1, 0).uri
    interactions = [Interaction(did=did(1), handle="user1.test", kind="like", post_uri=uri),
                    Interaction(did=did(1), handle="user1.test", kind="reply", post_uri=uri),
                    Interaction(did=did(1), handle="user1.test", kind="like", post_uri=uri),  # a repeat
                    Interaction(did=did(2), handle="user2.test", kind="repost", post_uri=uri),
                    Interaction(did=did(0), handle="user0.test", kind="reply", post_uri=uri)]  # the actor
    found = interaction_candidates(request, did(0), interactions, InteractionsConfig(), T).unwrap()
    assert [(c.did, c.score, c.reasons) for c in found] == [
        (did(1), 4.0, (f"liked {uri}", f"replied to {uri}")), (did(2), 2.0, (f"reposted {uri}",))]
    assert all(c.strategy == POST_INTERACTIONS and c.source.did == did(0) for c in found)
    nobody = interaction_candidates(request, did(0), interactions[-1:], InteractionsConfig(), T)
    assert nobody.failure().code == "no_interaction"


# --- growth actions ------------------------------------------------------------------------------


def test_follow_back_plans_followers_not_followed_yet_within_the_cap() -> None:
    followers = [view(1), view(2), view(3, viewer={"following": "at://x/app.bsky.graph.follow/1"}),
                 view(4, viewer={"blocking": "at://x/app.bsky.graph.block/1"}), view(5), view(6), view(7)]
    follows = [view(2), view(8)]
    plan = plan_follow_back(ME, followers + [ProfileView(did=ME, handle="me.test")], follows, {did(5)}, 10)
    assert [(a.action, a.subject) for a in plan] == [("follow", did(1)), ("follow", did(6)), ("follow", did(7))]
    assert plan[0].reason == "user1.test follows us and we do not follow them"
    assert [a.subject for a in plan_follow_back(ME, followers, follows, set(), 2)] == [did(1), did(5)]
    assert plan_follow_back(ME, followers, follows, set(), 0) == ()


def notification(n: int, reason: str, indexed_at: str, author: int = 1) -> Notification:
    return Notification.model_validate({
        "uri": f"at://{did(author)}/app.bsky.feed.post/3n{n:011d}", "cid": f"bafyrei{n}", "reason": reason,
        "author": {"did": did(author) if author >= 0 else ME, "handle": f"user{author}.test"},
        "record": {"text": "hi @me"}, "isRead": False, "indexedAt": indexed_at})


def test_like_mentions_plans_recent_mentions_by_others_within_the_cap() -> None:
    now = T
    items = [notification(1, "mention", "2026-07-04T14:00:00.000Z"),
             notification(2, "reply", "2026-07-04T14:00:00.000Z"),
             notification(3, "mention", "2026-07-01T14:00:00.000Z"),  # too old
             notification(4, "mention", "2026-07-04T13:00:00Z", author=-1),  # by ourselves
             notification(5, "mention", "2026-07-04T12:00:00+00:00"),
             notification(6, "mention", "not a time"),
             notification(7, "mention", "2026-07-04T11:00:00.000Z")]
    plan = plan_like_mentions(ME, items, {items[6].uri}, 5, now, DAY_US)
    assert [(a.action, a.subject, a.subject_cid) for a in plan] == [
        ("like", items[0].uri, "bafyrei1"), ("like", items[4].uri, "bafyrei5")]
    assert plan[0].subject_did == did(1) and plan[0].reason == "user1.test mentioned us"
    assert len(plan_like_mentions(ME, items, set(), 1, now, DAY_US)) == 1


def test_daily_caps_count_from_midnight_utc() -> None:
    assert day_start_us(T) == 1_783_123_200_000_000  # 2026-07-04T00:00:00Z
    assert day_start_us(day_start_us(T)) == day_start_us(T)


# --- the observed graph ----------------------------------------------------------------------


def test_a_list_read_gives_events_for_new_edges_and_for_edges_gone_only_when_read_whole() -> None:
    source = crawl_source("req-graph", did(0), 1_783_175_888_000_000)
    known = {did(1), did(2)}
    change = observed_graph(did(0), FOLLOWERS, [did(2), did(3), did(0), did(3)], True, known, source)
    assert [(e.did, e.subject_did) for e in change.observed] == [(did(3), did(0))]  # followers end at the owner
    assert [(e.did, e.subject_did) for e in change.lost] == [(did(1), did(0))]
    assert observed_graph(did(0), FOLLOWERS, [did(2), did(3)], False, known, source).lost == ()  # pages left unread
    follows = observed_graph(did(0), FOLLOWS, [did(4)], True, set(), source)
    assert [(e.did, e.subject_did) for e in follows.observed] == [(did(0), did(4))]  # follows start there
    again = observed_graph(did(0), FOLLOWERS, [did(2), did(3)], True, known, source)
    assert [e.id for e in again.events] == [e.id for e in change.events]  # a replayed request: the same events
    with pytest.raises(ValueError, match="direction"):
        observed_graph(did(0), "friends", [], True, set(), source)
