"""Post enrichment: mentions, hashtags, links, media of every embed kind, thread, quote, languages."""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.enrichment import (
    enrich_post,
    hashtags_of,
    link_domain,
    normalise_hashtag,
    primary_language,
    text_hashtags,
    text_links,
)
from domain.events import Link, RecordRef
from domain.records import Post, parse_record
from tests.unit import domain_builders as b


def post(record: dict[str, Any]) -> Post:
    parsed = parse_record("app.bsky.feed.post", record).unwrap()
    assert isinstance(parsed, Post)
    return parsed


def sample_posts() -> list[tuple[str, str, Post]]:
    found = []
    for line in b.SAMPLE_LINES:
        event = orjson.loads(line)
        commit = event.get("commit", {})
        if commit.get("collection") == "app.bsky.feed.post" and commit.get("operation") == "create":
            found.append((event["did"], commit["rkey"], post(commit["record"])))
    return found


def sample_post_with_text(fragment: str) -> tuple[str, str, Post]:
    return next(item for item in sample_posts() if fragment in item[2].text)


# --- real posts -----------------------------------------------------------------------------


def test_real_link_facet_gives_the_full_uri_not_the_truncated_text() -> None:
    did, rkey, p = sample_post_with_text("www.youtube.com/watch?v=V5lD...")
    enrichment = enrich_post(did, rkey, p)
    assert enrichment.links == (Link(uri="https://www.youtube.com/watch?v=V5lDo-jw8mA", domain="youtube.com"),)
    assert [m.kind for m in enrichment.media] == ["external"]
    assert enrichment.media[0].domain == "youtube.com" and enrichment.media[0].cid
    assert enrichment.langs == ("en",)


def test_real_link_in_text_and_facet_is_counted_once() -> None:
    did, rkey, p = sample_post_with_text("Has anyone properly debunked")
    links = enrich_post(did, rkey, p).links
    assert links == (Link(uri="https://www.ufofeed.com/266486/has-anyone-properly-debunked-tic-tac-video/", domain="ufofeed.com"),)


def test_real_tag_facets_and_text_hashtags_are_normalised_without_duplicates() -> None:
    did, rkey, p = sample_post_with_text("#HowToTellAiToShutUp")
    assert enrich_post(did, rkey, p).hashtags == ("howtotellaitoshutup", "indierebellion")
    did, rkey, p = sample_post_with_text("#talesatwonderworld")
    enrichment = enrich_post(did, rkey, p)
    assert enrichment.hashtags == ("talesatwonderworld", "balanwonderworldoc")
    assert enrichment.links[0].uri.startswith("https://www.tumblr.com/tempo-tales/765681292369166336/")
    assert enrichment.links[0].domain == "tumblr.com"
    assert [m.kind for m in enrichment.media] == ["image"] and enrichment.media[0].width == 889
    assert enrichment.langs == ("es", "en")


def test_real_replies_have_their_thread() -> None:
    replies = [(d, r, p) for d, r, p in sample_posts() if p.reply is not None]
    assert len(replies) == 8
    direct = [enrich_post(d, r, p).thread for d, r, p in replies if p.reply and p.reply.root.uri == p.reply.parent.uri]
    assert direct and all(t.depth == 1 for t in direct)
    deeper = [enrich_post(d, r, p).thread for d, r, p in replies if p.reply and p.reply.root.uri != p.reply.parent.uri]
    assert deeper and all(t.depth is None and t.parent_uri != t.root_uri for t in deeper)
    assert deeper[0].root_did == deeper[0].root_uri.split("/")[2]


def test_top_level_post_is_its_own_root() -> None:
    did, rkey, p = sample_post_with_text("Mount Rushmore")
    thread = enrich_post(did, rkey, p).thread
    assert thread.root_uri == f"at://{did}/app.bsky.feed.post/{rkey}" and thread.depth == 0 and thread.parent_uri is None


# --- lexicon-conformant posts ---------------------------------------------------------------


def test_mentions_come_from_mention_facets_as_dids() -> None:
    text = "hi @bob.bsky.social and @carol.example.com and @bob.bsky.social"
    s1, e1 = b.byte_range(text, "@bob.bsky.social")
    s2, e2 = b.byte_range(text, "@carol.example.com")
    start3 = text.rindex("@bob")
    s3 = len(text[:start3].encode())
    record = b.post_record(
        text,
        facets=[
            b.facet(s1, e1, b.mention(b.BOB)),
            b.facet(s2, e2, b.mention(b.CAROL)),
            b.facet(s3, s3 + len("@bob.bsky.social"), b.mention(b.BOB)),
        ],
    )
    assert enrich_post(b.ALICE, "3mpt", post(record)).mentions == (b.BOB, b.CAROL)


def test_mentions_with_multibyte_text() -> None:
    text = "こんにちは @bob.bsky.social 🎉"
    record = b.mention_post(text, "@bob.bsky.social", b.BOB)
    assert record["facets"][0]["index"]["byteStart"] == len("こんにちは ".encode())
    assert enrich_post(b.ALICE, "3mpt", post(record)).mentions == (b.BOB,)


def test_hashtags_from_facets_text_and_tags() -> None:
    text = "Day one! #Introduction #NewHere, #newhere #2024 #️⃣ #café C#sharp"
    s, e = b.byte_range(text, "#Introduction")
    record = b.post_record(text, facets=[b.facet(s, e, b.tag("Introduction"))], tags=["Rust", "#rust", "CAFÉ"])
    assert hashtags_of(post(record)) == ("introduction", "newhere", "café", "rust")


def test_hashtag_normalisation() -> None:
    assert normalise_hashtag("#Bluesky") == "bluesky"
    assert normalise_hashtag("＃ArtShare") == "artshare"
    decomposed = "cafe\u0301"
    assert normalise_hashtag(decomposed) == "café" and unicodedata.is_normalized("NFC", normalise_hashtag(decomposed))
    assert normalise_hashtag("  ") == "" and normalise_hashtag("#") == ""


def test_text_hashtags_follow_bluesky_rules() -> None:
    assert list(text_hashtags("#a #1 #1a a#b #end. (#paren) #x\u200by")) == ["a", "1a", "end", "x"]
    assert list(text_hashtags("#" + "x" * 65)) == []


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_hashtag_normalisation_is_idempotent(tag: str) -> None:
    once = normalise_hashtag(tag)
    assert normalise_hashtag(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.lists(st.text(max_size=12), max_size=8))
def test_hashtags_are_normalised_and_unique(text: str, tags: list[str]) -> None:
    found = hashtags_of(post(b.post_record(text, tags=tags)))
    assert len(found) == len(set(found))
    assert all(tag and normalise_hashtag(tag) == tag for tag in found)


def test_links_from_facets_and_text_with_domains() -> None:
    text = "see example.org/very/lo... and https://WWW.Rust-Lang.org/learn. Also (https://docs.rs/x)"
    s, e = b.byte_range(text, "example.org/very/lo...")
    record = b.post_record(text, facets=[b.facet(s, e, b.link("https://example.org/very/long/path?q=1"))])
    links = enrich_post(b.ALICE, "3mpt", post(record)).links
    assert links == (
        Link(uri="https://example.org/very/long/path?q=1", domain="example.org"),
        Link(uri="https://WWW.Rust-Lang.org/learn", domain="rust-lang.org"),
        Link(uri="https://docs.rs/x", domain="docs.rs"),
    )


def test_text_links_skip_truncated_urls_and_facet_ranges() -> None:
    assert list(text_links("go https://example.com/abc... now")) == []
    text = "https://a.example/x and https://b.example/y"
    assert list(text_links(text, ((0, len("https://a.example/x")),))) == ["https://b.example/y"]


def test_link_domain() -> None:
    assert link_domain("https://www.YouTube.com/watch?v=1") == "youtube.com"
    assert link_domain("mailto:someone@example.com") is None
    assert link_domain("http://[::1") is None  # urlsplit raises: a value, not an exception


def test_images_embed_media() -> None:
    media = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.images_embed(2)))).media
    assert [(m.kind, m.embed_type, m.alt, m.width, m.height, m.cid, m.mime_type) for m in media] == [
        ("image", "app.bsky.embed.images", "image 0", 800, 600, b.BLOB_CID, "image/jpeg"),
        ("image", "app.bsky.embed.images", "image 1", 800, 600, b.BLOB_CID, "image/jpeg"),
    ]


def test_video_embed_media() -> None:
    (media,) = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.video_embed()))).media
    assert (media.kind, media.mime_type, media.size, media.alt, media.width) == ("video", "video/mp4", 5_000_000, "a video", 1920)


def test_gallery_embed_media() -> None:
    media = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.gallery_embed(3)))).media
    assert [m.kind for m in media] == ["image"] * 3
    assert {m.embed_type for m in media} == {"app.bsky.embed.gallery"}
    assert media[2].alt == "gallery 2"


def test_external_embed_media() -> None:
    (media,) = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.external_embed()))).media
    assert (media.kind, media.uri, media.domain, media.title) == ("external", "https://www.example.com/article", "example.com", "An article")


def test_quote_of_a_post() -> None:
    quoted = b.strong_ref(b.BOB, rkey="3mquoted")
    enrichment = enrich_post(b.ALICE, "3mpt", post(b.post_record("look", embed=b.record_embed(quoted))))
    assert enrichment.quote == RecordRef(uri=quoted["uri"], did=b.BOB, collection="app.bsky.feed.post", cid=b.CID)
    assert enrichment.media == () and enrichment.embedded_record is None


def test_record_with_media_gives_quote_and_media() -> None:
    quoted = b.strong_ref(b.BOB, rkey="3mquoted")
    for media_embed, kind in ((b.images_embed(1), "image"), (b.video_embed(), "video"), (b.external_embed(), "external"), (b.gallery_embed(2), "image")):
        enrichment = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.record_with_media_embed(quoted, media_embed))))
        assert enrichment.quote is not None and enrichment.quote.uri == quoted["uri"]
        assert enrichment.media and {m.kind for m in enrichment.media} == {kind}


def test_embedded_non_post_record_is_not_a_quote() -> None:
    feed = b.strong_ref(b.CAROL, "app.bsky.feed.generator", "cats")
    enrichment = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed=b.record_embed(feed))))
    assert enrichment.quote is None
    assert enrichment.embedded_record is not None and enrichment.embedded_record.collection == "app.bsky.feed.generator"


def test_unknown_embed_is_reported_as_other_media() -> None:
    (media,) = enrich_post(b.ALICE, "3mpt", post(b.post_record(embed={"$type": "app.bsky.embed.poll"}))).media
    assert (media.kind, media.embed_type) == ("other", "app.bsky.embed.poll")


def test_languages() -> None:
    enrichment = enrich_post(b.ALICE, "3mpt", post(b.post_record(langs=["en-US", "en", " ", "en-US"])))
    assert enrichment.langs == ("en-US", "en")
    assert primary_language("en-US") == "en" and primary_language("PT-br") == "pt"
