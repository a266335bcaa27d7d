"""Kafka for the runtime: clients and the batched sender (:mod:`~streams.kafka.clients`), the batched
source the stages read from (:mod:`~streams.kafka.source`), keyed state with a changelog
(:mod:`~streams.kafka.state`), dead-letter headers (:mod:`~streams.kafka.deadletter`) and the
per-message acking of the crawl's agents (:mod:`~streams.kafka.acking`).

May import: ``streams.config``, ``streams.observability``. Never a stage, ``streams.cli``,
``streams.local`` or ``streams.bench``.
"""
