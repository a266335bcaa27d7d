"""Lexicon-conformant Jetstream events for domain tests, and the real sample.

Records follow the app.bsky lexicons; envelopes follow the Jetstream v1 /subscribe wire. They
cover what the real sample (streams/data/sample-2026-07-04.jsonl) lacks: mention
facets, lists, list items, profiles, starter packs, feed generators, threadgates, labeler
services, quotes, recordWithMedia, video and gallery embeds.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

from domain import events as ev

from tests.conftest import SAMPLE_JSONL as SAMPLE  # noqa: E402 - the bundled real recording
SAMPLE_LINES: list[bytes] = [line.rstrip(b"\n") for line in SAMPLE.open("rb") if line.strip()]

ALICE = "did:plc:alice4vbx7k2t3nc5ydhyqwq"
BOB = "did:plc:bob2xq3yvq2ruc4ks6l7o3ja"
CAROL = "did:web:carol.example.com"
FEED_SERVICE = "did:web:feeds.example.com"
TIME_US = 1_783_175_888_085_434  # 2026-07-04T14:38:08Z, a Saturday
CID = "bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza"
BLOB_CID = "bafkreias7oxbr6swsuggccmtnqpoeami4jza5x4w3urltn6gzhqf4k6k2e"
CREATED_AT = "2026-07-04T14:38:06.240Z"

_revs = iter(range(10**6))


def tid(n: int | None = None) -> str:
    """A syntactically valid TID (rev / rkey), unique per call unless ``n`` is given."""
    alphabet = "234567abcdefghijklmnopqrstuvwxyz"
    value = next(_revs) if n is None else n
    digits = []
    for _ in range(12):
        digits.append(alphabet[value % 32])
        value //= 32
    return "3" + "".join(reversed(digits))


def uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{rkey}"


def strong_ref(did: str, collection: str = "app.bsky.feed.post", rkey: str | None = None) -> dict[str, str]:
    return {"uri": uri(did, collection, rkey or tid()), "cid": CID}


def blob(mime: str = "image/jpeg", size: int = 1234, cid: str = BLOB_CID) -> dict[str, Any]:
    return {"$type": "blob", "ref": {"$link": cid}, "mimeType": mime, "size": size}


def commit(
    did: str,
    collection: str,
    record: dict[str, Any] | None = None,
    *,
    operation: str = "create",
    rkey: str | None = None,
    rev: str | None = None,
    time_us: int = TIME_US,
    cursor: bool = False,
) -> dict[str, Any]:
    """A Jetstream commit event (delete when ``record`` is None and operation is delete)."""
    body: dict[str, Any] = {
        "rev": rev or tid(),
        "operation": operation,
        "collection": collection,
        "rkey": rkey or tid(),
    }
    if operation != "delete":
        body["record"] = {"$type": collection, **(record or {})}
        body["cid"] = CID
    event: dict[str, Any] = {"did": did, "time_us": time_us, "kind": "commit", "commit": body}
    if cursor:
        event["cursor"] = time_us
    return event


def delete_of(event: dict[str, Any], *, time_us: int | None = None) -> dict[str, Any]:
    """The delete commit of the record ``event`` created."""
    c = event["commit"]
    return commit(
        event["did"], c["collection"], operation="delete", rkey=c["rkey"], time_us=time_us or event["time_us"] + 1
    )


def raw(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


# --- records -------------------------------------------------------------------------------


def post_record(text: str = "hello", **fields: Any) -> dict[str, Any]:
    return {"text": text, "createdAt": CREATED_AT, **fields}


def facet(start: int, end: int, *features: dict[str, Any]) -> dict[str, Any]:
    return {"index": {"byteStart": start, "byteEnd": end}, "features": list(features)}


def mention(did: str) -> dict[str, Any]:
    return {"$type": "app.bsky.richtext.facet#mention", "did": did}


def link(target: str) -> dict[str, Any]:
    return {"$type": "app.bsky.richtext.facet#link", "uri": target}


def tag(name: str) -> dict[str, Any]:
    return {"$type": "app.bsky.richtext.facet#tag", "tag": name}


def byte_range(text: str, part: str) -> tuple[int, int]:
    start = len(text[: text.index(part)].encode())
    return start, start + len(part.encode())


def mention_post(text: str, handle_text: str, did: str) -> dict[str, Any]:
    start, end = byte_range(text, handle_text)
    return post_record(text, facets=[facet(start, end, mention(did))], langs=["en"])


def images_embed(count: int = 2) -> dict[str, Any]:
    return {
        "$type": "app.bsky.embed.images",
        "images": [
            {"alt": f"image {i}", "image": blob(), "aspectRatio": {"width": 800, "height": 600}} for i in range(count)
        ],
    }


def video_embed() -> dict[str, Any]:
    return {
        "$type": "app.bsky.embed.video",
        "video": blob("video/mp4", 5_000_000),
        "alt": "a video",
        "aspectRatio": {"width": 1920, "height": 1080},
        "captions": [{"lang": "en", "file": blob("text/vtt", 100)}],
    }


def external_embed(target: str = "https://www.example.com/article") -> dict[str, Any]:
    return {
        "$type": "app.bsky.embed.external",
        "external": {"uri": target, "title": "An article", "description": "About things", "thumb": blob()},
    }


def gallery_embed(count: int = 3) -> dict[str, Any]:
    return {
        "$type": "app.bsky.embed.gallery",
        "media": [
            {
                "$type": "app.bsky.embed.gallery#image",
                "image": blob(),
                "alt": f"gallery {i}",
                "aspectRatio": {"width": 1, "height": 1},
            }
            for i in range(count)
        ],
    }


def record_embed(ref: dict[str, str]) -> dict[str, Any]:
    return {"$type": "app.bsky.embed.record", "record": ref}


def record_with_media_embed(ref: dict[str, str], media: dict[str, Any]) -> dict[str, Any]:
    return {"$type": "app.bsky.embed.recordWithMedia", "record": record_embed(ref), "media": media}


def reply(root: dict[str, str], parent: dict[str, str] | None = None) -> dict[str, Any]:
    return {"root": root, "parent": parent or root}


def like_record(subject: dict[str, str]) -> dict[str, Any]:
    return {"subject": subject, "createdAt": CREATED_AT}


def follow_record(subject: str) -> dict[str, Any]:
    return {"subject": subject, "createdAt": CREATED_AT}


def list_record(name: str = "Rust people", purpose: str = "app.bsky.graph.defs#curatelist") -> dict[str, Any]:
    return {"name": name, "purpose": purpose, "description": "People who write Rust", "createdAt": CREATED_AT}


def list_item_record(subject: str, list_uri: str) -> dict[str, Any]:
    return {"subject": subject, "list": list_uri, "createdAt": CREATED_AT}


def starter_pack_record(list_uri: str, feeds: list[str] | None = None) -> dict[str, Any]:
    return {
        "name": "Start here",
        "description": "Good accounts",
        "list": list_uri,
        "feeds": [{"uri": feed} for feed in (feeds or [])],
        "createdAt": CREATED_AT,
    }


def generator_record() -> dict[str, Any]:
    return {
        "did": FEED_SERVICE,
        "displayName": "Cat pictures",
        "description": "Only cats",
        "avatar": blob(),
        "acceptsInteractions": True,
        "contentMode": "app.bsky.feed.defs#contentModeUnspecified",
        "createdAt": CREATED_AT,
    }


def threadgate_record(post_uri: str, allow: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"post": post_uri, "createdAt": CREATED_AT, "hiddenReplies": []}
    if allow is not None:
        record["allow"] = allow
    return record


def labeler_record() -> dict[str, Any]:
    return {
        "policies": {
            "labelValues": ["spam", "rude"],
            "labelValueDefinitions": [
                {"identifier": "rude", "severity": "alert", "blurs": "content", "locales": []}
            ],
        },
        "reasonTypes": ["com.atproto.moderation.defs#reasonSpam"],
        "subjectTypes": ["account", "record"],
        "subjectCollections": ["app.bsky.feed.post"],
        "createdAt": CREATED_AT,
    }


def profile_record(**fields: Any) -> dict[str, Any]:
    return {
        "displayName": "Alice",
        "description": "Hello! #newhere",
        "avatar": blob(),
        "banner": blob(),
        "createdAt": CREATED_AT,
        **fields,
    }


def identity(did: str, seq: int, handle: str | None = None, time_us: int = TIME_US) -> dict[str, Any]:
    body: dict[str, Any] = {"did": did, "seq": seq, "time": "2026-07-04T14:38:07.877Z"}
    if handle is not None:
        body["handle"] = handle
    return {"did": did, "time_us": time_us, "kind": "identity", "identity": body}


def account(did: str, seq: int, active: bool, status: str | None = None, time_us: int = TIME_US) -> dict[str, Any]:
    body: dict[str, Any] = {"active": active, "did": did, "seq": seq, "time": "2026-07-04T14:38:07.877Z"}
    if status is not None:
        body["status"] = status
    return {"did": did, "time_us": time_us, "kind": "account", "account": body}


# --- one create of every collected collection, with the events of its create and delete ----

LIST_URI = uri(ALICE, "app.bsky.graph.list", "3mlist")
POST_URI = uri(ALICE, "app.bsky.feed.post", "3mpost")


COLLECTION_CASES: list[tuple[str, dict[str, Any], type[ev.DomainEvent], type[ev.DomainEvent]]] = [
    ("app.bsky.feed.post", post_record("hi"), ev.PostCreated, ev.PostDeleted),
    ("app.bsky.feed.like", like_record(strong_ref(BOB)), ev.LikeAdded, ev.LikeRemoved),
    ("app.bsky.feed.repost", like_record(strong_ref(BOB)), ev.RepostAdded, ev.RepostRemoved),
    ("app.bsky.graph.follow", follow_record(BOB), ev.FollowAdded, ev.FollowRemoved),
    ("app.bsky.graph.block", follow_record(BOB), ev.BlockAdded, ev.BlockRemoved),
    ("app.bsky.graph.list", list_record(), ev.ListUpserted, ev.ListRemoved),
    ("app.bsky.graph.listitem", list_item_record(BOB, LIST_URI), ev.ListItemUpserted, ev.ListItemRemoved),
    ("app.bsky.graph.starterpack", starter_pack_record(LIST_URI), ev.StarterPackUpserted, ev.StarterPackRemoved),
    ("app.bsky.feed.generator", generator_record(), ev.FeedGeneratorUpserted, ev.FeedGeneratorRemoved),
    ("app.bsky.feed.threadgate", threadgate_record(POST_URI), ev.ThreadgateUpserted, ev.ThreadgateRemoved),
    ("app.bsky.labeler.service", labeler_record(), ev.LabelerServiceUpserted, ev.LabelerServiceRemoved),
    ("app.bsky.actor.profile", profile_record(), ev.ProfileUpdated, ev.ProfileRemoved),
]


# --- hypothesis strategies for hostile input ------------------------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
"""Arbitrary JSON values."""

_EVENT_KEYS = st.sampled_from(
    ["did", "time_us", "kind", "commit", "identity", "account", "cursor", "rev", "operation", "collection",
     "rkey", "record", "cid", "seq", "handle", "active", "status", "subject", "uri", "createdAt", "text"]
)
_EVENT_VALUES = st.none() | st.booleans() | st.integers() | st.sampled_from(
    ["commit", "identity", "account", "create", "update", "delete", ALICE, "3mptbypluud2a", "app.bsky.feed.like",
     "app.bsky.feed.post", "app.bsky.graph.follow", "self", f"at://{BOB}/app.bsky.feed.post/3mpt", CREATED_AT]
)
EVENTISH = st.recursive(
    _EVENT_VALUES,
    lambda children: st.dictionaries(_EVENT_KEYS, children, max_size=7) | st.lists(children, max_size=3),
    max_leaves=25,
)
"""JSON shaped like Jetstream events (their keys and typical values, nested at random)."""
