"""Growth strategies: each decides on real and lexicon-conformant events, with scores, reasons
and typed reasons for declining; the stateful ones thread bounded, keyed state."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from returns.result import Failure, Success

from domain import events as ev
from domain.growth import (
    ENGAGEMENT_WITH_TARGETS,
    INTERESTS,
    NEWCOMERS,
    POPULAR_CONTENT,
    AccountMemory,
    EngagementBucket,
    EngagementWindow,
    EngagementWithTargetsConfig,
    InterestsConfig,
    NewcomersConfig,
    PopularContentConfig,
    StrategyConfig,
    StrategyState,
    decode_account_memory,
    decode_engagement_window,
    encode_state,
    expired_posts,
)
from domain.pipeline import Outcome, process
from domain.rejections import RejectionCode
from tests.unit import domain_builders as b

ONLY_TARGETS = dict(newcomers=NewcomersConfig(enabled=False), interests=InterestsConfig(enabled=False), popular_content=PopularContentConfig(enabled=False))
MINUTE = 60_000_000


def run(event: dict[str, Any] | bytes, config: StrategyConfig, state: StrategyState | None = None, now_us: int | None = None) -> Outcome:
    raw = event if isinstance(event, bytes) else b.raw(event)
    return process(raw, config=config, state=state or StrategyState(), now_us=now_us).unwrap()


def found(outcome: Outcome, strategy: str) -> tuple[ev.CandidateFound, ...]:
    decision = outcome.decisions[strategy]
    assert isinstance(decision, Success), decision
    return decision.unwrap()


def declined(outcome: Outcome, strategy: str) -> str:
    decision = outcome.decisions[strategy]
    assert isinstance(decision, Failure), decision
    reason = decision.failure()
    assert reason.strategy == strategy and reason.message
    return reason.code


def sample(fragment: bytes) -> bytes:
    return next(line for line in b.SAMPLE_LINES if fragment in line)


# --- engagement_with_targets ----------------------------------------------------------------


def targets(*dids: str) -> StrategyConfig:
    return StrategyConfig(engagement_with_targets=EngagementWithTargetsConfig(targets=frozenset(dids)), **ONLY_TARGETS)


def test_real_like_of_a_target_makes_the_liker_a_candidate() -> None:
    outcome = run(b.SAMPLE_LINES[0], targets("did:plc:r2zybk6op3ymzpz6jhqpkoy5"))
    (candidate,) = found(outcome, ENGAGEMENT_WITH_TARGETS)
    assert candidate.did == "did:plc:wq4aajammjtxdomz3e23667t" and candidate.key == candidate.did
    assert candidate.strategy == ENGAGEMENT_WITH_TARGETS and candidate.score == 1.0
    assert candidate.reasons == (
        "liked at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o (target did:plc:r2zybk6op3ymzpz6jhqpkoy5)",
    )
    assert outcome.candidates == (candidate,) and outcome.all_events[-1] == candidate


def test_real_repost_follow_and_reply_of_targets() -> None:
    repost = run(sample(b"3mpt6c57uy22u"), targets("did:plc:lthsfxxeghkgg44eummxtvbe"))
    assert found(repost, ENGAGEMENT_WITH_TARGETS)[0].score == 2.0
    follow = run(sample(b'"subject":"did:plc:mlbpil2fwz43vfn6uuysxtqa"'), targets("did:plc:mlbpil2fwz43vfn6uuysxtqa"))
    assert found(follow, ENGAGEMENT_WITH_TARGETS)[0].reasons == ("followed did:plc:mlbpil2fwz43vfn6uuysxtqa (target did:plc:mlbpil2fwz43vfn6uuysxtqa)",)
    reply = run(sample(b"My show is super boring"), targets("did:plc:e2mt5exdcni67eeoj32hqxc4"))
    assert found(reply, ENGAGEMENT_WITH_TARGETS)[0].score == 3.0
    # a reply deep in a thread counts for the root's author too
    deep_reply = b.post_record("+1", reply=b.reply(b.strong_ref(b.BOB), b.strong_ref(b.CAROL)))
    deep = run(b.commit(b.ALICE, "app.bsky.feed.post", deep_reply), targets(b.BOB))
    assert found(deep, ENGAGEMENT_WITH_TARGETS)[0].reasons[0].startswith(f"replied in the thread of at://{b.BOB}/")
    # a real reply in the replier's own thread: the actor is the target
    own = run(sample(b"Ariana Grande"), targets("did:plc:ajg5c7huhiibhwandhdscpdq"))
    assert declined(own, ENGAGEMENT_WITH_TARGETS) == "actor_is_target"


def test_mention_and_quote_of_targets_add_up() -> None:
    text = "look at this @bob.bsky.social"
    record = b.mention_post(text, "@bob.bsky.social", b.BOB)
    record["embed"] = b.record_embed(b.strong_ref(b.BOB))
    outcome = run(b.commit(b.ALICE, "app.bsky.feed.post", record), targets(b.BOB))
    (candidate,) = found(outcome, ENGAGEMENT_WITH_TARGETS)
    assert candidate.did == b.ALICE and candidate.score == 2.0 + 3.0
    assert candidate.reasons[0].startswith("quoted at://") or candidate.reasons[1].startswith("quoted at://")
    assert any(reason.startswith(f"mentioned {b.BOB}") for reason in candidate.reasons)


def test_engagement_with_targets_declines_with_reasons() -> None:
    like_of_bob = b.commit(b.ALICE, "app.bsky.feed.like", b.like_record(b.strong_ref(b.BOB)))
    assert declined(run(like_of_bob, StrategyConfig(**ONLY_TARGETS)), ENGAGEMENT_WITH_TARGETS) == "no_targets"
    assert declined(run(like_of_bob, targets(b.CAROL)), ENGAGEMENT_WITH_TARGETS) == "no_interaction"
    assert declined(run(like_of_bob, targets(b.ALICE, b.BOB)), ENGAGEMENT_WITH_TARGETS) == "actor_is_target"
    block = b.commit(b.ALICE, "app.bsky.graph.block", b.follow_record(b.BOB))
    assert declined(run(block, targets(b.BOB)), ENGAGEMENT_WITH_TARGETS) == "no_interaction"


def test_target_config_is_validated() -> None:
    with pytest.raises(ValueError):
        EngagementWithTargetsConfig(targets=frozenset({"not-a-did"}))


# --- newcomers ------------------------------------------------------------------------------

ONLY_NEWCOMERS = dict(interests=InterestsConfig(enabled=False), popular_content=PopularContentConfig(enabled=False))


def newcomers(**config: Any) -> StrategyConfig:
    return StrategyConfig(newcomers=NewcomersConfig(**config), **ONLY_NEWCOMERS)


def intro_post(did: str = b.ALICE, text: str = "Hi everyone! #Introduction", time_us: int = b.TIME_US) -> dict[str, Any]:
    return b.commit(did, "app.bsky.feed.post", b.post_record(text, langs=["en"]), time_us=time_us)


def test_introduction_post_makes_a_newcomer_and_is_remembered() -> None:
    outcome = run(intro_post(), newcomers())
    (candidate,) = found(outcome, NEWCOMERS)
    assert (candidate.did, candidate.score) == (b.ALICE, 1.0)
    assert candidate.reasons[0].startswith("posted #introduction (at://")
    assert outcome.state_changes.accounts == {b.ALICE: AccountMemory(first_seen_us=b.TIME_US, reported_score=1.0)}
    again = run(intro_post(text="#NewHere still"), newcomers(), StrategyState().apply(outcome.state_changes))
    assert declined(again, NEWCOMERS) == "already_reported"
    assert not again.state_changes


def test_configured_intro_hashtags_are_normalised() -> None:
    config = newcomers(intro_hashtags=frozenset({"#HolaBluesky"}))
    assert found(run(intro_post(text="#holabluesky!"), config), NEWCOMERS)
    assert declined(run(intro_post(text="#introduction"), config), NEWCOMERS) == "no_signal"


def test_profile_creation_is_a_weaker_signal_and_upgrades_are_reported() -> None:
    profile = b.commit(b.ALICE, "app.bsky.actor.profile", b.profile_record(description="hi"), rkey="self")
    first = run(profile, newcomers())
    assert found(first, NEWCOMERS)[0].score == 0.6 and found(first, NEWCOMERS)[0].reasons == ("created their profile",)
    state = StrategyState().apply(first.state_changes)
    upgraded = run(intro_post(), newcomers(), state)
    assert found(upgraded, NEWCOMERS)[0].score == 1.0
    updated = b.commit(b.ALICE, "app.bsky.actor.profile", b.profile_record(), rkey="self", operation="update")
    assert declined(run(updated, newcomers(), state), NEWCOMERS) == "no_signal"


def test_first_sightings_are_remembered_and_reported_only_after_warm_up() -> None:
    like = b.commit(b.ALICE, "app.bsky.feed.like", b.like_record(b.strong_ref(b.BOB)))
    cold = run(like, newcomers())
    assert declined(cold, NEWCOMERS) == "no_signal"
    assert cold.state_changes.accounts == {b.ALICE: AccountMemory(first_seen_us=b.TIME_US)}
    early = run(like, newcomers(first_seen_from_us=b.TIME_US + 1))
    assert declined(early, NEWCOMERS) == "no_signal"
    warm = run(like, newcomers(first_seen_from_us=b.TIME_US))
    (candidate,) = found(warm, NEWCOMERS)
    assert candidate.score == 0.3 and candidate.reasons == ("first seen at 2026-07-04T14:38:08Z",)
    known = run(like, newcomers(first_seen_from_us=0), StrategyState().apply(cold.state_changes))
    assert declined(known, NEWCOMERS) == "no_signal" and not known.state_changes


def test_inactive_accounts_are_not_newcomers() -> None:
    outcome = run(b.account(b.ALICE, 3, active=False, status="deleted"), newcomers(first_seen_from_us=0))
    assert declined(outcome, NEWCOMERS) == "inactive"


def test_every_real_account_is_reported_once_after_warm_up() -> None:
    state, candidates = StrategyState(), []
    config = newcomers(first_seen_from_us=0)
    for line in b.SAMPLE_LINES:
        outcome = run(line, config, state)
        state = state.apply(outcome.state_changes)
        candidates += outcome.candidates
    actors = {orjson.loads(line)["did"] for line in b.SAMPLE_LINES if b"actor.status" not in line}
    assert sorted(c.did for c in candidates) == sorted(actors)
    assert set(state.accounts) == actors


# --- interests ------------------------------------------------------------------------------

ONLY_INTERESTS = dict(newcomers=NewcomersConfig(enabled=False), popular_content=PopularContentConfig(enabled=False))


def interests(**config: Any) -> StrategyConfig:
    return StrategyConfig(interests=InterestsConfig(**config), **ONLY_INTERESTS)


def candidates_over_sample(config: StrategyConfig) -> list[ev.CandidateFound]:
    return [c for line in b.SAMPLE_LINES for c in run(line, config).candidates]


def test_real_posts_matching_keywords_with_and_without_language_filter() -> None:
    anywhere = candidates_over_sample(interests(keywords=("Government",)))
    assert len(anywhere) == 3
    in_english = candidates_over_sample(interests(keywords=("government",), languages=frozenset({"EN-gb"})))
    (candidate,) = in_english
    assert candidate.reasons == (f"wrote 'government' in {candidate.subject_uri}",)
    assert candidate.subject_uri and candidate.did == candidate.subject_uri.split("/")[2]


def test_real_post_matching_a_hashtag() -> None:
    (candidate,) = candidates_over_sample(interests(hashtags=frozenset({"#IndieRebellion"})))
    assert candidate.score == 1.0 and candidate.reasons[0].startswith("tagged #indierebellion in at://")


def test_keywords_match_whole_words_case_and_normalisation_insensitively() -> None:
    config = interests(keywords=("café", "open source"), hashtags=frozenset({"rust"}))
    outcome = run(b.commit(b.ALICE, "app.bsky.feed.post", b.post_record("CAFE\u0301 talk about Open  Source? no: OPEN SOURCE! #Rust")), config)
    (candidate,) = found(outcome, INTERESTS)
    assert candidate.score == 3.0 and len(candidate.reasons) == 3
    miss = run(b.commit(b.ALICE, "app.bsky.feed.post", b.post_record("cafés opensource #rustlang")), config)
    assert declined(miss, INTERESTS) == "no_match"


def test_interests_decline_with_reasons() -> None:
    like = b.commit(b.ALICE, "app.bsky.feed.like", b.like_record(b.strong_ref(b.BOB)))
    assert declined(run(like, interests(keywords=("x",))), INTERESTS) == "not_a_post"
    assert declined(run(like, interests()), INTERESTS) == "no_interests"
    no_lang = b.commit(b.ALICE, "app.bsky.feed.post", b.post_record("rust"))
    assert declined(run(no_lang, interests(keywords=("rust",), languages=frozenset({"en"}))), INTERESTS) == "language"


# --- popular_content ------------------------------------------------------------------------

ONLY_POPULAR = dict(newcomers=NewcomersConfig(enabled=False), interests=InterestsConfig(enabled=False))
POST = b.strong_ref(b.BOB, rkey="3mpopular")


def popular(**config: Any) -> StrategyConfig:
    defaults: dict[str, Any] = {"threshold": 4, "window_us": 10 * MINUTE, "bucket_us": MINUTE}
    return StrategyConfig(popular_content=PopularContentConfig(**(defaults | config)), **ONLY_POPULAR)


def like_of(actor: str, subject: dict[str, str] = POST, time_us: int = b.TIME_US) -> dict[str, Any]:
    return b.commit(actor, "app.bsky.feed.like", b.like_record(subject), time_us=time_us)


def fans(n: int) -> list[str]:
    return [f"did:plc:fan{i:021d}" for i in range(n)]


def feed(events: list[dict[str, Any]], config: StrategyConfig, state: StrategyState | None = None) -> tuple[StrategyState, list[Outcome]]:
    state = state or StrategyState()
    outcomes = []
    for event in events:
        outcome = run(event, config, state)
        state = state.apply(outcome.state_changes)
        outcomes.append(outcome)
    return state, outcomes


def test_a_post_passing_the_threshold_makes_its_author_a_candidate_once_per_window() -> None:
    events = [like_of(fan, time_us=b.TIME_US + i * 1_000_000) for i, fan in enumerate(fans(3))]
    events.append(b.commit(fans(4)[3], "app.bsky.feed.repost", b.like_record(POST), time_us=b.TIME_US + 4_000_000))
    events.append(like_of(fans(5)[4], time_us=b.TIME_US + 5_000_000))
    state, outcomes = feed(events, popular())
    assert [declined(o, POPULAR_CONTENT) for o in outcomes[:2]] == ["below_threshold"] * 2
    assert declined(outcomes[2], POPULAR_CONTENT) == "below_threshold"  # 3 likes: score 3 < 4
    (candidate,) = found(outcomes[3], POPULAR_CONTENT)  # + a repost (weight 2): 5 >= 4
    assert (candidate.did, candidate.subject_uri, candidate.score) == (b.BOB, POST["uri"], 5.0)
    assert candidate.reasons == (f"{POST['uri']}: 3 likes, 1 reposts within 10 min (score 5 >= 4)",)
    assert declined(outcomes[4], POPULAR_CONTENT) == "below_threshold"  # already reported in this window
    window = state.posts[POST["uri"]]
    assert window.author_did == b.BOB and window.reported_at_us == b.TIME_US + 4_000_000
    assert sum(bucket.likes for bucket in window.buckets) == 4


def test_old_engagement_leaves_the_window_and_a_post_can_be_reported_again() -> None:
    config = popular(threshold=2)
    first = [like_of(fan, time_us=b.TIME_US + i) for i, fan in enumerate(fans(2))]
    state, outcomes = feed(first, config)
    assert found(outcomes[1], POPULAR_CONTENT)
    later = b.TIME_US + 11 * MINUTE
    state, outcomes = feed([like_of(fans(3)[2], time_us=later)], config, state)
    assert declined(outcomes[0], POPULAR_CONTENT) == "below_threshold"  # the first two likes expired
    assert len(state.posts[POST["uri"]].buckets) == 1
    state, outcomes = feed([like_of(fans(4)[3], time_us=later + 1)], config, state)
    assert found(outcomes[0], POPULAR_CONTENT)[0].score == 2.0
    assert expired_posts(state.posts, later + 20 * MINUTE, config.popular_content) == [POST["uri"]]
    assert expired_posts(state.posts, later, config.popular_content) == []


def test_windows_stay_bounded() -> None:
    config = popular(threshold=10**6)
    events = [like_of(fans(1)[0], time_us=b.TIME_US + i * 30_000_000) for i in range(200)]
    state, _ = feed(events, config)
    assert len(state.posts[POST["uri"]].buckets) <= 10 + 1


def test_replies_and_quotes_count_for_the_post_they_answer_and_self_engagement_does_not() -> None:
    config = popular(threshold=5)
    reply = b.commit(b.CAROL, "app.bsky.feed.post", b.post_record("yes", reply=b.reply(POST)))
    quote = b.commit(b.ALICE, "app.bsky.feed.post", b.post_record("look", embed=b.record_embed(POST)))
    own = like_of(b.BOB)
    state, outcomes = feed([reply, own, quote], config)
    assert declined(outcomes[1], POPULAR_CONTENT) == "not_engagement"
    (candidate,) = found(outcomes[2], POPULAR_CONTENT)
    assert candidate.score == 2.0 + 3.0 and "1 replies, 1 quotes" in candidate.reasons[0]
    feed_like = like_of(b.ALICE, b.strong_ref(b.CAROL, "app.bsky.feed.generator", "cats"))
    assert declined(run(feed_like, config), POPULAR_CONTENT) == "not_engagement"


def test_every_real_engaged_post_with_threshold_one() -> None:
    state, candidates = StrategyState(), []
    config = popular(threshold=1, window_us=24 * 60 * MINUTE)
    for line in b.SAMPLE_LINES:
        outcome = run(line, config, state)
        state = state.apply(outcome.state_changes)
        candidates += outcome.candidates
    assert len(candidates) == len({c.subject_uri for c in candidates}) == len(state.posts)
    assert all(c.did == c.subject_uri.split("/")[2] for c in candidates if c.subject_uri)
    assert len(candidates) > 100


def test_popular_config_is_validated() -> None:
    with pytest.raises(ValueError):
        PopularContentConfig(window_us=MINUTE, bucket_us=2 * MINUTE)
    with pytest.raises(ValueError):
        PopularContentConfig(threshold=0)


# --- state ----------------------------------------------------------------------------------


def test_state_values_round_trip_through_json() -> None:
    memory = AccountMemory(first_seen_us=5, reported_score=0.6)
    assert decode_account_memory(encode_state(memory)).unwrap() == memory
    window = EngagementWindow(author_did=b.BOB, buckets=(EngagementBucket(start_us=60, likes=2, quotes=1),), reported_at_us=61)
    assert decode_engagement_window(encode_state(window)).unwrap() == window
    bad = decode_account_memory(b'{"first_seen_us": "x"}')
    assert isinstance(bad, Failure) and bad.failure().code is RejectionCode.INVALID_STATE
    assert isinstance(decode_engagement_window(b"nope"), Failure)


def test_state_apply_forgets_keys_set_to_none() -> None:
    from domain.growth import StateChanges

    window = EngagementWindow(author_did=b.BOB)
    state = StrategyState(posts={"a": window, "b": window})
    after = state.apply(StateChanges(posts={"a": None}))
    assert set(after.posts) == {"b"} and set(state.posts) == {"a", "b"}


def test_disabled_strategies_are_not_run() -> None:
    config = StrategyConfig(
        engagement_with_targets=EngagementWithTargetsConfig(enabled=False),
        newcomers=NewcomersConfig(enabled=False),
        interests=InterestsConfig(enabled=False),
        popular_content=PopularContentConfig(enabled=False),
    )
    outcome = run(b.SAMPLE_LINES[0], config)
    assert outcome.decisions == {} and not outcome.state_changes and outcome.events


def test_expired_windows_are_those_wholly_behind_the_horizon_and_not_reported_within_it() -> None:
    from domain.growth import EngagementBucket, EngagementWindow, PopularContentConfig, expired_windows

    config = PopularContentConfig(window_us=100, bucket_us=10)
    now = 1_000
    posts = {
        "gone": EngagementWindow(author_did="a", buckets=(EngagementBucket(start_us=880),)),            # ended at 890 <= horizon 900
        "edge": EngagementWindow(author_did="a", buckets=(EngagementBucket(start_us=890), EngagementBucket(start_us=895))),  # 900 <= 900, 905 > 900
        "live": EngagementWindow(author_did="a", buckets=(EngagementBucket(start_us=990),)),
        "reported": EngagementWindow(author_did="a", buckets=(EngagementBucket(start_us=500),), reported_at_us=901),
        "reported_long_ago": EngagementWindow(author_did="a", buckets=(EngagementBucket(start_us=500),), reported_at_us=900),
        "empty": EngagementWindow(author_did="a"),
    }
    assert sorted(expired_windows(posts, now, config)) == ["empty", "gone", "reported_long_ago"]
