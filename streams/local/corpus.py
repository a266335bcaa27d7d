"""Generate realistic Jetstream v1 events, deterministically for a seed.

The mix is calibrated on a real capture (``streams/data/sample-2026-07-04.jsonl``)
and on the 2026 live rates: about 69 % of events are likes, 12 % posts, 9 % reposts, then
follows, blocks, profile updates, a trickle of lists, list items, starter packs, feed
generators, threadgates, labeler services and statuses, and a few identity and account
events. Records follow the AT Protocol lexicons (``app.bsky.*``): posts carry ``text``,
``createdAt``, ``langs``, replies with ``{root, parent}`` strong refs, every embed kind
(images, video, external, record, recordWithMedia) and facets (``#mention``, ``#link`` with the
text truncated while the facet keeps the full URI, ``#tag``) whose ``index`` is in UTF-8 bytes.

Consistency a consumer can rely on:

- likes, reposts, replies and quotes refer to posts created earlier in the stream;
- follows, blocks, list items and mentions name other generated accounts;
- every delete refers to an earlier create of the same ``did + collection + rkey``, and each
  created record is deleted at most once;
- one commit with several operations (a post with its threadgate, a list with its items, a
  starter pack with its list) becomes several events sharing one ``rev``;
- ``rev`` and TID record keys are 13-character base32-sortable TIDs that increase per account;
  CIDs are well-formed CIDv1 strings (``bafyrei...`` for records, ``bafkrei...`` for blobs);
- ``time_us`` strictly increases, averaging ``rate_per_s`` events per second;
- accounts act with a Zipf-like skew (exponent ``skew``) over ``accounts`` distinct DIDs,
  and a separate Zipf ranking decides who gets followed, mentioned and liked.

Events are serialised compactly like Jetstream (no spaces; keys ``did, time_us, kind,
commit|identity|account``; record keys in the service's order; ``&``, ``<``, ``>`` escaped as
Go does). The same arguments always give the same bytes (Python's ``random.Random`` is
platform independent).

One module of about 1,000 lines: a stand-in, never part of the runtime; most lines are the record
builders of each collection, calibrated on a real capture.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as _dt
import itertools
import math
import random
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson

__all__ = ["DEFAULT_START_TIME_US", "MIX", "generate", "main", "tid", "write"]

DEFAULT_START_TIME_US = 1_783_175_888_000_000
"""2026-07-04T14:38:08Z, the moment the real sample was captured."""

_B32_SORTABLE = "234567abcdefghijklmnopqrstuvwxyz"
_B32_PAIRS = [a + b for a in _B32_SORTABLE for b in _B32_SORTABLE]
_DID_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"  # RFC 4648 base32, lower case
_BASE32_OF_BYTE = bytes(ord(_DID_ALPHABET[b & 31]) for b in range(256))
_BASE32_FIRST = [_DID_ALPHABET[i] for i in range(8)]
_BASE32_LAST = [_DID_ALPHABET[i << 2] for i in range(8)]

_POST = "app.bsky.feed.post"
_LIKE = "app.bsky.feed.like"
_REPOST = "app.bsky.feed.repost"
_FOLLOW = "app.bsky.graph.follow"
_BLOCK = "app.bsky.graph.block"
_PROFILE = "app.bsky.actor.profile"
_STATUS = "app.bsky.actor.status"
_LIST = "app.bsky.graph.list"
_LISTITEM = "app.bsky.graph.listitem"
_STARTERPACK = "app.bsky.graph.starterpack"
_GENERATOR = "app.bsky.feed.generator"
_THREADGATE = "app.bsky.feed.threadgate"
_LABELER = "app.bsky.labeler.service"

MIX: dict[str, float] = {
    "like_create": 0.664,
    "like_delete": 0.025,
    "post_create": 0.112,
    "post_delete": 0.006,
    "repost_create": 0.085,
    "repost_delete": 0.004,
    "follow_create": 0.040,
    "follow_delete": 0.017,
    "block_create": 0.006,
    "block_delete": 0.002,
    "profile_update": 0.012,
    "status_update": 0.0015,
    "list_create": 0.001,
    "listitem_create": 0.004,
    "listitem_delete": 0.001,
    "starterpack_create": 0.0004,
    "generator_create": 0.0003,
    "threadgate_create": 0.0015,
    "labeler_update": 0.0001,
    "identity": 0.004,
    "account": 0.002,
}
"""Probability of each action per drawn event (multi-operation commits add a few events)."""

_MIX_NAMES = list(MIX)
_MIX_CUM = list(itertools.accumulate(MIX.values()))

_ACCOUNT_STATUSES = (
    ("deactivated", 40),
    ("deleted", 20),
    ("takendown", 15),
    ("suspended", 10),
    ("desynchronized", 10),
    ("throttled", 5),
)

# Text banks: short phrases per language, so offsets are exercised with multi-byte text.
_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "Good morning everyone",
        "This is the best thing I've read all week",
        "Can't believe it's already July",
        "Finally finished the draft, sending it tomorrow",
        "Hot take: tabs are fine",
        "Who else is watching the game tonight?",
        "New blog post is up",
        "The light this evening was unreal",
        "Reminder to drink water and log off sometimes",
        "Thread on what we learned shipping this",
        "Okay this made me laugh way too hard",
        "Small wins & big plans <3",
        "Does anyone have a good recipe for sourdough?",
        "Happy Fourth to those who celebrate",
    ),
    "ja": (
        "おはようございます",
        "今日は暑すぎる",
        "新しいイラストを描きました",
        "ネトフリでも観られるっぽいよかった💦",
        "週末は京都に行ってきます",
        "このゲーム本当に面白い",
        "ありがとうございます！",
    ),
    "pt": (
        "Bom dia, gente",
        "Que calor hoje em São Paulo",
        "Alguém mais assistindo o jogo?",
        "Isso é maravilhoso demais",
        "Não acredito que já é julho",
    ),
    "es": (
        "Buenos días a todos",
        "¡Qué calor hace hoy!",
        "Nuevo capítulo disponible",
        "Esto me encantó muchísimo",
        "¿Alguien más viendo el partido?",
    ),
    "de": (
        "Guten Morgen zusammen",
        "Heute ist es viel zu heiß",
        "Schöner Artikel über Städtebau",
        "Endlich Wochenende",
    ),
    "ko": ("좋은 아침입니다", "이쁘시네용~~~", "오늘 너무 덥다", "새 노래 나왔어요"),
    "fr": ("Bonjour à tous", "Quelle chaleur aujourd'hui", "Très bel article, à lire", "Enfin le week-end"),
    "tr": ("Günaydın herkese", "Bugün hava çok sıcak", "Harika bir haber"),
    "ru": ("Всем доброе утро", "Вечерок с Аватаром 😍🔥", "Сегодня очень жарко"),
}
_LANG_WEIGHTS = (
    ("en", 52),
    ("ja", 14),
    ("pt", 10),
    ("es", 5),
    ("de", 5),
    ("ko", 3),
    ("fr", 4),
    ("tr", 4),
    ("ru", 3),
)
_LANGS = [lang for lang, _ in _LANG_WEIGHTS]
_LANG_CUM = list(itertools.accumulate(w for _, w in _LANG_WEIGHTS))
_EMOJI = ("😍", "🔥", "💦", "🎉", "✨", "🙏", "😂", "❤️", "👀", "🦋", "🇧🇷", "👩‍💻")
_TAGS = ("art", "photography", "bookclub", "gamedev", "python", "nature", "music", "news", "WIP", "猫", "fotografía")
_DOMAINS = (
    "www.youtube.com",
    "www.nytimes.com",
    "github.com",
    "en.wikipedia.org",
    "www.theguardian.com",
    "bsky.app",
    "www.tumblr.com",
    "open.spotify.com",
    "www.reuters.com",
    "blog.example.org",
)
_PATH_WORDS = ("watch", "2026", "07", "story", "tempo-tales", "behind-the-scenes", "release-notes", "track", "wiki")
_NAMES = ("alex", "sam", "mika", "jo", "rin", "lea", "noah", "yuki", "ana", "omar", "lena", "kai", "zoe", "ines", "taro")
_HANDLE_DOMAINS = ("bsky.social",) * 9 + ("example.com",)
_IMAGE_TYPES = ("image/jpeg", "image/jpeg", "image/jpeg", "image/png", "image/webp")
_LIST_PURPOSES = ("app.bsky.graph.defs#curatelist", "app.bsky.graph.defs#modlist", "app.bsky.graph.defs#referencelist")

_Op = tuple[str, str, str, "dict[str, object] | None"]  # (operation, collection, rkey, record)

_POOL_CAP = 50_000  # recent posts kept as like/repost/reply targets
_HOT_CAP = 2_000  # popular posts that attract a share of the engagement
_DELETABLE_CAP = 200_000  # created records remembered per collection so deletes can refer to them


_TID_HEADS: dict[int, str] = {}


def tid(time_us: int, clock_id: int) -> str:
    """A TID: 53-bit microsecond timestamp and 10-bit clock id as 13 base32-sortable chars.

    The 64-bit value ``time_us << 10 | clock_id`` is written 5 bits per character, most
    significant first, so TIDs sort like their timestamps.
    """
    t = time_us & 0x1F_FFFF_FFFF_FFFF
    pairs = _B32_PAIRS
    head = _TID_HEADS.get(t >> 20)  # the first 7 characters change about once a second
    if head is None:
        if len(_TID_HEADS) > 65_536:
            _TID_HEADS.clear()
        head = _TID_HEADS[t >> 20] = (
            _B32_SORTABLE[t >> 50] + pairs[(t >> 40) & 0x3FF] + pairs[(t >> 30) & 0x3FF] + pairs[(t >> 20) & 0x3FF]
        )
    return head + pairs[(t >> 10) & 0x3FF] + pairs[t & 0x3FF] + pairs[clock_id & 0x3FF]


def _escape_like_go(data: bytes) -> bytes:
    """Go's encoder escapes HTML-sensitive characters; mirror it so bytes look the same."""
    if b"&" in data or b"<" in data or b">" in data:
        data = data.replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e")
    return data


class _Iso:
    """Cheap ISO-8601 millisecond timestamps (``2026-07-04T14:38:08.999Z``)."""

    __slots__ = ("_prefixes",)

    def __init__(self) -> None:
        self._prefixes: dict[int, str] = {}

    def __call__(self, time_us: int) -> str:
        second, micros = divmod(time_us, 1_000_000)
        prefix = self._prefixes.get(second)
        if prefix is None:
            if len(self._prefixes) > 4096:
                self._prefixes.clear()
            stamp = _dt.datetime.fromtimestamp(second, tz=_dt.UTC)
            prefix = self._prefixes[second] = stamp.strftime("%Y-%m-%dT%H:%M:%S.")
        return f"{prefix}{micros // 1000:03d}Z"


class _Generator:
    """All state of one generated stream; :meth:`events` yields serialised events."""

    def __init__(self, *, seed: int, accounts: int, start_time_us: int, rate_per_s: float, skew: float) -> None:
        if accounts < 2:
            raise ValueError("accounts must be at least 2")
        if rate_per_s <= 0:
            raise ValueError("rate_per_s must be positive")
        self.rng = rng = random.Random(seed)
        self.iso = _Iso()
        self.time_us = start_time_us
        self.mean_gap_us = 1_000_000.0 / rate_per_s
        self.seq = 31_527_000_000 + rng.randrange(1_000_000)

        self.dids = ["did:plc:" + "".join(rng.choices(_DID_ALPHABET, k=24)) for _ in range(accounts)]
        self.handles = [
            f"{rng.choice(_NAMES)}{i}.{rng.choice(_HANDLE_DOMAINS)}" for i in range(accounts)
        ]
        self.clock_ids = [rng.randrange(1024) for _ in range(accounts)]
        self.last_rev = [0] * accounts
        zipf = list(itertools.accumulate(1.0 / (rank + 1) ** skew for rank in range(accounts)))
        self.zipf_cum = zipf
        self.actor_order = list(range(accounts))  # who acts most
        rng.shuffle(self.actor_order)
        self.subject_order = list(range(accounts))  # who gets followed, mentioned, liked most
        rng.shuffle(self.subject_order)
        self.hot_authors = set(self.subject_order[: max(1, accounts // 100)])
        self._actor_buf: list[int] = []
        self._subject_buf: list[int] = []

        # (uri, cid, root_uri, root_cid) of posts created so far
        self.recent_posts: list[tuple[str, str, str, str]] = []
        self.recent_next = 0
        self.hot_posts: list[tuple[str, str, str, str]] = []
        self.hot_next = 0
        # created records that may later be deleted: collection -> [(actor, rkey)]
        self.deletable: dict[str, list[tuple[int, str]]] = {
            _POST: [],
            _LIKE: [],
            _REPOST: [],
            _FOLLOW: [],
            _BLOCK: [],
            _LISTITEM: [],
        }
        self.lists: list[tuple[int, str]] = []  # (owner, list uri)
        self.own_posts: dict[int, str] = {}  # actor -> rkey of their last post without a threadgate
        self.has_profile: set[int] = set()
        self.has_status: set[int] = set()
        self.has_labeler: set[int] = set()

    # ---------------------------------------------------------------- draws

    def actor(self) -> int:
        if not self._actor_buf:
            self._actor_buf = self.rng.choices(self.actor_order, cum_weights=self.zipf_cum, k=4096)
        return self._actor_buf.pop()

    def subject(self, not_this: int) -> int:
        while True:
            if not self._subject_buf:
                self._subject_buf = self.rng.choices(self.subject_order, cum_weights=self.zipf_cum, k=4096)
            chosen = self._subject_buf.pop()
            if chosen != not_this:
                return chosen

    def digest32(self) -> str:
        """A random sha-256 digest as the 52 base32 characters that follow ``bafyrei``/``bafkrei``.

        The 4-byte CIDv1 prefix (version, codec, hash code, length) ends 2 bits into the first
        of these characters, which therefore carries 3 digest bits (``a``-``h``); the last one
        carries 3 bits and 2 zero padding bits; the 50 between are free.
        """
        raw = self.rng.randbytes(52)
        return _BASE32_FIRST[raw[0] & 7] + raw[1:51].translate(_BASE32_OF_BYTE).decode() + _BASE32_LAST[raw[51] & 7]

    def cid(self) -> str:
        """A dag-cbor record CID (``bafyrei...``, 59 characters)."""
        return "bafyrei" + self.digest32()

    def blob(self, mime: str, low: int, high: int) -> dict[str, object]:
        link = "bafkrei" + self.digest32()  # raw-codec blob CID
        return {"$type": "blob", "ref": {"$link": link}, "mimeType": mime, "size": self.rng.randrange(low, high)}

    def next_time(self) -> int:
        """Advance the relay clock by an exponential gap (Poisson arrivals at the set rate)."""
        self.time_us += 1 + int(-math.log(1.0 - self.rng.random()) * self.mean_gap_us)
        return self.time_us

    def next_seq(self) -> int:
        self.seq += 1 + int(self.rng.random() * 400)
        return self.seq

    def pick_post(self) -> tuple[str, str, str, str] | None:
        rng = self.rng
        if self.hot_posts and rng.random() < 0.35:
            return self.hot_posts[int(rng.random() * len(self.hot_posts))]
        pool = self.recent_posts
        if not pool:
            return None
        # recency skew: most engagement lands on the newest posts of the ring
        back = int(len(pool) * rng.random() ** 3)
        return pool[(self.recent_next - 1 - back) % len(pool)]

    def remember_post(self, ref: tuple[str, str, str, str], author: int) -> None:
        if len(self.recent_posts) < _POOL_CAP:
            self.recent_posts.append(ref)
            self.recent_next = len(self.recent_posts)
        else:
            self.recent_next %= _POOL_CAP
            self.recent_posts[self.recent_next] = ref
            self.recent_next += 1
        if author in self.hot_authors or self.rng.random() < 0.02:
            if len(self.hot_posts) < _HOT_CAP:
                self.hot_posts.append(ref)
            else:
                self.hot_posts[self.hot_next % _HOT_CAP] = ref
                self.hot_next += 1

    def remember(self, collection: str, actor: int, rkey: str) -> None:
        pool = self.deletable[collection]
        if len(pool) < _DELETABLE_CAP:
            pool.append((actor, rkey))
        else:
            pool[int(self.rng.random() * _DELETABLE_CAP)] = (actor, rkey)

    def take_deletable(self, collection: str) -> tuple[int, str] | None:
        pool = self.deletable[collection]
        if not pool:
            return None
        index = int(self.rng.random() * len(pool))
        chosen = pool[index]
        pool[index] = pool[-1]
        pool.pop()
        return chosen

    # ---------------------------------------------------------------- commits

    def revision(self, actor: int, time_us: int) -> int:
        """The commit's rev time: the PDS clock, ~0.4-0.9 s before the relay, increasing per repo."""
        rev_time = time_us - 400_000 - int(self.rng.random() * 500_000)
        if rev_time <= self.last_rev[actor]:
            rev_time = self.last_rev[actor] + 1
        return rev_time

    def rkey_time(self, actor: int, rev_time: int, ops: int) -> int:
        """A record key time a few ms before the rev, after the repo's previous rev."""
        candidate = rev_time - ops - 3_000 - int(self.rng.random() * 10_000)
        floor = self.last_rev[actor] + 1
        return candidate if candidate > floor else floor

    def begin(self, actor: int) -> tuple[int, int]:
        """Start a commit by ``actor``: its relay ``time_us`` and its rev time."""
        time_us = self.next_time()
        return time_us, self.revision(actor, time_us)

    def commit_events(self, actor: int, time_us: int, rev_time: int, ops: Sequence[_Op]) -> list[bytes]:
        """Serialise one commit of ``(operation, collection, rkey, record)`` ops, one event each.

        The first op's event gets ``time_us``; the others follow a few microseconds apart.
        """
        did = self.dids[actor]
        rev = tid(rev_time, self.clock_ids[actor])
        self.last_rev[actor] = rev_time
        out: list[bytes] = []
        for index, (operation, collection, rkey, record) in enumerate(ops):
            if index:
                time_us = self.time_us = self.time_us + 1 + int(self.rng.random() * 40)
            head = (
                f'{{"did":"{did}","time_us":{time_us},"kind":"commit","commit":{{"rev":"{rev}",'
                f'"operation":"{operation}","collection":"{collection}","rkey":"{rkey}"'
            ).encode()
            if record is None:
                out.append(head + b"}}")
            else:
                body = _escape_like_go(orjson.dumps(record))
                out.append(head + b',"record":' + body + b',"cid":"' + self.cid().encode() + b'"}}')
        return out

    def created_at(self, time_us: int) -> str:
        # client clocks drift: createdAt lands within about +-1.5 s of the record key time
        return self.iso(time_us - 1_500_000 + int(self.rng.random() * 3_000_000))

    # ---------------------------------------------------------------- records

    def text_and_facets(self, actor: int, allow_link: bool) -> tuple[str, list[dict[str, object]], list[str]]:
        rng = self.rng
        r = rng.random()
        lang = _LANGS[bisect.bisect(_LANG_CUM, r * _LANG_CUM[-1])]
        langs = [lang]
        if lang != "en" and rng.random() < 0.08:
            langs.append("en")
        phrases = _PHRASES[lang]
        pieces: list[str] = []
        facets: list[dict[str, object]] = []
        offset = 0

        def add(piece: str) -> tuple[int, int]:
            nonlocal offset
            start = offset
            pieces.append(piece)
            offset += len(piece.encode())
            return start, offset

        if rng.random() < 0.08:
            mentioned = self.subject(actor)
            start, end = add("@" + self.handles[mentioned])
            add(" ")
            facets.append(_facet(start, end, {"$type": "app.bsky.richtext.facet#mention", "did": self.dids[mentioned]}))
        add(phrases[int(rng.random() * len(phrases))])
        if rng.random() < 0.3:
            add(" " + phrases[int(rng.random() * len(phrases))].lower())
        if rng.random() < 0.2:
            add(" " + _EMOJI[int(rng.random() * len(_EMOJI))])
        if allow_link and rng.random() < 0.1:
            uri, shown = self.link()
            add("\n\n")
            start, end = add(shown)
            facets.append(_facet(start, end, {"$type": "app.bsky.richtext.facet#link", "uri": uri}))
        if rng.random() < 0.1:
            add("\n")
            for i in range(1 + int(rng.random() * 3)):
                tag = _TAGS[int(rng.random() * len(_TAGS))]
                if i:
                    add(" ")
                start, end = add("#" + tag)
                facets.append(_facet(start, end, {"$type": "app.bsky.richtext.facet#tag", "tag": tag}))
        return "".join(pieces), facets, langs

    def link(self) -> tuple[str, str]:
        rng = self.rng
        domain = _DOMAINS[int(rng.random() * len(_DOMAINS))]
        path = "/".join(rng.choice(_PATH_WORDS) for _ in range(1 + int(rng.random() * 3)))
        uri = f"https://{domain}/{path}/{rng.getrandbits(40):x}?source=share"
        shown = uri[len("https://") :]
        if len(shown) > 30:
            shown = shown[:27] + "..."
        return uri, shown

    def images(self) -> dict[str, object]:
        rng = self.rng
        images = []
        for _ in range(1 + int(rng.random() ** 2 * 4)):
            width = rng.choice((889, 1080, 1200, 2000, 4000))
            height = rng.choice((889, 1350, 1600, 2000, 3011))
            images.append(
                {
                    "alt": "" if rng.random() < 0.6 else "A photo of the evening sky",
                    "aspectRatio": {"height": height, "width": width},
                    "image": self.blob(rng.choice(_IMAGE_TYPES), 40_000, 2_000_000),
                }
            )
        return {"$type": "app.bsky.embed.images", "images": images}

    def video(self) -> dict[str, object]:
        return {
            "$type": "app.bsky.embed.video",
            "aspectRatio": {"height": 1920, "width": 1080},
            "video": self.blob("video/mp4", 500_000, 50_000_000),
        }

    def external(self) -> dict[str, object]:
        uri, _ = self.link()
        external: dict[str, object] = {"description": "A story worth reading"}
        if self.rng.random() < 0.7:
            external["thumb"] = self.blob("image/jpeg", 20_000, 200_000)
        external["title"] = "Read more on the site"
        external["uri"] = uri
        return {"$type": "app.bsky.embed.external", "external": external}

    def post(self, actor: int, rkey_time: int) -> dict[str, object]:
        """An ``app.bsky.feed.post`` record by ``actor`` (keys in the service's order)."""
        rng = self.rng
        record: dict[str, object] = {"$type": _POST, "createdAt": self.iso(rkey_time)}
        r = rng.random()
        embed: dict[str, object] | None = None
        if r < 0.20:
            embed = self.images()
        elif r < 0.28:
            embed = self.external()
        elif r < 0.38:  # a quote: plain record below 0.34, with media above
            target = self.pick_post()
            if target is not None:
                strong = {"cid": target[1], "uri": target[0]}
                if r < 0.34:
                    embed = {"$type": "app.bsky.embed.record", "record": strong}
                else:
                    media = self.images() if rng.random() < 0.7 else self.video()
                    embed = {
                        "$type": "app.bsky.embed.recordWithMedia",
                        "media": media,
                        "record": {"$type": "app.bsky.embed.record", "record": strong},
                    }
        elif r < 0.42:
            embed = self.video()
        if embed is not None:
            record["embed"] = embed
        text, facets, langs = self.text_and_facets(actor, allow_link=embed is None or r >= 0.28)
        if embed is not None and embed["$type"] in ("app.bsky.embed.images", "app.bsky.embed.video") and rng.random() < 0.1:
            text, facets = "", []
        if facets:
            record["facets"] = facets
        if rng.random() < 0.005:
            record["labels"] = {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "graphic-media"}]}
        if rng.random() < 0.95:
            record["langs"] = langs
        if rng.random() < 0.40:
            parent = self.pick_post()
            if parent is not None:
                record["reply"] = {
                    "parent": {"cid": parent[1], "uri": parent[0]},
                    "root": {"cid": parent[3], "uri": parent[2]},
                }
        if rng.random() < 0.01:
            record["tags"] = [_TAGS[int(rng.random() * len(_TAGS))]]
        record["text"] = text
        return record

    # ---------------------------------------------------------------- actions

    def events(self) -> Iterator[bytes]:
        rng = self.rng
        names = _MIX_NAMES
        cum = _MIX_CUM
        total = cum[-1]
        handlers = {name: getattr(self, "do_" + name) for name in names}
        while True:
            name = names[bisect.bisect(cum, rng.random() * total)]
            yield from handlers[name]()

    def simple_create(self, actor: int, collection: str, make: Callable[[int], dict[str, object]]) -> list[bytes]:
        """One create of a TID-keyed record; ``make(rkey_time)`` builds the record."""
        time_us, rev_time = self.begin(actor)
        rkey_time = self.rkey_time(actor, rev_time, 1)
        rkey = tid(rkey_time, self.clock_ids[actor])
        record = make(rkey_time)
        self.remember(collection, actor, rkey)
        return self.commit_events(actor, time_us, rev_time, [("create", collection, rkey, record)])

    def quick_create(self, actor: int, collection: str, subject_json: str) -> list[bytes]:
        """The hot path (likes, reposts, follows, blocks): one create of a record
        ``{"$type", "createdAt", "subject"}`` written straight to JSON; ``subject_json`` is the
        ``"subject":...`` member, made of strings that need no escaping (DIDs, URIs, CIDs).

        Same time and key rules as :meth:`begin`, :meth:`revision` and :meth:`rkey_time`.
        """
        random = self.rng.random
        time_us = self.time_us = self.time_us + 1 + int(-math.log(1.0 - random()) * self.mean_gap_us)
        last = self.last_rev[actor]
        rev_time = time_us - 400_000 - int(random() * 500_000)
        if rev_time <= last:
            rev_time = last + 1
        rkey_time = rev_time - 3_001 - int(random() * 10_000)
        if rkey_time <= last:
            rkey_time = last + 1
        self.last_rev[actor] = rev_time
        clock = self.clock_ids[actor]
        rkey = tid(rkey_time, clock)
        created = self.iso(rkey_time - 1_500_000 + int(random() * 3_000_000))
        self.remember(collection, actor, rkey)
        return [
            (
                f'{{"did":"{self.dids[actor]}","time_us":{time_us},"kind":"commit","commit":{{'
                f'"rev":"{tid(rev_time, clock)}","operation":"create","collection":"{collection}","rkey":"{rkey}",'
                f'"record":{{"$type":"{collection}","createdAt":"{created}",{subject_json}}},'
                f'"cid":"bafyrei{self.digest32()}"}}}}'
            ).encode()
        ]

    def do_like_create(self) -> list[bytes]:
        return self._engage(_LIKE)

    def do_repost_create(self) -> list[bytes]:
        return self._engage(_REPOST)

    def _engage(self, collection: str) -> list[bytes]:
        target = self.pick_post()
        if target is None:
            return self.do_post_create()
        return self.quick_create(self.actor(), collection, f'"subject":{{"cid":"{target[1]}","uri":"{target[0]}"}}')

    def _delete(self, collection: str, fallback: str) -> list[bytes]:
        chosen = self.take_deletable(collection)
        if chosen is None:
            return getattr(self, "do_" + fallback)()
        actor, rkey = chosen
        time_us, rev_time = self.begin(actor)
        return self.commit_events(actor, time_us, rev_time, [("delete", collection, rkey, None)])

    def do_like_delete(self) -> list[bytes]:
        return self._delete(_LIKE, "like_create")

    def do_repost_delete(self) -> list[bytes]:
        return self._delete(_REPOST, "repost_create")

    def do_post_delete(self) -> list[bytes]:
        return self._delete(_POST, "post_create")

    def do_follow_delete(self) -> list[bytes]:
        return self._delete(_FOLLOW, "follow_create")

    def do_block_delete(self) -> list[bytes]:
        return self._delete(_BLOCK, "block_create")

    def do_listitem_delete(self) -> list[bytes]:
        return self._delete(_LISTITEM, "listitem_create")

    def do_post_create(self) -> list[bytes]:
        rng = self.rng
        actor = self.actor()
        did = self.dids[actor]
        with_gate = rng.random() < 0.02
        ops = 2 if with_gate else 1
        time_us, rev_time = self.begin(actor)
        # posts get client-made record keys: the createdAt moment, to the millisecond
        rkey_time = max((rev_time - ops - rng.randrange(3_000, 2_000_000)) // 1000 * 1000, self.last_rev[actor] + 1)
        rkey = tid(rkey_time, rng.randrange(1024))
        record = self.post(actor, rkey_time)
        ops_list: list[_Op] = [("create", _POST, rkey, record)]
        if with_gate:
            ops_list.append(("create", _THREADGATE, rkey, self.threadgate(did, rkey, rkey_time)))
        events = self.commit_events(actor, time_us, rev_time, ops_list)
        cid = _cid_of(events[0])
        uri = f"at://{did}/{_POST}/{rkey}"
        reply = record.get("reply")
        if isinstance(reply, dict):
            root = reply["root"]
            ref = (uri, cid, root["uri"], root["cid"])
        else:
            ref = (uri, cid, uri, cid)
        self.remember_post(ref, actor)
        self.remember(_POST, actor, rkey)
        if not with_gate:
            self.own_posts[actor] = rkey  # may get a threadgate later
        return events

    def threadgate(self, did: str, rkey: str, time_us: int) -> dict[str, object]:
        rule = self.rng.choice(
            (
                "app.bsky.feed.threadgate#followingRule",
                "app.bsky.feed.threadgate#mentionRule",
                "app.bsky.feed.threadgate#followerRule",
            )
        )
        return {
            "$type": _THREADGATE,
            "allow": [{"$type": rule}],
            "createdAt": self.iso(time_us),
            "post": f"at://{did}/{_POST}/{rkey}",
        }

    def do_threadgate_create(self) -> list[bytes]:
        if not self.own_posts:
            return self.do_post_create()
        # gate the last post of an account that posted recently
        actor = self.actor()
        if actor not in self.own_posts:
            actor = next(reversed(self.own_posts))
        rkey = self.own_posts.pop(actor)
        time_us, rev_time = self.begin(actor)
        record = self.threadgate(self.dids[actor], rkey, time_us)
        return self.commit_events(actor, time_us, rev_time, [("create", _THREADGATE, rkey, record)])

    def do_follow_create(self) -> list[bytes]:
        return self._graph(_FOLLOW)

    def do_block_create(self) -> list[bytes]:
        return self._graph(_BLOCK)

    def _graph(self, collection: str) -> list[bytes]:
        actor = self.actor()
        return self.quick_create(actor, collection, f'"subject":"{self.dids[self.subject(actor)]}"')

    def do_profile_update(self) -> list[bytes]:
        rng = self.rng
        actor = self.actor()
        # most accounts had a profile before the stream began, so most changes are updates
        known = actor in self.has_profile or rng.random() < 0.8
        operation = "update" if known else "create"
        self.has_profile.add(actor)
        record: dict[str, object] = {"$type": _PROFILE, "avatar": self.blob("image/jpeg", 20_000, 900_000)}
        if rng.random() < 0.5:
            record["banner"] = self.blob("image/jpeg", 50_000, 1_500_000)
        time_us, rev_time = self.begin(actor)
        record["createdAt"] = self.iso(time_us)
        record["description"] = rng.choice(
            ("she/her • artist • 🇧🇷", "Writing about cities & transit", "Just here for the cats", "Building things 🦋")
        )
        record["displayName"] = self.handles[actor].split(".")[0].rstrip("0123456789").title()
        return self.commit_events(actor, time_us, rev_time, [(operation, _PROFILE, "self", record)])

    def do_status_update(self) -> list[bytes]:
        actor = self.actor()
        operation = "update" if actor in self.has_status else "create"
        self.has_status.add(actor)
        uri, _ = self.link()
        time_us, rev_time = self.begin(actor)
        record = {
            "$type": _STATUS,
            "createdAt": self.iso(time_us),
            "durationMinutes": self.rng.choice((30, 60, 120, 240)),
            "embed": {
                "$type": "app.bsky.embed.external",
                "external": {
                    "$type": "app.bsky.embed.external#external",
                    "description": "Live now",
                    "title": "Streaming",
                    "uri": uri,
                },
            },
            "status": "app.bsky.actor.status#live",
        }
        return self.commit_events(actor, time_us, rev_time, [(operation, _STATUS, "self", record)])

    def list_record(self, time_us: int, purpose: str | None = None) -> dict[str, object]:
        return {
            "$type": _LIST,
            "createdAt": self.iso(time_us),
            "description": "People worth following",
            "name": self.rng.choice(("Artists", "Science folks", "Mute list", "News", "Friends")),
            "purpose": purpose or self.rng.choice(_LIST_PURPOSES),
        }

    def listitem_record(self, actor: int, list_uri: str, time_us: int) -> dict[str, object]:
        return {
            "$type": _LISTITEM,
            "createdAt": self.iso(time_us),
            "list": list_uri,
            "subject": self.dids[self.subject(actor)],
        }

    def do_list_create(self, purpose: str | None = None, with_starterpack: bool = False) -> list[bytes]:
        rng = self.rng
        actor = self.actor()
        did = self.dids[actor]
        items = int(rng.random() * 4)
        n_ops = 1 + items + (1 if with_starterpack else 0)
        time_us, rev_time = self.begin(actor)
        base = self.rkey_time(actor, rev_time, n_ops)
        clock = self.clock_ids[actor]
        list_rkey = tid(base, clock)
        list_uri = f"at://{did}/{_LIST}/{list_rkey}"
        ops: list[_Op] = [("create", _LIST, list_rkey, self.list_record(base, purpose))]
        for i in range(items):
            rkey = tid(base + 1 + i, clock)
            ops.append(("create", _LISTITEM, rkey, self.listitem_record(actor, list_uri, base)))
            self.remember(_LISTITEM, actor, rkey)
        if with_starterpack:
            pack_rkey = tid(base + 1 + items, clock)
            ops.append(
                (
                    "create",
                    _STARTERPACK,
                    pack_rkey,
                    {
                        "$type": _STARTERPACK,
                        "createdAt": self.iso(base),
                        "description": "A few accounts to get you started",
                        "list": list_uri,
                        "name": "Starter pack",
                    },
                )
            )
        self.lists.append((actor, list_uri))
        return self.commit_events(actor, time_us, rev_time, ops)

    def do_starterpack_create(self) -> list[bytes]:
        return self.do_list_create("app.bsky.graph.defs#referencelist", with_starterpack=True)

    def do_listitem_create(self) -> list[bytes]:
        if not self.lists:
            return self.do_list_create()
        actor, list_uri = self.lists[int(self.rng.random() * len(self.lists))]
        return self.simple_create(actor, _LISTITEM, lambda t: self.listitem_record(actor, list_uri, t))

    def do_generator_create(self) -> list[bytes]:
        actor = self.actor()
        time_us, rev_time = self.begin(actor)
        name = self.rng.choice(("whats-hot", "cats", "science", "art-feed", "mutuals"))
        rkey = f"{name}-{self.rng.getrandbits(24):06x}"
        record = {
            "$type": _GENERATOR,
            "createdAt": self.iso(time_us),
            "description": "A custom feed",
            "did": "did:web:feeds.example.com",
            "displayName": name.replace("-", " ").title(),
        }
        return self.commit_events(actor, time_us, rev_time, [("create", _GENERATOR, rkey, record)])

    def do_labeler_update(self) -> list[bytes]:
        actor = self.actor()
        operation = "update" if actor in self.has_labeler else "create"
        self.has_labeler.add(actor)
        time_us, rev_time = self.begin(actor)
        record = {
            "$type": _LABELER,
            "createdAt": self.iso(time_us),
            "policies": {"labelValues": ["spam", "impersonation", "ai-generated"]},
        }
        return self.commit_events(actor, time_us, rev_time, [(operation, _LABELER, "self", record)])

    def do_identity(self) -> list[bytes]:
        actor = self.actor()
        did = self.dids[actor]
        time_us = self.next_time()
        body: dict[str, object] = {"did": did}
        if self.rng.random() < 0.7:
            body["handle"] = self.handles[actor]
        body["seq"] = self.next_seq()
        body["time"] = self.iso(time_us - 500_000)
        return [_envelope(did, time_us, "identity", body)]

    def do_account(self) -> list[bytes]:
        rng = self.rng
        actor = self.actor()
        did = self.dids[actor]
        time_us = self.next_time()
        body: dict[str, object]
        if rng.random() < 0.5:
            body = {"active": True, "did": did, "seq": self.next_seq()}
        else:
            pick = rng.random() * 100
            acc = 0
            status = _ACCOUNT_STATUSES[0][0]
            for name, weight in _ACCOUNT_STATUSES:
                acc += weight
                if pick < acc:
                    status = name
                    break
            body = {"active": False, "did": did, "seq": self.next_seq(), "status": status}
        body["time"] = self.iso(time_us - 500_000)
        return [_envelope(did, time_us, "account", body)]


def _facet(start: int, end: int, feature: dict[str, object]) -> dict[str, object]:
    return {"features": [feature], "index": {"byteEnd": end, "byteStart": start}}


def _envelope(did: str, time_us: int, kind: str, body: dict[str, object]) -> bytes:
    return f'{{"did":"{did}","time_us":{time_us},"kind":"{kind}","{kind}":'.encode() + orjson.dumps(body) + b"}"


def _cid_of(event: bytes) -> str:
    start = event.rindex(b'"cid":"') + 7
    return event[start : event.index(b'"', start)].decode()


def generate(
    n: int,
    *,
    seed: int = 0,
    accounts: int = 10_000,
    start_time_us: int = DEFAULT_START_TIME_US,
    rate_per_s: float = 800.0,
    skew: float = 0.8,
) -> Iterator[bytes]:
    """Yield ``n`` serialised Jetstream events (no trailing newline), deterministic for the arguments.

    ``accounts`` distinct DIDs act with a Zipf-like skew of exponent ``skew``; ``time_us``
    starts just after ``start_time_us`` and increases strictly by ``1e6 / rate_per_s`` µs on
    average (exponential gaps).
    """
    if n < 0:
        raise ValueError("n must not be negative")
    if n == 0:
        return
    generator = _Generator(
        seed=seed, accounts=accounts, start_time_us=start_time_us, rate_per_s=rate_per_s, skew=skew
    )
    yield from itertools.islice(generator.events(), n)


def write(path: str | Path, n: int, **options: object) -> int:
    """Write ``n`` events from :func:`generate` to ``path`` as JSONL; returns the byte count."""
    written = 0
    with open(path, "wb") as out:
        batch: list[bytes] = []
        for event in generate(n, **options):  # type: ignore[arg-type]
            batch.append(event)
            if len(batch) >= 10_000:
                chunk = b"\n".join(batch) + b"\n"
                out.write(chunk)
                written += len(chunk)
                batch.clear()
        if batch:
            chunk = b"\n".join(batch) + b"\n"
            out.write(chunk)
            written += len(chunk)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """``bge jetstream-corpus``: write a generated corpus as JSONL (``--out -`` for stdout)."""
    parser = argparse.ArgumentParser(prog="jetstream-corpus", description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000, help="number of events (default 100000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accounts", type=int, default=10_000, help="distinct DIDs (default 10000)")
    parser.add_argument("--rate", type=float, default=800.0, help="average events per second of time_us")
    parser.add_argument("--start-time-us", type=int, default=DEFAULT_START_TIME_US)
    parser.add_argument("--skew", type=float, default=0.8, help="Zipf exponent of account activity")
    parser.add_argument("--out", default="-", help="output path, - for stdout")
    args = parser.parse_args(argv)
    options = dict(
        seed=args.seed,
        accounts=args.accounts,
        start_time_us=args.start_time_us,
        rate_per_s=args.rate,
        skew=args.skew,
    )
    started = time.perf_counter()
    if args.out == "-":
        out = sys.stdout.buffer
        for event in generate(args.count, **options):  # type: ignore[arg-type]
            out.write(event + b"\n")
        out.flush()
    else:
        size = write(args.out, args.count, **options)
        elapsed = time.perf_counter() - started
        print(f"wrote {args.count} events ({size} bytes) to {args.out} in {elapsed:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
