"""The health checks: the product's one check framework (:mod:`~streams.health.report`: a registry
of named checks run concurrently under timeouts, with needs between them) and the worker's checks
against Kafka, Postgres, Jetstream's freshness, lag, dead letters, breakers and the trace exporter
(:mod:`~streams.health.checks`). ``/health`` serves them; ``bge validate`` registers its own checks
in the same registry and reuses these probes.

May import: ``projections``, ``streams.config``, ``streams.kafka``, ``streams.ingest``,
``streams.adapters``, ``streams.observability``.
"""
