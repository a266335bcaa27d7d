"""The collect stage: raw Jetstream events in, domain events (or dead letters) out.

For each raw message the domain pipeline (``domain.pipeline.process``) parses the event,
collects its domain events and runs the growth strategies. Domain events go to
``growth.events`` keyed by their partition key; an event the domain rejects goes to
``growth.dlq`` with its original bytes and the reason (``streams.deadletter``). Each message is
one span continuing the ingest's trace, with one child span per strategy and its decision.

Strategy state that must survive restarts and rebalances (the newcomers' account memory) is keyed
by the repo DID, the raw topic's key, so it is partitioned like the raw topic; it lives in a
:class:`streams.state.ChangelogState` recovered from its compacted changelog.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from returns.result import Failure, Success

from domain.events import DomainEvent, encode, partition_key
from domain.growth import (
    PopularContentConfig,
    StrategyConfig,
    StrategyState,
    decode_account_memory,
    encode_state,
)
from domain.identity import SourceCoordinates
from domain.pipeline import Outcome, process
from domain.rejections import Rejection
from streams.deadletter import dead_letter_headers
from streams.log import ContextLogger, get_logger
from streams.state import ChangelogState, DecodedView
from streams.telemetry import extract_context, inject_headers

__all__ = ["CollectStats", "Collector", "load_strategy_config"]

_tracer = trace.get_tracer("bge.collect")


def load_strategy_config(path: Path | None) -> StrategyConfig:
    """The strategies' configuration from a JSON file, or the defaults."""
    if path is None:
        return StrategyConfig()
    return StrategyConfig.model_validate_json(path.read_bytes())


@dataclass
class CollectStats:
    messages: int = 0
    domain_events: int = 0
    candidates: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    rejections: dict[str, int] = field(default_factory=dict)


class Collector:
    """Runs the domain pipeline on raw messages and sends what it decides.

    ``send(topic, key, value, headers)`` returns an awaitable acknowledgement; the caller awaits
    all of a batch's acknowledgements before the batch's offsets may be committed.
    """

    def __init__(
        self,
        *,
        config: StrategyConfig,
        accounts: ChangelogState,
        events_topic: Any,
        dlq_topic: Any,
        route: Callable[[DomainEvent, bytes, list[tuple[str, bytes]]], Awaitable[list[Awaitable[Any]]]] | None = None,
        logger: ContextLogger | None = None,
    ) -> None:
        """``route(event, value, headers)``, when given, also sends each domain event where a
        later stage needs it keyed differently (the popularity stage's repartition) and returns
        the acknowledgements."""
        # popular content needs engagement keyed by post, not by actor: it runs after a repartition
        self.config = config.model_copy(update={"popular_content": PopularContentConfig(enabled=False)})
        self.accounts = accounts
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.route = route
        self.log = logger or get_logger("collect")
        self.stats = CollectStats()

    async def handle(self, topic: str, partition: int, offset: int, value: bytes,
                     headers: list[tuple[str, bytes]] | None) -> list[Awaitable[Any]]:
        """Process one raw message; returns the acknowledgements of what it sent."""
        self.stats.messages += 1
        coordinates = SourceCoordinates(topic, partition, offset)
        with _tracer.start_as_current_span(
            "collect jetstream.event",
            context=extract_context(headers),
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.source.name": topic,
                        "messaging.kafka.partition": partition, "messaging.kafka.offset": offset},
        ) as span:
            await self.accounts.ensure(partition)
            state = StrategyState(accounts=DecodedView(self.accounts.view(partition), decode_account_memory))
            match process(value, config=self.config, state=state, coordinates=coordinates):
                case Success(outcome):
                    return await self._emit(outcome, partition, span)
                case Failure(rejection):
                    return [await self._dead_letter(rejection, topic, partition, offset, value, span)]
        return []  # pragma: no cover - process returns Success or Failure

    async def _emit(self, outcome: Outcome, partition: int, span: trace.Span) -> list[Awaitable[Any]]:
        source = outcome.source
        span.set_attributes({"did": source.did, "kind": source.kind, "collection": source.collection or "",
                             "operation": source.operation or "", "source_id": source.id})
        if outcome.skipped is not None:
            self.stats.skipped += 1
            span.set_attribute("skipped", outcome.skipped)
            return []
        recording = span.is_recording()
        for name, decision in outcome.decisions.items():
            if recording:
                self._trace_decision(name, decision)
            else:
                self._log_candidates(name, decision)
        acks = [await self.accounts.put(partition, did, encode_state(memory))
                for did, memory in outcome.state_changes.accounts.items()]
        # every event of this message is sent inside its span: one trace context for all of them
        trace_headers = inject_headers([]) if span.get_span_context().is_valid else []
        source_id = ("source_id", source.id.encode())
        for event in outcome.all_events:
            headers = [("schema", event.schema_name.encode()), source_id, *trace_headers]
            value = encode(event)
            acks.append(await self.events_topic.send(key=partition_key(event), value=value, headers=headers))
            if self.route is not None:
                acks += await self.route(event, value, headers)
        emitted = len(outcome.all_events)
        self.stats.domain_events += emitted
        self.stats.candidates += len(outcome.candidates)
        if self.log.is_enabled_for(logging.DEBUG):
            self.log.debug("event collected", did=source.did, collection=source.collection or source.kind,
                           operation=source.operation or "", source_id=source.id, domain_events=emitted,
                           schemas=",".join(sorted({e.schema_name for e in outcome.all_events})))
        span.set_attribute("domain_events", emitted)
        return acks

    def _trace_decision(self, name: str, decision: Any) -> None:
        """One span for a strategy's decision (only under a recording span: an unsampled event's
        strategy spans would be dropped anyway, after costing a context switch each)."""
        with _tracer.start_as_current_span(f"strategy {name}") as span:
            span.set_attribute("strategy", name)
            match decision:
                case Success(candidates):
                    span.set_attribute("decision", "candidate")
                    span.set_attribute("candidates", len(candidates))
                case Failure(declined):
                    span.set_attribute("decision", "declined")
                    span.set_attribute("reason", getattr(declined, "code", str(declined)))
            self._log_candidates(name, decision)

    def _log_candidates(self, name: str, decision: Any) -> None:
        match decision:
            case Success(candidates):
                for found in candidates:
                    self.log.info("candidate found", strategy=name, candidate=found.did,
                                  score=found.score, reasons="; ".join(found.reasons))

    async def _dead_letter(self, rejection: Rejection, topic: str, partition: int, offset: int,
                           value: bytes, span: trace.Span) -> Awaitable[Any]:
        code = str(getattr(rejection.code, "value", rejection.code))
        self.stats.dead_lettered += 1
        self.stats.rejections[code] = self.stats.rejections.get(code, 0) + 1
        span.set_status(Status(StatusCode.ERROR, rejection.message))
        self.log.warning("raw event dead-lettered", reason=code, error=rejection.message,
                         source_topic=topic, partition=partition, offset=offset)
        headers = inject_headers(dead_letter_headers(
            error_class="Rejection", reason=code, message=rejection.message, source="kafka",
            topic=topic, partition=partition, offset=offset,
        ))
        return await self.dlq_topic.send(key=None, value=value, headers=headers)
