"""process(): raw bytes to domain events and per-strategy decisions, deterministic and total."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from returns.pipeline import is_successful
from returns.result import Failure

from domain import StrategyConfig, StrategyState, process, process_event
from domain.events import encode
from domain.growth import STRATEGIES, EngagementWithTargetsConfig, NewcomersConfig
from domain.identity import SourceCoordinates
from domain.jetstream import parse_event
from domain.rejections import Rejection, RejectionCode
from tests.unit import domain_builders as b

CONFIG = StrategyConfig(
    engagement_with_targets=EngagementWithTargetsConfig(targets=frozenset({"did:plc:r2zybk6op3ymzpz6jhqpkoy5"})),
    newcomers=NewcomersConfig(first_seen_from_us=0),
)


def test_whole_sample_through_process() -> None:
    counts: Counter[str] = Counter()
    skipped = 0
    state = StrategyState()
    for offset, line in enumerate(b.SAMPLE_LINES):
        outcome = process(line, config=CONFIG, state=state, coordinates=SourceCoordinates("raw", 0, offset)).unwrap()
        state = state.apply(outcome.state_changes)
        if outcome.skipped:
            skipped += 1
            assert outcome.events == () and outcome.decisions == {}
        else:
            assert tuple(outcome.decisions) == STRATEGIES
        counts.update(type(event).__name__ for event in outcome.all_events)
        assert all(event.source.offset == offset for event in outcome.all_events)
    assert skipped == 2
    assert counts["LikeAdded"] == 105 and counts["PostCreated"] == 17 and counts["RepostAdded"] == 15
    assert counts["FollowAdded"] == 6 and counts["FollowRemoved"] == 3
    assert counts["BlockAdded"] == 1 and counts["PostDeleted"] == 1
    assert counts["HandleChanged"] == 1 and counts["AccountStatusChanged"] == 1
    assert counts["CandidateFound"] > 0


def test_the_same_input_gives_the_same_outcome_and_ids() -> None:
    def run_all() -> list[Any]:
        state, outcomes = StrategyState(), []
        for line in b.SAMPLE_LINES:
            outcome = process(line, config=CONFIG, state=state).unwrap()
            state = state.apply(outcome.state_changes)
            outcomes.append(outcome)
        return outcomes

    first, second = run_all(), run_all()
    assert first == second
    assert [encode(e) for o in first for e in o.all_events] == [encode(e) for o in second for e in o.all_events]
    ids = [e.id for o in first for e in o.all_events]
    assert len(ids) == len(set(ids))


def test_process_event_matches_process() -> None:
    line = b.SAMPLE_LINES[1]
    parsed = parse_event(line).unwrap()
    assert process_event(parsed, config=CONFIG, state=StrategyState()) == process(line, config=CONFIG, state=StrategyState())


def test_rejections_pass_through() -> None:
    bad_record = b.raw(b.commit(b.ALICE, "app.bsky.graph.follow", {"subject": "bob", "createdAt": b.CREATED_AT}))
    for raw, code in ((b"nope", RejectionCode.INVALID_JSON), (b"{}", RejectionCode.NOT_AN_EVENT), (bad_record, RejectionCode.INVALID_RECORD)):
        result = process(raw, config=CONFIG, state=StrategyState())
        assert isinstance(result, Failure) and result.failure().code is code


def test_now_defaults_to_the_event_time() -> None:
    line = b.SAMPLE_LINES[0]
    event_time = parse_event(line).unwrap().time_us
    assert process(line, config=CONFIG, state=StrategyState()) == process(line, config=CONFIG, state=StrategyState(), now_us=event_time)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(lambda v: json.dumps(v).encode(), b.JSON | b.EVENTISH))
def test_process_never_raises_and_is_deterministic(raw: bytes) -> None:
    first = process(raw, config=CONFIG, state=StrategyState())
    assert is_successful(first) or isinstance(first.failure(), Rejection)
    assert process(raw, config=CONFIG, state=StrategyState()) == first


TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=120)


@st.composite
def lexicon_posts(draw: st.DrawFn) -> dict[str, Any]:
    text = draw(TEXT)
    encoded = text.encode()
    facets = []
    for _ in range(draw(st.integers(0, 3))):
        start = draw(st.integers(0, len(encoded)))
        end = draw(st.integers(start, len(encoded)))
        feature = draw(
            st.sampled_from(
                [b.mention(b.BOB), b.link("https://example.com/" + str(start)), b.tag(draw(st.text(min_size=1, max_size=10))), {"$type": "x.y.z#w"}]
            )
        )
        facets.append(b.facet(start, end, feature))
    record = b.post_record(text, facets=facets, langs=draw(st.lists(st.sampled_from(["en", "ja", "pt-BR"]), max_size=3)))
    embed = draw(st.sampled_from([None, b.images_embed(1), b.video_embed(), b.external_embed(), b.gallery_embed(2), b.record_embed(b.strong_ref(b.CAROL, rkey="3mq")), b.record_with_media_embed(b.strong_ref(b.CAROL, rkey="3mq"), b.images_embed(2))]))
    if embed is not None:
        record["embed"] = embed
    if draw(st.booleans()):
        record["reply"] = b.reply(b.strong_ref(b.BOB, rkey="3mroot"), b.strong_ref(b.CAROL, rkey="3mparent"))
    return b.commit(b.ALICE, "app.bsky.feed.post", record, rkey="3mpost", rev="3mptbypluud2a")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lexicon_posts())
def test_lexicon_posts_always_collect_with_stable_ids(event: dict[str, Any]) -> None:
    raw = b.raw(event)
    outcome = process(raw, config=CONFIG, state=StrategyState()).unwrap()
    names = [type(e).__name__ for e in outcome.events]
    assert names[:4] == ["UserSeen", "ActivityRecorded", "PostCreated", "PostEnriched"]
    again = process(raw, config=CONFIG, state=StrategyState()).unwrap()
    assert [e.id for e in again.all_events] == [e.id for e in outcome.all_events]
