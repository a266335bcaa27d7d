"""Read queries for the HTTP API and analytics.

Each function takes a connection (``search_path`` set to the projection's schema) and bounded
parameters, and returns plain dicts (datetimes stay ``datetime``). Parameters out of bounds
raise ``ValueError`` naming the parameter. "Now" is always an argument: the functions never
read the database clock, so they answer the same for recorded data at any later date.

Windows: follower gains are kept per hour, so the follower windows are the last ``hours``
hourly buckets up to ``now``, the current (partial) hour included; posts, hashtags and
activity have exact times and use ``(now - window, now]``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

__all__ = [
    "activity_heatmap",
    "candidate_strategies",
    "candidates_by_strategy",
    "engagement_leaders",
    "fastest_growing_accounts",
    "growth_actions",
    "hashtag_trends",
    "network_stats",
    "top_posts",
    "trending_accounts",
    "user_profile",
]

MAX_LIMIT = 500
MAX_OFFSET = 100_000
MAX_HOURS = 24 * 30

Conn = psycopg.AsyncConnection[Any]


def _bounded(name: str, value: int, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _aware(name: str, now: datetime) -> datetime:
    if not isinstance(now, datetime) or now.tzinfo is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {now!r}")
    return now


def _hour_window(now: datetime, hours: int) -> datetime:
    """Start of the first of the last ``hours`` hourly buckets up to ``now``."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)


async def _all(conn: Conn, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)  # type: ignore[arg-type]
        return await cur.fetchall()


async def _one(conn: Conn, query: str, params: dict[str, Any]) -> dict[str, Any] | None:
    rows = await _all(conn, query, params)
    return rows[0] if rows else None


# --- growth --------------------------------------------------------------------------------

_FOLLOWERS = "coalesce(u.appview_followers_count, u.follower_count, 0)"
"""An account's followers: the AppView's total when it was crawled, else the follows observed."""

_GAINS = """
WITH gains AS (
    SELECT did, sum(gained)::bigint AS gained, sum(lost)::bigint AS lost
    FROM follower_gains_hourly
    WHERE hour >= %(start)s AND hour <= %(now)s
    GROUP BY did
)
SELECT g.did, u.handle, u.display_name, coalesce(u.follower_count, 0) AS follower_count,
       u.appview_followers_count, {followers} AS followers,
       g.gained, g.lost, g.gained - g.lost AS net_gain{extra}
FROM gains g
LEFT JOIN users u ON u.did = g.did
WHERE g.gained - g.lost > 0{where}
ORDER BY {order}
LIMIT %(limit)s
"""


async def trending_accounts(conn: Conn, *, now: datetime, hours: int = 24, limit: int = 20) -> list[dict[str, Any]]:
    """Accounts by net follower gain over the last ``hours`` (follows stored minus stored follows
    undone, by the hour each happened): ``did, handle, display_name, follower_count, gained,
    lost, net_gain``."""
    _aware("now", now)
    hours = _bounded("hours", hours, 1, MAX_HOURS)
    params = {"start": _hour_window(now, hours), "now": now, "limit": _bounded("limit", limit, 1, MAX_LIMIT)}
    query = _GAINS.format(followers=_FOLLOWERS, extra="", where="", order="net_gain DESC, g.did")
    return await _all(conn, query, params)


async def fastest_growing_accounts(
    conn: Conn, *, now: datetime, hours: int = 24, min_base: int = 100, limit: int = 20
) -> list[dict[str, Any]]:
    """Accounts by relative follower gain over the last ``hours``: ``net_gain / base`` where
    ``base`` is the follower count at the window's start (``followers - net_gain``), which must
    be at least ``min_base``. ``followers`` is the AppView's total from the latest crawl of the
    account when there is one, else the follows observed. Adds ``base`` and ``relative_gain``
    to the trending fields."""
    _aware("now", now)
    hours = _bounded("hours", hours, 1, MAX_HOURS)
    params = {
        "start": _hour_window(now, hours),
        "now": now,
        "limit": _bounded("limit", limit, 1, MAX_LIMIT),
        "min_base": _bounded("min_base", min_base, 1, 1_000_000_000),
    }
    base = f"({_FOLLOWERS} - (g.gained - g.lost))"
    query = _GAINS.format(
        followers=_FOLLOWERS,
        extra=f", {base} AS base, (g.gained - g.lost)::double precision / {base} AS relative_gain",
        where=f" AND {base} >= %(min_base)s",
        order="relative_gain DESC, net_gain DESC, g.did",
    )
    return await _all(conn, query, params)


USER_ORDERS: dict[str, str] = {
    "followers": "follower_count DESC, did",
    "engagement": "likes_received + reposts_received + replies_received + quotes_received DESC, did",
    "posts": "post_count DESC, did",
    "last_seen": "last_seen_at DESC NULLS LAST, did",
    "first_seen": "first_seen_at DESC NULLS LAST, did",
    "did": "did",
}
"""The orders of :func:`list_users`, each total (the DID breaks ties), so pages never overlap."""


async def list_users(conn: Conn, *, order: str = "followers", query: str | None = None,
                     strategy: str | None = None, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    """A page of accounts seen: ``order`` one of :data:`USER_ORDERS`; ``query`` keeps accounts
    whose handle or DID starts with it (case-insensitive); ``strategy`` keeps those the
    strategy selected. One row more than ``limit`` is read, so the caller knows if more follow."""
    if order not in USER_ORDERS:
        raise ValueError(f"order must be one of {', '.join(USER_ORDERS)}")
    sql = f"""
SELECT did, handle, display_name, active, follower_count, follow_count, post_count,
       likes_received + reposts_received + replies_received + quotes_received AS engagement,
       first_seen_at, last_seen_at, strategies
FROM users
WHERE (first_seen_at IS NOT NULL OR handle IS NOT NULL OR follower_count > 0)
  AND (%(prefix)s::text IS NULL OR lower(handle) LIKE %(prefix)s OR did LIKE %(did_prefix)s)
  AND (%(strategy)s::text IS NULL OR %(strategy)s = ANY(strategies))
ORDER BY {USER_ORDERS[order]}
LIMIT %(limit)s OFFSET %(offset)s
"""
    prefix = None if not query else _like_prefix(query.lower().removeprefix("@"))
    params = {"prefix": prefix, "did_prefix": None if not query else _like_prefix(query),
              "strategy": strategy, "limit": _bounded("limit", limit, 1, MAX_LIMIT) + 1,
              "offset": _bounded("offset", offset, 0, MAX_OFFSET)}
    return await _all(conn, sql, params)


def _like_prefix(text: str) -> str:
    """``text%`` for ``LIKE``, with ``%``, ``_`` and ``\\`` in ``text`` taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def engagement_leaders(conn: Conn, *, limit: int = 20) -> list[dict[str, Any]]:
    """Accounts by engagement received on their records (likes + reposts + replies + quotes),
    not by follower count."""
    query = """
SELECT did, handle, display_name, follower_count, likes_received, reposts_received, replies_received,
       quotes_received, likes_received + reposts_received + replies_received + quotes_received AS engagement
FROM users
WHERE likes_received + reposts_received + replies_received + quotes_received > 0
ORDER BY likes_received + reposts_received + replies_received + quotes_received DESC, did
LIMIT %(limit)s
"""
    return await _all(conn, query, {"limit": _bounded("limit", limit, 1, MAX_LIMIT)})


async def top_posts(conn: Conn, *, now: datetime, hours: int = 24, limit: int = 20) -> list[dict[str, Any]]:
    """Posts first seen in ``(now - hours, now]`` by ``likes + 2*reposts + 3*replies + 2*quotes``
    (posts without engagement are not listed)."""
    _aware("now", now)
    hours = _bounded("hours", hours, 1, MAX_HOURS)
    query = """
SELECT p.uri, p.did, u.handle, p.text, p.created_at, p.indexed_at, p.langs, p.embed_kind,
       e.like_count, e.repost_count, e.reply_count, e.quote_count,
       e.like_count + 2 * e.repost_count + 3 * e.reply_count + 2 * e.quote_count AS score
FROM posts p
JOIN engagement_counts e ON e.subject_uri = p.uri
LEFT JOIN users u ON u.did = p.did
WHERE p.indexed_at > %(start)s AND p.indexed_at <= %(now)s
ORDER BY score DESC, p.indexed_at DESC, p.uri
LIMIT %(limit)s
"""
    params = {"start": now - timedelta(hours=hours), "now": now, "limit": _bounded("limit", limit, 1, MAX_LIMIT)}
    return await _all(conn, query, params)


async def hashtag_trends(conn: Conn, *, now: datetime, hours: int = 24, limit: int = 10) -> list[dict[str, Any]]:
    """The ``limit`` hashtags used most in ``(now - hours, now]``, each with its total and its
    counts per hour: ``[{tag, total, hourly: [{hour, count}, ...]}, ...]``."""
    _aware("now", now)
    hours = _bounded("hours", hours, 1, MAX_HOURS)
    query = """
WITH counts AS (
    SELECT tag, date_trunc('hour', created_at, 'UTC') AS hour, count(*) AS n
    FROM hashtags
    WHERE created_at > %(start)s AND created_at <= %(now)s
    GROUP BY tag, date_trunc('hour', created_at, 'UTC')
), top AS (
    SELECT tag, sum(n)::bigint AS total FROM counts GROUP BY tag ORDER BY total DESC, tag LIMIT %(limit)s
)
SELECT t.tag, t.total, c.hour, c.n AS count
FROM top t JOIN counts c ON c.tag = t.tag
ORDER BY t.total DESC, t.tag, c.hour
"""
    params = {"start": now - timedelta(hours=hours), "now": now, "limit": _bounded("limit", limit, 1, MAX_LIMIT)}
    trends: dict[str, dict[str, Any]] = {}
    for row in await _all(conn, query, params):
        trend = trends.setdefault(row["tag"], {"tag": row["tag"], "total": row["total"], "hourly": []})
        trend["hourly"].append({"hour": row["hour"], "count": row["count"]})
    return list(trends.values())


async def activity_heatmap(conn: Conn, did: str) -> dict[str, Any]:
    """Actions of ``did`` by ISO weekday and UTC hour: ``grid[weekday - 1][hour]`` (7 x 24),
    ``total`` and the ``peak`` cell (``None`` without activity)."""
    rows = await _all(
        conn, "SELECT iso_weekday, hour, events FROM activity_patterns WHERE did = %(did)s", {"did": did}
    )
    grid = [[0] * 24 for _ in range(7)]
    for row in rows:
        grid[row["iso_weekday"] - 1][row["hour"]] = row["events"]
    total = sum(map(sum, grid))
    peak = None
    if total:
        events, weekday, hour = max((grid[d][h], d + 1, h) for d in range(7) for h in range(24))
        peak = {"iso_weekday": weekday, "hour": hour, "events": events}
    return {"did": did, "total": total, "grid": grid, "peak": peak}


_EXACT_BELOW = 200_000


async def _table_size(conn: Conn, table: str) -> tuple[int, bool]:
    """Rows in ``table``: the planner's estimate for big tables, an exact count for small ones."""
    row = await _one(
        conn,
        "SELECT c.reltuples::bigint AS estimate FROM pg_class c "
        "WHERE c.oid = to_regclass(quote_ident(current_schema()) || '.' || %(table)s)",
        {"table": table},
    )
    estimate = int(row["estimate"]) if row and row["estimate"] is not None else -1
    if estimate >= _EXACT_BELOW:
        return estimate, True
    exact = await _one(conn, f"SELECT count(*) AS n FROM {table}", {})  # table is one of ours, not input
    return int(exact["n"]) if exact else 0, False


async def network_stats(conn: Conn, *, now: datetime, minutes: int = 5) -> dict[str, Any]:
    """Sizes of the network seen so far (``users``, ``follows``, ``posts``, ``likes``,
    ``reposts``, ``blocks``; estimated for big tables, see ``approximate``) and
    ``events_per_minute``: collected actions per minute over ``(now - minutes, now]``, and
    ``per_minute``: the count of each minute of that window that has some."""
    _aware("now", now)
    minutes = _bounded("minutes", minutes, 1, 24 * 60)
    stats: dict[str, Any] = {}
    approximate: list[str] = []
    for table in ("users", "follows", "posts", "likes", "reposts", "blocks"):
        stats[table], estimated = await _table_size(conn, table)
        if estimated:
            approximate.append(table)
    row = await _one(
        conn,
        "SELECT count(*) AS n FROM activity_events WHERE occurred_at > %(start)s AND occurred_at <= %(now)s",
        {"start": now - timedelta(minutes=minutes), "now": now},
    )
    stats["events_per_minute"] = (int(row["n"]) if row else 0) / minutes
    stats["per_minute"] = await _all(
        conn,
        "SELECT date_trunc('minute', occurred_at) AS minute, count(*) AS count FROM activity_events "
        "WHERE occurred_at > %(start)s AND occurred_at <= %(now)s GROUP BY 1 ORDER BY 1",
        {"start": now - timedelta(minutes=minutes), "now": now},
    )
    stats["window_minutes"] = minutes
    stats["approximate"] = approximate
    return stats


# --- accounts and candidates ---------------------------------------------------------------


async def user_profile(
    conn: Conn, actor: str, *, now: datetime, recent: int = 20
) -> dict[str, Any] | None:
    """One account by DID or handle: its ``users`` row (profile, status, counts, first and last
    seen, strategies), ``candidates`` (decisions with reasons), ``follower_gain_24h``, ``graph``
    (distinct followers and follows: the firehose's ``follows`` and the crawl's ``observed_follows``),
    ``recent_activity``, ``growth_actions`` (what the engine did towards it) and
    ``recent_posts`` (at most ``recent`` each); ``None`` if unknown."""
    _aware("now", now)
    recent = _bounded("recent", recent, 1, 100)
    if actor.startswith("did:"):
        user = await _one(conn, "SELECT * FROM users WHERE did = %(actor)s", {"actor": actor})
    else:
        user = await _one(
            conn,
            "SELECT * FROM users WHERE lower(handle) = lower(%(actor)s) ORDER BY last_seen_at DESC NULLS LAST LIMIT 1",
            {"actor": actor.removeprefix("@")},
        )
    if user is None:
        return None
    did = user["did"]
    params = {"did": did, "now": now, "recent": recent, "start": _hour_window(now, 24)}
    user["candidates"] = await _all(
        conn,
        "SELECT strategy, score, reasons, subject_uri, source_did, first_seen_at, last_seen_at, "
        "source_topic, source_partition, source_offset FROM candidates WHERE did = %(did)s ORDER BY score DESC, strategy",
        params,
    )
    gain = await _one(
        conn,
        "SELECT coalesce(sum(gained), 0)::bigint AS gained, coalesce(sum(lost), 0)::bigint AS lost "
        "FROM follower_gains_hourly WHERE did = %(did)s AND hour >= %(start)s AND hour <= %(now)s",
        params,
    )
    assert gain is not None
    user["follower_gain_24h"] = {**gain, "net": gain["gained"] - gain["lost"]}
    graph = await _one(
        conn,
        "SELECT (SELECT count(*) FROM (SELECT did FROM follows WHERE subject_did = %(did)s UNION "
        "SELECT did FROM observed_follows WHERE subject_did = %(did)s) f) AS followers, "
        "(SELECT count(*) FROM (SELECT subject_did FROM follows WHERE did = %(did)s UNION "
        "SELECT subject_did FROM observed_follows WHERE did = %(did)s) f) AS follows",
        params,
    )
    user["graph"] = graph
    user["follower_gains"] = await _all(
        conn,
        "SELECT hour, gained, lost FROM follower_gains_hourly WHERE did = %(did)s AND hour >= %(since)s "
        "AND hour <= %(now)s ORDER BY hour",
        {**params, "since": _hour_window(now, 72)},
    )
    user["recent_activity"] = await _all(
        conn,
        "SELECT occurred_at, collection, operation FROM activity_events "
        "WHERE did = %(did)s AND occurred_at <= %(now)s ORDER BY occurred_at DESC LIMIT %(recent)s",
        params,
    )
    user["growth_actions"] = await _all(
        conn,
        "SELECT action, record_uri, subject_uri, reason, occurred_at FROM growth_actions "
        "WHERE subject_did = %(did)s AND occurred_at <= %(now)s ORDER BY occurred_at DESC LIMIT %(recent)s",
        params,
    )
    user["recent_posts"] = await _all(
        conn,
        "SELECT uri, text, created_at, indexed_at, like_count, repost_count, reply_count, quote_count "
        "FROM posts_with_counts WHERE did = %(did)s AND indexed_at <= %(now)s "
        "ORDER BY indexed_at DESC LIMIT %(recent)s",
        params,
    )
    return user


async def candidates_by_strategy(
    conn: Conn, strategy: str, *, limit: int = 50, min_score: float | None = None
) -> list[dict[str, Any]]:
    """Accounts ``strategy`` selected, best score first, with their handle and counts."""
    query = """
SELECT c.did, u.handle, u.display_name, coalesce(u.follower_count, 0) AS follower_count,
       c.strategy, c.score, c.reasons, c.subject_uri, c.first_seen_at, c.last_seen_at,
       c.source_topic, c.source_partition, c.source_offset
FROM candidates c
LEFT JOIN users u ON u.did = c.did
WHERE c.strategy = %(strategy)s AND (%(min_score)s::double precision IS NULL OR c.score >= %(min_score)s)
ORDER BY c.score DESC, c.did
LIMIT %(limit)s
"""
    params = {"strategy": strategy, "min_score": min_score, "limit": _bounded("limit", limit, 1, MAX_LIMIT)}
    return await _all(conn, query, params)


async def candidate_strategies(conn: Conn) -> list[dict[str, Any]]:
    """Each strategy with candidates: ``strategy, candidates, last_seen_at``."""
    return await _all(
        conn,
        "SELECT strategy, count(*) AS candidates, max(last_seen_at) AS last_seen_at "
        "FROM candidates GROUP BY strategy ORDER BY strategy",
        {},
    )


async def growth_actions(conn: Conn, *, now: datetime, hours: int = 24, limit: int = 50) -> list[dict[str, Any]]:
    """What the engine's own account did in ``(now - hours, now]``, latest first, with the
    subject's handle."""
    _aware("now", now)
    hours = _bounded("hours", hours, 1, MAX_HOURS)
    query = """
SELECT a.occurred_at, a.did, a.action, a.subject_did, u.handle AS subject_handle, a.subject_uri, a.record_uri, a.reason
FROM growth_actions a
LEFT JOIN users u ON u.did = a.subject_did
WHERE a.occurred_at > %(start)s AND a.occurred_at <= %(now)s
ORDER BY a.occurred_at DESC, a.record_uri
LIMIT %(limit)s
"""
    params = {"start": now - timedelta(hours=hours), "now": now, "limit": _bounded("limit", limit, 1, MAX_LIMIT)}
    return await _all(conn, query, params)
