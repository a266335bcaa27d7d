"""Shared test configuration.

Integration tests run against the real services that `infra/stack up` starts. Their addresses come
from the same environment variables the product reads (`KAFKA_BOOTSTRAP_SERVERS`, `DATABASE_URL`,
`OTEL_EXPORTER_OTLP_ENDPOINT`) plus `JAEGER_QUERY_URL`; `infra/test` exports them from
`infra/stack env`. When they are missing, the stack's defaults are used.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
SAMPLE_JSONL = ROOT / "streams" / "data" / "sample-2026-07-04.jsonl"  # bundled: the demo serves it too

os.environ.setdefault("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
os.environ.setdefault("DATABASE_URL", "postgresql://bge:bge@127.0.0.1:55432/bge")
os.environ.setdefault("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
os.environ.setdefault("JAEGER_QUERY_URL", "http://127.0.0.1:16686")
