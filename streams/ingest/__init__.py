"""The Jetstream ingest: the websocket session (:mod:`~streams.ingest.session`), frames and their
facts (:mod:`~streams.ingest.frames`), the zstd codec of ``compress=true``
(:mod:`~streams.ingest.codec`) and the cursor's recovery from Kafka (:mod:`~streams.ingest.resume`).

May import: ``streams.config``, ``streams.kafka``, ``streams.observability``. Never ``streams.cli``,
``streams.local`` or ``streams.bench``.
"""
