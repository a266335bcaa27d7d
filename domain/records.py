"""AT Protocol records of the collections this product collects, as pydantic models.

Models follow the ``app.bsky.*`` lexicons (https://github.com/bluesky-social/atproto/tree/main/lexicons):

- unknown extra fields are ignored, so new lexicon fields never break parsing;
- open unions (embeds, facet features, threadgate rules) accept unknown ``$type`` members as
  ``Unknown*`` models instead of failing;
- fields the product relies on are strict: DIDs, at-uris of subjects and references,
  ``createdAt`` presence, facet payloads. Types are never coerced (``strict=True``).

:func:`parse_record` turns a record dict from a Jetstream commit into its model.

One module of about 550 lines: one pydantic model per lexicon record, declared side by side as the
lexicons are; splitting by collection would scatter shared field types.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic.alias_generators import to_camel
from returns.result import Failure, Result, Success

from domain.rejections import Rejection, RejectionCode, describe_validation_error
from domain.syntax import AtUri, Did, RecordAtUri, split_record_uri


class LexiconObject(BaseModel):
    """Base of every lexicon object: camelCase aliases, strict types, extra fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        strict=True,
        extra="ignore",
        frozen=True,
    )


# --- shared definitions -------------------------------------------------------------------


class StrongRef(LexiconObject):
    """``com.atproto.repo.strongRef``: a record at-uri (DID authority required) and its CID."""

    uri: RecordAtUri
    cid: str

    @property
    def did(self) -> str:
        """The DID of the repository holding the referenced record."""
        return split_record_uri(self.uri).did

    @property
    def collection(self) -> str:
        """The collection (NSID) of the referenced record."""
        return split_record_uri(self.uri).collection


class BlobRef(LexiconObject):
    link: str = Field(alias="$link")


class Blob(LexiconObject):
    """A blob reference; both the current (``ref.$link``) and legacy (``cid``) forms."""

    ref: BlobRef | None = None
    cid: str | None = None
    mime_type: str | None = None
    size: int | None = None

    @property
    def content_id(self) -> str | None:
        """The blob's CID, whichever form the record used."""
        return self.ref.link if self.ref is not None else self.cid


class AspectRatio(LexiconObject):
    width: int
    height: int


class SelfLabel(LexiconObject):
    val: str


class SelfLabels(LexiconObject):
    """``com.atproto.label.defs#selfLabels`` (other label forms are ignored)."""

    values: list[SelfLabel] = Field(default_factory=list)


def _open_union_tag(known: frozenset[str]):  # type: ignore[no-untyped-def]
    """Discriminator for an open union: the ``$type`` when known, else ``"unknown"``."""

    def tag(value: Any) -> str:
        kind = value.get("$type") if isinstance(value, dict) else getattr(value, "lexicon_type", None)
        return kind if isinstance(kind, str) and kind in known else "unknown"  # a hostile $type may be a dict

    return tag


# --- rich text facets (app.bsky.richtext.facet) -------------------------------------------


class ByteSlice(LexiconObject):
    """UTF-8 byte offsets into the text: ``[byteStart, byteEnd)``."""

    byte_start: int = Field(ge=0)
    byte_end: int = Field(ge=0)


class MentionFeature(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.richtext.facet#mention"
    did: Did


class LinkFeature(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.richtext.facet#link"
    uri: str


class TagFeature(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.richtext.facet#tag"
    tag: str


class UnknownFeature(LexiconObject):
    lexicon_type: ClassVar[str] = "unknown"
    type: str = Field(default="", alias="$type")


FacetFeature = Annotated[
    Union[
        Annotated[MentionFeature, Tag(MentionFeature.lexicon_type)],
        Annotated[LinkFeature, Tag(LinkFeature.lexicon_type)],
        Annotated[TagFeature, Tag(TagFeature.lexicon_type)],
        Annotated[UnknownFeature, Tag("unknown")],
    ],
    Discriminator(
        _open_union_tag(
            frozenset({MentionFeature.lexicon_type, LinkFeature.lexicon_type, TagFeature.lexicon_type})
        )
    ),
]


class Facet(LexiconObject):
    index: ByteSlice
    features: list[FacetFeature]


# --- embeds (app.bsky.embed.*) ------------------------------------------------------------


class Image(LexiconObject):
    image: Blob
    alt: str = ""
    aspect_ratio: AspectRatio | None = None


class ImagesEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.images"
    images: list[Image]


class VideoEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.video"
    video: Blob
    alt: str | None = None
    aspect_ratio: AspectRatio | None = None


class External(LexiconObject):
    uri: str
    title: str = ""
    description: str = ""
    thumb: Blob | None = None


class ExternalEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.external"
    external: External


class GalleryImage(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.gallery#image"
    image: Blob
    alt: str = ""
    aspect_ratio: AspectRatio | None = None


class UnknownGalleryItem(LexiconObject):
    lexicon_type: ClassVar[str] = "unknown"
    type: str = Field(default="", alias="$type")


def _gallery_item_tag(value: Any) -> str:
    # Gallery items are a union with a single member so far; an item without ``$type`` that
    # looks like an image is taken as one (clients may omit the type of a lone member).
    if isinstance(value, dict):
        kind = value.get("$type")
        if kind == GalleryImage.lexicon_type or (kind is None and "image" in value):
            return GalleryImage.lexicon_type
        return "unknown"
    return getattr(value, "lexicon_type", "unknown")


GalleryItem = Annotated[
    Union[
        Annotated[GalleryImage, Tag(GalleryImage.lexicon_type)],
        Annotated[UnknownGalleryItem, Tag("unknown")],
    ],
    Discriminator(_gallery_item_tag),
]


class GalleryEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.gallery"
    media: list[GalleryItem]


class RecordEmbed(LexiconObject):
    """A quote (when the record is a post) or a card of another record (feed, list, ...)."""

    lexicon_type: ClassVar[str] = "app.bsky.embed.record"
    record: StrongRef


class UnknownEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "unknown"
    type: str = Field(default="", alias="$type")


MediaEmbed = Annotated[
    Union[
        Annotated[ImagesEmbed, Tag(ImagesEmbed.lexicon_type)],
        Annotated[VideoEmbed, Tag(VideoEmbed.lexicon_type)],
        Annotated[ExternalEmbed, Tag(ExternalEmbed.lexicon_type)],
        Annotated[GalleryEmbed, Tag(GalleryEmbed.lexicon_type)],
        Annotated[UnknownEmbed, Tag("unknown")],
    ],
    Discriminator(
        _open_union_tag(
            frozenset(
                {
                    ImagesEmbed.lexicon_type,
                    VideoEmbed.lexicon_type,
                    ExternalEmbed.lexicon_type,
                    GalleryEmbed.lexicon_type,
                }
            )
        )
    ),
]


class RecordWithMediaEmbed(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.embed.recordWithMedia"
    record: RecordEmbed
    media: MediaEmbed


Embed = Annotated[
    Union[
        Annotated[ImagesEmbed, Tag(ImagesEmbed.lexicon_type)],
        Annotated[VideoEmbed, Tag(VideoEmbed.lexicon_type)],
        Annotated[ExternalEmbed, Tag(ExternalEmbed.lexicon_type)],
        Annotated[GalleryEmbed, Tag(GalleryEmbed.lexicon_type)],
        Annotated[RecordEmbed, Tag(RecordEmbed.lexicon_type)],
        Annotated[RecordWithMediaEmbed, Tag(RecordWithMediaEmbed.lexicon_type)],
        Annotated[UnknownEmbed, Tag("unknown")],
    ],
    Discriminator(
        _open_union_tag(
            frozenset(
                {
                    ImagesEmbed.lexicon_type,
                    VideoEmbed.lexicon_type,
                    ExternalEmbed.lexicon_type,
                    GalleryEmbed.lexicon_type,
                    RecordEmbed.lexicon_type,
                    RecordWithMediaEmbed.lexicon_type,
                }
            )
        )
    ),
]


# --- records -------------------------------------------------------------------------------


class Record(LexiconObject):
    """Base of the record models; ``collection`` is the NSID the record lives in."""

    collection: ClassVar[str]


class ReplyRef(LexiconObject):
    root: StrongRef
    parent: StrongRef


class Post(Record):
    """``app.bsky.feed.post``. ``createdAt`` is client-supplied: present, but may be anything."""

    collection: ClassVar[str] = "app.bsky.feed.post"
    text: str
    created_at: str
    langs: list[str] = Field(default_factory=list)
    reply: ReplyRef | None = None
    embed: Embed | None = None
    facets: list[Facet] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    labels: SelfLabels | None = None


class Like(Record):
    """``app.bsky.feed.like``: the subject is any record (usually a post, sometimes a feed)."""

    collection: ClassVar[str] = "app.bsky.feed.like"
    subject: StrongRef
    created_at: str
    via: StrongRef | None = None


class Repost(Record):
    """``app.bsky.feed.repost``; ``via`` names the repost it was reposted through, if any."""

    collection: ClassVar[str] = "app.bsky.feed.repost"
    subject: StrongRef
    created_at: str
    via: StrongRef | None = None


class Follow(Record):
    collection: ClassVar[str] = "app.bsky.graph.follow"
    subject: Did
    created_at: str
    via: StrongRef | None = None


class Block(Record):
    collection: ClassVar[str] = "app.bsky.graph.block"
    subject: Did
    created_at: str


class ListRecord(Record):
    """``app.bsky.graph.list``; ``purpose`` is e.g. ``app.bsky.graph.defs#curatelist``."""

    collection: ClassVar[str] = "app.bsky.graph.list"
    name: str = Field(min_length=1)
    purpose: str
    description: str | None = None
    avatar: Blob | None = None
    created_at: str


class ListItem(Record):
    collection: ClassVar[str] = "app.bsky.graph.listitem"
    subject: Did
    list: RecordAtUri
    created_at: str


class FeedGenerator(Record):
    """``app.bsky.feed.generator``; ``did`` is the feed service's DID."""

    collection: ClassVar[str] = "app.bsky.feed.generator"
    did: Did
    display_name: str
    description: str | None = None
    avatar: Blob | None = None
    accepts_interactions: bool | None = None
    content_mode: str | None = None
    created_at: str


class MentionRule(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.feed.threadgate#mentionRule"


class FollowerRule(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.feed.threadgate#followerRule"


class FollowingRule(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.feed.threadgate#followingRule"


class ListRule(LexiconObject):
    lexicon_type: ClassVar[str] = "app.bsky.feed.threadgate#listRule"
    list: AtUri


class UnknownRule(LexiconObject):
    lexicon_type: ClassVar[str] = "unknown"
    type: str = Field(default="", alias="$type")


ThreadgateRule = Annotated[
    Union[
        Annotated[MentionRule, Tag(MentionRule.lexicon_type)],
        Annotated[FollowerRule, Tag(FollowerRule.lexicon_type)],
        Annotated[FollowingRule, Tag(FollowingRule.lexicon_type)],
        Annotated[ListRule, Tag(ListRule.lexicon_type)],
        Annotated[UnknownRule, Tag("unknown")],
    ],
    Discriminator(
        _open_union_tag(
            frozenset(
                {
                    MentionRule.lexicon_type,
                    FollowerRule.lexicon_type,
                    FollowingRule.lexicon_type,
                    ListRule.lexicon_type,
                }
            )
        )
    ),
]


class Threadgate(Record):
    """``app.bsky.feed.threadgate``: absent ``allow`` lets everyone reply, an empty one nobody."""

    collection: ClassVar[str] = "app.bsky.feed.threadgate"
    post: RecordAtUri
    allow: list[ThreadgateRule] | None = None
    hidden_replies: list[AtUri] = Field(default_factory=list)
    created_at: str


class FeedItem(LexiconObject):
    uri: AtUri


class StarterPack(Record):
    collection: ClassVar[str] = "app.bsky.graph.starterpack"
    name: str = Field(min_length=1)
    description: str | None = None
    list: RecordAtUri
    feeds: list[FeedItem] = Field(default_factory=list)
    created_at: str


class LabelerPolicies(LexiconObject):
    label_values: list[str]


class LabelerService(Record):
    collection: ClassVar[str] = "app.bsky.labeler.service"
    policies: LabelerPolicies
    created_at: str
    reason_types: list[str] | None = None
    subject_types: list[str] | None = None
    subject_collections: list[str] | None = None


class Profile(Record):
    """``app.bsky.actor.profile`` (rkey ``self``); every field is optional in the lexicon."""

    collection: ClassVar[str] = "app.bsky.actor.profile"
    display_name: str | None = None
    description: str | None = None
    pronouns: str | None = None
    website: str | None = None
    avatar: Blob | None = None
    banner: Blob | None = None
    joined_via_starter_pack: StrongRef | None = None
    pinned_post: StrongRef | None = None
    created_at: str | None = None


RECORD_MODELS: dict[str, type[Record]] = {
    model.collection: model
    for model in (
        Post,
        Like,
        Repost,
        Follow,
        Block,
        ListRecord,
        ListItem,
        FeedGenerator,
        Threadgate,
        StarterPack,
        LabelerService,
        Profile,
    )
}
"""Collected collections (NSID → record model). Commits of other collections are skipped."""

COLLECTED_COLLECTIONS: frozenset[str] = frozenset(RECORD_MODELS)


def is_collected(collection: str) -> bool:
    """True when the product collects records of ``collection``."""
    return collection in RECORD_MODELS


_VALIDATORS = {collection: model.__pydantic_validator__ for collection, model in RECORD_MODELS.items()}
"""The compiled validator of each record model (``model_validate`` without its Python wrapper)."""


def _invalid_record(collection: str, error: ValidationError) -> Rejection:
    return Rejection(
        RejectionCode.INVALID_RECORD, f"{collection} record breaks its lexicon: {describe_validation_error(error)}"
    )


def parse_record(collection: str, data: object) -> Result[Record, Rejection]:
    """Validate a record dict of ``collection`` against its lexicon model.

    ``Failure`` with ``unsupported_collection`` when the collection is not collected, or
    ``invalid_record`` when the record breaks its lexicon. Never raises.
    """
    validator = _VALIDATORS.get(collection)
    if validator is None:
        return Failure(
            Rejection(RejectionCode.UNSUPPORTED_COLLECTION, f"{collection} is not a collected collection")
        )
    try:  # on the hot path: a plain try costs less than @safe and .alt
        return Success(validator.validate_python(data))
    except ValidationError as error:
        return Failure(_invalid_record(collection, error))


__all__ = [
    "COLLECTED_COLLECTIONS",
    "RECORD_MODELS",
    "Block",
    "Blob",
    "Embed",
    "ExternalEmbed",
    "Facet",
    "FeedGenerator",
    "Follow",
    "GalleryEmbed",
    "ImagesEmbed",
    "LabelerService",
    "Like",
    "LinkFeature",
    "ListItem",
    "ListRecord",
    "MentionFeature",
    "Post",
    "Profile",
    "Record",
    "RecordEmbed",
    "RecordWithMediaEmbed",
    "Repost",
    "StarterPack",
    "StrongRef",
    "TagFeature",
    "Threadgate",
    "VideoEmbed",
    "is_collected",
    "parse_record",
]
