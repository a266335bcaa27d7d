"""The health checks: the registry that runs them (:mod:`~streams.health.report`) and the worker's
checks against Kafka, Postgres, Jetstream's freshness, lag, dead letters, breakers and the trace
exporter (:mod:`~streams.health.checks`). ``/health`` serves them; ``bge validate`` reuses their probes.

May import: ``projections``, ``streams.config``, ``streams.kafka``, ``streams.ingest``,
``streams.adapters``, ``streams.observability``.
"""
