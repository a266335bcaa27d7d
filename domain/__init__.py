"""The pure domain of the Bluesky Growth Engine.

No Kafka, Faust, database, network, clock or environment: configuration, state and time come
in as arguments, and failures are values (``returns`` ``Result``), never exceptions.

Modules:

- :mod:`domain.syntax`: AT Protocol identifier syntax (DID, handle, NSID, rkey, TID, at-uri).
- :mod:`domain.jetstream`: Jetstream v1 event models and :func:`parse_event`.
- :mod:`domain.records`: lexicon record models of the collected collections, :func:`parse_record`.
- :mod:`domain.identity`: source event identity, Kafka coordinates, domain event ids.
- :mod:`domain.events`: versioned domain events, :func:`encode` / :func:`decode`.
- :mod:`domain.enrichment`: post enrichment (mentions, hashtags, links, media, thread, quote).
- :mod:`domain.collection`: the domain events a Jetstream event stands for (:func:`collect`).
- :mod:`domain.growth`: growth strategies, their configuration and keyed state.
- :mod:`domain.pipeline`: :func:`process`, from raw bytes to an :class:`Outcome`.
"""

from domain.collection import Collected, collect
from domain.events import (
    EVENT_TYPES,
    SCHEMAS,
    CandidateFound,
    DomainEvent,
    decode,
    encode,
    partition_key,
)
from domain.growth import (
    AccountMemory,
    Decision,
    Declined,
    EngagementWindow,
    StateChanges,
    StrategyConfig,
    StrategyState,
    decode_account_memory,
    decode_engagement_window,
    encode_state,
    expired_posts,
)
from domain.identity import Source, SourceCoordinates, domain_event_id
from domain.jetstream import JetstreamEvent, parse_event
from domain.pipeline import Outcome, decide, process, process_event
from domain.records import COLLECTED_COLLECTIONS, parse_record
from domain.rejections import Rejection, RejectionCode

__all__ = [
    "COLLECTED_COLLECTIONS",
    "EVENT_TYPES",
    "SCHEMAS",
    "AccountMemory",
    "CandidateFound",
    "Collected",
    "Decision",
    "Declined",
    "DomainEvent",
    "EngagementWindow",
    "JetstreamEvent",
    "Outcome",
    "Rejection",
    "RejectionCode",
    "Source",
    "SourceCoordinates",
    "StateChanges",
    "StrategyConfig",
    "StrategyState",
    "collect",
    "decide",
    "decode",
    "decode_account_memory",
    "decode_engagement_window",
    "domain_event_id",
    "encode",
    "encode_state",
    "expired_posts",
    "parse_event",
    "parse_record",
    "partition_key",
    "process",
    "process_event",
]
