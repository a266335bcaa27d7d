"""``bge validate``'s local checks and its three outputs (plain lines, a table, JSON)."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import orjson

from streams.cli.validate import check_state_dir, main, render, summary
from streams.health.report import CheckResult, HealthStatus

H, D, U, S = HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY, HealthStatus.SKIPPED


def result(name: str, status: HealthStatus, message: str, details: tuple[str, ...] = (),
           duration_ms: float = 0.0) -> CheckResult:
    return CheckResult(service=name, status=status, message=message, details=details,
                       response_time_ms=duration_ms, timestamp=datetime(2026, 7, 4, tzinfo=UTC))


REPORTS = [
    result("config", H, "every variable is valid", duration_ms=1.0),
    result("kafka", U, "cannot reach Kafka at 127.0.0.1:1: KafkaConnectionError", duration_ms=12.0),
    result("topics", S, "not checked: kafka failed"),
    result("tracing", D, "OTLP endpoint unreachable", duration_ms=3.0),
    result("schema", U, "2 problems", ("first problem", "second problem")),
]


def test_the_summary_counts_each_status() -> None:
    assert summary(REPORTS) == "validation failed: 1 of 5 passed, 2 fail, 1 warning, 1 skipped"
    assert summary(REPORTS[:1]) == "validation passed: 1 of 1 passed"


def test_plain_output_is_one_line_per_check_with_the_details_below() -> None:
    out = io.StringIO()
    render(REPORTS, out)
    assert out.getvalue().splitlines() == [
        "PASS  config   every variable is valid (1 ms)",
        "FAIL  kafka    cannot reach Kafka at 127.0.0.1:1: KafkaConnectionError (12 ms)",
        "SKIP  topics   not checked: kafka failed (0 ms)",
        "WARN  tracing  OTLP endpoint unreachable (3 ms)",
        "FAIL  schema   2 problems (0 ms)",
        "               - first problem",
        "               - second problem",
        "validation failed: 1 of 5 passed, 2 fail, 1 warning, 1 skipped",
    ]


def test_json_and_table_outputs_carry_the_same_reports() -> None:
    out = io.StringIO()
    render(REPORTS, out, as_json=True)
    document = orjson.loads(out.getvalue())
    assert document["ok"] is False and [c["status"] for c in document["checks"]] == [
        "pass", "fail", "skipped", "warning", "fail"]
    assert document["checks"][4]["details"] == ["first problem", "second problem"]
    assert document["checks"][1] == {"name": "kafka", "status": "fail", "duration_ms": 12.0, "details": [],
                                     "message": "cannot reach Kafka at 127.0.0.1:1: KafkaConnectionError"}
    table = io.StringIO()
    render(REPORTS, table, table=True)
    text = table.getvalue()
    assert "bge validate" in text and "KafkaConnectionError" in text and "second problem" in text


def test_the_state_folder_must_be_writable(tmp_path: Path) -> None:
    assert check_state_dir(tmp_path / "new" / "state").status is H
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    verdict = check_state_dir(blocker / "state")
    assert verdict.status is U and str(blocker / "state") in verdict.message


def test_an_unknown_check_is_a_usage_error() -> None:
    err = io.StringIO()
    assert main(["--only", "nonsense"], stdout=io.StringIO(), stderr=err) == 2
    assert "invalid choice: 'nonsense'" in err.getvalue()
    out = io.StringIO()
    assert main(["--only", "python", "--only", "memory"], stdout=out) == 0
    assert out.getvalue().startswith("PASS  python  Python 3.")
