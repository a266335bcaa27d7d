"""``bge crawl``'s pure parts: durations, the original engine's variables as defaults, and a
crawl's state, rate and ETA from its report."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from domain.crawl import CrawlConfig, StartSnowball
from projections.crawl_store import crawl_progress as progress_of
from streams.cli.crawl import _requests, build_parser, parse_duration

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("15m", 900), ("12h", 43_200), ("7d", 604_800),
                                               ("2w", 1_209_600), ("1.5h", 5_400)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["7", "d", "7y", "-1d", ""])
def test_not_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)


def test_the_original_variables_are_the_snowball_defaults_and_flags_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEED_HANDLES", "alice.test, bob.test,")
    monkeypatch.setenv("MAX_DEGREES", "3")
    monkeypatch.setenv("MAX_USERS", "77")
    args = build_parser().parse_args(["snowball"])
    (request,), recorded = _requests(args, CrawlConfig(), "l", 1)
    assert isinstance(request, StartSnowball)
    assert request.seeds == ("alice.test", "bob.test") and request.params.max_degree == 3 and request.params.max_users == 77
    assert recorded == {"seeds": ["alice.test", "bob.test"], "degrees": 3, "max_users": 77}
    args = build_parser().parse_args(["snowball", "--seed", "carol.test", "--degrees", "1", "--max-users", "5"])
    (request,), _ = _requests(args, CrawlConfig(), "l", 1)
    assert request.seeds == ("carol.test",) and request.params.max_degree == 1 and request.params.max_users == 5
    monkeypatch.delenv("SEED_HANDLES")
    with pytest.raises(SystemExit, match="SEED_HANDLES"):
        _requests(build_parser().parse_args(["snowball"]), CrawlConfig(), "l", 1)


def report(**overrides: object) -> dict[str, object]:
    return {"id": "c", "kind": "snowball", "args": {}, "requested_at": T0, "cancelled_at": None, "requests": 10,
            "finished": 0, "failed": 0, "skipped": 0, "found": 0, "pages": 0, "last_finished_at": None,
            "errors": None, **overrides}


def test_a_crawls_state_rate_and_eta() -> None:
    now = T0 + timedelta(minutes=5)
    assert progress_of(report(), now)["state"] == "queued"
    running = progress_of(report(finished=4, last_finished_at=T0 + timedelta(minutes=2)), now)
    assert running["state"] == "running" and running["rate_per_min"] == 2.0 and running["eta_s"] == 180
    done = progress_of(report(finished=10, last_finished_at=T0 + timedelta(minutes=5), failed=1, errors=["x"]), now)
    assert done["state"] == "done" and done["eta_s"] is None and done["errors"] == ["x"]
    assert progress_of(report(finished=4, cancelled_at=now), now)["state"] == "cancelled"
