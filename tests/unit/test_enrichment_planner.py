"""The enrichment planner reads ``growth.events`` messages: one event, or a group of one source
event's events (what collect sends), and plans a profile fetch from its ``UserSeen``."""

from __future__ import annotations

from typing import Any

from domain import StrategyConfig, StrategyState, process
from domain.crawl import EnrichmentConfig
from domain.events import UserSeen, by_partition_key, encode, encode_group
from streams.stages.enrichment import EnrichmentPlanner
from tests.conftest import SAMPLE_JSONL

SAMPLE = [line for line in SAMPLE_JSONL.read_bytes().splitlines() if line.strip()]
LIKE = next(line for line in SAMPLE if b'"collection":"app.bsky.feed.like"' in line)


def planner() -> EnrichmentPlanner:
    sender: Any = None  # plan() sends nothing
    return EnrichmentPlanner(sender=sender, crawl_topic="growth.crawl", config=EnrichmentConfig())


def like_group() -> list[Any]:
    outcome = process(LIKE, config=StrategyConfig(), state=StrategyState()).unwrap()
    return by_partition_key(outcome.events)[outcome.source.did.encode()]


def test_a_group_is_planned_from_its_user_seen() -> None:
    group = like_group()
    seen = next(event for event in group if isinstance(event, UserSeen))
    headers = [("schema", ",".join(event.schema_name for event in group).encode())]
    request = planner().plan(encode_group(group), headers)
    assert request is not None and request.did == seen.did
    assert planner().plan(encode_group(group)) == request  # without headers: decoded to find out


def test_a_group_without_user_seen_is_not_decoded_or_planned() -> None:
    rest = [event for event in like_group() if not isinstance(event, UserSeen)]
    headers = [("schema", ",".join(event.schema_name for event in rest).encode())]
    assert planner().plan(b"not even JSON", headers) is None  # the header says no UserSeen: not read
    assert planner().plan(encode_group(rest)) is None


def test_a_single_user_seen_message_is_still_planned_and_remembered() -> None:
    seen = next(event for event in like_group() if isinstance(event, UserSeen))
    planning = planner()
    assert planning.plan(encode(seen), [("schema", b"UserSeen")]) is not None
    assert planning.plan(encode(seen), [("schema", b"UserSeen")]) is None  # fetched recently
    assert planning.requested == 1
