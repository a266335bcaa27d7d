"""``bge bench domain`` runs without services and gives sane figures."""

from __future__ import annotations

from pathlib import Path

from returns.result import Success

from domain.events import decode_all, encode_group

from streams.bench import domain_cost as domain_bench
from streams.bench.cli import BENCHES, DEFAULT_EVENTS
from streams.bench.harness import Options


async def test_bench_domain_times_process_next_to_the_decode_of_the_same_bytes(tmp_path: Path) -> None:
    figures = await domain_bench.bench_domain(Options(run_id="test", workdir=tmp_path), 300)
    raw_baseline, raw_products = figures[0], figures[1:3]
    assert raw_baseline.role == "baseline" and raw_baseline.value is not None and raw_baseline.value > 0
    assert raw_baseline.unit == "µs/event"
    for figure in raw_products:
        assert figure.role == "product" and figure.bench == "domain" and figure.baseline == raw_baseline.label
        assert figure.value is not None and figure.value > raw_baseline.value  # process() decodes too
        assert figure.target == domain_bench.DOMAIN.text and figure.met is (figure.value <= 40)
        assert figure.extra["events"] == 300 and figure.extra["median"] >= figure.value
    assert {"collect stage's strategies", "default strategies"} == {f.label.rsplit(", ", 1)[1] for f in raw_products}


async def test_bench_domain_times_the_projectors_decode_next_to_orjson_of_the_same_bytes(tmp_path: Path) -> None:
    figures = await domain_bench.bench_domain(Options(run_id="test", workdir=tmp_path), 300)
    baseline, decoding = figures[3:]
    assert baseline.role == "baseline" and baseline.unit == "µs/domain event" and baseline.value > 0
    assert decoding.role == "product" and decoding.baseline == baseline.label and decoding.unit == baseline.unit
    assert decoding.value is not None and decoding.value > baseline.value  # validation builds the events too
    assert decoding.target is None and decoding.extra["domain_events"] == baseline.extra["domain_events"]
    assert decoding.extra["per_raw_event"] > 1  # a raw event makes several domain events


def test_the_domain_events_benched_are_what_collect_sends_and_decode(tmp_path: Path) -> None:
    from streams.bench.harness import corpus_file, corpus_lines

    lines = corpus_lines(corpus_file(tmp_path, 200, seed=3, accounts=40))
    values, count = domain_bench.domain_event_values(lines, domain_bench.collect_stage_config())
    assert count > len(values) >= len(lines) * 0.9  # groups: about one a raw event, several events each
    decoded = [decode_all(value) for value in values]
    assert all(isinstance(result, Success) for result in decoded)
    assert sum(len(result.unwrap()) for result in decoded) == count
    assert [encode_group(result.unwrap()) for result in decoded] == values


def test_the_collect_stage_config_has_popular_content_off_and_the_demo_targets() -> None:
    config = domain_bench.collect_stage_config()
    assert not config.popular_content.enabled and config.engagement_with_targets.targets
    assert config.interests.keywords


def test_domain_is_a_bench_of_the_command_line() -> None:
    assert "domain" in BENCHES and DEFAULT_EVENTS["domain"] == 50_000
