"""Golden outcomes of :func:`domain.process`: the same bytes give the same domain events (the same
ids, the same ``encode`` bytes), the same decisions, state changes and rejections as the code
that recorded the digests below.

The digests were computed from the domain before it was optimised for speed (commit "domain:
golden digests of process()"); a change that alters any outcome, id or rejection message breaks
them. Inputs: a generated corpus (run through four strategy configurations, the state threaded
from event to event), the real recording, one create and delete of every collected collection,
frames that are not events, and deterministic mutations of corpus events (fields removed or
replaced by values of the wrong type or syntax, bytes cut, inserted or corrupted).

If the corpus generator changes (``CORPUS_INPUT`` fails), regenerate the digests by running
this module's ``digests()`` on a commit whose domain is known to be right.
"""

from __future__ import annotations

import copy
import hashlib
import json
import itertools
import random
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from returns.result import Failure, Success

from domain import StrategyConfig, StrategyState, process
from domain.events import encode
from domain.growth import (
    EngagementWithTargetsConfig,
    InterestsConfig,
    NewcomersConfig,
    PopularContentConfig,
    encode_state,
)
from domain.identity import SourceCoordinates
from streams.local import corpus
from tests.unit import domain_builders as b

CORPUS_EVENTS = 3_000

DEMO_STRATEGIES = b"""{
  "engagement_with_targets": {"targets": ["did:plc:r2zybk6op3ymzpz6jhqpkoy5"]},
  "interests": {"keywords": ["photography", "gamedev"], "hashtags": ["art", "python", "music"]},
  "popular_content": {"threshold": 5, "window_us": 3600000000, "bucket_us": 300000000}
}"""
"""``streams/data/demo-strategies.json`` as it was when the digests were recorded."""


def corpus_lines() -> list[bytes]:
    return list(corpus.generate(CORPUS_EVENTS, seed=7, accounts=CORPUS_EVENTS // 5, rate_per_s=800))


def _actors(lines: Iterable[bytes], count: int) -> frozenset[str]:
    return frozenset(list(dict.fromkeys(orjson.loads(line)["did"] for line in lines))[:count])


def configs(lines: list[bytes]) -> dict[str, StrategyConfig]:
    """The demo configuration, the collect stage's (popular content off), the defaults, and one
    that makes every strategy find candidates often (targets among the corpus's accounts,
    first sightings counted, languages and keywords that occur)."""
    demo = StrategyConfig.model_validate_json(DEMO_STRATEGIES)
    busy = StrategyConfig(
        engagement_with_targets=EngagementWithTargetsConfig(targets=_actors(lines, 40) | {b.BOB, b.CAROL}),
        newcomers=NewcomersConfig(first_seen_from_us=0),
        interests=InterestsConfig(
            keywords=("the", "you", "photo", "今日"), hashtags=frozenset({"art", "music", "introduction"}),
            languages=frozenset({"en", "ja", "pt"}),
        ),
        popular_content=PopularContentConfig(threshold=2, window_us=600_000_000, bucket_us=60_000_000),
    )
    return {
        "demo": demo,
        "collect": demo.model_copy(update={"popular_content": PopularContentConfig(enabled=False)}),
        "default": StrategyConfig(),
        "busy": busy,
    }


# --- hostile input -------------------------------------------------------------------------

NOT_EVENTS: list[bytes] = [
    b"",
    b"\xff\xfe",
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"null",
    b"42",
    b"{}",
    b'{"did": "did:plc:abc", "time_us": 1}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "sync"}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit"}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": 7}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": []}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "identity", "identity": null}',
    b'{"type": "options_update", "payload": {}}',
    b'{"did": "did:plc:abc", "time_us": NaN, "kind": "account", "account": {}}',
    b'{"did": "did:plc:abc", "time_us": 1e3, "kind": "account", "account": {"active": true, "did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "account", "account": {"active": 1, "did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "account", "account": {"active": true, "did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b'{"did": "did:plc:abc", "did": "did:plc:abd", "time_us": 1, "kind": "account", "account": {"active": false, "did": "did:plc:abc", "seq": 1, "time": "t", "status": "x"}}',
    b'\xef\xbb\xbf{"did": "did:plc:abc", "time_us": 1, "kind": "account", "account": {"active": true, "did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b' {"did": "did:plc:abc", "time_us": 1, "kind": "account", "account": {"active": true, "did": "did:plc:abc", "seq": 1, "time": "t"}} ',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "account", "account": {"active": true, "did": "did:plc:abc", "seq": 1, "time": "t"}} x',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "identity", "identity": {"did": "did:plc:abc", "seq": 1, "time": "\\ud800"}}',
    b'{"did": "did:plc:abc", "time_us": 18446744073709551616, "kind": "identity", "identity": {"did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b'{"did": "did:plc:abc", "time_us": 9223372036854775808, "kind": "identity", "identity": {"did": "did:plc:abc", "seq": 1, "time": "t"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "identity", "identity": {"did": "did:plc:abc", "seq": -1, "time": "t", "handle": null}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "create", "collection": "app.bsky.feed.like", "rkey": "x"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "update", "collection": "app.bsky.feed.like", "rkey": "x", "record": null}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "delete", "collection": "app.bsky.feed.like", "rkey": "x", "record": {"a": 1}, "cid": "c"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "delete", "collection": "app.bsky.feed.like", "rkey": "x", "record": 5}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "create", "collection": "app.bsky.feed.like", "rkey": "x", "record": "s"}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "create", "collection": "app.bsky.other", "rkey": "x", "record": {}}}',
    b'{"did": "did:plc:abc", "time_us": 1, "kind": "commit", "commit": {"rev": "3mptbypluud2a", "operation": "create", "collection": "app.bsky.feed.post", "rkey": "x", "record": {"text": "a", "createdAt": "2026-07-04T14:38:06Z", "text": 5}}}',
]
"""Frames that are not (valid) events, or are at the edge of the JSON and event syntax."""

_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**64, 2**63, 10**30, -(2**63) - 1, "", "x", "..", "a/b", "did:plc:",
    "did:plc:abc", "not a handle", "alice.bsky.social", "3mptbypluud2a", "create", "update", "delete", "upsert",
    "commit", "identity", "account", "app.bsky.feed.like", "app.bsky.feed.post", f"at://{b.BOB}/app.bsky.feed.post/3mpt",
    "at://alice.bsky.social/app.bsky.feed.post/3mpt", "https://example.com", "\u0000", "é\u0301", [], [1, "a"], {},
    {"$type": "app.bsky.embed.poll"}, {"uri": "x", "cid": "y"}, "2026-07-04T14:38:06.240Z", "2026-13-45",
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield (*prefix, key)
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield (*prefix, index)
            yield from _paths(child, (*prefix, index))


def _odd_value(rng: random.Random) -> Any:
    return copy.deepcopy(rng.choice(_ODD_VALUES))  # a copy: later mutations may change it in place


def _mutate(event: Any, rng: random.Random) -> Any:
    paths = list(_paths(event))
    if not paths:
        return _odd_value(rng)
    *parents, leaf = rng.choice(paths)
    target = event
    for part in parents:
        target = target[part]
    action = rng.random()
    if action < 0.3 and isinstance(target, dict):
        del target[leaf]
    elif action < 0.4 and isinstance(target, dict):
        target[rng.choice(["cursor", "extra", "$type", "seq", "record", "handle", "status"])] = _odd_value(rng)
    else:
        target[leaf] = _odd_value(rng)
    return event


def _corrupt(raw: bytes, rng: random.Random) -> bytes:
    position = rng.randrange(len(raw) + 1)
    choice = rng.random()
    if choice < 0.3:
        return raw[:position]
    if choice < 0.6:
        return raw[:position] + rng.choice([b"\xff", b"\xc3", b"\x00", b",", b"}", b'"', b"\\u0000", b"\\ud83d"]) + raw[position:]
    return raw[:position] + raw[position + 1 :]


def mutations(lines: list[bytes], count: int = 1_500, seed: int = 11) -> list[bytes]:
    """Deterministic mutations of corpus events: structural (serialised by the stdlib, which also
    writes integers beyond 64 bits) and byte-level."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for _ in range(count):
        line = rng.choice(lines)
        if rng.random() < 0.75:
            event = orjson.loads(line)
            for _ in range(rng.randint(1, 3)):
                event = _mutate(event, rng)
            out.append(json.dumps(event, ensure_ascii=rng.random() < 0.5).encode())
        else:
            out.append(_corrupt(line, rng))
    return out


def collection_cases() -> list[bytes]:
    """One create and one delete of every collected collection, and posts of every shape."""
    tids = (b.tid(n) for n in itertools.count(1_000))  # fixed: b.tid() depends on earlier calls
    out: list[bytes] = []
    for collection, record, _, _ in b.COLLECTION_CASES:
        rkey = "self" if collection.endswith("profile") else next(tids)
        created = b.commit(b.ALICE, collection, record, rkey=rkey, rev=next(tids))
        deleted = b.commit(b.ALICE, collection, operation="delete", rkey=rkey, rev=next(tids), time_us=b.TIME_US + 1)
        out += [b.raw(created), b.raw(deleted)]
        out.append(b.raw(b.commit(b.BOB, collection, record, operation="update", rkey=next(tids), rev=next(tids))))
    posts = [
        b.mention_post("hi @bob.test and #introduction #Art", "@bob.test", b.BOB),
        b.post_record("see https://example.com/a and https://www.example.org/x... #music", langs=["en-US", "ja"]),
        b.post_record("pics", embed=b.images_embed(2), langs=["pt-BR"]),
        b.post_record("video", embed=b.video_embed()),
        b.post_record("ext", embed=b.external_embed()),
        b.post_record("gallery", embed=b.gallery_embed(3)),
        b.post_record("quote", embed=b.record_embed(b.strong_ref(b.BOB, rkey="3mq"))),
        b.post_record("card", embed=b.record_embed(b.strong_ref(b.CAROL, "app.bsky.feed.generator", "cats"))),
        b.post_record("rwm", embed=b.record_with_media_embed(b.strong_ref(b.BOB, rkey="3mq"), b.images_embed(1))),
        b.post_record("reply", reply=b.reply(b.strong_ref(b.BOB, rkey="3mroot"), b.strong_ref(b.CAROL, rkey="3mp"))),
        b.post_record("self reply", reply=b.reply(b.strong_ref(b.ALICE, rkey="3mroot"))),
        b.post_record("labels", labels={"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "nudity"}]}),
        b.post_record("#newhere gamedev photography", tags=["Python", "#art"], createdAt="not a date"),
        b.post_record("facets", facets=[b.facet(0, 3, b.link("https://x.example/full")), b.facet(0, 1, b.tag("Music"))]),
    ]
    for record in posts:
        out.append(b.raw(b.commit(b.ALICE, "app.bsky.feed.post", record, rkey=next(tids), rev=next(tids))))
        out.append(b.raw(b.commit(b.CAROL, "app.bsky.feed.post", record, operation="update", rkey=next(tids), rev=next(tids))))
    out.append(b.raw(b.commit(b.ALICE, "app.bsky.actor.profile", b.profile_record(), rkey="self", rev=next(tids))))
    out.append(b.raw(b.identity(b.ALICE, 7, "alice.bsky.social")))
    out.append(b.raw(b.identity(b.ALICE, 8)))
    for status in (None, "takendown", "deactivated", "weird"):
        out.append(b.raw(b.account(b.ALICE, 9, status is None, status)))
        out.append(b.raw(b.account(b.BOB, 10, False, status)))
    return out


# --- digests -------------------------------------------------------------------------------


def outcome_bytes(result: Any) -> bytes:
    """Everything :func:`process` answered, as canonical bytes."""
    if isinstance(result, Failure):
        rejection = result.failure()
        return b"R|" + rejection.code.value.encode() + b"|" + rejection.message.encode("utf-8", "surrogatepass")
    assert isinstance(result, Success)
    outcome = result.unwrap()
    parts = [b"O", orjson.dumps(outcome.source), repr(outcome.skipped).encode()]
    parts += [encode(event) for event in outcome.all_events]
    for name, decision in outcome.decisions.items():
        if isinstance(decision, Success):
            parts.append(name.encode() + b"=" + b",".join(encode(found) for found in decision.unwrap()))
        else:
            declined = decision.failure()
            parts.append(f"{name}!{declined.strategy}|{declined.code}|{declined.message}".encode())
    changes = outcome.state_changes
    for key, memory in changes.accounts.items():
        parts.append(b"A" + key.encode() + b"=" + encode_state(memory))
    for key, window in changes.posts.items():
        parts.append(b"P" + key.encode() + b"=" + (b"-" if window is None else encode_state(window)))
    return b"\n".join(parts)


def digest_of(lines: Iterable[bytes], config: StrategyConfig) -> str:
    """sha256 of the outcomes of ``lines`` processed in order, the state carried along."""
    state, digest = StrategyState(), hashlib.sha256()
    for offset, line in enumerate(lines):
        result = process(line, config=config, state=state, coordinates=SourceCoordinates("raw", offset % 3, offset))
        digest.update(outcome_bytes(result) + b"\x00")
        if isinstance(result, Success):
            state = state.apply(result.unwrap().state_changes)
    return digest.hexdigest()


def inputs() -> dict[str, list[bytes]]:
    lines = corpus_lines()
    return {
        "corpus": lines,
        "sample": b.SAMPLE_LINES,
        "cases": collection_cases(),
        "not_events": NOT_EVENTS,
        "mutations": mutations(lines),
    }


def digests() -> dict[str, str]:
    """Every golden digest (print it to regenerate the constants below)."""
    groups = inputs()
    all_configs = configs(groups["corpus"])
    out = {f"input:{name}": hashlib.sha256(b"\x00".join(lines)).hexdigest() for name, lines in groups.items()}
    for name, lines in groups.items():
        for config_name, config in all_configs.items():
            if name != "corpus" and config_name in ("collect", "default"):
                continue
            out[f"{name}:{config_name}"] = digest_of(lines, config)
    return out


GOLDEN: dict[str, str] = {
    "input:corpus": "0762f5bcfd2021384bf59c18742fd11ead06d2bd9a9836ff20e3ad4d035fe283",
    "input:sample": "1650129fc2f65f36ad9b84752b615d6add35b324c04b4a8533f513372262282e",
    "input:cases": "bffc36b38f02686b42044987553c83bce76d0985ce666ce63c4c1b079093ce0c",
    "input:not_events": "e5d104735216038db63913e03fe5008dcd51701d23677864a73f76618c9e1f4c",
    "input:mutations": "b053a734d4dce11cc7b12d89d280c55a2aa1513294b768a7a156c322fd11ac6d",
    "corpus:demo": "faa3f1c6bf6465101b2854b6bf1b0b4d3a36792c1a4b0b72c056ac94642d07b3",
    "corpus:collect": "31df7530e180b4d2f2575787f8d1ee483ecc5eeae97174ebc35b6f3f1a5fc64e",
    "corpus:default": "8d9f167f4d315b08f814e113c3c88dcd436f739e57f699494c85ee8ec4e27635",
    "corpus:busy": "19cb7c1906d787d62eb84b7a7db5b3cf20ae8d0d0e4e74063d4a6b4e41a85701",
    "sample:demo": "23fab30461de6cac6706812447ba1b61e7020a1356b67a61b7e4caf4bbf4bc0c",
    "sample:busy": "f23a1a50dcb50b3201f35dbe9415f3095dfd8815eec2032bc78337ae7674c805",
    "cases:demo": "c9b0799df66309b97ac6769321423c910d5e61a97fce2c387778d48f80b50331",
    "cases:busy": "92b8f52406971ccddec3a315f49b9486251ed1ce1a17dba8a7f3417bf94cb4ec",
    "not_events:demo": "5b7eccf7bede575fe3f2c9bfadb58394661c263fc4b97a0701c2fcb6d045d103",
    "not_events:busy": "89125706843c260a3c8f0593ab6f137f81874b5b7322cc1b1bf820e1b1ed2f5d",
    "mutations:demo": "19e61d381fb8d92d701baf1c3eef05ce57f09523ab4db6ba87c106fcc644d129",
    "mutations:busy": "9ade3897d729488b6b4fd2778f37ee2cc2c9989ba17ede109f81448d93b7583c",
}


def test_inputs_are_the_recorded_ones() -> None:
    """The inputs themselves (if the corpus generator changed, the digests must be regenerated)."""
    groups = inputs()
    for name, lines in groups.items():
        assert hashlib.sha256(b"\x00".join(lines)).hexdigest() == GOLDEN[f"input:{name}"], name


def test_outcomes_are_the_recorded_ones() -> None:
    actual = digests()
    assert {key: value for key, value in actual.items() if not key.startswith("input:")} == {
        key: value for key, value in GOLDEN.items() if not key.startswith("input:")
    }


def test_every_kind_of_outcome_is_covered() -> None:
    """The golden inputs reach every rejection code of process() and every strategy's success."""
    groups = inputs()
    busy = configs(groups["corpus"])["busy"]
    codes, found, state = set(), set(), StrategyState()
    for lines in groups.values():
        for line in lines:
            result = process(line, config=busy, state=state)
            if isinstance(result, Failure):
                codes.add(result.failure().code.value)
                continue
            outcome = result.unwrap()
            state = state.apply(outcome.state_changes)
            found.update(name for name, decision in outcome.decisions.items() if isinstance(decision, Success))
    assert codes == {"invalid_json", "not_an_event", "invalid_event", "invalid_record"}
    assert found == {"engagement_with_targets", "newcomers", "interests", "popular_content"}
