"""Parts of ``bge bench`` that run without services."""

from __future__ import annotations

import itertools
import logging

from streams.bench.throughput import domain_messages
from streams.log import LOGGER_PREFIX
from tests.conftest import SAMPLE_JSONL


async def test_domain_messages_keeps_the_collect_logger_level_of_the_process_that_runs_it():
    # The soak test runs this inside pytest: a level left behind silenced later tests' logs.
    logger = logging.getLogger(f"{LOGGER_PREFIX}.collect")
    logger.setLevel(logging.DEBUG)
    try:
        with SAMPLE_JSONL.open("rb") as sample:
            lines = [line.rstrip(b"\n") for line in itertools.islice(sample, 200)]
        messages = await domain_messages(lines, topic="growth.events", partitions=3)
        assert messages and {m.partition for m in messages} <= {0, 1, 2}
        assert logger.level == logging.DEBUG
    finally:
        logger.setLevel(logging.NOTSET)
