"""The Faust application: the composition root of the worker process.

Start a worker the Faust way, ``faust -A streams.app worker -l info`` (or ``bge worker``).

Topology (topic names carry ``BGE_TOPIC_PREFIX``)::

    jetstream.events ──collect──► growth.events        (domain events, key = partition key)
                            ├───► growth.engagement    (engagement events again, key = post at-uri)
                            └───► growth.dlq           (rejected raw events, reason in headers)
    growth.engagement ──popularity──► growth.events      (CandidateFound of popular content)
    growth.events ──project──► Postgres                 (one transaction per batch, offsets inside)
    growth.events ──crawl-planner──► growth.crawl (partition 0) ──crawl──► AppView ──► growth.events
                                                  (CRAWL_ENABLED; one partition = one shared rate limit)

Run ``bge migrate`` before the first worker starts.

Processing is at least once: a batch's events are acknowledged only after every message it sent
was acknowledged by Kafka (``streams.acking``), never merely because an agent was cancelled. Each agent runs with concurrency 1 (faust-streaming's commit tracking
with concurrency above 1 can commit past an unfinished message); scale by partitions and worker
processes.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import faust

from streams.api import serve_api
from streams.acking import AckBatcher, all_acknowledged
from streams.collect import Collector, load_strategy_config
from streams.config import WORKER_AGENTS, Settings, Topic, load_settings
from streams.crawl import SessionCredentials, load_crawl_config, register_crawl
from streams.kafka import KeyPartitioner, Sender, ensure_topics
from streams.checks import group_lag, projector_lag
from streams.log import configure_logging, get_logger
from streams.metrics import PipelineMetrics, export_interval_seconds, metrics_enabled, setup_metrics
from streams.popularity import Popularity
from streams.state import ChangelogState
from streams.projector import CONSUMER as PROJECTOR_CONSUMER
from streams.projector import PendingMessage, Projector
from streams.telemetry import instrument_psycopg, setup_tracing

__all__ = ["GrowthApp", "app", "create_app", "settings"]


class GrowthApp(faust.App):
    """A Faust app that creates the product's topics before it subscribes to them."""

    settings: Settings
    sender: Sender

    async def on_first_start(self) -> None:
        # sys.__stderr__: Faust redirects sys.stderr into its own log format; ours stays one JSON object per line
        configure_logging("DEBUG" if self.settings.debug else self.settings.log_level, stream=sys.__stderr__,
                          only_product=True)
        setup_tracing("worker")
        setup_metrics("worker")
        instrument_psycopg()
        await ensure_topics(self.settings)
        await self.sender.start()
        await super().on_first_start()

    async def on_started(self) -> None:
        if "project" in self.settings.worker_agents:
            await self.projector.start()
        await super().on_started()

    async def on_stop(self) -> None:
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
    """The Faust app id, which is also the consumer group: distinct per topic prefix, and per
    set of agents when a worker runs only some of them (``WORKER_AGENTS``): each stage's
    workers are then a group of their own, given every partition of that stage's input."""
    prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", settings.bge_topic_prefix).strip("-")
    roles = "" if len(settings.worker_agents) == len(WORKER_AGENTS) else "-" + "-".join(settings.worker_agents)
    return f"{prefix}-bge{roles}" if prefix else f"bge{roles}"


# the topic each agent consumes
AGENT_INPUTS: dict[str, Topic] = {"collect": Topic.JETSTREAM_EVENTS, "popularity": Topic.GROWTH_ENGAGEMENT,
                                  "project": Topic.GROWTH_EVENTS}


def create_app(settings: Settings) -> GrowthApp:
    """Build the worker's Faust app, its topics, tables and agents from ``settings``."""
    datadir = Path(settings.bge_state_dir or tempfile.gettempdir()) / "faust"
    app = GrowthApp(
        app_id(settings),
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

    raw_events = topic(Topic.JETSTREAM_EVENTS)
    growth_events = topic(Topic.GROWTH_EVENTS)
    growth_dlq = topic(Topic.GROWTH_DLQ)
    engagement = topic(Topic.GROWTH_ENGAGEMENT)
    # what the agents produce goes through one aiokafka producer of their own (streams.kafka.Sender)
    sender = app.sender = Sender(settings)
    strategies = load_strategy_config(settings.bge_strategies_file)
    windows = ChangelogState("post-windows", settings, lambda: sender.producer, logger=log.child("state"))
    popularity = Popularity(config=strategies.popular_content, windows=windows,
                            engagement_topic=sender.topic(settings.topic(Topic.GROWTH_ENGAGEMENT)),
                            events_topic=sender.topic(settings.topic(Topic.GROWTH_EVENTS)), logger=log.child("popularity"))
    accounts = ChangelogState("accounts", settings, lambda: sender.producer, logger=log.child("state"))
    collector = Collector(config=strategies, accounts=accounts, events_topic=sender.topic(settings.topic(Topic.GROWTH_EVENTS)),
                          dlq_topic=sender.topic(settings.topic(Topic.GROWTH_DLQ)), route=popularity.route,
                          logger=log.child("collect"))
    app.collector = collector  # type: ignore[attr-defined]
    projector = Projector(settings, logger=log.child("projector"))
    app.projector = projector  # type: ignore[attr-defined]
    batches: dict[str, AckBatcher[Any]] = {}

    def batcher(name: str, stream: faust.StreamT, settle: Any, size: int, seconds: float = 0.2) -> AckBatcher[Any]:
        previous = batches.get(name)
        batches[name] = AckBatcher(stream, settle, max_events=size, max_seconds=seconds)
        if previous is not None:  # an agent restarted (a rebalance): its counts go on
            batches[name].acknowledged = previous.acknowledged
        return batches[name]

    runs = set(settings.worker_agents)
    if "collect" in runs:
        @app.agent(raw_events, name="collect", concurrency=1)
        async def collect(stream: faust.StreamT) -> None:
            batch = batcher("collect", stream, all_acknowledged, settings.collect_batch_size)
            async for event in stream.events():
                message = event.message
                sends = await collector.handle(message.topic, message.partition, message.offset,
                                               message.value, list(message.headers or ()))
                if batch.add(event, sends):
                    await batch.flush()

    if "popularity" in runs:
        @app.agent(engagement, name="popularity", concurrency=1)
        async def popular(stream: faust.StreamT) -> None:
            batch = batcher("popularity", stream, all_acknowledged, settings.collect_batch_size)
            async for event in stream.events():
                message = event.message
                if batch.add(event, await popularity.observe(message.partition, message.value)):
                    await batch.flush()

    if "project" in runs:
        @app.agent(growth_events, name="project", concurrency=1)
        async def project(stream: faust.StreamT) -> None:
            batch = batcher("project", stream, projector.apply, settings.projector_batch_size,
                            settings.projector_batch_seconds)
            async for event in stream.events():
                message = event.message
                if batch.add(event, PendingMessage(message.topic, message.partition, message.offset,
                                                   message.value, tuple(message.headers or ()))):
                    await batch.flush()

    @app.on_partitions_revoked.connect
    async def forget_state(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """State of partitions this worker no longer owns is dropped; it is read again from the
        changelog if they come back (another worker may have changed it meanwhile)."""
        accounts.forget(tp.partition for tp in revoked if tp.topic == raw_events.get_topic_name())
        windows.forget(tp.partition for tp in revoked if tp.topic == engagement.get_topic_name())

    @app.timer(0.1, name="flush-batches")
    async def flush_batches() -> None:
        """Time-bounded batches: flush what waited longer than its batch's age limit."""
        for batch in list(batches.values()):
            await batch.flush_if_older()

    if settings.crawl_enabled:
        credentials = None
        if settings.atproto_identifier and settings.atproto_app_password:
            credentials = SessionCredentials(settings.atproto_pds, settings.atproto_identifier,
                                             settings.atproto_app_password)
        register_crawl(app, settings, events_topic=growth_events, crawl_topic=topic(Topic.GROWTH_CRAWL),
                       dlq_topic=growth_dlq, config=load_crawl_config(settings.crawl_config_file),
                       schema=settings.crawl_schema, credentials=credentials)
    breakers = [projector.breaker]
    if settings.crawl_enabled:
        breakers.append(app.crawl.appview.breaker)
    app.metrics = worker_metrics(app, settings, batches, collector, popularity, projector, breakers)  # type: ignore[attr-defined]
    serve_api(app, settings, breakers=breakers, consumed=[AGENT_INPUTS[agent] for agent in settings.worker_agents],
              projects="project" in runs)
    return app


def worker_metrics(app: GrowthApp, settings: Settings, batches: dict[str, AckBatcher[Any]], collector: Collector,
                   popularity: Popularity, projector: Projector, breakers: list[Any]) -> PipelineMetrics:
    """The worker's metrics (``streams.metrics``): every agent's events in and out, dead letters
    by reason, breaker states, and consumer lag refreshed by the leader at the export interval."""
    metrics = PipelineMetrics()

    def acknowledged(name: str) -> Any:
        return lambda: batches[name].acknowledged if name in batches else 0

    # out: domain events for collect and popularity (their sends also carry state changelog
    # writes and, for collect, the engagement repartition), rows written for project
    runs = set(settings.worker_agents)
    if "collect" in runs:
        metrics.stage("collect", events_in=acknowledged("collect"), events_out=lambda: collector.stats.domain_events,
                      dead_letters=lambda: collector.stats.rejections)
    if "popularity" in runs:
        metrics.stage("popularity", events_in=acknowledged("popularity"),
                      events_out=lambda: popularity.candidates_found)
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
    grouped = [settings.topic(AGENT_INPUTS[agent]) for agent in settings.worker_agents]

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
