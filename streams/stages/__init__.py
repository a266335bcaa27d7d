"""The worker's stages, each thin: decode → domain → send.

- :mod:`~streams.stages.collect`: raw Jetstream events → strategies → ``growth.events``.
- :mod:`~streams.stages.popularity`: engagement keyed by post → windows → popular-content candidates.
- :mod:`~streams.stages.project`: ``growth.events`` → Postgres, exactly once in effect.
- :mod:`~streams.stages.crawl`: crawl requests → the AppView → ``growth.events``: the Faust agents
  and :func:`~streams.stages.crawl.run_crawl`, over :mod:`~streams.stages.crawler` (executes
  requests), :mod:`~streams.stages.enrichment` (plans profile fetches) and
  :mod:`~streams.stages.actions` (growth actions for the engine's own account).

May import: ``domain``, ``projections``, ``streams.config``, ``streams.kafka``, ``streams.adapters``,
``streams.observability``. Never ``streams.cli``, ``streams.local`` or ``streams.bench``.
"""
