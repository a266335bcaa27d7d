"""What the AT Protocol AppView answers, as pydantic models of the ``app.bsky`` lexicons.

The models follow the lexicons' view definitions (``app.bsky.actor.defs``,
``app.bsky.feed.defs``, ``app.bsky.notification.listNotifications``, ``com.atproto.server``,
``com.atproto.repo``) and the output schemas of the XRPC methods the crawl uses:

- fields the product relies on are typed and checked (DIDs, handles, record at-uris, counts);
- unknown extra fields are ignored, so new lexicon fields never break parsing; open unions
  (thread items) accept unknown ``$type`` members as :class:`UnknownThreadItem`;
- views that the product only passes along (embeds, records, feed reasons) stay JSON objects.

:func:`parse_response` turns response bytes into a model: ``Success(model)``, or
``Failure(InvalidResponse)`` saying what broke the lexicon (a value, never an exception).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError
from pydantic.alias_generators import to_camel
from returns.result import Failure, Result, Success

from domain.rejections import describe_validation_error
from domain.syntax import Did, Handle, RecordAtUri

__all__ = [
    "BlockedPost",
    "CreateRecordOutput",
    "CreateSessionOutput",
    "FeedViewPost",
    "GetAuthorFeedOutput",
    "GetFollowersOutput",
    "GetFollowsOutput",
    "GetLikesOutput",
    "GetPostThreadOutput",
    "GetProfilesOutput",
    "GetRepostedByOutput",
    "GetSessionOutput",
    "InvalidResponse",
    "Label",
    "Like",
    "ListNotificationsOutput",
    "NotFoundPost",
    "Notification",
    "PostView",
    "ProfileView",
    "ProfileViewBasic",
    "ProfileViewDetailed",
    "SearchPostsOutput",
    "ThreadItem",
    "ThreadViewPost",
    "UnknownThreadItem",
    "ViewerState",
    "XrpcErrorBody",
    "parse_response",
    "thread_replies",
]


class AppViewObject(BaseModel):
    """Base of every view: camelCase aliases, strict types, extra fields ignored, frozen."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=True,
        strict=True,
        extra="ignore",
        frozen=True,
    )


# --- app.bsky.actor.defs ------------------------------------------------------------------


class Label(AppViewObject):
    """``com.atproto.label.defs#label``: a label ``val`` applied by ``src`` to ``uri``."""

    src: str
    uri: str
    val: str
    neg: bool = False
    cts: str | None = None


class ViewerState(AppViewObject):
    """``app.bsky.actor.defs#viewerState``: the requesting account's relation to the actor
    (empty for unauthenticated requests). ``following``/``followed_by`` are follow record uris."""

    muted: bool | None = None
    blocked_by: bool | None = None
    blocking: str | None = None
    following: str | None = None
    followed_by: str | None = None


class ProfileViewBasic(AppViewObject):
    """``app.bsky.actor.defs#profileViewBasic``."""

    did: Did
    handle: Handle
    display_name: str | None = None
    avatar: str | None = None
    """The avatar's URL (a CDN link), not a blob."""
    viewer: ViewerState | None = None
    labels: list[Label] = Field(default_factory=list)
    created_at: str | None = None


class ProfileView(ProfileViewBasic):
    """``app.bsky.actor.defs#profileView``: the items of follower, follow and like lists.
    It carries no counts."""

    description: str | None = None
    indexed_at: str | None = None


class ProfileViewDetailed(ProfileView):
    """``app.bsky.actor.defs#profileViewDetailed`` (``getProfile``/``getProfiles``): the only
    profile view with follower, follow and post counts."""

    banner: str | None = None
    followers_count: int | None = None
    follows_count: int | None = None
    posts_count: int | None = None
    pinned_post: dict[str, Any] | None = None


# --- app.bsky.feed.defs -------------------------------------------------------------------


class PostView(AppViewObject):
    """``app.bsky.feed.defs#postView``. ``record`` is the ``app.bsky.feed.post`` record as
    JSON; counts are the AppView's totals."""

    uri: RecordAtUri
    cid: str
    author: ProfileViewBasic
    record: dict[str, Any]
    embed: dict[str, Any] | None = None
    reply_count: int | None = None
    repost_count: int | None = None
    like_count: int | None = None
    quote_count: int | None = None
    indexed_at: str
    labels: list[Label] = Field(default_factory=list)

    @property
    def text(self) -> str:
        """The post's text (``""`` when the record has none)."""
        text = self.record.get("text")
        return text if isinstance(text, str) else ""

    @property
    def created_at(self) -> str | None:
        value = self.record.get("createdAt")
        return value if isinstance(value, str) else None

    @property
    def is_reply(self) -> bool:
        return isinstance(self.record.get("reply"), dict)


REASON_REPOST = "app.bsky.feed.defs#reasonRepost"
REASON_PIN = "app.bsky.feed.defs#reasonPin"


class FeedViewPost(AppViewObject):
    """``app.bsky.feed.defs#feedViewPost``: a post in a feed, with why it is there
    (``reason``: a repost or a pin) and its reply context."""

    post: PostView
    reply: dict[str, Any] | None = None
    reason: dict[str, Any] | None = None
    feed_context: str | None = None

    @property
    def is_repost(self) -> bool:
        """True when the feed shows someone else's post because the feed's actor reposted it."""
        return self.reason is not None and self.reason.get("$type") == REASON_REPOST


THREAD_VIEW_POST = "app.bsky.feed.defs#threadViewPost"
NOT_FOUND_POST = "app.bsky.feed.defs#notFoundPost"
BLOCKED_POST = "app.bsky.feed.defs#blockedPost"


class NotFoundPost(AppViewObject):
    lexicon_type: ClassVar[str] = NOT_FOUND_POST
    uri: str
    not_found: Literal[True]


class BlockedAuthor(AppViewObject):
    did: Did
    viewer: dict[str, Any] | None = None


class BlockedPost(AppViewObject):
    lexicon_type: ClassVar[str] = BLOCKED_POST
    uri: str
    blocked: Literal[True]
    author: BlockedAuthor


class UnknownThreadItem(AppViewObject):
    """A thread item of a ``$type`` this code does not know (the union is open)."""

    model_config = ConfigDict(extra="allow")


def _thread_item_tag(value: Any) -> str:
    kind = value.get("$type") if isinstance(value, dict) else getattr(value, "lexicon_type", None)
    return kind if kind in (THREAD_VIEW_POST, NOT_FOUND_POST, BLOCKED_POST) else "unknown"


ThreadItem = Annotated[
    Union[
        Annotated["ThreadViewPost", Tag(THREAD_VIEW_POST)],
        Annotated[NotFoundPost, Tag(NOT_FOUND_POST)],
        Annotated[BlockedPost, Tag(BLOCKED_POST)],
        Annotated[UnknownThreadItem, Tag("unknown")],
    ],
    Discriminator(_thread_item_tag),
]
"""An item of a thread: a post with its context, or a post not found or blocked."""


class ThreadViewPost(AppViewObject):
    """``app.bsky.feed.defs#threadViewPost``: a post, its parent chain and its replies."""

    lexicon_type: ClassVar[str] = THREAD_VIEW_POST
    post: PostView
    parent: ThreadItem | None = None
    replies: list[ThreadItem] = Field(default_factory=list)


ThreadViewPost.model_rebuild()


def thread_replies(thread: ThreadItem) -> list[PostView]:
    """Every reply below ``thread``'s post, at any depth, in the order the AppView gave them
    (depth first); items not found or blocked are left out."""
    found: list[PostView] = []
    if isinstance(thread, ThreadViewPost):
        pending = list(reversed(thread.replies))
        while pending:
            item = pending.pop()
            if isinstance(item, ThreadViewPost):
                found.append(item.post)
                pending.extend(reversed(item.replies))
    return found


class Like(AppViewObject):
    """An item of ``app.bsky.feed.getLikes#like``: who liked, and when."""

    indexed_at: str
    created_at: str
    actor: ProfileView


# --- app.bsky.notification ----------------------------------------------------------------


class Notification(AppViewObject):
    """``app.bsky.notification.listNotifications#notification``. ``reason`` is ``like``,
    ``repost``, ``follow``, ``mention``, ``reply``, ``quote``, ... (open set)."""

    uri: RecordAtUri
    cid: str
    author: ProfileView
    reason: str
    reason_subject: str | None = None
    record: dict[str, Any]
    is_read: bool
    indexed_at: str
    labels: list[Label] = Field(default_factory=list)


# --- outputs of the XRPC methods ------------------------------------------------------------


class GetProfilesOutput(AppViewObject):
    """``app.bsky.actor.getProfiles``: actors that do not exist are left out."""

    profiles: list[ProfileViewDetailed]


class GetFollowersOutput(AppViewObject):
    """``app.bsky.graph.getFollowers``."""

    subject: ProfileView
    cursor: str | None = None
    followers: list[ProfileView]


class GetFollowsOutput(AppViewObject):
    """``app.bsky.graph.getFollows``."""

    subject: ProfileView
    cursor: str | None = None
    follows: list[ProfileView]


class SearchPostsOutput(AppViewObject):
    """``app.bsky.feed.searchPosts``."""

    cursor: str | None = None
    hits_total: int | None = None
    posts: list[PostView]


class GetLikesOutput(AppViewObject):
    """``app.bsky.feed.getLikes``."""

    uri: str
    cid: str | None = None
    cursor: str | None = None
    likes: list[Like]


class GetRepostedByOutput(AppViewObject):
    """``app.bsky.feed.getRepostedBy``."""

    uri: str
    cid: str | None = None
    cursor: str | None = None
    reposted_by: list[ProfileView]


class GetPostThreadOutput(AppViewObject):
    """``app.bsky.feed.getPostThread``."""

    thread: ThreadItem
    threadgate: dict[str, Any] | None = None


class GetAuthorFeedOutput(AppViewObject):
    """``app.bsky.feed.getAuthorFeed``."""

    cursor: str | None = None
    feed: list[FeedViewPost]


class ListNotificationsOutput(AppViewObject):
    """``app.bsky.notification.listNotifications``."""

    cursor: str | None = None
    notifications: list[Notification]
    seen_at: str | None = None


class CreateSessionOutput(AppViewObject):
    """``com.atproto.server.createSession`` (and ``refreshSession``)."""

    access_jwt: str
    refresh_jwt: str
    handle: Handle
    did: Did
    active: bool | None = None
    status: str | None = None


class GetSessionOutput(AppViewObject):
    """``com.atproto.server.getSession``."""

    handle: Handle
    did: Did
    active: bool | None = None


class CreateRecordOutput(AppViewObject):
    """``com.atproto.repo.createRecord``: the new record's at-uri and CID."""

    uri: RecordAtUri
    cid: str
    validation_status: str | None = None


class XrpcErrorBody(AppViewObject):
    """The JSON body of an XRPC error response: ``{"error": ..., "message": ...}``."""

    error: str
    message: str | None = None


# --- parsing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InvalidResponse:
    """A response that breaks its lexicon: which ``model`` and what broke."""

    model: str
    message: str

    def __str__(self) -> str:
        return f"invalid {self.model}: {self.message}"


M = TypeVar("M", bound=AppViewObject)


def parse_response(model: type[M], raw: bytes) -> Result[M, InvalidResponse]:
    """Validate JSON response bytes against ``model``. Never raises."""
    try:
        return Success(model.model_validate_json(raw))
    except ValidationError as error:
        return Failure(InvalidResponse(model.__name__, describe_validation_error(error)))
