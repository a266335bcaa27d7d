"""A local stand-in for the AT Protocol AppView (and a PDS session), for tests and the demo.

It speaks the real XRPC wire (``GET``/``POST /xrpc/<nsid>``, JSON bodies, ``{"error",
"message"}`` error bodies, ``ratelimit-*`` headers) with lexicon-conformant answers built from a
small social graph (:class:`Graph`: users, follows, posts, likes, reposts; see
:func:`generate_graph`, and ``tests/fixtures/appview/graph.json``):

- ``app.bsky.actor.getProfiles`` (1-25 ``actors``, handles or DIDs; unknown actors left out),
  ``app.bsky.graph.getFollowers``, ``app.bsky.graph.getFollows``, ``app.bsky.feed.searchPosts``
  (``q`` words and ``#tags``, ``sort`` top/latest, ``author``, ``mentions``),
  ``app.bsky.feed.getLikes``, ``app.bsky.feed.getRepostedBy``, ``app.bsky.feed.getPostThread``
  (``depth``, ``parentHeight``), ``app.bsky.feed.getAuthorFeed`` (``filter``, reposts with
  ``reasonRepost``);
- the account's side: ``com.atproto.server.createSession`` (identifier + app password from
  ``accounts``), ``refreshSession``, ``getSession``, ``com.atproto.repo.createRecord`` (follows
  and likes change the graph) and ``app.bsky.notification.listNotifications``.

Lists paginate with opaque cursors and honour ``limit`` (1-100, else 400 ``InvalidRequest``).
Every response carries ``ratelimit-limit/remaining/reset/policy`` of a fixed window
(``window_limit`` requests per ``window_seconds``; beyond it, 429).

Faults on command, as methods or over HTTP on the same port: :meth:`AppViewStandIn.fail`
(``POST /_standin/fail {"status": 500, "times": 3, "method": null}``),
:meth:`~AppViewStandIn.rate_limit` (``POST /_standin/rate_limit {"times": 1, "reset_in": 1.0}``:
429 with ``ratelimit-remaining: 0`` and ``ratelimit-reset`` = that epoch second),
:meth:`~AppViewStandIn.slow` (``POST /_standin/slow {"delay": 2.0, "times": 1}``),
:meth:`~AppViewStandIn.clear_faults` (``POST /_standin/clear``). Every XRPC request is recorded
with its arrival time (:attr:`AppViewStandIn.requests`, ``GET /_standin/requests``), so tests
can measure the rate a client achieved.

Command line: ``python -m streams.local.appview [--graph FILE] [--port N] [--account handle:password]``.

One module of about 900 lines: a stand-in, never part of the runtime; most lines are the lexicon-
conformant answers of each XRPC method.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import math
import random
import re
import signal
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

__all__ = ["AppViewStandIn", "Fault", "Graph", "RequestRecord", "generate_graph", "main"]

_TID_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
POST = "app.bsky.feed.post"
FOLLOW = "app.bsky.graph.follow"
LIKE = "app.bsky.feed.like"
REPOST = "app.bsky.feed.repost"


# --- identifiers ---------------------------------------------------------------------------


def tid(time_us: int, clock_id: int = 0) -> str:
    """A TID (record key) for ``time_us``: 13 sortable base32 characters."""
    value = (time_us << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_TID_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def _present(**fields: Any) -> dict[str, Any]:
    """The fields that have a value: the AppView leaves an unset optional field out (never null)."""
    return {name: value for name, value in fields.items() if value is not None}


def fake_cid(*parts: str) -> str:
    """A CIDv1-looking string (``bafyrei`` + base32 of a sha256), deterministic in ``parts``."""
    digest = hashlib.sha256("|".join(parts).encode()).digest()
    return "bafyrei" + base64.b32encode(digest).decode().lower().rstrip("=")[:52]


def plc_did(seed: str) -> str:
    digest = hashlib.sha256(seed.encode()).digest()
    return "did:plc:" + base64.b32encode(digest).decode().lower()[:24]


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- the graph -------------------------------------------------------------------------------


@dataclass
class Graph:
    """A small social graph: users, follow edges, posts, likes, reposts (JSON-ready dicts).

    ``users``: ``{did, handle, displayName, description, createdAt}``; ``follows``:
    ``{uri, author, subject, createdAt}`` (author follows subject); ``posts``: ``{uri, cid,
    author, text, createdAt, langs, tags, mentions, reply: {root, parent} | None}``; ``likes``
    and ``reposts``: ``{uri, author, subject, createdAt}`` (subject: a post uri).
    """

    users: list[dict[str, Any]]
    follows: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)
    likes: list[dict[str, Any]] = field(default_factory=list)
    reposts: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.reindex()

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        data = orjson.loads(Path(path).read_bytes())
        return cls(users=data["users"], follows=data["follows"], posts=data["posts"], likes=data["likes"],
                   reposts=data["reposts"])

    def to_json(self) -> bytes:
        return orjson.dumps({"users": self.users, "follows": self.follows, "posts": self.posts, "likes": self.likes,
                             "reposts": self.reposts}, option=orjson.OPT_INDENT_2)

    def reindex(self) -> None:
        self.by_did = {u["did"]: u for u in self.users}
        self.by_handle = {u["handle"].lower(): u for u in self.users}
        self.post_by_uri = {p["uri"]: p for p in self.posts}
        self.followers_of: dict[str, list[dict[str, Any]]] = {u["did"]: [] for u in self.users}
        self.follows_of: dict[str, list[dict[str, Any]]] = {u["did"]: [] for u in self.users}
        for edge in self.follows:
            self._index_follow(edge)
        self.posts_of: dict[str, list[dict[str, Any]]] = {u["did"]: [] for u in self.users}
        self.replies_to: dict[str, list[dict[str, Any]]] = {}
        for post in self.posts:
            self._index_post(post)
        self.likes_of: dict[str, list[dict[str, Any]]] = {}
        for like in self.likes:
            self.likes_of.setdefault(like["subject"], []).append(like)
        self.reposts_of: dict[str, list[dict[str, Any]]] = {}
        self.reposts_by: dict[str, list[dict[str, Any]]] = {}
        for repost in self.reposts:
            self.reposts_of.setdefault(repost["subject"], []).append(repost)
            self.reposts_by.setdefault(repost["author"], []).append(repost)

    def _index_follow(self, edge: dict[str, Any]) -> None:
        self.followers_of.setdefault(edge["subject"], []).append(edge)
        self.follows_of.setdefault(edge["author"], []).append(edge)

    def _index_post(self, post: dict[str, Any]) -> None:
        self.posts_of.setdefault(post["author"], []).append(post)
        if post.get("reply"):
            self.replies_to.setdefault(post["reply"]["parent"], []).append(post)

    def add_follow(self, edge: dict[str, Any]) -> None:
        self.follows.append(edge)
        self._index_follow(edge)

    def add_like(self, like: dict[str, Any]) -> None:
        self.likes.append(like)
        self.likes_of.setdefault(like["subject"], []).append(like)

    def resolve(self, actor: str) -> dict[str, Any] | None:
        """The user named by a DID or a handle (``@`` and case ignored)."""
        if actor.startswith("did:"):
            return self.by_did.get(actor)
        return self.by_handle.get(actor.lstrip("@").lower())

    def followers(self, did: str) -> list[str]:
        """DIDs following ``did``, newest first (the AppView's order)."""
        return [e["author"] for e in sorted(self.followers_of.get(did, []), key=lambda e: e["createdAt"], reverse=True)]

    def following(self, did: str) -> list[str]:
        """DIDs ``did`` follows, newest first."""
        return [e["subject"] for e in sorted(self.follows_of.get(did, []), key=lambda e: e["createdAt"], reverse=True)]


_FIRST = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
          "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yara", "zoe", "quinn", "uma", "xavi",
          "leo"]
_TOPICS = ["introduction", "newhere", "art", "photography", "tech", "politics", "music", "science", "books", "cats"]
_WORDS = ["sunset", "coffee", "painting", "camera", "python", "election", "guitar", "rocket", "novel", "garden"]


def generate_graph(seed: int = 7, users: int = 50, *, start: datetime = datetime(2026, 7, 1, tzinfo=UTC)) -> Graph:
    """A deterministic graph of ``users`` accounts: three popular accounts (followed by about
    half of the others), everyone following one to four others, a few accounts nobody
    follows, posts with hashtags and mentions, replies, likes (some posts get many) and reposts."""
    rng = random.Random(seed)
    clock = iter(range(10**9))

    def moment() -> datetime:
        return start + timedelta(minutes=next(clock) * 7 + rng.randint(0, 6))

    people = []
    for index in range(users):
        name = f"{_FIRST[index % len(_FIRST)]}{index // len(_FIRST) or ''}"
        handle = f"{name}.test"
        people.append({
            "did": plc_did(f"standin:{seed}:{handle}"),
            "handle": handle,
            "displayName": name.capitalize(),
            "description": f"{name.capitalize()} posts about {rng.choice(_TOPICS)} and {rng.choice(_TOPICS)}.",
            "createdAt": iso(start - timedelta(days=rng.randint(1, 400))),
        })
    dids = [p["did"] for p in people]
    popular, lonely = dids[:3], set(dids[-3:])
    edges: set[tuple[str, str]] = set()
    for did in dids:
        for star in popular:
            if star != did and rng.random() < 0.5:
                edges.add((did, star))
        others = [d for d in dids if d != did and d not in lonely]
        for subject in rng.sample(others, rng.randint(1, 4)):
            edges.add((did, subject))
    follows = []
    for author, subject in sorted(edges, key=lambda e: (dids.index(e[0]), dids.index(e[1]))):
        created = moment()
        follows.append({"uri": f"at://{author}/{FOLLOW}/{tid(int(created.timestamp() * 1e6))}", "author": author,
                        "subject": subject, "createdAt": iso(created)})

    posts: list[dict[str, Any]] = []
    for did in dids:
        for _ in range(rng.randint(0, 4)):
            created = moment()
            tags = rng.sample(_TOPICS, rng.randint(0, 2))
            mentions = [rng.choice(popular) if rng.random() < 0.5 else rng.choice(dids)] if rng.random() < 0.35 else []
            mentions = [m for m in mentions if m != did]
            reply = None
            if posts and rng.random() < 0.25:
                parent = rng.choice(posts)
                root = parent["reply"]["root"] if parent.get("reply") else parent["uri"]
                reply = {"root": root, "parent": parent["uri"]}
            words = " ".join(rng.sample(_WORDS, 2))
            text = " ".join([f"A post about {words}."] + [f"@{people[dids.index(m)]['handle']}" for m in mentions]
                            + [f"#{t}" for t in tags])
            uri = f"at://{did}/{POST}/{tid(int(created.timestamp() * 1e6))}"
            posts.append({"uri": uri, "cid": fake_cid(uri), "author": did, "text": text, "createdAt": iso(created),
                          "langs": ["en"], "tags": tags, "mentions": mentions, "reply": reply})
    likes, reposts = [], []
    hot = set(rng.sample([p["uri"] for p in posts], min(6, len(posts))))
    for did in dids:
        candidates = [p for p in posts if p["author"] != did]
        chosen = {p["uri"] for p in rng.sample(candidates, min(len(candidates), rng.randint(0, 5)))}
        chosen |= {uri for uri in hot if rng.random() < 0.6 and uri in {p["uri"] for p in candidates}}
        for uri in sorted(chosen):
            created = moment()
            likes.append({"uri": f"at://{did}/{LIKE}/{tid(int(created.timestamp() * 1e6))}", "author": did,
                          "subject": uri, "createdAt": iso(created)})
        if candidates and rng.random() < 0.3:
            created = moment()
            reposts.append({"uri": f"at://{did}/{REPOST}/{tid(int(created.timestamp() * 1e6))}", "author": did,
                            "subject": rng.choice(candidates)["uri"], "createdAt": iso(created)})
    return Graph(users=people, follows=follows, posts=posts, likes=likes, reposts=reposts)


# --- faults and records ----------------------------------------------------------------------


@dataclass
class Fault:
    """An answer forced on the next ``times`` matching requests (``method`` None: any XRPC
    method): an HTTP ``status`` (429 with rate-limit headers resetting in ``reset_in`` s), or
    a ``delay`` before answering normally."""

    times: int
    method: str | None = None
    status: int | None = None
    reset_in: float = 1.0
    delay: float = 0.0

    def matches(self, method: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One XRPC request: when it arrived (``at``: monotonic seconds, ``wall``: unix seconds),
    the method, its query parameters, the status answered and the session's DID if any."""

    at: float
    wall: float
    method: str
    params: dict[str, list[str]]
    status: int
    did: str | None = None


class XrpcFailure(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status, self.error, self.message = status, error, message


def _bad(message: str) -> XrpcFailure:
    return XrpcFailure(400, "InvalidRequest", message)


# --- the server ------------------------------------------------------------------------------


class AppViewStandIn:
    """The stand-in server; see the module docstring. ``async with AppViewStandIn(graph) as s``
    then point clients at :attr:`url`."""

    def __init__(self, graph: Graph | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 accounts: Mapping[str, str] | None = None, window_limit: int = 3000, window_seconds: float = 300.0,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self.graph = graph if graph is not None else generate_graph()
        self.host, self._port = host, port
        self.accounts = {k.lower(): v for k, v in (accounts or {}).items()}
        self.window_limit, self.window_seconds = window_limit, window_seconds
        self._wall = wall_clock
        self.requests: list[RequestRecord] = []
        self.faults: list[Fault] = []
        self.created: list[dict[str, Any]] = []
        """Records made by ``createRecord``: ``{uri, cid, repo, collection, record}``."""
        self._tokens: dict[str, tuple[str, str]] = {}  # token -> (did, kind)
        self._token_counter = 0
        self._window_start = 0.0
        self._window_count = 0
        self._runner: web.AppRunner | None = None
        self._rkey_clock = 0

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/xrpc/{nsid}", self._xrpc)
        app.router.add_get("/_standin/requests", self._control_requests)
        app.router.add_post("/_standin/{fault}", self._control_fault)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        self._port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AppViewStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    # -- faults -----------------------------------------------------------------------------

    def fail(self, status: int = 500, times: int = 1, method: str | None = None) -> None:
        """Answer the next ``times`` (matching) requests with ``status``."""
        self.faults.append(Fault(times=times, method=method, status=status))

    def rate_limit(self, times: int = 1, reset_in: float = 1.0, method: str | None = None) -> None:
        """Answer the next ``times`` requests 429, with ``ratelimit-reset`` ``reset_in`` s ahead
        (as a whole unix second, like the real service)."""
        self.faults.append(Fault(times=times, method=method, status=429, reset_in=reset_in))

    def slow(self, delay: float, times: int = 1, method: str | None = None) -> None:
        """Wait ``delay`` seconds before answering the next ``times`` requests."""
        self.faults.append(Fault(times=times, method=method, delay=delay))

    def clear_faults(self) -> None:
        self.faults.clear()

    def expire_tokens(self) -> None:
        """Make every access token expired (clients must refresh their session)."""
        self._tokens = {t: v for t, v in self._tokens.items() if v[1] == "refresh"}

    def requests_for(self, method: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method]

    def _take_fault(self, method: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(method):
                fault.times -= 1
                return fault
        return None

    # -- control endpoints ------------------------------------------------------------------

    async def _control_requests(self, request: web.Request) -> web.Response:
        body = [{"at": r.at, "wall": r.wall, "method": r.method, "params": r.params, "status": r.status}
                for r in self.requests]
        return web.json_response(body, dumps=lambda v: orjson.dumps(v).decode())

    async def _control_fault(self, request: web.Request) -> web.Response:
        name = request.match_info["fault"]
        options = await request.json() if request.can_read_body else {}
        if name == "fail":
            self.fail(int(options.get("status", 500)), int(options.get("times", 1)), options.get("method"))
        elif name == "rate_limit":
            self.rate_limit(int(options.get("times", 1)), float(options.get("reset_in", 1.0)), options.get("method"))
        elif name == "slow":
            self.slow(float(options.get("delay", 1.0)), int(options.get("times", 1)), options.get("method"))
        elif name == "clear":
            self.clear_faults()
        elif name == "reset":
            self.clear_faults()
            self.requests.clear()
        else:
            return web.json_response({"error": "unknown control"}, status=404)
        return web.json_response({"ok": True})

    # -- dispatch ---------------------------------------------------------------------------

    def _window_headers(self, wall: float, exhausted: bool = False) -> dict[str, str]:
        reset = self._window_start + self.window_seconds
        remaining = 0 if exhausted else max(0, self.window_limit - self._window_count)
        return {"ratelimit-limit": str(self.window_limit), "ratelimit-remaining": str(remaining),
                "ratelimit-reset": str(math.ceil(reset)),
                "ratelimit-policy": f"{self.window_limit};w={int(self.window_seconds)}"}

    async def _xrpc(self, request: web.Request) -> web.Response:
        nsid = request.match_info["nsid"]
        arrived, wall = time.monotonic(), self._wall()
        params = {key: request.query.getall(key) for key in request.query}
        if wall >= self._window_start + self.window_seconds:
            self._window_start, self._window_count = wall, 0
        self._window_count += 1
        fault = self._take_fault(nsid)
        did = self._peek_did(request)
        if fault is not None and fault.delay:
            await asyncio.sleep(fault.delay)
        if fault is not None and fault.status == 429:
            status, headers = 429, self._window_headers(wall, exhausted=True)
            headers["ratelimit-reset"] = str(math.ceil(wall + fault.reset_in))
            body: Any = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        elif fault is not None and fault.status is not None:
            status, headers = fault.status, {}
            body = {"error": "InternalServerError" if fault.status >= 500 else "InvalidRequest",
                    "message": f"stand-in fault {fault.status}"}
        elif self._window_count > self.window_limit:
            status, headers = 429, self._window_headers(wall, exhausted=True)
            body = {"error": "RateLimitExceeded", "message": "Rate Limit Exceeded"}
        else:
            headers = self._window_headers(wall)
            try:
                status, body = 200, await self._answer(nsid, request, params)
            except XrpcFailure as failure:
                status, body = failure.status, {"error": failure.error, "message": failure.message}
        self.requests.append(RequestRecord(arrived, wall, nsid, params, status, did))
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

    async def _answer(self, nsid: str, request: web.Request, params: dict[str, list[str]]) -> Any:
        queries: dict[str, Callable[[dict[str, list[str]], str | None], Any]] = {
            "app.bsky.actor.getProfiles": self._get_profiles,
            "app.bsky.graph.getFollowers": self._get_followers,
            "app.bsky.graph.getFollows": self._get_follows,
            "app.bsky.feed.searchPosts": self._search_posts,
            "app.bsky.feed.getLikes": self._get_likes,
            "app.bsky.feed.getRepostedBy": self._get_reposted_by,
            "app.bsky.feed.getPostThread": self._get_post_thread,
            "app.bsky.feed.getAuthorFeed": self._get_author_feed,
            "app.bsky.notification.listNotifications": self._list_notifications,
            "com.atproto.server.getSession": self._get_session,
        }
        procedures = {
            "com.atproto.server.createSession": self._create_session,
            "com.atproto.server.refreshSession": self._refresh_session,
            "com.atproto.repo.createRecord": self._create_record,
        }
        if nsid in queries:
            if request.method != "GET":
                raise XrpcFailure(405, "InvalidRequest", f"{nsid} is a query: use GET")
            return queries[nsid](params, self._session_did(request, required=False))
        if nsid in procedures:
            if request.method != "POST":
                raise XrpcFailure(405, "InvalidRequest", f"{nsid} is a procedure: use POST")
            try:
                body = orjson.loads(await request.read() or b"{}")
            except orjson.JSONDecodeError:
                raise _bad("request body is not JSON") from None
            if not isinstance(body, dict):
                raise _bad("request body must be an object")
            return procedures[nsid](body, request)
        raise XrpcFailure(501, "MethodNotImplemented", f"Method Not Implemented: {nsid}")

    # -- parameters -------------------------------------------------------------------------

    @staticmethod
    def _one(params: dict[str, list[str]], name: str, default: str | None = None, *, required: bool = False) -> str | None:
        values = params.get(name)
        if not values:
            if required:
                raise _bad(f"Error: Params must have the property \"{name}\"")
            return default
        return values[-1]

    def _limit(self, params: dict[str, list[str]], default: int) -> int:
        raw = self._one(params, "limit", str(default))
        try:
            value = int(raw or default)
        except ValueError:
            raise _bad("Error: limit must be an integer") from None
        if not 1 <= value <= 100:
            raise _bad("Error: limit must be an integer between 1 and 100")
        return value

    def _page(self, items: Sequence[Any], params: dict[str, list[str]], default_limit: int) -> tuple[list[Any], str | None]:
        limit = self._limit(params, default_limit)
        cursor = self._one(params, "cursor")
        start = 0
        if cursor:
            match = re.fullmatch(r"c([0-9]+)", cursor)
            if match is None:
                raise _bad("Error: malformed cursor")
            start = int(match.group(1))
        page = list(items[start:start + limit])
        following = f"c{start + limit}" if start + limit < len(items) else None
        return page, following

    def _actor(self, params: dict[str, list[str]], name: str = "actor") -> dict[str, Any]:
        actor = self._one(params, name, required=True) or ""
        user = self.graph.resolve(actor)
        if user is None:
            raise _bad("Profile not found")
        return user

    # -- views ------------------------------------------------------------------------------

    def _viewer(self, did: str, viewer: str | None) -> dict[str, Any]:
        state: dict[str, Any] = {"muted": False, "blockedBy": False}
        if viewer is not None:
            following = next((e["uri"] for e in self.graph.follows_of.get(viewer, []) if e["subject"] == did), None)
            followed_by = next((e["uri"] for e in self.graph.follows_of.get(did, []) if e["subject"] == viewer), None)
            if following:
                state["following"] = following
            if followed_by:
                state["followedBy"] = followed_by
        return state

    def profile_basic(self, did: str, viewer: str | None = None) -> dict[str, Any]:
        user = self.graph.by_did[did]
        return {
            "did": did,
            "handle": user["handle"],
            **_present(displayName=user.get("displayName")),
            "avatar": f"https://cdn.bsky.app/img/avatar/plain/{did}/{fake_cid(did, 'avatar')}@jpeg",
            "associated": {"lists": 0, "feedgens": 0, "starterPacks": 0, "labeler": False,
                           "chat": {"allowIncoming": "following"}},
            "viewer": self._viewer(did, viewer),
            "labels": [],
            "createdAt": user["createdAt"],
        }

    def profile_view(self, did: str, viewer: str | None = None) -> dict[str, Any]:
        user = self.graph.by_did[did]
        return {**self.profile_basic(did, viewer), **_present(description=user.get("description")),
                "indexedAt": user["createdAt"]}

    def profile_detailed(self, did: str, viewer: str | None = None) -> dict[str, Any]:
        return {
            **self.profile_view(did, viewer),
            "banner": f"https://cdn.bsky.app/img/banner/plain/{did}/{fake_cid(did, 'banner')}@jpeg",
            "followersCount": len(self.graph.followers_of.get(did, [])),
            "followsCount": len(self.graph.follows_of.get(did, [])),
            "postsCount": len(self.graph.posts_of.get(did, [])),
        }

    def post_record(self, post: dict[str, Any]) -> dict[str, Any]:
        text: str = post["text"]
        facets = []
        encoded = text.encode()
        for did in post.get("mentions", []):
            needle = f"@{self.graph.by_did[did]['handle']}".encode()
            start = encoded.find(needle)
            if start >= 0:
                facets.append({"index": {"byteStart": start, "byteEnd": start + len(needle)},
                               "features": [{"$type": "app.bsky.richtext.facet#mention", "did": did}]})
        for tag in post.get("tags", []):
            needle = f"#{tag}".encode()
            start = encoded.find(needle)
            if start >= 0:
                facets.append({"index": {"byteStart": start, "byteEnd": start + len(needle)},
                               "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}]})
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": post["createdAt"],
                                  "langs": post.get("langs", ["en"])}
        if facets:
            record["facets"] = facets
        if post.get("reply"):
            root, parent = self.graph.post_by_uri[post["reply"]["root"]], self.graph.post_by_uri[post["reply"]["parent"]]
            record["reply"] = {"root": {"uri": root["uri"], "cid": root["cid"]},
                               "parent": {"uri": parent["uri"], "cid": parent["cid"]}}
        return record

    def post_view(self, post: dict[str, Any], viewer: str | None = None) -> dict[str, Any]:
        uri = post["uri"]
        return {
            "uri": uri,
            "cid": post["cid"],
            "author": self.profile_basic(post["author"], viewer),
            "record": self.post_record(post),
            "replyCount": len(self.graph.replies_to.get(uri, [])),
            "repostCount": len(self.graph.reposts_of.get(uri, [])),
            "likeCount": len(self.graph.likes_of.get(uri, [])),
            "quoteCount": 0,
            "indexedAt": post["createdAt"],
            "viewer": {"threadMuted": False, "embeddingDisabled": False},
            "labels": [],
        }

    # -- app.bsky ---------------------------------------------------------------------------

    def _get_profiles(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        actors = params.get("actors", [])
        if not actors:
            raise _bad("Error: Params must have the property \"actors\"")
        if len(actors) > 25:
            raise _bad("Error: actors must not have more than 25 elements")
        found = [self.graph.resolve(actor) for actor in actors]
        return {"profiles": [self.profile_detailed(u["did"], viewer) for u in found if u is not None]}

    def _get_followers(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        user = self._actor(params)
        page, cursor = self._page(self.graph.followers(user["did"]), params, 50)
        out = {"subject": self.profile_view(user["did"], viewer),
               "followers": [self.profile_view(did, viewer) for did in page]}
        return {**out, "cursor": cursor} if cursor else out

    def _get_follows(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        user = self._actor(params)
        page, cursor = self._page(self.graph.following(user["did"]), params, 50)
        out = {"subject": self.profile_view(user["did"], viewer),
               "follows": [self.profile_view(did, viewer) for did in page]}
        return {**out, "cursor": cursor} if cursor else out

    def _search_posts(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        q = (self._one(params, "q", required=True) or "").strip()
        words = [w.lower() for w in q.split() if w]
        sort = self._one(params, "sort", "latest")
        if sort not in ("top", "latest"):
            raise _bad("Error: sort must be one of top, latest")
        author = self._one(params, "author")
        mentions = self._one(params, "mentions")
        author_did = (self.graph.resolve(author) or {}).get("did") if author else None
        mention_did = (self.graph.resolve(mentions) or {}).get("did") if mentions else None

        def matches(post: dict[str, Any]) -> bool:
            text = post["text"].lower()
            for word in words:
                if word.startswith("#"):
                    if word[1:] not in post.get("tags", []):
                        return False
                elif word not in text:
                    return False
            if author is not None and post["author"] != author_did:
                return False
            return mentions is None or mention_did in post.get("mentions", [])

        hits = [p for p in self.graph.posts if matches(p)]
        hits.sort(key=lambda p: p["createdAt"], reverse=True)
        if sort == "top":
            hits.sort(key=lambda p: -len(self.graph.likes_of.get(p["uri"], [])))
        page, cursor = self._page(hits, params, 25)
        out = {"hitsTotal": len(hits), "posts": [self.post_view(p, viewer) for p in page]}
        return {**out, "cursor": cursor} if cursor else out

    def _post(self, params: dict[str, list[str]]) -> dict[str, Any]:
        uri = self._one(params, "uri", required=True) or ""
        post = self.graph.post_by_uri.get(uri)
        if post is None:
            raise XrpcFailure(400, "NotFound", f"Post not found: {uri}")
        return post

    def _get_likes(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        post = self._post(params)
        likes = sorted(self.graph.likes_of.get(post["uri"], []), key=lambda like: like["createdAt"], reverse=True)
        page, cursor = self._page(likes, params, 50)
        out = {"uri": post["uri"], "cid": post["cid"],
               "likes": [{"indexedAt": like["createdAt"], "createdAt": like["createdAt"],
                          "actor": self.profile_view(like["author"], viewer)} for like in page]}
        return {**out, "cursor": cursor} if cursor else out

    def _get_reposted_by(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        post = self._post(params)
        reposts = sorted(self.graph.reposts_of.get(post["uri"], []), key=lambda r: r["createdAt"], reverse=True)
        page, cursor = self._page(reposts, params, 50)
        out = {"uri": post["uri"], "cid": post["cid"],
               "repostedBy": [self.profile_view(r["author"], viewer) for r in page]}
        return {**out, "cursor": cursor} if cursor else out

    def _thread(self, post: dict[str, Any], depth: int, parent_height: int, viewer: str | None) -> dict[str, Any]:
        node: dict[str, Any] = {"$type": "app.bsky.feed.defs#threadViewPost", "post": self.post_view(post, viewer)}
        if parent_height > 0 and post.get("reply"):
            parent = self.graph.post_by_uri.get(post["reply"]["parent"])
            node["parent"] = (self._thread(parent, 0, parent_height - 1, viewer) if parent is not None else
                              {"$type": "app.bsky.feed.defs#notFoundPost", "uri": post["reply"]["parent"],
                               "notFound": True})
        if depth > 0:
            replies = sorted(self.graph.replies_to.get(post["uri"], []), key=lambda p: p["createdAt"])
            node["replies"] = [self._thread(reply, depth - 1, 0, viewer) for reply in replies]
        return node

    def _get_post_thread(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        post = self._post(params)
        try:
            depth = int(self._one(params, "depth", "6") or 6)
            parent_height = int(self._one(params, "parentHeight", "80") or 80)
        except ValueError:
            raise _bad("Error: depth and parentHeight must be integers") from None
        if not (0 <= depth <= 1000 and 0 <= parent_height <= 1000):
            raise _bad("Error: depth and parentHeight must be between 0 and 1000")
        return {"thread": self._thread(post, depth, parent_height, viewer)}

    def _get_author_feed(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        user = self._actor(params)
        did = user["did"]
        mode = self._one(params, "filter", "posts_with_replies")
        if mode not in ("posts_with_replies", "posts_no_replies", "posts_with_media", "posts_and_author_threads",
                        "posts_with_video"):
            raise _bad(f"Error: filter must be a known value, got {mode}")
        items: list[tuple[str, dict[str, Any]]] = []
        for post in self.graph.posts_of.get(did, []):
            if mode in ("posts_with_media", "posts_with_video"):
                continue  # the graph's posts carry no media
            if post.get("reply") and mode == "posts_no_replies":
                continue
            item: dict[str, Any] = {"post": self.post_view(post, viewer)}
            if post.get("reply"):
                root = self.graph.post_by_uri[post["reply"]["root"]]
                parent = self.graph.post_by_uri[post["reply"]["parent"]]
                if mode == "posts_and_author_threads" and parent["author"] != did:
                    continue
                item["reply"] = {"root": {"$type": "app.bsky.feed.defs#postView", **self.post_view(root, viewer)},
                                 "parent": {"$type": "app.bsky.feed.defs#postView", **self.post_view(parent, viewer)}}
            items.append((post["createdAt"], item))
        if mode in ("posts_with_replies", "posts_no_replies"):
            for repost in self.graph.reposts_by.get(did, []):
                subject = self.graph.post_by_uri[repost["subject"]]
                items.append((repost["createdAt"], {
                    "post": self.post_view(subject, viewer),
                    "reason": {"$type": "app.bsky.feed.defs#reasonRepost", "by": self.profile_basic(did, viewer),
                               "indexedAt": repost["createdAt"]},
                }))
        items.sort(key=lambda pair: pair[0], reverse=True)
        page, cursor = self._page([item for _, item in items], params, 50)
        return {"feed": page, "cursor": cursor} if cursor else {"feed": page}

    def _list_notifications(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        if viewer is None:
            raise XrpcFailure(401, "AuthenticationRequired", "Authentication Required")
        wanted = set(params.get("reasons", [])) or None
        mine = {p["uri"] for p in self.graph.posts_of.get(viewer, [])}
        found: list[dict[str, Any]] = []

        def add(reason: str, uri: str, cid: str, author: str, record: dict[str, Any], indexed: str,
                subject: str | None = None) -> None:
            if author == viewer or (wanted is not None and reason not in wanted):
                return
            item = {"uri": uri, "cid": cid, "author": self.profile_view(author, viewer), "reason": reason,
                    "record": record, "isRead": False, "indexedAt": indexed, "labels": []}
            if subject is not None:
                item["reasonSubject"] = subject
            found.append(item)

        for edge in self.graph.followers_of.get(viewer, []):
            add("follow", edge["uri"], fake_cid(edge["uri"]), edge["author"],
                {"$type": FOLLOW, "subject": viewer, "createdAt": edge["createdAt"]}, edge["createdAt"])
        for post in self.graph.posts:
            record = self.post_record(post)
            if viewer in post.get("mentions", []):
                add("mention", post["uri"], post["cid"], post["author"], record, post["createdAt"])
            elif post.get("reply") and post["reply"]["parent"] in mine:
                add("reply", post["uri"], post["cid"], post["author"], record, post["createdAt"],
                    post["reply"]["parent"])
        for like in self.graph.likes:
            if like["subject"] in mine:
                subject = self.graph.post_by_uri[like["subject"]]
                add("like", like["uri"], fake_cid(like["uri"]), like["author"],
                    {"$type": LIKE, "subject": {"uri": subject["uri"], "cid": subject["cid"]},
                     "createdAt": like["createdAt"]}, like["createdAt"], like["subject"])
        found.sort(key=lambda item: item["indexedAt"], reverse=True)
        page, cursor = self._page(found, params, 50)
        out = {"notifications": page, "seenAt": iso(datetime.fromtimestamp(self._wall(), UTC))}
        return {**out, "cursor": cursor} if cursor else out

    # -- com.atproto (the account's side) ---------------------------------------------------

    def _issue(self, did: str) -> dict[str, Any]:
        self._token_counter += 1
        access, refresh = f"standin-access-{self._token_counter}", f"standin-refresh-{self._token_counter}"
        self._tokens[access] = (did, "access")
        self._tokens[refresh] = (did, "refresh")
        user = self.graph.by_did[did]
        return {"accessJwt": access, "refreshJwt": refresh, "handle": user["handle"], "did": did, "active": True}

    def _session_did(self, request: web.Request, *, required: bool = True, kind: str = "access") -> str | None:
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            if required:
                raise XrpcFailure(401, "AuthenticationRequired", "Authentication Required")
            return None
        token = header.removeprefix("Bearer ").strip()
        known = self._tokens.get(token)
        if known is None or known[1] != kind:
            if kind == "access" and token.startswith("standin-access-"):
                raise XrpcFailure(400, "ExpiredToken", "Token has expired")
            raise XrpcFailure(401, "InvalidToken", "Token could not be verified")
        return known[0]

    def _peek_did(self, request: web.Request) -> str | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        known = self._tokens.get(token)
        return known[0] if known is not None else None

    def _create_session(self, body: dict[str, Any], request: web.Request) -> Any:
        identifier, password = str(body.get("identifier", "")), str(body.get("password", ""))
        user = self.graph.resolve(identifier)
        expected = self.accounts.get(identifier.lower()) or (self.accounts.get(user["handle"].lower()) if user else None)
        if user is None or expected is None or password != expected:
            raise XrpcFailure(401, "AuthenticationRequired", "Invalid identifier or password")
        return self._issue(user["did"])

    def _refresh_session(self, body: dict[str, Any], request: web.Request) -> Any:
        did = self._session_did(request, kind="refresh")
        assert did is not None
        return self._issue(did)

    def _get_session(self, params: dict[str, list[str]], viewer: str | None) -> Any:
        if viewer is None:
            raise XrpcFailure(401, "AuthenticationRequired", "Authentication Required")
        return {"handle": self.graph.by_did[viewer]["handle"], "did": viewer, "active": True}

    def _create_record(self, body: dict[str, Any], request: web.Request) -> Any:
        did = self._session_did(request)
        assert did is not None
        repo, collection, record = body.get("repo"), body.get("collection"), body.get("record")
        user = self.graph.resolve(str(repo or ""))
        if user is None or user["did"] != did:
            raise _bad("Error: repo must be the session's own repository")
        if not isinstance(collection, str) or not isinstance(record, dict):
            raise _bad("Error: collection and record are required")
        created_at = record.get("createdAt")
        if not isinstance(created_at, str):
            raise XrpcFailure(400, "InvalidRecord", "Record/createdAt must be a datetime string")
        now = self._wall()
        self._rkey_clock += 1
        rkey = tid(int(now * 1_000_000), self._rkey_clock)
        uri = f"at://{did}/{collection}/{rkey}"
        if collection == FOLLOW:
            subject = record.get("subject")
            if not isinstance(subject, str) or self.graph.resolve(subject) is None:
                raise XrpcFailure(400, "InvalidRecord", "Record/subject must be a DID")
            self.graph.add_follow({"uri": uri, "author": did, "subject": subject, "createdAt": created_at})
        elif collection == LIKE:
            subject = record.get("subject")
            if not isinstance(subject, dict) or not isinstance(subject.get("uri"), str) or not isinstance(subject.get("cid"), str):
                raise XrpcFailure(400, "InvalidRecord", "Record/subject must be a strong reference")
            self.graph.add_like({"uri": uri, "author": did, "subject": subject["uri"], "createdAt": created_at})
        cid = fake_cid(uri, orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode())
        self.created.append({"uri": uri, "cid": cid, "repo": did, "collection": collection, "record": record})
        return {"uri": uri, "cid": cid, "commit": {"cid": fake_cid(uri, "commit"), "rev": rkey},
                "validationStatus": "valid"}


# --- command line ----------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local AT Protocol AppView stand-in (127.0.0.1 only).")
    parser.add_argument("--graph", type=Path, help="graph JSON (default: generated, seed 7, 50 users)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--account", action="append", default=[], help="handle:app-password for createSession")
    args = parser.parse_args(list(argv) if argv is not None else None)
    graph = Graph.load(args.graph) if args.graph else generate_graph()
    accounts = dict(item.split(":", 1) for item in args.account)

    async def serve() -> None:
        async with AppViewStandIn(graph, port=args.port, accounts=accounts) as standin:
            print(f"AppView stand-in on {standin.url} ({len(graph.users)} users)", flush=True)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
