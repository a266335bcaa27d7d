"""Domain: ``domain.process()`` per raw event, pure CPU, in the bench process (no Kafka, no Postgres).

How the figures are taken: a generated corpus (:func:`streams.bench.harness.corpus_file`, the
bench seed, accounts = events / 5) is read into memory; each pass calls ``process(raw,
config=..., state=..., coordinates=...)`` on every line in order and discards the outcome,
timed with ``perf_counter`` around the whole pass, the garbage collector on, as in a stage. The
figure is the best of :data:`PASSES` passes divided by the number of events (the least disturbed
pass: the machine may be busy with other work); the median pass is in the notes. The state is
the empty ``StrategyState()`` (every actor is a first sighting: the newcomers strategy does its
most work) and the Kafka coordinates are made before timing.

Two configurations: the collect stage's (``streams/data/demo-strategies.json`` as
``Collector`` uses it: ``popular_content`` off, it runs in the popularity stage) and the defaults
(``StrategyConfig()``, every strategy on). The baseline, in the same run and the same way, is
``orjson.loads`` of the same bytes: the least any consumer of the raw topic does per event.

The projector's side, the same way: the domain events the collect stage's strategies make of the
corpus, encoded as collect sends them (a raw event's events with one key as one group), then
``domain.events.decode_all`` of each message (what the projector does per message before its
transaction), next to ``orjson.loads`` of the same bytes; both per domain event.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from domain.events import by_partition_key, decode_all, encode_group
from domain.growth import PopularContentConfig, StrategyConfig, StrategyState
from domain.identity import SourceCoordinates
from domain.pipeline import process
from streams.bench.harness import ROOT, Figure, Options, corpus_file, corpus_lines
from streams.bench.targets import Target

__all__ = ["DOMAIN", "PASSES", "bench_domain", "collect_stage_config", "domain_event_values", "per_event_us"]

DOMAIN = Target("<= 40 µs per raw event", at_most=40.0)
PASSES = 5
STRATEGIES_FILE = ROOT / "streams" / "data" / "demo-strategies.json"


def collect_stage_config(path: Path = STRATEGIES_FILE) -> StrategyConfig:
    """The strategies as the collect stage runs them: the demo file, ``popular_content`` off."""
    from streams.stages.collect import load_strategy_config

    config = load_strategy_config(path)
    return config.model_copy(update={"popular_content": PopularContentConfig(enabled=False)})


def per_event_us(run_pass: Callable[[], object], events: int, passes: int = PASSES) -> tuple[float, float]:
    """``(best, median)`` µs per event over ``passes`` timed calls of ``run_pass``."""
    seconds = []
    for _ in range(passes):
        started = time.perf_counter()
        run_pass()
        seconds.append(time.perf_counter() - started)
    return min(seconds) / events * 1e6, statistics.median(seconds) / events * 1e6


def _decode_pass(lines: Sequence[bytes]) -> Callable[[], None]:
    def run() -> None:
        loads = orjson.loads
        for line in lines:
            loads(line)

    return run


def _process_pass(lines: Sequence[bytes], config: StrategyConfig) -> Callable[[], None]:
    state = StrategyState()
    coordinates = [SourceCoordinates("bench.raw", 0, offset) for offset in range(len(lines))]

    def run() -> None:
        for raw, where in zip(lines, coordinates):
            process(raw, config=config, state=state, coordinates=where)

    return run


def domain_event_values(lines: Sequence[bytes], config: StrategyConfig) -> tuple[list[bytes], int]:
    """The ``growth.events`` values collect sends for ``lines`` (``process()`` in order, from an
    empty state; a raw event's domain events with one key as one group) and how many domain
    events they hold."""
    state = StrategyState()
    values: list[bytes] = []
    count = 0
    for offset, raw in enumerate(lines):
        outcome = process(raw, config=config, state=state, coordinates=SourceCoordinates("bench.raw", 0, offset))
        events = outcome.map(lambda o: o.all_events).value_or(())
        values.extend(encode_group(group) for group in by_partition_key(events).values())
        count += len(events)
    return values, count


def _domain_decode_pass(values: Sequence[bytes]) -> Callable[[], None]:
    def run() -> None:
        for value in values:
            decode_all(value)

    return run


def _projector_figures(lines: Sequence[bytes], opts: Options) -> list[Figure]:
    values, count = domain_event_values(lines, collect_stage_config())
    opts.log(f"domain: decoding {count:,} domain events in {len(values):,} messages, {PASSES} passes each")
    loads_best, loads_median = per_event_us(_decode_pass(values), count)
    best, median = per_event_us(_domain_decode_pass(values), count)
    baseline_label = "orjson.loads of the domain events' bytes"
    size = sum(map(len, values)) / max(count, 1)
    per_message = count / max(len(values), 1)
    return [
        Figure("domain", baseline_label, loads_best, "µs/domain event", role="baseline",
               notes=(f"{loads_best:.2f} µs, best of {PASSES} passes; median {loads_median:.2f}; {size:.0f} bytes a "
                      f"domain event, {per_message:.2f} domain events a message"),
               extra={"domain_events": count, "messages": len(values), "median": loads_median, "passes": PASSES,
                      "bytes": size}),
        Figure("domain", "decode_all() per domain event, as the projector reads growth.events", best, "µs/domain event",
               baseline=baseline_label,
               notes=f"{best:.2f} µs, best of {PASSES} passes; median {median:.2f}; {best / loads_best:.1f}x orjson.loads",
               extra={"domain_events": count, "median": median, "passes": PASSES,
                      "per_raw_event": count / max(len(lines), 1)}),
    ]


async def bench_domain(opts: Options, n: int) -> list[Figure]:
    """``process()`` per raw event under the collect stage's and the default strategies, next to
    ``orjson.loads`` of the same bytes; then ``decode_all()`` of the messages collect would send
    for them, next to ``orjson.loads`` of their bytes."""
    path = corpus_file(opts.workdir, n, seed=opts.seed, accounts=max(n // 5, 1))
    lines = corpus_lines(path)
    events = len(lines)
    opts.log(f"domain: {events:,} events, {PASSES} passes each")
    decode_best, decode_median = per_event_us(_decode_pass(lines), events)
    baseline_label = "orjson.loads of the same bytes"
    figures = [
        Figure("domain", baseline_label, decode_best, "µs/event", role="baseline",
               notes=f"{decode_best:.2f} µs, best of {PASSES} passes; median {decode_median:.2f}",
               extra={"events": events, "median": decode_median, "passes": PASSES}),
    ]
    for label, config in (("collect stage's strategies", collect_stage_config()),
                          ("default strategies", StrategyConfig())):
        best, median = per_event_us(_process_pass(lines, config), events)
        figures.append(
            Figure("domain", f"process() per raw event, {label}", best, "µs/event", baseline=baseline_label,
                   target=DOMAIN.text, met=DOMAIN.met(best),
                   notes=f"{best:.1f} µs, best of {PASSES} passes; median {median:.1f}; {best / decode_best:.0f}x the decode",
                   extra={"events": events, "median": median, "passes": PASSES})
        )
    return figures + _projector_figures(lines, opts)
