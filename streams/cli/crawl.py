"""``bge crawl``: start crawls, follow them, cancel them; ``bge actions``: the growth actions now.

A crawl is a set of requests on ``growth.crawl``; the worker's crawl agent executes them (with
``CRAWL_ENABLED=true``) through the one AppView client of the worker: its token bucket, the
AppView's rate-limit headers and the breaker. Commands::

    bge crawl snowball --seed alice.bsky.social --degrees 2 --max-users 500
    bge crawl search "#buildinpublic" indie --min-likes 20
    bge crawl interactions --actor alice.bsky.social --posts 10
    bge crawl graph --accounts accounts.txt | --known [--limit N] [--pages N]
    bge crawl profiles --stale-after 7d [--limit N]
    bge crawl status [ID]          # a live progress bar on a terminal, JSON when piped
    bge crawl cancel ID
    bge actions follow-back|like-mentions [--dry-run | --apply] [--limit N]

The original engine's variables work as defaults: ``SEED_HANDLES`` (comma-separated),
``MAX_DEGREES``, ``MAX_USERS``, ``SEARCH_QUERIES``, ``MIN_LIKES``. Each started crawl is recorded
in the crawl schema (``crawls``, ``crawl_members``) with its requests; its id is printed. The
same command with the same ``--label`` (default: today's date) is the same crawl: sending it
again changes nothing.

``bge actions`` runs in this process (not through the worker) with the crawl configuration's
caps and the once-only ledger (``growth_actions``); it is a dry run unless ``--apply`` is given.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import IO, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from domain.crawl import (
    FOLLOW_BACK,
    LIKE_MENTIONS,
    CrawlConfig,
    CrawlRequest,
    SnowballConfig,
    graph_requests,
    interactions_request,
    profile_requests,
    search_requests,
    snowball_request,
)
from projections.crawl_store import CrawlStore
from projections.crawl_store import crawl_progress as progress_of
from streams.config import Settings, load_settings
from streams.stages.crawl import load_crawl_config, request_crawl

__all__ = ["main", "main_actions", "parse_duration", "run", "run_actions_command"]

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``12h``, ``7d``, ``2w`` in seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (for example 12h, 7d, 2w)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def _env_list(name: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, "").split(",") if item.strip()]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bge crawl", description="start, follow and cancel crawls",
                                     epilog=__doc__.split("::", 1)[1].split("The original", 1)[0] if __doc__ else None,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def starter(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--label", default=None, help="names this run of the crawl (default: today, UTC)")
        p.add_argument("--no-wait", action="store_true", help="print the id and return (default on a pipe)")
        return p

    snowball = starter("snowball", "breadth-first crawl of followers and follows from seed accounts")
    snowball.add_argument("--seed", action="append", default=None, metavar="HANDLE_OR_DID",
                          help="a seed account (repeatable; default: SEED_HANDLES)")
    snowball.add_argument("--degrees", type=int, default=None, help="how far from the seeds (default: MAX_DEGREES or the config's)")
    snowball.add_argument("--max-users", type=int, default=None, help="accounts kept at most (default: MAX_USERS or the config's)")
    search = starter("search", "search posts; authors of posts with enough likes become candidates")
    search.add_argument("queries", nargs="*", metavar="QUERY", help="words or #tags (default: SEARCH_QUERIES or the config's)")
    search.add_argument("--min-likes", type=int, default=None, help="likes a post needs (default: MIN_LIKES or the config's)")
    search.add_argument("--pages", type=int, default=None, help="pages per query")
    interactions = starter("interactions", "everyone who liked, reposted or replied to an account's recent posts")
    interactions.add_argument("--actor", required=True, metavar="HANDLE_OR_DID")
    interactions.add_argument("--posts", type=int, default=None, help="recent posts to read (default: the config's)")
    graph = starter("graph", "read the follower and follow lists of accounts: their edges become events")
    accounts = graph.add_mutually_exclusive_group(required=True)
    accounts.add_argument("--accounts", type=argparse.FileType("r"), metavar="FILE",
                          help="handles or DIDs, one per line ('-': standard input)")
    accounts.add_argument("--known", action="store_true", help="the accounts the projection knows (users)")
    graph.add_argument("--limit", type=int, default=1000, help="with --known: accounts at most, the most followed first")
    graph.add_argument("--pages", type=int, default=10, help="pages of each list (100 accounts a page; default 10)")
    profiles = starter("profiles", "fetch the profiles of known accounts not fetched within a period")
    profiles.add_argument("--stale-after", type=parse_duration, default=parse_duration("7d"), metavar="DURATION",
                          help="refetch profiles older than this: 12h, 7d, 2w (default 7d)")
    profiles.add_argument("--limit", type=int, default=10_000, help="accounts at most, the stalest first (default 10,000)")
    status = sub.add_parser("status", help="progress of one crawl, or of the latest ones")
    status.add_argument("id", nargs="?", help="a crawl id (default: the latest crawls)")
    status.add_argument("--json", action="store_true", help="JSON even on a terminal")
    status.add_argument("--once", action="store_true", help="print once, no live progress")
    cancel = sub.add_parser("cancel", help="cancel a crawl: its requests not executed yet are skipped")
    cancel.add_argument("id")
    return parser


def _requests(args: argparse.Namespace, config: CrawlConfig, label: str, now_us: int,
              known: Sequence[str] = ()) -> tuple[list[CrawlRequest], dict[str, Any]]:
    """The requests a starting command sends, and its arguments as recorded."""
    if args.command == "snowball":
        seeds = args.seed or _env_list("SEED_HANDLES")
        if not seeds:
            raise SystemExit("bge crawl snowball: give --seed (or set SEED_HANDLES)")
        bounds = SnowballConfig.model_validate({
            **config.snowball.model_dump(),
            "max_degree": args.degrees if args.degrees is not None else _env_int("MAX_DEGREES", config.snowball.max_degree),
            "max_users": args.max_users if args.max_users is not None else _env_int("MAX_USERS", config.snowball.max_users),
        })
        request = snowball_request(seeds, bounds, label=label, requested_at_us=now_us, origin="bge crawl snowball")
        return [request], {"seeds": list(request.seeds), "degrees": bounds.max_degree, "max_users": bounds.max_users}
    if args.command == "search":
        queries = tuple(args.queries or _env_list("SEARCH_QUERIES") or config.search.queries)
        update: dict[str, Any] = {"queries": queries,
                                  "min_likes": args.min_likes if args.min_likes is not None
                                  else _env_int("MIN_LIKES", config.search.min_likes)}
        if args.pages is not None:
            update["max_pages"] = args.pages
        search = config.search.model_copy(update=update)
        requests = list(search_requests(search, label=label, requested_at_us=now_us, origin="bge crawl search"))
        return requests, {"queries": list(queries), "min_likes": search.min_likes, "pages": search.max_pages}
    if args.command == "interactions":
        posts = args.posts if args.posts is not None else config.interactions.max_posts
        request = interactions_request(args.actor, config.interactions.model_copy(update={"max_posts": posts}),
                                       label=label, requested_at_us=now_us, origin="bge crawl interactions")
        return [request], {"actor": args.actor, "posts": posts}
    if args.command == "graph":
        graph = list(graph_requests(known, label=label, max_pages=args.pages, page_size=100, requested_at_us=now_us,
                                    origin="bge crawl graph"))
        return graph, {"accounts": len(graph), "pages": args.pages}
    requests = list(profile_requests(known, label=label, refresh_after_us=int(args.stale_after * 1e6),
                                     requested_at_us=now_us, origin="bge crawl profiles"))
    return requests, {"stale_after_s": args.stale_after, "accounts": len(requests)}


async def _stale_accounts(settings: Settings, stale_after_s: float, limit: int) -> list[str]:
    """Accounts of the projection (``users``) whose profile was never fetched or is older than
    ``stale_after_s``, the stalest first."""
    from psycopg import sql

    from projections import connect

    async with await connect(settings.database_url, settings.db_schema) as conn:
        query = sql.SQL(
            "SELECT u.did FROM users u LEFT JOIN {}.crawl_profiles p ON p.did = u.did "
            "WHERE p.fetched_at IS NULL OR p.fetched_at < now() - make_interval(secs => %s) "
            "ORDER BY p.fetched_at NULLS FIRST, u.did LIMIT %s").format(sql.Identifier(settings.crawl_schema))
        cur = await conn.execute(query, (stale_after_s, limit))
        return [row[0] for row in await cur.fetchall()]


async def _known_accounts(settings: Settings, limit: int) -> list[str]:
    """The accounts of the projection (``users``), the most followed first."""
    from projections import connect

    async with await connect(settings.database_url, settings.db_schema) as conn:
        cur = await conn.execute("SELECT did FROM users ORDER BY greatest(follower_count, coalesce(appview_followers_count, 0)) "
                                 "DESC, did LIMIT %s", (limit,))
        return [row[0] for row in await cur.fetchall()]


async def _accounts(settings: Settings, args: argparse.Namespace) -> Sequence[str]:
    """The accounts a profiles or graph crawl covers (handles are resolved by the crawler)."""
    if args.command == "profiles":
        return await _stale_accounts(settings, args.stale_after, args.limit)
    if args.command == "graph":
        if args.known:
            return await _known_accounts(settings, args.limit)
        return [line.strip() for line in args.accounts if line.strip() and not line.startswith("#")]
    return ()


async def start(settings: Settings, args: argparse.Namespace, out: IO[str]) -> str | None:
    """Record and send the crawl ``args`` describe; returns its id (None: nothing to do)."""
    config = load_crawl_config(settings.crawl_config_file)
    now_us = time.time_ns() // 1000
    label = args.label or datetime.now(UTC).strftime("%Y-%m-%d")
    async with CrawlStore(settings.database_url, settings.crawl_schema) as store:
        known = await _accounts(settings, args)
        requests, recorded = _requests(args, config, label, now_us, known)
        if not requests:
            out.write("nothing to crawl: " + ("every known account's profile is fresh\n" if args.command == "profiles"
                                              else "no accounts\n"))
            return None
        crawl_id = requests[0].id
        members = [(r.id, getattr(r, "did", None) if args.command == "profiles" else None) for r in requests]
        fresh = await store.start_crawl(crawl_id, args.command, {**recorded, "label": label}, members, now_us)
    sent = await request_crawl(settings, requests)
    again = "" if fresh else " (the same crawl was started before: requests sent again, finished ones are skipped)"
    out.write(f"crawl {crawl_id}: {args.command}, {sent} request{'s' * (sent != 1)} sent{again}\n")
    return crawl_id


# --- status --------------------------------------------------------------------------------


def _table(progress: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="crawls (an id's first characters are enough for status and cancel)")
    for column in ("id", "kind", "state", "requests", "pages", "found", "failed", "rate/min", "ETA", "errors"):
        table.add_column(column, overflow="fold", no_wrap=column != "errors")
    for p in progress:
        table.add_row(p["id"][:8], p["kind"], p["state"], f"{p['finished']:,}/{p['requests']:,}", f"{p['pages']:,}",
                      f"{p['accounts_found']:,}", f"{p['failed']:,}", "" if p["rate_per_min"] is None else f"{p['rate_per_min']:,.0f}",
                      "" if p["eta_s"] is None else f"{p['eta_s']:,}s", "; ".join(p["errors"])[:200])
    return table


async def status(settings: Settings, crawl_id: str | None, *, out: IO[str], as_json: bool, live: bool,
                 poll_s: float = 1.0) -> int:
    async with CrawlStore(settings.database_url, settings.crawl_schema) as store:
        if crawl_id is not None:
            found = await store.resolve(crawl_id)
            if found is None:
                sys.stderr.write(f"bge crawl status: no crawl {crawl_id} (or several start so)\n")
                return 1
            crawl_id = found
        reports = [progress_of(r, datetime.now(UTC)) for r in await store.crawl_reports(crawl_id)]
        if as_json:
            out.write(json.dumps(reports[0] if crawl_id else reports, indent=2, default=str) + "\n")
            return 0
        console = Console(file=out)
        if not (live and crawl_id and reports[0]["state"] in ("queued", "running")):
            console.print(_table(reports))
            return 0
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[found]} found"),
                   TimeRemainingColumn())
        with Progress(*columns, console=console) as bar:
            task = bar.add_task(f"crawl {reports[0]['kind']}", total=reports[0]["requests"], found=0)
            while True:
                current = progress_of((await store.crawl_reports(crawl_id))[0], datetime.now(UTC))
                bar.update(task, total=current["requests"], completed=current["finished"], found=current["accounts_found"])
                if current["state"] not in ("queued", "running"):
                    break
                await asyncio.sleep(poll_s)
        console.print(_table([current]))
    return 0


async def cancel(settings: Settings, crawl_id: str, out: IO[str]) -> int:
    async with CrawlStore(settings.database_url, settings.crawl_schema) as store:
        crawl_id = await store.resolve(crawl_id) or crawl_id
        if not await store.cancel(crawl_id, time.time_ns() // 1000):
            sys.stderr.write(f"bge crawl cancel: no running crawl {crawl_id}\n")
            return 1
    out.write(f"crawl {crawl_id} cancelled: its requests not executed yet will be skipped\n")
    return 0


async def run(argv: Sequence[str], *, settings: Settings | None = None, out: IO[str] | None = None) -> int:
    """``bge crawl`` with ``argv``; ``out`` a terminal: live progress and tables, else JSON."""
    args = build_parser().parse_args(argv)
    settings = settings or load_settings()
    out = out or sys.stdout
    interactive = out.isatty()
    if args.command == "status":
        return await status(settings, args.id, out=out, as_json=args.json or not interactive,
                            live=interactive and not args.once)
    if args.command == "cancel":
        return await cancel(settings, args.id, out)
    crawl_id = await start(settings, args, out)
    if crawl_id is None:
        return 0
    if args.no_wait or not interactive:
        out.write(f"follow it with: bge crawl status {crawl_id}\n")
        return 0
    return await status(settings, crawl_id, out=out, as_json=False, live=True)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run(sys.argv[1:] if argv is None else argv))


# --- bge actions ---------------------------------------------------------------------------


def build_actions_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bge actions", description="the growth actions for ATPROTO_IDENTIFIER, now")
    parser.add_argument("action", choices=("follow-back", "like-mentions"))
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", default=True, help="report what would be done (the default)")
    mode.add_argument("--apply", action="store_true", help="act: follow or like, at most the daily caps")
    parser.add_argument("--limit", type=int, default=None, help="at most N actions in this run (within the daily cap)")
    return parser


async def run_actions(settings: Settings, action: str, *, apply: bool, limit: int | None, out: IO[str]) -> int:
    from streams.adapters.atproto import AppViewClient
    from streams.observability.log import get_logger
    from streams.stages.actions import GrowthActions, SessionCredentials
    from streams.stages.crawl import pds_session

    if not settings.atproto_identifier or settings.atproto_app_password is None:
        sys.stderr.write("bge actions: set ATPROTO_IDENTIFIER and ATPROTO_APP_PASSWORD (an app password)\n")
        return 2
    config = load_crawl_config(settings.crawl_config_file).actions
    caps = {"max_follows_per_day": config.max_follows_per_day, "max_likes_per_day": config.max_likes_per_day}
    if limit is not None:
        caps = {name: min(cap, limit) for name, cap in caps.items()}
    config = config.model_copy(update={"enabled": True, "dry_run": not apply,
                                       "follow_back": action == "follow-back", "like_mentions": action == "like-mentions",
                                       **caps})
    log = get_logger("actions")
    credentials = SessionCredentials(settings.atproto_pds, settings.atproto_identifier, settings.atproto_app_password)
    session = pds_session(settings, credentials, log)
    appview = AppViewClient.from_settings(settings, logger=log.child("appview"))
    async with CrawlStore(settings.database_url, settings.crawl_schema) as store:
        await appview.start()
        await session.client.start()
        try:
            actions = GrowthActions(appview=appview, session=session, store=store, config=config, logger=log)
            result = await actions.run([FOLLOW_BACK if action == "follow-back" else LIKE_MENTIONS])
        finally:
            await session.client.close()
            await appview.close()
    report = result.value_or(None)
    if report is None:
        sys.stderr.write(f"bge actions: {result.failure()}\n")
        return 1
    for line in report.lines() or ["nothing to do"]:
        out.write(line + "\n")
    if not apply:
        out.write("dry run: nothing was done (--apply acts)\n")
    return 0


async def run_actions_command(argv: Sequence[str], *, settings: Settings | None = None,
                              out: IO[str] | None = None) -> int:
    """``bge actions`` with ``argv``."""
    args = build_actions_parser().parse_args(argv)
    return await run_actions(settings or load_settings(), args.action, apply=args.apply, limit=args.limit,
                             out=out or sys.stdout)


def main_actions(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run_actions_command(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
