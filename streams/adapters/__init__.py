"""Clients of services outside the product and the guards around them: the AT Protocol client
(:mod:`~streams.adapters.atproto`), the circuit breaker (:mod:`~streams.adapters.breaker`), the
token-bucket rate limits (:mod:`~streams.adapters.ratelimit`).

May import: ``domain``, ``streams.config``, ``streams.observability``.
"""
