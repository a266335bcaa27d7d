"""The collect stage: raw Jetstream events in, domain events (or dead letters) out.

The stage gets a batch of raw messages at a time (``streams.kafka.source``). For each message the domain
pipeline (``domain.pipeline.process``) parses the event, collects its domain events and runs the
growth strategies. A raw event's domain events go to ``growth.events`` as one message per partition
key (:func:`domain.events.encode_group`: their source written once; the candidates a strategy found
are keyed by the candidate, the rest by the acting account, so usually one message); an event
the domain rejects goes to ``growth.dlq`` with its original bytes and the reason
(``streams.kafka.deadletter``). What a batch sends is gathered in one :class:`streams.kafka.clients.Outbox` and
submitted once. A message whose headers carry a trace context is one span continuing the ingest's
trace, each strategy's decision set as its attributes; an untraced message costs no span.

Strategy state that must survive restarts and rebalances (the newcomers' account memory) is keyed
by the repo DID, the raw topic's key, so it is partitioned like the raw topic; it lives in a
:class:`streams.kafka.state.ChangelogState` recovered from its compacted changelog.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, SpanKind, Status, StatusCode
from returns.result import Failure, Success

from domain.events import DomainEvent, by_partition_key, encode_group
from domain.growth import (
    AccountMemory,
    PopularContentConfig,
    StrategyConfig,
    StrategyState,
    decode_account_memory,
    encode_state,
)
from domain.identity import SourceCoordinates
from domain.pipeline import Outcome, process
from domain.rejections import Rejection
from streams.kafka.deadletter import rejection_code, rejection_headers
from streams.kafka.clients import Outbox
from streams.observability.log import ContextLogger, get_logger
from streams.kafka.state import ChangelogState, StateBatch
from streams.observability.tracing import extract_context, has_trace_context, inject_headers
from streams.topology import Header

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
    """Runs the domain pipeline on raw messages and puts what it decides in an outbox.

    ``route(event, headers, outbox)``, when given, also adds each domain event where a later
    stage needs it keyed differently (the popularity stage's repartition, one event a message);
    ``headers`` are the source id and trace context its message carries."""

    def __init__(
        self,
        *,
        config: StrategyConfig,
        accounts: ChangelogState,
        events_topic: str,
        dlq_topic: str,
        route: Callable[[DomainEvent, list[tuple[str, bytes]], Outbox], None] | None = None,
        logger: ContextLogger | None = None,
    ) -> None:
        # popular content needs engagement keyed by post, not by actor: it runs after a repartition
        self.config = config.model_copy(update={"popular_content": PopularContentConfig(enabled=False)})
        self.accounts = accounts
        self.events_topic = events_topic
        self.dlq_topic = dlq_topic
        self.route = route
        self.log = logger or get_logger("collect")
        self.stats = CollectStats()

    async def handle_batch(self, records: Iterable[Any], partitions: Iterable[int], outbox: Outbox) -> None:
        """Process raw ``records`` (each with ``topic``, ``partition``, ``offset``, ``value``,
        ``headers``) of ``partitions`` into ``outbox``."""
        for partition in partitions:
            await self.accounts.ensure(partition)
        accounts = StateBatch(self.accounts, decode_account_memory, encode_state)
        for record in records:
            self.handle(record.topic, record.partition, record.offset, record.value, record.headers, accounts, outbox)
        accounts.flush(outbox)

    def handle(self, topic: str, partition: int, offset: int, value: bytes,
               headers: Sequence[tuple[str, bytes]] | None, accounts: StateBatch[AccountMemory], outbox: Outbox) -> None:
        """Process one raw message of a partition already :meth:`ChangelogState.ensure` d, reading
        and changing the accounts' state in the batch's ``accounts``."""
        self.stats.messages += 1
        context = extract_context(headers) if has_trace_context(headers) else None
        if context is None:
            self._handle(topic, partition, offset, value, INVALID_SPAN, accounts, outbox)
            return
        with _tracer.start_as_current_span(
            "collect jetstream.event",
            context=context,
            kind=SpanKind.CONSUMER,
            attributes={"messaging.system": "kafka", "messaging.source.name": topic,
                        "messaging.kafka.partition": partition, "messaging.kafka.offset": offset},
        ) as span:
            self._handle(topic, partition, offset, value, span, accounts, outbox)

    def _handle(self, topic: str, partition: int, offset: int, value: bytes, span: trace.Span,
                accounts: StateBatch[AccountMemory], outbox: Outbox) -> None:
        state = StrategyState(accounts=accounts.view(partition))
        match process(value, config=self.config, state=state, coordinates=SourceCoordinates(topic, partition, offset)):
            case Success(outcome):
                self._emit(outcome, partition, span, accounts, outbox)
            case Failure(rejection):
                self._dead_letter(rejection, topic, partition, offset, value, span, outbox)

    def _emit(self, outcome: Outcome, partition: int, span: trace.Span, accounts: StateBatch[AccountMemory],
              outbox: Outbox) -> None:
        source = outcome.source
        recording = span.is_recording()
        if recording:
            span.set_attributes({"did": source.did, "kind": source.kind, "collection": source.collection or "",
                                 "operation": source.operation or "", "source_id": source.id})
        if outcome.skipped is not None:
            self.stats.skipped += 1
            if recording:
                span.set_attribute("skipped", outcome.skipped)
            return
        if recording:
            for name, decision in outcome.decisions.items():
                self._trace_decision(span, name, decision)
        events = outcome.all_events
        candidates = events[len(outcome.events):]
        for found in candidates:
            self.log.info("candidate found", strategy=found.strategy, candidate=found.did, score=found.score,
                          reasons="; ".join(found.reasons))
        for did, memory in outcome.state_changes.accounts.items():
            accounts.put(partition, did, memory)
        # every event of this message is sent inside its span: one trace context for all of them
        common = [(Header.SOURCE_ID, source.id.encode())]
        if span.get_span_context().is_valid:
            inject_headers(common)
        for key, group in by_partition_key(events).items():
            schemas = (Header.SCHEMA, ",".join([event.schema_name for event in group]).encode())
            outbox.add(self.events_topic, key, encode_group(group), [schemas, *common])
        if self.route is not None:
            for event in events:
                self.route(event, common, outbox)
        emitted = len(events)
        self.stats.domain_events += emitted
        self.stats.candidates += len(candidates)
        if self.log.is_enabled_for(logging.DEBUG):
            self.log.debug("event collected", did=source.did, collection=source.collection or source.kind,
                           operation=source.operation or "", source_id=source.id, domain_events=emitted,
                           schemas=",".join(sorted({e.schema_name for e in events})))
        if recording:
            span.set_attribute("domain_events", emitted)

    @staticmethod
    def _trace_decision(span: trace.Span, name: str, decision: Any) -> None:
        """A strategy's decision as attributes of the event's collect span (``strategy.<name>``:
        ``candidate`` or ``declined``, with the candidates' count or the reason): a child span per
        strategy would triple what tracing an event costs, for no timing worth reading."""
        match decision:
            case Success(candidates):
                span.set_attributes({f"strategy.{name}": "candidate", f"strategy.{name}.candidates": len(candidates)})
            case Failure(declined):
                span.set_attributes({f"strategy.{name}": "declined",
                                     f"strategy.{name}.reason": str(getattr(declined, "code", declined))})

    def _dead_letter(self, rejection: Rejection, topic: str, partition: int, offset: int,
                     value: bytes, span: trace.Span, outbox: Outbox) -> None:
        code = rejection_code(rejection)
        self.stats.dead_lettered += 1
        self.stats.rejections[code] = self.stats.rejections.get(code, 0) + 1
        span.set_status(Status(StatusCode.ERROR, rejection.message))
        self.log.warning("raw event dead-lettered", reason=code, error=rejection.message,
                         source_topic=topic, partition=partition, offset=offset)
        outbox.add(self.dlq_topic, None, value,
                   rejection_headers(rejection, topic=topic, partition=partition, offset=offset))
