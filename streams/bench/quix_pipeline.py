"""The collect stage written with Quix Streams: the baseline ``bge bench collect`` compares with.

The same pipeline as the collect agent: each raw event parsed (orjson) and run through
``domain.pipeline.process`` with the same strategy configuration, the newcomers' account memory
in Quix's keyed state (RocksDB with a changelog topic, keyed by the raw topic's key: the repo DID,
like the worker's Faust table), every domain event produced encoded and keyed like the worker
does, and rejected raw events produced to a dead-letter topic. At-least-once, committing every
second like the worker.

Runs from its own virtual environment (``infra/bench/quix-venv``: quixstreams caps pydantic below
the project's pin) with the repository on ``PYTHONPATH``; it imports only the pure ``domain``
package of the product::

    PYTHONPATH=. .state/bench/quix-venv/bin/python streams/bench/quix_pipeline.py \
        --bootstrap 127.0.0.1:9092 --input RAW --output OUT --dlq DLQ --group GROUP --state-dir DIR

Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from quixstreams import Application
from returns.result import Failure
from quixstreams.models.serializers import Serializer

from domain.events import encode, partition_key
from domain.growth import (
    AccountMemory,
    PopularContentConfig,
    StrategyConfig,
    StrategyState,
    decode_account_memory,
    encode_state,
)
from domain.pipeline import process

# the worker's Collector runs popular content in a later stage (after a repartition by post)
CONFIG = StrategyConfig().model_copy(update={"popular_content": PopularContentConfig(enabled=False)})


class _StateView(Mapping[str, AccountMemory]):
    """The account memory of the current message's key, read from Quix state."""

    __slots__ = ("did", "state")

    def __init__(self, did: str, state: Any) -> None:
        self.did = did
        self.state = state

    def get(self, key: str, default: Any = None) -> Any:
        if key != self.did:
            return default
        raw = self.state.get("memory")
        if raw is None:
            return default
        return decode_account_memory(raw.encode()).value_or(default)

    def __getitem__(self, key: str) -> AccountMemory:
        found = self.get(key)
        if found is None:
            raise KeyError(key)
        return found

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def run_pipeline(value: bytes, state: Any) -> list[tuple[str, bytes | None, bytes]]:
    """One raw event → ``[(destination, key, value)]``: ``e`` domain events, ``d`` dead letter."""
    did = _did_of(value)
    outcome = process(value, config=CONFIG, state=StrategyState(accounts=_StateView(did, state)))
    if isinstance(outcome, Failure):
        return [("d", None, value)]
    result = outcome.unwrap()
    for changed_did, memory in result.state_changes.accounts.items():
        if changed_did == did:
            state.set("memory", encode_state(memory).decode())
    return [("e", partition_key(event), encode(event)) for event in result.all_events]


def _did_of(value: bytes) -> str:
    end = value.find(b'"', 8)
    return value[8:end].decode() if value.startswith(b'{"did":"') and end > 0 else ""


class ThirdItem(Serializer):
    """Serialise ``(destination, key, value)`` items as their value bytes."""

    def __call__(self, value: Any, ctx: Any = None) -> bytes:
        return value[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quix_pipeline")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--dlq", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--partitions", type=int, default=4)
    args = parser.parse_args(argv)
    if not all(server.startswith(("127.0.0.1:", "localhost:")) for server in args.bootstrap.split(",")):
        parser.error("the bench only talks to a local Kafka")
    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        commit_interval=1.0,
        state_dir=args.state_dir,
        loglevel="WARNING",
        processing_guarantee="at-least-once",
        producer_extra_config={"linger.ms": 5, "compression.type": "lz4", "enable.idempotence": True},
    )
    raw = app.topic(args.input, key_deserializer="bytes", value_deserializer="bytes")
    out = app.topic(args.output, key_serializer="bytes", value_serializer=ThirdItem())
    dlq = app.topic(args.dlq, key_serializer="bytes", value_serializer=ThirdItem())
    sdf = app.dataframe(raw)
    sdf = sdf.apply(run_pipeline, stateful=True, expand=True)
    sdf.to_topic(lambda value, key, timestamp, headers: out if value[0] == "e" else dlq, key=lambda value: value[1])
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
