"""The whole domain, one raw Jetstream event at a time: :func:`process`.

``raw bytes → parse_event → collect → growth strategies → Outcome``

Parsing and collection form one railway: a failure is a :class:`~domain.rejections.Rejection`
(the runtime dead-letters the raw bytes with it). The strategies then each decide on the
collected events; their decisions are values in the :class:`Outcome`, successful or not, so a
replay tool can show each strategy's result. Nothing here reads a clock, the environment or
any I/O: configuration, state and time come in as arguments.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field

from returns.result import Result

from domain.collection import Collected, collect
from domain.events import CandidateFound, DomainEvent
from domain.growth import (
    ENGAGEMENT_WITH_TARGETS,
    INTERESTS,
    NEWCOMERS,
    NO_CHANGES,
    POPULAR_CONTENT,
    Decision,
    StateChanges,
    StrategyConfig,
    StrategyState,
    engagement_with_targets,
    interests,
    newcomers,
    popular_content,
)
from domain.identity import Source, SourceCoordinates
from domain.jetstream import JetstreamEvent, parse_event
from domain.rejections import Rejection
from domain.values import value


@value
class Outcome:
    """Everything one source event produced.

    ``events``: the collected domain events (in order). ``decisions``: strategy name →
    ``Success(candidates)`` or ``Failure(Declined)``, for every enabled strategy (empty when the
    event was skipped). ``state_changes``: what to store in the strategies' keyed state.
    ``skipped``: why the event yields nothing (a collection not collected), else ``None``.
    """

    source: Source
    events: tuple[DomainEvent, ...]
    decisions: Mapping[str, Decision] = field(default_factory=dict)
    state_changes: StateChanges = NO_CHANGES
    skipped: str | None = None

    @property
    def candidates(self) -> tuple[CandidateFound, ...]:
        """The ``CandidateFound`` events of every successful decision, in strategy order."""
        return tuple(found for decision in self.decisions.values() for found in decision.value_or(()))

    @property
    def all_events(self) -> tuple[DomainEvent, ...]:
        """What to publish to the domain event topic: ``events`` then ``candidates``."""
        return self.events + self.candidates


def decide(
    collected: Collected, *, config: StrategyConfig, state: StrategyState, now_us: int | None = None
) -> Outcome:
    """Run every enabled strategy on the collected events. ``now_us`` defaults to the source
    event's ``time_us`` (so replays decide as the live run did)."""
    if collected.skipped is not None:
        return Outcome(collected.source, collected.events, skipped=collected.skipped)
    now = collected.source.time_us if now_us is None else now_us
    decisions: dict[str, Decision] = {}
    accounts: dict[str, object] = {}
    posts: dict[str, object] = {}
    if config.engagement_with_targets.enabled:
        decisions[ENGAGEMENT_WITH_TARGETS] = engagement_with_targets(collected, config.engagement_with_targets)
    if config.newcomers.enabled:
        actor = collected.source.did
        memory = state.accounts.get(actor)
        new_memory, decisions[NEWCOMERS] = newcomers(memory, collected, config.newcomers)
        if new_memory is not memory and new_memory is not None:
            accounts[actor] = new_memory
    if config.interests.enabled:
        decisions[INTERESTS] = interests(collected, config.interests)
    if config.popular_content.enabled:
        changed, decisions[POPULAR_CONTENT] = popular_content(state.posts, collected, now, config.popular_content)
        posts.update(changed)
    changes = StateChanges(accounts, posts) if accounts or posts else NO_CHANGES  # type: ignore[arg-type]
    return Outcome(collected.source, collected.events, decisions, changes)


def process_event(
    event: JetstreamEvent,
    *,
    config: StrategyConfig,
    state: StrategyState,
    coordinates: SourceCoordinates | None = None,
    now_us: int | None = None,
) -> Result[Outcome, Rejection]:
    """:func:`process` for an already parsed event."""
    return collect(event, coordinates).map(
        lambda collected: decide(collected, config=config, state=state, now_us=now_us)
    )


def process(
    raw: bytes,
    *,
    config: StrategyConfig,
    state: StrategyState,
    coordinates: SourceCoordinates | None = None,
    now_us: int | None = None,
) -> Result[Outcome, Rejection]:
    """Parse one raw Jetstream event, collect its domain events and run the strategies.

    ``Failure(Rejection)`` (``invalid_json``, ``not_an_event``, ``invalid_event``,
    ``invalid_record``) means: dead-letter ``raw`` with that reason. Never raises. The same
    arguments always give the same outcome, with the same event ids.
    """
    return (
        parse_event(raw)
        .bind(lambda event: collect(event, coordinates))
        .map(lambda collected: decide(collected, config=config, state=state, now_us=now_us))
    )
