"""The baselines: the least code that does the same I/O as the product, for the same bytes.

- :func:`socket_to_kafka` (run as ``python -m streams.bench.baselines ingest ...``, its own process
  like ``bge ingest``): read the same websocket (the same ``/subscribe`` URL and connection
  options as the ingest), turn each frame into the same bytes the ingest produces (zstd with
  Jetstream's dictionary when compressed), key it by the repo DID with a byte slice, and produce
  it with the same aiokafka producer settings. No parsing, no deduplication, no in-flight bound,
  no dead letters, no tracing.
- :func:`consume_and_decode`: a plain aiokafka consumer (no group) that reads a topic from the
  start and ``orjson.loads`` every value: the ceiling for Python consumption here. With
  ``decode=False`` it only counts the messages: what aiokafka alone costs (fetching, decompressing,
  unpacking records).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence

import orjson
from aiokafka import TopicPartition
from websockets.asyncio.client import connect

from streams.config import Settings, load_settings
from streams.ingest import codec
from streams.ingest.session import WS_SIZE_FACTOR, subscribe_request
from streams.kafka.clients import new_producer, new_reader

__all__ = ["consume_and_decode", "socket_to_kafka"]


async def socket_to_kafka(settings: Settings, url: str, topic: str, count: int, *, compress: bool) -> dict[str, float]:
    """Read ``count`` frames from ``url`` and produce them to ``topic``; returns timings."""
    request_url, _ = subscribe_request(
        url, collections=settings.jetstream_collections, wanted_dids=[], cursor_us=None, compress=compress,
        max_message_bytes=settings.jetstream_max_message_bytes,
    )
    producer = new_producer(settings)
    await producer.start()
    limit = settings.jetstream_max_message_bytes
    received = 0
    first = 0.0
    try:
        async with connect(request_url, compression=None, max_size=limit * WS_SIZE_FACTOR, max_queue=64,
                           open_timeout=10, ping_interval=None) as ws:
            while received < count:
                frame = await ws.recv(decode=False)
                if not first:
                    first = time.perf_counter()
                raw = codec.decompress(frame, max_output_size=limit) if compress else frame
                await producer.send(topic, value=raw, key=raw[8:raw.find(b'"', 8)])
                received += 1
        await producer.flush()
        done = time.perf_counter()
    finally:
        await producer.stop()
    return {"events": received, "seconds": done - first, "rate": received / (done - first)}


async def consume_and_decode(
    settings: Settings, topic: str, count: int, *, timeout: float = 300.0, decode: bool = True,
) -> dict[str, float]:
    """Read ``count`` messages of ``topic`` from the beginning, decoding each value as JSON (with
    ``decode``, else counting them)."""
    reader = new_reader(settings, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=4 * 1024 * 1024,
                        fetch_max_wait_ms=200, client_id="bge-bench-baseline")
    await reader.start()
    try:
        cluster = await reader._client.fetch_all_metadata()  # noqa: SLF001
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        reader.assign(tps)
        await reader.seek_to_beginning(*tps)
        started = time.perf_counter()
        deadline = started + timeout
        read = decoded = 0
        loads = orjson.loads
        while read < count and time.perf_counter() < deadline:
            for messages in (await reader.getmany(timeout_ms=500, max_records=10_000)).values():
                for message in messages if decode else ():
                    try:
                        loads(message.value)
                        decoded += 1
                    except orjson.JSONDecodeError:
                        pass
                read += len(messages)
        elapsed = time.perf_counter() - started
    finally:
        await reader.stop()
    return {"events": read, "decoded": decoded, "seconds": elapsed, "rate": read / elapsed if elapsed else 0.0}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m streams.bench.baselines")
    sub = parser.add_subparsers(dest="mode", required=True)
    ingest = sub.add_parser("ingest", help="websocket → aiokafka, nothing else")
    ingest.add_argument("--url", required=True)
    ingest.add_argument("--topic", required=True)
    ingest.add_argument("--count", type=int, required=True)
    ingest.add_argument("--compress", action="store_true")
    args = parser.parse_args(argv)
    settings = load_settings(env_file=None)
    if not args.url.startswith("ws://127.0.0.1:"):
        parser.error("the baseline only reads a local server (ws://127.0.0.1:PORT)")
    result = asyncio.run(socket_to_kafka(settings, args.url, args.topic, args.count, compress=args.compress))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
