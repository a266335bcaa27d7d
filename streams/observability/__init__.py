"""Logging (:mod:`~streams.observability.log`), metrics (:mod:`~streams.observability.metrics`)
and tracing (:mod:`~streams.observability.tracing`): what every other folder may use.

May import: ``streams.config`` only (of the product).
"""
