"""The short soak: 50,000 events through the whole pipeline under one fault of each kind.

Local Jetstream server → ``bge ingest`` → Kafka → ``bge worker`` → Postgres, while the harness
SIGKILLs the ingest and the worker, drops the Jetstream connection, restarts Kafka and Postgres
(``infra/stack down``/``up``), and injects malformed frames and malformed events. The database
must end equal to a clean run's, table by table, and every malformed input must be dead-lettered
exactly once (``streams.bench.soak``; ``bge bench soak --events 1000000`` is the long version).
"""

from __future__ import annotations

import os

import pytest

from streams.bench.harness import Options
from streams.bench.soak import soak


@pytest.mark.timeout(1200)
async def test_fifty_thousand_events_through_kills_restarts_drops_and_malformed_input_end_as_a_clean_run(unique, tmp_path) -> None:
    events = int(os.environ.get("BGE_SOAK_EVENTS", "50000"))
    opts = Options(run_id=unique[:8], workdir=tmp_path, seed=11)
    result = await soak(opts, events)

    kinds = [fault["fault"] for fault in result.faults]
    assert kinds == ["malformed frames", "SIGKILL ingest", "drop_connections", "SIGKILL worker", "Kafka restart",
                     "Postgres restart"]
    differing = {table: facts for table, facts in result.tables.items() if not facts["equal"]}
    assert not differing, f"tables differ from the clean run: {differing}"
    assert sum(facts["rows"] for facts in result.tables.values()) > events
    assert result.jetstream_dlq == result.malformed_frames == 4
    assert result.growth_dlq_distinct == result.malformed_events > 0
    assert result.raw_messages == events + result.malformed_events, "every event once in the raw topic"
