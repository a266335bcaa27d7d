"""``bge bench domain`` runs without services and gives sane figures."""

from __future__ import annotations

from pathlib import Path

from streams.bench import domain_cost as domain_bench
from streams.bench.cli import BENCHES, DEFAULT_EVENTS
from streams.bench.harness import Options


async def test_bench_domain_times_process_next_to_the_decode_of_the_same_bytes(tmp_path: Path) -> None:
    figures = await domain_bench.bench_domain(Options(run_id="test", workdir=tmp_path), 300)
    baselines = [f for f in figures if f.role == "baseline"]
    products = [f for f in figures if f.role == "product"]
    assert len(baselines) == 1 and len(products) == 2
    baseline = baselines[0]
    assert baseline.value is not None and baseline.value > 0 and baseline.unit == "µs/event"
    for figure in products:
        assert figure.bench == "domain" and figure.baseline == baseline.label
        assert figure.value is not None and figure.value > baseline.value  # process() decodes too
        assert figure.target == domain_bench.DOMAIN.text and figure.met is (figure.value <= 40)
        assert figure.extra["events"] == 300 and figure.extra["median"] >= figure.value
    assert {"collect stage's strategies", "default strategies"} == {f.label.rsplit(", ", 1)[1] for f in products}


def test_the_collect_stage_config_has_popular_content_off_and_the_demo_targets() -> None:
    config = domain_bench.collect_stage_config()
    assert not config.popular_content.enabled and config.engagement_with_targets.targets
    assert config.interests.keywords


def test_domain_is_a_bench_of_the_command_line() -> None:
    assert "domain" in BENCHES and DEFAULT_EVENTS["domain"] == 50_000
