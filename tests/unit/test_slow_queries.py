"""Slow statements are logged as warnings with their name and duration, and counted."""

from __future__ import annotations

import logging

import pytest

from projections.db import QueryStats, statement_name


@pytest.mark.parametrize(("statement", "name"), [
    ("INSERT INTO likes AS t (uri) SELECT 1", "INSERT likes"),
    ("  update users AS u SET x = 1", "UPDATE users"),
    ("WITH doomed AS (SELECT ctid FROM media WHERE post_uri = ANY($1) ORDER BY 1 FOR UPDATE) "
     "DELETE FROM media t USING doomed WHERE t.ctid = doomed.ctid", "DELETE media"),
    ("SELECT did, handle\nFROM users WHERE did = %s", "SELECT users"),
    ("COPY copy_likes (uri) FROM STDIN", "COPY copy_likes"),
    ("SET search_path TO x", "SET"),
    ("", "?"),
])
def test_a_statement_is_named_by_its_verb_and_first_table(statement: str, name: str) -> None:
    assert statement_name(statement) == name


def test_a_statement_past_the_threshold_is_logged_and_counted_by_name(caplog: pytest.LogCaptureFixture) -> None:
    stats = QueryStats(slow_threshold_ms=100.0)
    with caplog.at_level(logging.WARNING, logger="bge.projections.db"):
        stats.record("SELECT did FROM users WHERE did = %s", 12.0, failed=False)
        stats.record("UPDATE users AS u SET x = 1", 250.5, failed=False)
        stats.record("UPDATE users AS u SET y = 2", 100.0, failed=True)
    assert [r.getMessage() for r in caplog.records] == [
        "slow query: UPDATE users took 250.5 ms (threshold 100 ms)",
        "slow query: UPDATE users took 100.0 ms (threshold 100 ms)",
    ]
    assert all(r.levelno == logging.WARNING for r in caplog.records)
    assert caplog.records[0].bge_fields["statement"] == "UPDATE users"
    assert caplog.records[0].bge_fields["duration_ms"] == 250.5
    snapshot = stats.snapshot()
    assert snapshot["slow_queries"] == 2 and snapshot["total_queries"] == 3 and snapshot["total_errors"] == 1
    assert snapshot["slow_by_statement"] == {"UPDATE users": 2}
    assert snapshot["slow_threshold_ms"] == 100.0


def test_the_threshold_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from streams.config import load_settings

    monkeypatch.setenv("DB_SLOW_QUERY_MS", "75")
    assert load_settings(env_file=None).db_slow_query_ms == 75.0
