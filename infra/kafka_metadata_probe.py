"""Readiness probe for Kafka: succeeds only when the broker answers a Metadata request with itself.

Standard library only, so `infra/stack` can run it before the project's virtual environment exists.
Speaks the Kafka wire protocol: ApiVersions v0 to learn the Metadata versions the broker accepts,
then Metadata (v4..v8, non-flexible) for all topics. Exit 0 when at least one broker is listed.
"""

from __future__ import annotations

import socket
import struct
import sys

API_METADATA = 3
API_VERSIONS = 18
CLIENT_ID = b"bge-probe"


def _request(sock: socket.socket, api_key: int, version: int, correlation: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, correlation, len(CLIENT_ID)) + CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    response = _read(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation:
        raise RuntimeError("correlation id mismatch")
    return response[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        chunks += chunk
    return bytes(chunks)


def metadata_version(sock: socket.socket) -> int:
    body = _request(sock, API_VERSIONS, 0, 1, b"")
    error, count = struct.unpack(">hi", body[:6])
    if error:
        raise RuntimeError(f"ApiVersions error {error}")
    for i in range(count):
        key, lo, hi = struct.unpack(">hhh", body[6 + i * 6 : 12 + i * 6])
        if key == API_METADATA:
            for v in range(min(hi, 8), lo - 1, -1):
                if 4 <= v <= 8:
                    return v
    raise RuntimeError("broker offers no Metadata version between 4 and 8")


def broker_count(host: str, port: int) -> int:
    with socket.create_connection((host, port), timeout=5) as sock:
        version = metadata_version(sock)
        body = struct.pack(">i", -1) + b"\x01"  # all topics, allow_auto_topic_creation
        if version >= 8:
            body += b"\x00\x00"  # include cluster/topic authorized operations
        response = _request(sock, API_METADATA, version, 2, body)
        # v3+: throttle_time_ms, then the brokers array
        return struct.unpack(">i", response[4:8])[0]


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        brokers = broker_count(host, port)
    except (OSError, RuntimeError, struct.error) as exc:
        print(f"kafka not ready: {exc}", file=sys.stderr)
        return 1
    print(f"kafka metadata: {brokers} broker(s)")
    return 0 if brokers > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
