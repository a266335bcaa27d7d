"""What the domain makes of raw events, replayed outside the worker: each strategy's decision and
the domain events, as the collect stage would produce them (``bge replay --through strategies``,
the dashboard's event journey)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from returns.result import Failure, Success

from domain.events import DomainEvent, to_json_dict
from domain.growth import StrategyConfig, StrategyState
from domain.identity import SourceCoordinates
from domain.pipeline import Outcome, process
from domain.rejections import Rejection
from streams.ingest.frames import BadFrame, read_facts

__all__ = ["Explainer", "Explanation", "as_collected", "source_id_of"]


def source_id_of(raw: bytes) -> str | None:
    """The identity of a raw event (the ``source.id`` of the domain events derived from it),
    read without the domain models, so rejected events have one too; ``None`` for bytes that
    are not an event at all."""
    try:
        return read_facts(raw).identity
    except BadFrame:
        return None


@dataclass(frozen=True, slots=True)
class Explanation:
    """The pipeline's result for one raw event."""

    source_id: str | None
    outcome: Outcome | None = None
    rejection: Rejection | None = None

    @property
    def events(self) -> tuple[DomainEvent, ...]:
        """What the collect agent would publish (nothing for a rejected event)."""
        return self.outcome.all_events if self.outcome is not None else ()

    def to_json(self) -> dict[str, Any]:
        if self.rejection is not None:
            return {
                "status": "rejected",
                "source_id": self.source_id,
                "code": self.rejection.code.value,
                "message": self.rejection.message,
            }
        outcome = self.outcome
        assert outcome is not None
        decisions: dict[str, Any] = {}
        for strategy, decision in outcome.decisions.items():
            match decision:
                case Success(candidates):
                    decisions[strategy] = {"result": "success", "candidates": [to_json_dict(c) for c in candidates]}
                case Failure(declined):
                    decisions[strategy] = {"result": "failure", "code": declined.code, "message": declined.message}
        return {
            "status": "skipped" if outcome.skipped else "processed",
            "source_id": outcome.source.id,
            "skipped": outcome.skipped,
            "events": [to_json_dict(event) for event in outcome.events],
            "decisions": decisions,
            "state_changes": {"accounts": len(outcome.state_changes.accounts), "posts": len(outcome.state_changes.posts)},
        }


def as_collected(config: StrategyConfig) -> StrategyConfig:
    """``config`` as the collect agent runs it (:class:`streams.stages.collect.Collector` decides,
    e.g. which strategies run in a later stage), so a replay decides what the worker decided."""
    from streams.stages.collect import Collector

    return Collector(config=config, accounts={}, events_topic="", dlq_topic="").config


class Explainer:
    """Runs raw events through the pipeline with ``config`` (used as is: see
    :func:`as_collected`), carrying the strategies' state from event to event."""

    def __init__(self, config: StrategyConfig | None = None, state: StrategyState | None = None) -> None:
        self.config = config or StrategyConfig()
        self.state = state or StrategyState()

    def explain(self, raw: bytes, coordinates: SourceCoordinates | None = None) -> Explanation:
        match process(raw, config=self.config, state=self.state, coordinates=coordinates):
            case Success(outcome):
                if outcome.state_changes:
                    self.state = self.state.apply(outcome.state_changes)
                return Explanation(outcome.source.id, outcome=outcome)
            case Failure(rejection):
                return Explanation(source_id_of(raw), rejection=rejection)
        raise AssertionError("process returns a Result")
