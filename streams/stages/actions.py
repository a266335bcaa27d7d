"""Growth actions for the engine's own account: follow-back and liking the posts that mention it.

Run by the crawler when a ``RunGrowthActions`` request arrives (see :mod:`streams.stages.crawl`);
what is planned is decided by :mod:`domain.crawl`, what was done is kept in
:class:`projections.crawl_store.CrawlStore` (``growth_actions``) so nothing is done twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from pydantic import SecretStr
from returns.result import Failure, Result, Success

from domain.appview import CreateRecordOutput
from domain.crawl import (
    FOLLOW_BACK,
    LIKE_MENTIONS,
    GrowthActionsConfig,
    PlannedAction,
    day_start_us,
    growth_action_event,
    plan_follow_back,
    plan_like_mentions,
)
from domain.events import GrowthActionTaken
from projections.crawl_store import CrawlStore
from streams.adapters.atproto import AppViewClient, AtprotoSession, XrpcError, collect_pages, iso_now
from streams.observability.log import ContextLogger, get_logger

__all__ = ["ActionReport", "GrowthActions", "SessionCredentials"]


@dataclass(frozen=True, slots=True)
class SessionCredentials:
    """The account the growth actions act for: its PDS (or entryway) and an app password."""

    service: str
    identifier: str
    password: SecretStr


@dataclass
class ActionReport:
    """What a growth action run decided and did. In a dry run only ``planned`` is filled."""

    dry_run: bool
    planned: list[PlannedAction] = field(default_factory=list)
    taken: list[tuple[PlannedAction, str]] = field(default_factory=list)
    """Actions taken, with the record created."""
    failed: list[tuple[PlannedAction, str]] = field(default_factory=list)
    skipped: list[tuple[PlannedAction, str]] = field(default_factory=list)
    events: list[GrowthActionTaken] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: ActionReport) -> ActionReport:
        return ActionReport(self.dry_run and other.dry_run, self.planned + other.planned, self.taken + other.taken,
                            self.failed + other.failed, self.skipped + other.skipped, self.events + other.events,
                            self.notes + other.notes)

    def lines(self) -> list[str]:
        """The report for people: one line per action (``would follow ...`` in a dry run)."""
        verb = {"follow": "follow", "like": "like"}
        out = [f"{'would ' if self.dry_run else ''}{verb[a.action]} {a.subject} ({a.reason})" for a in self.planned]
        out += [f"took: {a.action} {a.subject} -> {uri}" for a, uri in self.taken]
        out += [f"failed: {a.action} {a.subject}: {why}" for a, why in self.failed]
        out += [f"skipped: {a.action} {a.subject}: {why}" for a, why in self.skipped]
        return out + self.notes


class GrowthActions:
    """Follow-back and liking mentions for the session's account, through ``session``.

    Off unless ``config.enabled``; a dry run (``config.dry_run``, the default) reports exactly
    what it would do and records nothing. Otherwise each action is claimed in
    ``growth_actions`` before it is taken and settled after, so nothing is done twice across
    restarts; daily caps count what was claimed since 00:00 UTC. Reads of follower and follow
    lists go through the public AppView client (all pages, up to ``max_pages`` as a safety
    bound: a follow list longer than that refuses the follow-back rather than guess).
    """

    def __init__(self, *, appview: AppViewClient, session: AtprotoSession, store: CrawlStore,
                 config: GrowthActionsConfig, clock: Callable[[], float] = time.time,
                 logger: ContextLogger | None = None) -> None:
        self.appview = appview
        self.session = session
        self.store = store
        self.config = config
        self._clock = clock
        self.log = logger or get_logger("crawl.actions")

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    def _report(self) -> ActionReport:
        return ActionReport(dry_run=self.config.dry_run)

    async def run(self, actions: Iterable[str] = (FOLLOW_BACK, LIKE_MENTIONS)) -> Result[ActionReport, XrpcError]:
        """Run the named actions (those enabled in the configuration)."""
        report = self._report()
        if not self.config.enabled:
            report.notes.append("growth actions are off (enabled=false)")
            return Success(report)
        for name in actions:
            if name == FOLLOW_BACK and self.config.follow_back:
                step = await self.follow_back()
            elif name == LIKE_MENTIONS and self.config.like_mentions:
                step = await self.like_mentions()
            else:
                continue
            match step:
                case Success(done):
                    report = report.merge(done)
                case Failure() as failed:
                    return failed
        return Success(report)

    async def follow_back(self) -> Result[ActionReport, XrpcError]:
        """Follow the followers we do not follow yet (checking ALL pages of both lists)."""
        match await self.session.account_did():
            case Failure() as failed:
                return failed
            case Success(did):
                pass
        limit, pages = self.config.page_size, self.config.max_pages
        followers = await collect_pages(self.appview.followers(did, limit=limit, max_pages=pages))
        follows = await collect_pages(self.appview.follows(did, limit=limit, max_pages=pages))
        match followers, follows:
            case (Failure() as failed, _) | (_, Failure() as failed):
                return failed
            case Success(follower_pages), Success(follow_pages):
                pass
        report = self._report()
        if len(follow_pages) >= pages and follow_pages[-1].cursor:
            report.notes.append(f"follow-back refused: our follow list has more than {pages} pages")
            return Success(report)
        now = self._now_us()
        remaining = self.config.max_follows_per_day - await self.store.count_since("follow", day_start_us(now))
        plan = plan_follow_back(did, list(chain.from_iterable(p.followers for p in follower_pages)),
                                list(chain.from_iterable(p.follows for p in follow_pages)),
                                await self.store.recorded_subjects("follow"), max(0, remaining))
        return Success(await self._take(plan, report, did, now))

    async def like_mentions(self) -> Result[ActionReport, XrpcError]:
        """Like the recent posts that mention us."""
        match await self.session.account_did():
            case Failure() as failed:
                return failed
            case Success(did):
                pass
        match await self.session.notifications(reasons=("mention",), limit=self.config.page_size,
                                               max_pages=min(self.config.max_pages, 10)):
            case Failure() as failed:
                return failed
            case Success(pages):
                pass
        now = self._now_us()
        remaining = self.config.max_likes_per_day - await self.store.count_since("like", day_start_us(now))
        plan = plan_like_mentions(did, [n for page in pages for n in page.notifications],
                                  await self.store.recorded_subjects("like"), max(0, remaining), now,
                                  self.config.mention_max_age_us)
        return Success(await self._take(plan, self._report(), did, now))

    async def _take(self, plan: Sequence[PlannedAction], report: ActionReport, did: str, now: int) -> ActionReport:
        report.planned.extend(plan)
        if self.config.dry_run:
            for action in plan:
                self.log.user_action(f"would {action.action}", did=action.subject_did, subject=action.subject,
                                     reason=action.reason, dry_run=True)
            return report
        for action in plan:
            if not await self.store.claim(action, now):
                report.skipped.append((action, "already recorded"))
                continue
            await self._settle(action, await self._act(action), report, did)
        return report

    async def _act(self, action: PlannedAction) -> Result[CreateRecordOutput, XrpcError]:
        created_at = iso_now(self._clock())
        if action.action == "follow":
            return await self.session.follow(action.subject, created_at=created_at)
        return await self.session.like(action.subject, action.subject_cid or "", created_at=created_at)

    async def _settle(self, action: PlannedAction, result: Result[CreateRecordOutput, XrpcError],
                      report: ActionReport, did: str) -> None:
        taken_at = self._now_us()
        match result:
            case Success(record):
                await self.store.settle(action, "done", taken_at, record_uri=record.uri)
                report.taken.append((action, record.uri))
                report.events.append(growth_action_event(action, did, record.uri, taken_at))
                self.log.user_action(action.action, did=action.subject_did, subject=action.subject,
                                     record=record.uri, reason=action.reason)
            case Failure(error):
                # a refusal (4xx) may be retried later; no answer (5xx, timeout) may have
                # acted: never retried automatically
                status = "unknown" if error.transient else "failed"
                await self.store.settle(action, status, taken_at, error=str(error))
                report.failed.append((action, str(error)))
