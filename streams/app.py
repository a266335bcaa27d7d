"""The Faust application: the composition root of the worker process.

Start a worker the Faust way, ``faust -A streams.app worker -l info`` (or ``bge worker``).

The wiring (topics, stages, consumer names, header names) is declared in :mod:`streams.topology`.

Run ``bge migrate`` before the first worker starts.

The collect, popularity and project agents take their input a batch at a time from the worker's
batched source (``streams.kafka.source``: one aiokafka consumer in the group ``app_id``, a Faust channel
per agent), because Faust's per-message consumer caps a process near 7k messages/s. Processing is
at least once: a partition's offset is committed only past batches whose every send Kafka
acknowledged (for the projector: whose Postgres transaction committed). Each agent runs with
concurrency 1, so a partition's batches are processed and settled in order; scale by partitions
and worker processes.
"""

from __future__ import annotations

from datetime import UTC, datetime
import re
import sys
import tempfile
from pathlib import Path
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from projections.retention import prune
from streams.api.routes import serve_api
from streams.stages.collect import Collector, load_strategy_config
from streams.config import WORKER_AGENTS, Settings, load_settings
from streams.topology import PROJECTOR_CONSUMER, STAGE_OUTPUTS, STAGES, State, Topic
from streams.stages.actions import SessionCredentials
from streams.stages.crawl import load_crawl_config, register_crawl
from streams.kafka.clients import KeyPartitioner, Outbox, Sender, ensure_topics
from streams.health.checks import group_lag, projector_lag
from streams.observability.log import configure_logging, get_logger
from streams.observability.metrics import PipelineMetrics, export_interval_seconds, metrics_enabled, setup_metrics
from streams.stages.popularity import Popularity
from streams.kafka.state import ChangelogState
from streams.stages.project import Projector
from streams.kafka.source import Batch, BatchChannel, BatchedSource, Route, tune_gc, tune_malloc
from streams.observability.tracing import instrument_psycopg, setup_tracing

__all__ = ["GrowthApp", "app", "create_app", "settings"]


class GrowthApp(faust.App):
    """A Faust app that creates the product's topics before it subscribes to them, and runs its
    stages' batched source (``streams.kafka.source``) beside Faust's own consumer."""

    settings: Settings
    sender: Sender
    source: BatchedSource
    collector: Collector
    projector: Projector
    metrics: PipelineMetrics

    async def on_first_start(self) -> None:
        # sys.__stderr__: Faust redirects sys.stderr into its own log format; ours stays one JSON object per line
        configure_logging("DEBUG" if self.settings.debug else self.settings.log_level, stream=sys.__stderr__,
                          only_product=True)
        setup_tracing("worker")
        setup_metrics("worker")
        instrument_psycopg()
        await ensure_topics(self.settings)
        await self.sender.start()
        await self.sender.open(*(self.settings.topic(t) for t in STAGE_OUTPUTS))
        await super().on_first_start()

    async def on_started(self) -> None:
        if "project" in self.settings.worker_agents:
            await self.projector.start()
        await super().on_started()
        await self.source.start()  # after the agents: a channel without a subscriber drops what it is sent

    async def on_stop(self) -> None:
        await self.source.stop()
        await super().on_stop()
        await self.sender.stop()
        await self.projector.stop()


def _broker_credentials(settings: Settings) -> Any:
    options = settings.kafka_client_options()
    if settings.kafka_sasl_mechanism is not None:
        return faust.SASLCredentials(
            username=options.get("sasl_plain_username"), password=options.get("sasl_plain_password"),
            mechanism=settings.kafka_sasl_mechanism, ssl_context=options.get("ssl_context"),
        )
    if "ssl_context" in options:
        return faust.SSLCredentials(options["ssl_context"])
    return None


def app_id(settings: Settings) -> str:
    """The worker's consumer group, the one that commits its stages' input offsets: distinct per
    topic prefix, and per set of agents when a worker runs only some of them (``WORKER_AGENTS``):
    each stage's workers are then a group of their own, given every partition of that stage's
    input. Faust's own consumer (its leader election, the crawl's agents) is the group
    ``<app_id>-faust``: one group cannot mix Faust's partition assignor with aiokafka's."""
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", settings.bge_topic_prefix).strip("-")
    roles = "" if len(settings.worker_agents) == len(WORKER_AGENTS) else "-" + "-".join(settings.worker_agents)
    return f"{prefix}-bge{roles}" if prefix else f"bge{roles}"


def create_app(settings: Settings) -> GrowthApp:
    """Build the worker's Faust app, its topics, tables and agents from ``settings``."""
    datadir = Path(settings.bge_state_dir or tempfile.gettempdir()) / "faust"
    app = GrowthApp(
        f"{app_id(settings)}-faust",
        broker=settings.faust_broker_urls,
        broker_credentials=_broker_credentials(settings),
        store="memory://",
        datadir=str(datadir),
        autodiscover=False,
        web_host=settings.api_host,
        web_port=settings.api_port,
        web_enabled=True,
        web_router_enabled=False,  # Faust's own pages are outside the API's envelope and document
        web_tables_enabled=False,
        topic_partitions=settings.bge_topic_partitions,
        topic_replication_factor=1,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger_ms=5,
        # aiokafka keeps one request in flight per broker and a full batch waits for it: Faust's
        # 16 KiB default held each send for a round trip every ~16 events (4 ms per raw event)
        producer_max_batch_size=1_048_576,
        producer_compression_type="lz4",
        producer_partitioner=KeyPartitioner(),
        broker_commit_every=10_000,
        broker_commit_interval=1.0,
        stream_buffer_maxsize=16_384,
        processing_guarantee="at_least_once",
        stream_wait_empty=False,  # pending batches are not acked at shutdown: they are delivered again
    )
    app.settings = settings
    log = get_logger("worker")

    def topic(name: Topic) -> faust.TopicT:
        return app.topic(settings.topic(name), key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw", partitions=settings.bge_topic_partitions)

    # the stages send through one aiokafka producer of their own, a batch at a time (streams.kafka.clients.Sender)
    sender = app.sender = Sender(settings)
    source = app.source = BatchedSource(settings, app_id(settings), on_fatal=app.crash, logger=log.child("source"))
    strategies = load_strategy_config(settings.bge_strategies_file)
    windows = ChangelogState(State.POST_WINDOWS, settings, sender, logger=log.child("state"))
    popularity = Popularity(config=strategies.popular_content, windows=windows,
                            engagement_topic=settings.topic(Topic.GROWTH_ENGAGEMENT),
                            events_topic=settings.topic(Topic.GROWTH_EVENTS),
                            dlq_topic=settings.topic(Topic.GROWTH_DLQ), logger=log.child("popularity"))
    accounts = ChangelogState(State.ACCOUNTS, settings, sender, logger=log.child("state"))
    collector = app.collector = Collector(config=strategies, accounts=accounts,
                                          events_topic=settings.topic(Topic.GROWTH_EVENTS),
                                          dlq_topic=settings.topic(Topic.GROWTH_DLQ), route=popularity.route,
                                          logger=log.child("collect"))
    projector = app.projector = Projector(settings, logger=log.child("projector"))

    def stage_input(agent: str, **hooks: Any) -> faust.ChannelT:
        """The channel the source hands ``agent`` its input batches on (one batch deep: the next
        one waits in the source, and its topic's fetching pauses, while the stage is behind)."""
        channel = BatchChannel(app, maxsize=1)
        source.route(settings.topic(STAGES[agent].input), Route(channel, **hooks))
        return channel

    def sending(fill: Callable[[list[Any], Iterable[int], Outbox], Awaitable[None]]) -> Callable[[Batch], Awaitable[list[Any]]]:
        """A stage's batch handler: ``fill(records, partitions, outbox)`` decides what to send,
        then the outbox is submitted and its delivery futures returned for the source to settle."""
        async def handle(batch: Batch) -> list[Any]:
            outbox = sender.outbox()
            await fill(batch.records, batch.next_offsets, outbox)
            return sender.submit(outbox)
        return handle

    runs = set(settings.worker_agents)
    if "collect" in runs:
        @app.agent(stage_input("collect", on_revoked=accounts.forget), name="collect", concurrency=1)
        async def collect(stream: faust.StreamT) -> None:
            """Raw Jetstream events → the domain's strategies → growth.events, growth.engagement, growth.dlq."""
            await source.run(stream, sending(collector.handle_batch))

    if "popularity" in runs:
        @app.agent(stage_input("popularity", on_revoked=windows.forget), name="popularity", concurrency=1)
        async def popular(stream: faust.StreamT) -> None:
            """Engagement keyed by post → windows → CandidateFound of popular content."""
            await source.run(stream, sending(popularity.observe_batch))

    if "project" in runs:
        async def project_batch(batch: Batch) -> list[Any]:
            return await projector.submit(batch.records)

        async def project_from_marks(partitions: list[int]) -> dict[int, int]:
            return await projector.positions(settings.topic(Topic.GROWTH_EVENTS), partitions)

        @app.timer(settings.bge_retention_interval_seconds, on_leader=True, name="retention")
        async def apply_retention() -> None:
            """The retention (``BGE_RETENTION_DAYS*``), by one worker: bounded batches, each its own
            short transaction, so the projectors writing the same tables barely wait."""
            try:
                async with projector.pool.connection() as conn:
                    deleted = await prune(conn, settings.retention(), datetime.now(UTC))
            except Exception as exc:  # noqa: BLE001 - the next run tries again
                log.warning("retention not applied; retried at the next interval", error=repr(exc))
                return
            log.info("retention applied", **{f"deleted_{table}": count for table, count in deleted.items()})

        @app.agent(stage_input("project", on_assigned=project_from_marks), name="project", concurrency=1)
        async def project(stream: faust.StreamT) -> None:
            """growth.events → Postgres, one transaction per batch with its offsets."""
            await source.run(stream, project_batch)

    if settings.crawl_enabled:
        credentials = None
        if settings.atproto_identifier and settings.atproto_app_password:
            credentials = SessionCredentials(settings.atproto_pds, settings.atproto_identifier,
                                             settings.atproto_app_password)
        register_crawl(app, settings, sender=sender, events_topic=topic(Topic.GROWTH_EVENTS),
                       crawl_topic=topic(Topic.GROWTH_CRAWL), config=load_crawl_config(settings.crawl_config_file),
                       schema=settings.crawl_schema, credentials=credentials)
    breakers = [projector.breaker]
    if settings.crawl_enabled:
        breakers.append(app.crawl.appview.breaker)
    app.metrics = worker_metrics(app, settings, source, collector, popularity, projector, breakers)
    serve_api(app, settings, breakers=breakers, consumed=[STAGES[agent].input for agent in settings.worker_agents],
              projects="project" in runs, consumer_group=app_id(settings))
    return app


def worker_metrics(app: GrowthApp, settings: Settings, source: BatchedSource, collector: Collector,
                   popularity: Popularity, projector: Projector, breakers: list[Any]) -> PipelineMetrics:
    """The worker's metrics (``streams.observability.metrics``): every agent's events in and out, dead letters
    by reason, breaker states, and consumer lag refreshed by the leader at the export interval."""
    metrics = PipelineMetrics()

    def acknowledged(name: str) -> Any:
        route = source.routes.get(settings.topic(STAGES[name].input))
        return lambda: route.settled if route is not None else 0

    # out: domain events for collect and popularity (their sends also carry state changelog
    # writes and, for collect, the engagement repartition), rows written for project
    runs = set(settings.worker_agents)
    if "collect" in runs:
        metrics.stage("collect", events_in=acknowledged("collect"), events_out=lambda: collector.stats.domain_events,
                      dead_letters=lambda: collector.stats.rejections)
    if "popularity" in runs:
        metrics.stage("popularity", events_in=acknowledged("popularity"),
                      events_out=lambda: popularity.candidates_found, dead_letters=lambda: popularity.rejections)
    if "project" in runs:
        metrics.stage("project", events_in=acknowledged("project"), events_out=lambda: projector.stats.rows,
                      dead_letters=lambda: {"unprojectable": projector.stats.dead_lettered})
    if settings.crawl_enabled:
        crawler = app.crawl.crawler  # type: ignore[attr-defined]
        metrics.stage("crawl", events_in=lambda: crawler.stats.requests, events_out=lambda: crawler.stats.executed,
                      dead_letters=lambda: crawler.stats.dlq_reasons)
    for breaker in breakers:
        metrics.breaker(breaker)
    if not metrics_enabled():
        return metrics
    log = get_logger("worker.metrics")
    group = app_id(settings)
    grouped = [settings.topic(STAGES[agent].input) for agent in settings.worker_agents]

    @app.timer(export_interval_seconds(), on_leader=True, name="consumer-lag-metrics")
    async def measure_lag() -> None:
        """Lag is group-wide, so only the leader measures it (workers would report it twice)."""
        try:
            for topic in grouped:
                metrics.set_lag(group, topic, (await group_lag(settings, topic, group))[0])
            if "project" in runs:
                metrics.set_lag(PROJECTOR_CONSUMER, settings.topic(Topic.GROWTH_EVENTS),
                                await projector_lag(settings, projector.pool, PROJECTOR_CONSUMER, timeout_s=5.0))
        except Exception as exc:  # noqa: BLE001 - a missed measurement keeps the last one
            log.warning("consumer lag not measured", error=repr(exc))

    return metrics


settings = load_settings()
app = create_app(settings)
tune_gc()
tune_malloc()
