"""The wiring, declared once as data: topics, message headers, consumer names and the stages.

::

    Jetstream ──ingest──► jetstream.events ──collect──► growth.events        (key = the events' partition key)
                                                  ├───► growth.engagement    (engagement again, key = post at-uri)
                                                  └───► growth.dlq           (rejected raw events)
                          growth.engagement ──popularity──► growth.events    (popular content)
                          growth.events ──project──► Postgres                (consumer "projector", offsets in Postgres)
                          growth.events ──crawl planner──► growth.crawl ──crawl──► AppView ──► growth.events

Topic names carry ``BGE_TOPIC_PREFIX`` (:meth:`streams.config.Settings.topic`). This module imports
nothing of the product: every other module may read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = ["PROJECTOR_CONSUMER", "STAGES", "STAGE_OUTPUTS", "Header", "Stage", "State", "Topic", "changelog_topic"]


class Topic(StrEnum):
    """The product's Kafka topics, before the deployment prefix."""

    JETSTREAM_EVENTS = "jetstream.events"
    JETSTREAM_DLQ = "jetstream.dlq"
    JETSTREAM_OPS = "jetstream.ops"
    GROWTH_EVENTS = "growth.events"
    GROWTH_DLQ = "growth.dlq"
    GROWTH_CRAWL = "growth.crawl"
    GROWTH_ENGAGEMENT = "growth.engagement"


class Header:
    """The Kafka header names the product writes and reads (values are UTF-8 bytes). Plain
    ``str`` constants, not an enum: aiokafka's record builder accepts exact ``str`` keys only."""

    # raw events (the ingest): what a consumer can filter on without parsing the value
    KIND: Final = "kind"
    TIME_US: Final = "time_us"
    COLLECTION: Final = "collection"
    OPERATION: Final = "operation"
    # domain events and crawl requests; on growth.events the schema names of the message's events,
    # comma-separated (collect sends one source event's events with one key as one message)
    SCHEMA: Final = "schema"
    SOURCE_ID: Final = "source_id"
    REQUEST_ID: Final = "request_id"
    # W3C trace context
    TRACEPARENT: Final = "traceparent"
    TRACESTATE: Final = "tracestate"
    # dead letters (streams.kafka.deadletter)
    ERROR_CLASS: Final = "error_class"
    ERROR_REASON: Final = "error_reason"
    ERROR_MESSAGE: Final = "error_message"
    SOURCE: Final = "source"
    SOURCE_TOPIC: Final = "source_topic"
    SOURCE_PARTITION: Final = "source_partition"
    SOURCE_OFFSET: Final = "source_offset"
    ENDPOINT: Final = "endpoint"
    FAILED_AT: Final = "failed_at"
    COMPRESSED: Final = "compressed"  # jetstream.dlq: whether the frame is zstd


class State(StrEnum):
    """The stages' keyed state (:class:`streams.kafka.state.ChangelogState`), each kept in a compacted
    changelog topic (:func:`changelog_topic`)."""

    POST_WINDOWS = "post-windows"
    ACCOUNTS = "accounts"


def changelog_topic(state: str) -> str:
    """The compacted topic ``state`` is kept in, before the prefix: ``state.<name>``."""
    return f"state.{state}"


PROJECTOR_CONSUMER = "projector"
"""The projector's name in ``projection_offsets`` (its marks in Postgres)."""


@dataclass(frozen=True, slots=True)
class Stage:
    """A worker stage: the topic it consumes and the topics it sends to (besides state changelogs)."""

    name: str
    input: Topic
    outputs: tuple[Topic, ...] = ()


STAGES: dict[str, Stage] = {
    stage.name: stage
    for stage in (
        Stage("collect", Topic.JETSTREAM_EVENTS, (Topic.GROWTH_EVENTS, Topic.GROWTH_ENGAGEMENT, Topic.GROWTH_DLQ)),
        Stage("popularity", Topic.GROWTH_ENGAGEMENT, (Topic.GROWTH_EVENTS, Topic.GROWTH_DLQ)),
        Stage("project", Topic.GROWTH_EVENTS),
    )
}
"""The stages ``WORKER_AGENTS`` chooses among, in the order data walks through them."""

STAGE_OUTPUTS: tuple[Topic, ...] = tuple(dict.fromkeys(t for stage in STAGES.values() for t in stage.outputs))
"""Every topic a stage sends to: the sender opens them at start."""
