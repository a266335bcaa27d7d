"""The worker's HTTP API: routes on Faust's web server (:mod:`~streams.api.routes`) and the response
envelope, errors and OpenAPI document (:mod:`~streams.api.contract`).

May import: ``projections``, ``streams.config``, ``streams.health``, ``streams.adapters``,
``streams.observability``. Never ``streams.cli``, ``streams.local`` or ``streams.bench``.
"""
