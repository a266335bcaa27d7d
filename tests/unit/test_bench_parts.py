"""Parts of ``bge bench`` that run without services."""

from __future__ import annotations

import gc
import itertools
import logging
import math
import os
import subprocess
import sys
import time

import psutil
import pytest

from streams.bench import targets
from streams.bench.catchup import CatchupClock, stage_records_figure
from streams.bench.cli import _number, build_parser, merge_repeats
from streams.bench.harness import Figure
from streams.bench.harness import ProcessSampler, service_cpu_s, batch_gc_policy
from streams.bench.pipeline import DEFAULT_LATENCY_RUNS, OffsetsWatcher, latency_runs, tracing_label
from streams.bench.throughput import domain_messages
from streams.observability.log import LOGGER_PREFIX
from tests.conftest import SAMPLE_JSONL


async def test_domain_messages_keeps_the_collect_logger_level_of_the_process_that_runs_it():
    # The soak test runs this inside pytest: a level left behind silenced later tests' logs.
    logger = logging.getLogger(f"{LOGGER_PREFIX}.collect")
    logger.setLevel(logging.DEBUG)
    try:
        with SAMPLE_JSONL.open("rb") as sample:
            lines = [line.rstrip(b"\n") for line in itertools.islice(sample, 200)]
        messages = await domain_messages(lines, topic="growth.events", partitions=3)
        assert messages and {m.partition for m in messages} <= {0, 1, 2}
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(logging.NOTSET)


# --- repeated runs ----------------------------------------------------------------------------


def _replay_run(baseline: float, product: float | None, met: bool | None) -> list[Figure]:
    return [
        Figure("replay", "plain", baseline, "events/s", role="baseline"),
        Figure("replay", "bge replay", product, "events/s", baseline="plain", target=targets.REPLAY.text, met=met,
               notes="one run's own note"),
    ]


def test_one_run_is_shown_as_it_ran():
    run = _replay_run(100.0, 90.0, True)
    assert merge_repeats([run]) == run


def test_repeated_runs_show_the_median_each_runs_ratio_and_the_majority_on_the_target():
    baseline, product = merge_repeats([
        _replay_run(100.0, 90.0, True), _replay_run(200.0, 100.0, False), _replay_run(120.0, 108.0, True),
    ])
    assert baseline.role == "baseline" and baseline.value == 120.0 and baseline.extra["runs"] == [100.0, 200.0, 120.0]
    assert product.value == 100.0 and product.baseline == "plain" and product.target == targets.REPLAY.text
    assert product.extra["ratios"] == [0.9, 0.5, 0.9]
    assert product.met is True and "met in 2 of 3" in product.notes and "90%, 50%, 90%" in product.notes
    assert "one run's own note" not in product.notes


def test_repeated_runs_keep_each_runs_extras_and_the_median_cpu_per_event():
    def run(rate: float, ingest_us: float) -> list[Figure]:
        return [Figure("ingest", "bge ingest (zstd)", rate, "events/s",
                       extra={"ratio": 0.9, "cpu_us_per_event": {"ingest": ingest_us, "kafka": 2.0}})]

    (merged,) = merge_repeats([run(100.0, 20.0), run(90.0, 30.0), run(110.0, 22.0)])
    assert [e["cpu_us_per_event"]["ingest"] for e in merged.extra["each_run"]] == [20.0, 30.0, 22.0]
    assert merged.extra["cpu_us_per_event"] == {"ingest": 22.0, "kafka": 2.0}
    assert "ingest 22.0 µs, kafka 2.0 µs" in merged.notes


def test_a_target_met_in_half_the_runs_or_fewer_is_not_met():
    product = merge_repeats([_replay_run(100.0, 90.0, True), _replay_run(100.0, 50.0, False)])[1]
    assert product.met is False and product.value == 70.0


def test_a_failed_run_counts_against_the_target_and_marks_the_bench_failed():
    failed = [Figure("replay", "replay failed", None, "", extra={"failed": True})]
    merged = merge_repeats([_replay_run(100.0, 90.0, True), failed, _replay_run(100.0, float("nan"), None)])
    product = next(f for f in merged if f.label == "bge replay")
    assert product.value == 90.0 and product.met is False and "median of 1 of 3 runs" in product.notes
    assert next(f for f in merged if f.label == "replay failed").extra["failed"]


def test_repeat_is_one_or_more():
    assert build_parser().parse_args(["replay"]).repeat == 1
    assert build_parser().parse_args(["replay", "--repeat", "3"]).repeat == 3


# --- targets ----------------------------------------------------------------------------------

def test_a_floor_target_is_met_at_the_floor_and_not_below():
    assert targets.CATCHUP.met(8_000) is True
    assert targets.CATCHUP.met(7_999.9) is False


def test_a_target_on_a_missing_or_nan_figure_is_undecided():
    assert targets.CATCHUP.met(None) is None
    assert targets.CATCHUP.met(math.nan) is None


def test_a_share_of_the_baseline_is_measured_against_the_same_runs_baseline():
    assert targets.INGEST.met(18_000, 20_000) is True  # 90%
    assert targets.INGEST.met(17_999, 20_000) is False
    assert targets.REPLAY.met(80, 100) is True
    assert targets.REPLAY.met(79, 100) is False


def test_project_needs_both_the_rate_and_half_the_copy():
    assert targets.PROJECT.met(40_000, 80_000) is True
    assert targets.PROJECT.met(40_000, 80_001) is False  # under 50% of the COPY
    assert targets.PROJECT.met(39_999, 50_000) is False  # under the floor though above 50%


def test_collect_must_be_ahead_of_quix_not_level():
    assert targets.COLLECT.met(16_000, 15_999) is True
    assert targets.COLLECT.met(16_000, 16_000) is False
    assert targets.COLLECT.met(14_000, 1_000) is False


def test_a_missing_baseline_leaves_the_target_undecided_unless_the_rest_already_fails():
    assert targets.COLLECT.met(16_000, None) is None  # Quix not run
    assert targets.COLLECT.met(1_000, None) is False
    assert targets.INGEST.met(10_000, 0) is None


def test_latency_targets_per_rate_and_tracing():
    assert targets.latency_target(1000, "off") is targets.LATENCY_1K_OFF
    assert targets.latency_target(1000, "on") is targets.LATENCY_1K_TRACED
    assert targets.latency_target(5000, "off") is targets.LATENCY_5K
    assert targets.latency_target(1000, "0.01") is None
    assert targets.latency_target(5000, "on") is None
    assert targets.latency_target(10_000, "off") is None
    assert targets.LATENCY_1K_OFF.met(500) is True and targets.LATENCY_1K_OFF.met(501) is False
    assert targets.LATENCY_1K_TRACED.met(1_000) is True and targets.LATENCY_1K_TRACED.met(1_001) is False


def test_the_5k_latency_target_fails_when_saturated_even_with_a_finite_p99():
    assert targets.LATENCY_5K.met(1_500) is True
    assert targets.LATENCY_5K.met(1_500, saturated=True) is False
    assert targets.LATENCY_5K.met(math.inf) is False


def test_rss_below_the_limit_proves_the_target_only_over_a_million_events():
    assert targets.rss_met(250, 1_000_000) is True
    assert targets.rss_met(250, 100_000) is None
    assert targets.rss_met(350, 100_000) is False
    assert targets.rss_met(None, 1_000_000) is None


# --- latency runs ------------------------------------------------------------------------------


def test_the_default_latency_runs_are_the_issues_three_rows():
    assert latency_runs(None, None) == [(1000.0, "off"), (1000.0, "on"), (5000.0, "off")]
    assert list(DEFAULT_LATENCY_RUNS) == latency_runs([], None)


@pytest.mark.parametrize(("rates", "tracing", "runs"), [
    ([2000.0], None, [(2000.0, "off")]),
    ([1000.0, 3000.0], "on", [(1000.0, "on"), (3000.0, "on")]),
    (None, "0.01", [(1000.0, "0.01"), (5000.0, "0.01")]),
])
def test_chosen_rates_or_tracing_run_every_rate_in_one_mode(rates, tracing, runs):
    assert latency_runs(rates, tracing) == runs


def test_rows_name_their_tracing_mode():
    assert tracing_label("off") == "tracing off"
    assert tracing_label("on") == "every event traced to Jaeger"
    assert tracing_label("0.010") == "traces sampled at 0.01"


# --- catch-up clock ----------------------------------------------------------------------------


def test_the_marks_total_at_a_moment_sums_each_partitions_last_move_by_then():
    watcher = OffsetsWatcher(corner=None, topic="growth.events")  # type: ignore[arg-type]  (never started)
    watcher.moves = {0: [(100, 10.0), (250, 12.0)], 1: [(40, 11.0)], 2: [(5, 13.0)]}
    assert watcher.total_at(9.9) == 0
    assert watcher.total_at(10.0) == 100
    assert watcher.total_at(11.5) == 140
    assert watcher.total_at(12.0) == 290
    assert watcher.total_at(20.0) == 295


def test_catchup_is_done_at_the_first_drained_poll_confirmed_by_an_unchanged_growth_end():
    clock = CatchupClock(raw_total=100, started=1000.0)
    assert not clock.observe(1001.0, committed_raw=50, growth_end=120, projected=40)
    assert not clock.observe(1002.0, committed_raw=100, growth_end=300, projected=250)
    assert clock.collected_s == 2.0
    assert not clock.observe(1003.0, committed_raw=100, growth_end=300, projected=300)
    assert clock.observe(1004.0, committed_raw=100, growth_end=300, projected=300)
    assert clock.done_s == 3.0


def test_catchup_is_not_done_while_growth_events_still_grow_after_collect():
    clock = CatchupClock(raw_total=100, started=0.0)
    assert not clock.observe(1.0, committed_raw=100, growth_end=300, projected=300)
    assert not clock.observe(2.0, committed_raw=100, growth_end=310, projected=310)  # popularity sent more
    assert clock.observe(3.0, committed_raw=100, growth_end=310, projected=310)
    assert clock.done_s == 2.0


def test_catchup_needs_the_raw_topic_committed_and_some_domain_events():
    clock = CatchupClock(raw_total=100, started=0.0)
    for at in (1.0, 2.0, 3.0):
        assert not clock.observe(at, committed_raw=99, growth_end=300, projected=300)
    assert not clock.observe(4.0, committed_raw=100, growth_end=0, projected=0)
    assert not clock.observe(5.0, committed_raw=100, growth_end=0, projected=0)
    assert clock.done_s is None


def test_the_stages_records_per_raw_event_with_each_topic_and_the_windows_per_engagement():
    figure = stage_records_figure({"growth.events": 1000, "growth.engagement": 800, "state.post-windows": 200,
                                   "state.accounts": 100}, raw_events=1000)
    assert figure.value == 2.1 and figure.extra == {"records": {"growth.events": 1000, "growth.engagement": 800,
                                                                "state.post-windows": 200, "state.accounts": 100}}
    assert figure.notes == ("growth.events 1.00, growth.engagement 0.80, state.post-windows 0.20, state.accounts 0.10; "
                            "0.25 post-window records per engagement")
    assert "per engagement" not in stage_records_figure({"growth.events": 5}, raw_events=5).notes


def test_small_figures_keep_their_fraction_in_the_table():
    assert [_number(v, u) for v, u in [(1.39, "cores"), (2.434, "records"), (2.0, "records"), (168.4, "µs"),
                                       (12_345.6, "events/s"), (0.25, "s")]] == ["1.39", "2.43", "2", "168", "12,346", "0.2"]


def test_no_bench_module_shadows_a_top_level_package_for_the_quix_baseline() -> None:
    # the Quix Streams baseline runs as a script from streams/bench/, which puts that folder first on
    # sys.path: a module there named like a top-level package would be imported instead of it
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "streams" / "bench"
    assert [name for name in ("domain", "projections", "streams") if (bench / f"{name}.py").exists()] == []


def test_the_batch_gc_policy_applies_inside_and_python_s_default_returns_after_a_failure() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), batch_gc_policy():
        assert gc.get_threshold() == (50_000, 20, 100) and gc.get_freeze_count() > 0
        raise RuntimeError("the measured part failed")
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def _burn(seconds: float) -> None:
    ends = time.process_time() + seconds
    while time.process_time() < ends:
        pass


def test_the_process_sampler_adds_the_cpu_of_every_pid_a_name_had() -> None:
    """A watched name's CPU is the sum over its processes (a worker restarted keeps what it used)."""
    burner = "import time\nends = time.process_time() + 0.3\nwhile time.process_time() < ends: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", burner])
    try:
        while sum(psutil.Process(child.pid).cpu_times()[:2]) < 0.3:
            time.sleep(0.05)
        watched = {"pid": child.pid}
        sampler = ProcessSampler()
        sampler.watch("worker", lambda: watched["pid"])
        sampler.sample()
        watched["pid"] = os.getpid()  # the worker, restarted
        _burn(0.2)
        sampler.sample()
        first, second = sampler.cpu["worker"][child.pid], sampler.cpu["worker"][os.getpid()]
        assert first >= 0.28 and second >= 0.2
        assert sampler.cpu_s("worker") == pytest.approx(first + second)
        assert sampler.cpu_s("absent") is None
    finally:
        child.kill()
        child.wait()


TOUCHES_FRESH_PAGES = """
import mmap, sys
sys.stdin.readline()
for _ in range(40):
    m = mmap.mmap(-1, 8 << 20)
    m.madvise(mmap.MADV_NOHUGEPAGE)  # 2,048 pages of 4 KiB, each faulted in when first written
    for page in range(0, 8 << 20, 4096):
        m[page] = 1
    m.close()
print("touched", flush=True)
sys.stdin.readline()
"""


def test_the_process_sampler_counts_the_page_faults_and_kernel_time_of_fresh_memory() -> None:
    """Touching memory mapped for the purpose faults each page in, in the kernel: the sampler sees both."""
    child = subprocess.Popen([sys.executable, "-c", TOUCHES_FRESH_PAGES], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert child.stdin is not None and child.stdout is not None
    try:
        sampler = ProcessSampler()
        sampler.watch("worker", lambda: child.pid)
        sampler.sample()
        before = sampler.minor_faults("worker")
        assert before is not None
        child.stdin.write("touch\n")
        child.stdin.flush()
        assert child.stdout.readline() == "touched\n"
        sampler.sample()
        assert (sampler.minor_faults("worker") or 0) - before >= 40 * 2048  # 2,048 pages of 4 KiB each time
        assert 0 < (sampler.system_s("worker") or 0) <= (sampler.cpu_s("worker") or 0)
        assert sampler.minor_faults("absent") is None and sampler.system_s("absent") is None
    finally:
        child.kill()
        child.wait()


def test_the_machine_s_cpu_grows_with_work() -> None:
    before = service_cpu_s()
    _burn(0.2)
    after = service_cpu_s()
    assert set(after) == {"postgres", "kafka", "all"}
    assert after["all"] - before["all"] >= 0.15
