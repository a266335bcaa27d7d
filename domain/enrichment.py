"""Post enrichment: what a post record says beyond its text.

- mentions: DIDs of ``#mention`` facets;
- hashtags: ``#tag`` facets, hashtags in the text and the record's ``tags``, normalised
  (:func:`normalise_hashtag`: NFC, lowercase, no leading ``#``), without duplicates;
- links: ``#link`` facets (the full URI: the text may show a truncated one) and URLs written in
  the text outside any link facet, with their domains;
- media of every embed kind (images, video, external, gallery, and the media half of
  recordWithMedia), the quoted post and any other embedded record;
- thread position (root, parent, depth when known) and languages.

Every function is pure and total. Byte offsets of facets are UTF-8 offsets, as the lexicon says.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from domain.events import Link, Media, RecordRef, Thread
from domain.records import (
    Blob,
    ExternalEmbed,
    GalleryEmbed,
    GalleryImage,
    ImagesEmbed,
    LinkFeature,
    MentionFeature,
    Post,
    RecordEmbed,
    RecordWithMediaEmbed,
    StrongRef,
    TagFeature,
    UnknownEmbed,
    VideoEmbed,
)
from domain.syntax import record_uri, split_record_uri
from domain.values import value

POST_COLLECTION = "app.bsky.feed.post"
MAX_HASHTAG_LENGTH = 64

# Characters that end a hashtag besides whitespace (soft hyphen, word joiner, zero-width
# spaces and joiners, the enclosing keycap), as in Bluesky's own hashtag detection.
_TAG_BREAKS = "\u00ad\u2060\u200a\u200b\u200c\u200d\u20e2"
_TEXT_HASHTAG = re.compile(rf"(?:^|(?<=\s))[#＃]([^\s{_TAG_BREAKS}]+)")
_TEXT_URL = re.compile(r"\bhttps?://[^\s<>\"'`]+", re.IGNORECASE)
_URL_TRAILING = ".,;:!?'\"”’»…"
_TRUNCATION_MARKS = ("...", "…")


@value
class Enrichment:
    """The enrichment of one post (see the module docstring)."""

    thread: Thread
    mentions: tuple[str, ...]
    hashtags: tuple[str, ...]
    links: tuple[Link, ...]
    media: tuple[Media, ...]
    quote: RecordRef | None
    embedded_record: RecordRef | None
    langs: tuple[str, ...]


def enrich_post(did: str, rkey: str, post: Post) -> Enrichment:
    """Everything :class:`Enrichment` holds, for the post ``rkey`` of ``did``."""
    quote, embedded = embedded_records(post)
    return Enrichment(
        thread=thread_of(did, rkey, post),
        mentions=mentions_of(post),
        hashtags=hashtags_of(post),
        links=links_of(post),
        media=media_of(post),
        quote=quote,
        embedded_record=embedded,
        langs=languages_of(post),
    )


def _unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


# --- thread --------------------------------------------------------------------------------


def thread_of(did: str, rkey: str, post: Post) -> Thread:
    """A top-level post is its own root (depth 0); a reply whose parent is the root has
    depth 1; any other reply has an unknown depth (its parent's depth + 1, known downstream)."""
    if post.reply is None:
        return Thread(root_uri=record_uri(did, POST_COLLECTION, rkey), root_did=did, depth=0)
    root, parent = post.reply.root, post.reply.parent
    return Thread(
        root_uri=root.uri,
        root_did=root.did,
        parent_uri=parent.uri,
        parent_did=parent.did,
        depth=1 if root.uri == parent.uri else None,
    )


# --- facets --------------------------------------------------------------------------------


def mentions_of(post: Post) -> tuple[str, ...]:
    """DIDs of the post's ``#mention`` facets, in order, without duplicates."""
    return _unique(
        feature.did for facet in post.facets for feature in facet.features if isinstance(feature, MentionFeature)
    )


def normalise_hashtag(tag: str) -> str:
    """A hashtag as the product stores it: without ``#``/``＃``, trimmed, lowercase, NFC.

    Returns ``""`` for a tag with nothing left.
    """
    return unicodedata.normalize("NFC", tag.strip().lstrip("#＃").strip().lower())


def _strip_trailing_punctuation(word: str) -> str:
    end = len(word)
    while end and unicodedata.category(word[end - 1]).startswith("P"):
        end -= 1
    return word[:end]


def _is_hashtag_body(body: str) -> bool:
    # Like Bluesky's detection: not starting with a variation selector (keycap "#️⃣"), at most
    # 64 characters, and with at least one character that is not a digit or punctuation.
    return (
        bool(body)
        and not body.startswith("\ufe0f")
        and len(body) <= MAX_HASHTAG_LENGTH
        and any(not ch.isdigit() and not unicodedata.category(ch).startswith("P") for ch in body)
    )


def text_hashtags(text: str) -> Iterator[str]:
    """Hashtags written in ``text`` (``#word`` after whitespace or at the start), unnormalised."""
    for match in _TEXT_HASHTAG.finditer(text):
        body = _strip_trailing_punctuation(match.group(1))
        if _is_hashtag_body(body):
            yield body


def hashtags_of(post: Post) -> tuple[str, ...]:
    """Normalised hashtags from ``#tag`` facets, then the text, then ``tags``; no duplicates."""
    facet_tags = (
        feature.tag for facet in post.facets for feature in facet.features if isinstance(feature, TagFeature)
    )
    candidates = (normalise_hashtag(tag) for source in (facet_tags, text_hashtags(post.text), post.tags) for tag in source)
    return _unique(tag for tag in candidates if tag)


# --- links ---------------------------------------------------------------------------------


def link_domain(uri: str) -> str | None:
    """The host of ``uri``, lowercase and without a leading ``www.``; ``None`` if it has none."""
    try:  # per link: a plain try costs less than @safe
        host = urlsplit(uri).hostname
    except ValueError:
        return None
    if not host:
        return None
    return host[4:] if host.startswith("www.") else host


def _clean_text_url(url: str) -> str:
    url = url.rstrip(_URL_TRAILING)
    if url.endswith(")") and url.count("(") < url.count(")"):
        url = url[:-1]
    return url


def text_links(text: str, skip_byte_ranges: tuple[tuple[int, int], ...] = ()) -> Iterator[str]:
    """``http(s)`` URLs written in ``text``, except those inside ``skip_byte_ranges`` (UTF-8
    offsets of link facets, which hold the full URI) and those that end truncated (``...``)."""
    for match in _TEXT_URL.finditer(text):
        raw = match.group(0)
        if raw.endswith(_TRUNCATION_MARKS):
            continue
        if skip_byte_ranges:
            start = len(text[: match.start()].encode())
            end = start + len(raw.encode())
            if any(start < facet_end and facet_start < end for facet_start, facet_end in skip_byte_ranges):
                continue
        url = _clean_text_url(raw)
        if len(url) > len("https://"):
            yield url


def links_of(post: Post) -> tuple[Link, ...]:
    """Links of ``#link`` facets, then URLs in the text outside them; no duplicate URIs."""
    facet_links: list[str] = []
    facet_ranges: list[tuple[int, int]] = []
    for facet in post.facets:
        for feature in facet.features:
            if isinstance(feature, LinkFeature):
                facet_links.append(feature.uri)
                facet_ranges.append((facet.index.byte_start, facet.index.byte_end))
    uris = _unique([*facet_links, *text_links(post.text, tuple(facet_ranges))])
    return tuple(Link(uri=uri, domain=link_domain(uri)) for uri in uris)


# --- embeds --------------------------------------------------------------------------------


def _blob_fields(blob: Blob) -> dict[str, object]:
    return {"cid": blob.content_id, "mime_type": blob.mime_type, "size": blob.size}


def _image_media(embed: ImagesEmbed) -> Iterator[Media]:
    for image in embed.images:
        ratio = image.aspect_ratio
        yield Media(
            kind="image",
            embed_type=ImagesEmbed.lexicon_type,
            alt=image.alt,
            width=ratio.width if ratio else None,
            height=ratio.height if ratio else None,
            **_blob_fields(image.image),
        )


def _video_media(embed: VideoEmbed) -> Iterator[Media]:
    ratio = embed.aspect_ratio
    yield Media(
        kind="video",
        embed_type=VideoEmbed.lexicon_type,
        alt=embed.alt,
        width=ratio.width if ratio else None,
        height=ratio.height if ratio else None,
        **_blob_fields(embed.video),
    )


def _external_media(embed: ExternalEmbed) -> Iterator[Media]:
    external = embed.external
    thumb = external.thumb
    yield Media(
        kind="external",
        embed_type=ExternalEmbed.lexicon_type,
        uri=external.uri,
        domain=link_domain(external.uri),
        title=external.title,
        alt=external.description or None,
        cid=thumb.content_id if thumb else None,
        mime_type=thumb.mime_type if thumb else None,
        size=thumb.size if thumb else None,
    )


def _gallery_media(embed: GalleryEmbed) -> Iterator[Media]:
    for item in embed.media:
        if isinstance(item, GalleryImage):
            ratio = item.aspect_ratio
            yield Media(
                kind="image",
                embed_type=GalleryEmbed.lexicon_type,
                alt=item.alt,
                width=ratio.width if ratio else None,
                height=ratio.height if ratio else None,
                **_blob_fields(item.image),
            )
        else:
            yield Media(kind="other", embed_type=item.type or GalleryEmbed.lexicon_type)


def _media_of_embed(embed: object) -> Iterator[Media]:
    if isinstance(embed, ImagesEmbed):
        yield from _image_media(embed)
    elif isinstance(embed, VideoEmbed):
        yield from _video_media(embed)
    elif isinstance(embed, ExternalEmbed):
        yield from _external_media(embed)
    elif isinstance(embed, GalleryEmbed):
        yield from _gallery_media(embed)
    elif isinstance(embed, RecordWithMediaEmbed):
        yield from _media_of_embed(embed.media)
    elif isinstance(embed, UnknownEmbed):
        yield Media(kind="other", embed_type=embed.type)


def media_of(post: Post) -> tuple[Media, ...]:
    """Media items of the post's embed, of every embed kind (none for a bare record embed)."""
    return tuple(_media_of_embed(post.embed)) if post.embed is not None else ()


def _record_ref(ref: StrongRef) -> RecordRef:
    parts = split_record_uri(ref.uri)  # validated as a record at-uri on parse
    return RecordRef(uri=ref.uri, did=parts.did, collection=parts.collection, cid=ref.cid)


def embedded_records(post: Post) -> tuple[RecordRef | None, RecordRef | None]:
    """``(quoted post, other embedded record)`` of a record or recordWithMedia embed."""
    embed = post.embed
    if isinstance(embed, RecordWithMediaEmbed):
        embed = embed.record
    if not isinstance(embed, RecordEmbed):
        return None, None
    ref = _record_ref(embed.record)
    return (ref, None) if ref.collection == POST_COLLECTION else (None, ref)


def embed_type(post: Post) -> str | None:
    """The ``$type`` of the post's embed, if it has one."""
    embed = post.embed
    if embed is None:
        return None
    return embed.type if isinstance(embed, UnknownEmbed) else type(embed).lexicon_type  # type: ignore[attr-defined]


# --- languages -----------------------------------------------------------------------------


def languages_of(post: Post) -> tuple[str, ...]:
    """The post's declared languages (BCP-47 tags as written), trimmed, without duplicates."""
    return _unique(lang.strip() for lang in post.langs if lang.strip())


def primary_language(tag: str) -> str:
    """The primary subtag of a BCP-47 tag, lowercase: ``en-US`` → ``en``."""
    return tag.split("-", 1)[0].strip().lower()
