"""Postgres projections of the domain events: migrations, the transactional batch writer with
offset tracking, read queries for the API, and schema rebuild support.

Imports ``domain`` only; knows nothing of Kafka or Faust (a Kafka message is a
:class:`~projections.writer.Record`: topic, partition, offset, value bytes; an aiokafka record is one).

- :mod:`projections.migrate`: ``migrate(conninfo, schema)``, versioned SQL in ``migrations/``
  (projection schemas, and the crawl's schema: :class:`~projections.migrate.MigrationSet`).
- :mod:`projections.crawl_store`: the crawl's bookkeeping (fetched, requests, growth actions).
- :mod:`projections.db`: pool factory, :class:`~projections.db.QueryStats`, retry.
- :mod:`projections.plan`: domain events → row sets (pure).
- :mod:`projections.writer`: ``apply_batch`` (one transaction per batch, offsets inside).
- :mod:`projections.queries`: growth analytics and profiles for the API.
- :mod:`projections.rebuild`: project into a fresh schema and swap it in.
"""

from projections.db import QueryStats, RetryPolicy, connect, create_pool, is_transient, with_retry
from projections.migrate import (
    MigrationChecksumError,
    MigrationError,
    MigrationSet,
    SchemaTooNewError,
    SchemaTooOldError,
    check_schema_version,
    latest_version,
    migrate,
)
from projections.rebuild import create_fresh_schema, drop_schema, swap_schema
from projections.writer import (
    BatchResult, Decoded, Message, Prepared, Record, apply_batch, decode_messages, project_batch, stored_offsets,
)

__all__ = [
    "BatchResult",
    "Decoded",
    "Message",
    "MigrationChecksumError",
    "MigrationError",
    "MigrationSet",
    "Prepared",
    "QueryStats",
    "Record",
    "RetryPolicy",
    "SchemaTooNewError",
    "SchemaTooOldError",
    "apply_batch",
    "check_schema_version",
    "connect",
    "create_fresh_schema",
    "create_pool",
    "decode_messages",
    "drop_schema",
    "is_transient",
    "latest_version",
    "migrate",
    "project_batch",
    "stored_offsets",
    "swap_schema",
    "with_retry",
]
