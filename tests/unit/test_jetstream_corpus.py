"""The corpus generator: deterministic, Jetstream-shaped, lexicon-conformant, calibrated, consistent."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.local import corpus

N = 60_000
RATE = 800.0

TID = re.compile(r"^[2-7a-j][2-7a-z]{12}$")
# CIDv1 sha-256, base32: the prefix leaves 3 digest bits in the first character, 2 padding bits in the last
CID = re.compile(r"^bafyrei[a-h][a-z2-7]{50}[aeimquy4]$")
BLOB_CID = re.compile(r"^bafkrei[a-h][a-z2-7]{50}[aeimquy4]$")
DID = re.compile(r"^did:plc:[a-z2-7]{24}$")
AT_POST = re.compile(r"^at://(did:plc:[a-z2-7]{24})/app\.bsky\.feed\.post/([2-7a-z]{13})$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
SELF_KEYED = {"app.bsky.actor.profile", "app.bsky.actor.status", "app.bsky.labeler.service"}
EMBED_TYPES = {
    "app.bsky.embed.images",
    "app.bsky.embed.video",
    "app.bsky.embed.external",
    "app.bsky.embed.record",
    "app.bsky.embed.recordWithMedia",
}
from tests.conftest import SAMPLE_JSONL as SAMPLE  # noqa: E402 - the bundled real recording


@pytest.fixture(scope="module")
def lines() -> list[bytes]:
    return list(corpus.generate(N, seed=42, accounts=5_000, rate_per_s=RATE))


@pytest.fixture(scope="module")
def events(lines: list[bytes]) -> list[dict]:
    return [orjson.loads(line) for line in lines]


def kind_of(event: dict) -> str:
    if event["kind"] != "commit":
        return event["kind"]
    return f'{event["commit"]["collection"]}:{event["commit"]["operation"]}'


# ------------------------------------------------------------------ determinism


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    first = list(corpus.generate(3_000, seed=7, accounts=300))
    assert first == list(corpus.generate(3_000, seed=7, accounts=300))
    assert first != list(corpus.generate(3_000, seed=8, accounts=300))


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(1, 300))
def test_a_shorter_run_is_a_prefix_of_a_longer_one(seed: int, n: int) -> None:
    assert list(corpus.generate(n, seed=seed, accounts=40)) == list(corpus.generate(n + 50, seed=seed, accounts=40))[:n]


def test_write_and_command_line_produce_the_same_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    size = corpus.write(path, 500, seed=3, accounts=100)
    data = path.read_bytes()
    assert size == len(data) and data.endswith(b"\n")
    assert data.split(b"\n")[:-1] == list(corpus.generate(500, seed=3, accounts=100))
    out = tmp_path / "b.jsonl"
    assert corpus.main(["--count", "500", "--seed", "3", "--accounts", "100", "--out", str(out)]) == 0
    assert out.read_bytes() == data


# ------------------------------------------------------------------ Jetstream shape


def test_every_event_has_the_jetstream_shape_and_compact_serialisation(lines: list[bytes], events: list[dict]) -> None:
    for line, event in zip(lines, events, strict=True):
        kind = event["kind"]
        assert list(event) == ["did", "time_us", "kind", kind]
        assert DID.match(event["did"])
        # compact, in this key order, with Go's HTML escaping: re-encoding gives the same bytes
        reencoded = orjson.dumps(event).replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
        assert reencoded == line
        if kind == "commit":
            commit = event["commit"]
            assert TID.match(commit["rev"])
            assert commit["operation"] in ("create", "update", "delete")
            if commit["operation"] == "delete":
                assert list(commit) == ["rev", "operation", "collection", "rkey"]
            else:
                assert list(commit) == ["rev", "operation", "collection", "rkey", "record", "cid"]
                assert commit["record"]["$type"] == commit["collection"]
                assert CID.match(commit["cid"])
            if commit["collection"] in SELF_KEYED:
                assert commit["rkey"] == "self"
            elif commit["collection"] != "app.bsky.feed.generator":
                assert TID.match(commit["rkey"]), commit
        elif kind == "identity":
            body = event["identity"]
            assert body["did"] == event["did"] and isinstance(body["seq"], int) and ISO.match(body["time"])
            assert set(body) <= {"did", "handle", "seq", "time"}
        else:
            assert kind == "account"
            body = event["account"]
            assert body["did"] == event["did"] and isinstance(body["active"], bool)
            assert list(body)[:3] == ["active", "did", "seq"] and ISO.match(body["time"])
            if not body["active"]:
                assert body["status"] in {"takendown", "suspended", "deleted", "deactivated", "desynchronized", "throttled"}


def test_time_us_strictly_increases_at_the_configured_rate(events: list[dict]) -> None:
    times = [event["time_us"] for event in events]
    assert all(a < b for a, b in zip(times, times[1:]))
    assert times[0] > corpus.DEFAULT_START_TIME_US
    rate = (len(times) - 1) / ((times[-1] - times[0]) / 1e6)
    assert RATE * 0.9 < rate < RATE * 1.1


def test_sizes_match_the_real_service(lines: list[bytes]) -> None:
    sizes = sorted(map(len, lines))
    assert 420 <= sizes[len(sizes) // 2] <= 600  # live median about 502 bytes


# ------------------------------------------------------------------ calibration


def test_mix_is_calibrated_on_the_real_firehose(events: list[dict]) -> None:
    counts = Counter(kind_of(event) for event in events)
    share = {key: value / len(events) for key, value in counts.items()}

    def total(prefix: str) -> float:
        return sum(value for key, value in share.items() if key.startswith(prefix))

    assert 0.665 <= total("app.bsky.feed.like") <= 0.715
    assert 0.105 <= total("app.bsky.feed.post:") <= 0.135
    assert 0.075 <= total("app.bsky.feed.repost") <= 0.105
    assert 0.04 <= total("app.bsky.graph.follow") <= 0.08
    assert share["app.bsky.feed.like:create"] > 10 * share["app.bsky.feed.like:delete"]
    assert 0.002 <= share["identity"] + share["account"] <= 0.012
    for rare in (
        "app.bsky.graph.block:create",
        "app.bsky.graph.block:delete",
        "app.bsky.actor.profile:update",
        "app.bsky.actor.profile:create",
        "app.bsky.graph.list:create",
        "app.bsky.graph.listitem:create",
        "app.bsky.graph.listitem:delete",
        "app.bsky.graph.starterpack:create",
        "app.bsky.feed.generator:create",
        "app.bsky.feed.threadgate:create",
        "app.bsky.labeler.service:create",
        "app.bsky.actor.status:create",
        "app.bsky.feed.post:delete",
    ):
        assert 0 < share[rare] < 0.03, rare


def test_accounts_act_with_a_zipf_like_skew(events: list[dict]) -> None:
    per_did = Counter(event["did"] for event in events)
    assert len(per_did) <= 5_000
    ranked = [count for _, count in per_did.most_common()]
    top_percent = sum(ranked[:50]) / len(events)
    assert 0.10 < top_percent < 0.6  # the top 1% of accounts do far more than 1% of the acting
    assert ranked[0] > 20 * ranked[len(ranked) // 2]


# ------------------------------------------------------------------ consistency


def test_deletes_refer_to_earlier_creates_and_each_record_dies_once(events: list[dict]) -> None:
    alive: set[tuple[str, str, str]] = set()
    deletes = 0
    for event in events:
        if event["kind"] != "commit":
            continue
        commit = event["commit"]
        key = (event["did"], commit["collection"], commit["rkey"])
        if commit["operation"] == "create":
            assert key not in alive, f"created twice: {key}"
            alive.add(key)
        elif commit["operation"] == "delete":
            assert key in alive, f"delete without an earlier create: {key}"
            alive.remove(key)
            deletes += 1
    assert deletes > 1000


def test_engagement_refers_to_earlier_posts(events: list[dict]) -> None:
    posts: dict[str, str] = {}  # uri -> cid
    checked = Counter()
    for event in events:
        if event["kind"] != "commit" or event["commit"]["operation"] != "create":
            continue
        commit = event["commit"]
        record = commit["record"]
        collection = commit["collection"]
        refs = []
        if collection in ("app.bsky.feed.like", "app.bsky.feed.repost"):
            refs.append(record["subject"])
            checked[collection] += 1
        if collection == "app.bsky.feed.post":
            if "reply" in record:
                refs += [record["reply"]["root"], record["reply"]["parent"]]
                checked["reply"] += 1
            embed = record.get("embed", {})
            if embed.get("$type") == "app.bsky.embed.record":
                refs.append(embed["record"])
                checked["quote"] += 1
            if embed.get("$type") == "app.bsky.embed.recordWithMedia":
                refs.append(embed["record"]["record"])
                checked["quote-with-media"] += 1
        for ref in refs:
            assert list(ref) == ["cid", "uri"]
            assert posts.get(ref["uri"]) == ref["cid"], ref
        if collection == "app.bsky.feed.post":
            posts[f'at://{event["did"]}/app.bsky.feed.post/{commit["rkey"]}'] = commit["cid"]
    assert min(checked.values()) > 20 and len(checked) == 5


def test_graph_records_name_other_generated_accounts() -> None:
    lines = list(corpus.generate(20_000, seed=1, accounts=60))
    events = [orjson.loads(line) for line in lines]
    actors = {event["did"] for event in events}
    subjects = Counter()
    for event in events:
        commit = event.get("commit")
        if commit and commit["operation"] == "create" and commit["collection"] in (
            "app.bsky.graph.follow",
            "app.bsky.graph.block",
            "app.bsky.graph.listitem",
        ):
            subject = commit["record"]["subject"]
            assert DID.match(subject) and subject != event["did"]
            subjects[subject] += 1
    assert set(subjects) <= actors and len(actors) == 60
    ranked = [count for _, count in subjects.most_common()]
    assert ranked[0] > 5 * ranked[-1]  # some accounts are far more followed than others


def test_multi_operation_commits_share_a_rev_and_revs_increase_per_account(events: list[dict]) -> None:
    last_rev: dict[str, str] = {}
    by_rev: dict[tuple[str, str], list[tuple[int, dict]]] = defaultdict(list)
    for index, event in enumerate(events):
        if event["kind"] != "commit":
            continue
        did, rev = event["did"], event["commit"]["rev"]
        by_rev[(did, rev)].append((index, event["commit"]))
        if did in last_rev and last_rev[did] != rev:
            assert rev > last_rev[did], (did, last_rev[did], rev)  # TIDs sort by time
        last_rev[did] = rev
    multi = [ops for ops in by_rev.values() if len(ops) > 1]
    assert len(multi) > 20
    for ops in multi:
        indices = [index for index, _ in ops]
        assert indices == list(range(indices[0], indices[0] + len(ops)))  # consecutive events
        assert len({(commit["collection"], commit["rkey"]) for _, commit in ops}) == len(ops)
    kinds = {tuple(commit["collection"] for _, commit in ops) for ops in multi}
    assert ("app.bsky.feed.post", "app.bsky.feed.threadgate") in kinds
    assert any(kind[0] == "app.bsky.graph.list" and "app.bsky.graph.listitem" in kind for kind in kinds)
    assert any("app.bsky.graph.starterpack" in kind for kind in kinds)


def test_posts_follow_the_lexicon_with_every_embed_and_facet(events: list[dict]) -> None:
    embeds = Counter()
    features = Counter()
    replies = langs = 0
    for event in events:
        commit = event.get("commit")
        if not commit or commit["collection"] != "app.bsky.feed.post" or commit["operation"] != "create":
            continue
        record = commit["record"]
        assert set(record) <= {"$type", "createdAt", "embed", "facets", "labels", "langs", "reply", "tags", "text"}
        assert isinstance(record["text"], str) and ISO.match(record["createdAt"])
        assert list(record) == sorted(record)  # the service's key order
        if "langs" in record:
            assert 1 <= len(record["langs"]) <= 3
            langs += 1
        if "reply" in record:
            assert list(record["reply"]) == ["parent", "root"]
            replies += 1
        embed = record.get("embed")
        if embed:
            assert embed["$type"] in EMBED_TYPES
            embeds[embed["$type"]] += 1
            check_embed(embed)
        text = record["text"].encode()
        for facet in record.get("facets", []):
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            assert 0 <= start < end <= len(text)
            covered = text[start:end].decode()  # offsets fall on character boundaries
            (feature,) = facet["features"]
            features[feature["$type"]] += 1
            if feature["$type"] == "app.bsky.richtext.facet#mention":
                assert covered.startswith("@") and DID.match(feature["did"])
            elif feature["$type"] == "app.bsky.richtext.facet#tag":
                assert covered == "#" + feature["tag"]
            else:
                assert feature["$type"] == "app.bsky.richtext.facet#link"
                assert feature["uri"].startswith("https://")
                shown = feature["uri"][len("https://") :]
                assert covered == shown or (covered.endswith("...") and shown.startswith(covered[:-3]))
    assert set(embeds) == EMBED_TYPES
    assert len(features) == 3 and min(features.values()) > 50
    assert any(len(text.encode()) != len(text) for text in (e["commit"]["record"].get("text", "") for e in events if e.get("commit", {}).get("collection") == "app.bsky.feed.post" and "record" in e["commit"]))
    assert replies > 1000 and langs > 1000


def check_embed(embed: dict) -> None:
    kind = embed["$type"]
    if kind == "app.bsky.embed.images":
        assert 1 <= len(embed["images"]) <= 4
        for image in embed["images"]:
            check_blob(image["image"], "image/")
            assert set(image["aspectRatio"]) == {"height", "width"}
    elif kind == "app.bsky.embed.video":
        check_blob(embed["video"], "video/")
    elif kind == "app.bsky.embed.external":
        assert embed["external"]["uri"].startswith("https://") and "title" in embed["external"]
        if "thumb" in embed["external"]:
            check_blob(embed["external"]["thumb"], "image/")
    elif kind == "app.bsky.embed.record":
        assert AT_POST.match(embed["record"]["uri"]) and CID.match(embed["record"]["cid"])
    else:
        assert embed["record"]["$type"] == "app.bsky.embed.record"
        assert AT_POST.match(embed["record"]["record"]["uri"])
        assert embed["media"]["$type"] in ("app.bsky.embed.images", "app.bsky.embed.video")
        check_embed(embed["media"])


def check_blob(blob: dict, mime_prefix: str) -> None:
    assert list(blob) == ["$type", "ref", "mimeType", "size"]  # the service's blob key order
    assert blob["$type"] == "blob" and BLOB_CID.match(blob["ref"]["$link"])
    assert blob["mimeType"].startswith(mime_prefix) and blob["size"] > 0


# ------------------------------------------------------------------ TIDs


def decode_tid(value: str) -> tuple[int, int]:
    number = 0
    for char in value:
        number = number * 32 + "234567abcdefghijklmnopqrstuvwxyz".index(char)
    return number >> 10, number & 0x3FF


def test_cid_pattern_matches_every_real_cid() -> None:
    text = SAMPLE.read_text()
    records = re.findall(r'"(bafyrei[a-z2-7]+)"', text)
    blobs = re.findall(r'"(bafkrei[a-z2-7]+)"', text)
    assert len(records) > 150 and len(blobs) > 5
    assert all(CID.match(cid) for cid in records) and all(BLOB_CID.match(cid) for cid in blobs)


def test_tid_matches_the_real_sample() -> None:
    event = orjson.loads(SAMPLE.open("rb").readline())
    rev = event["commit"]["rev"]
    assert corpus.tid(*decode_tid(rev)) == rev == "3mptbypluud2a"


@given(
    st.integers(0, 2**53 - 1), st.integers(0, 1023), st.integers(0, 2**53 - 1), st.integers(0, 1023)
)
def test_tids_round_trip_and_sort_like_their_time(t1: int, c1: int, t2: int, c2: int) -> None:
    a, b = corpus.tid(t1, c1), corpus.tid(t2, c2)
    assert TID.match(a) and decode_tid(a) == (t1, c1)
    assert (a < b) == ((t1, c1) < (t2, c2))
