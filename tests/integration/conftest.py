"""Fixtures for tests against the real local stack (Kafka, PostgreSQL, Jaeger)."""

from __future__ import annotations

import os
import uuid

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ["KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture(scope="session")
def database_url() -> str:
    return os.environ["DATABASE_URL"]


@pytest.fixture(scope="session")
def otlp_endpoint() -> str:
    return os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"]


@pytest.fixture(scope="session")
def jaeger_query_url() -> str:
    return os.environ["JAEGER_QUERY_URL"]


@pytest.fixture
def unique() -> str:
    """A short unique token for names (topic prefixes, schemas, service names) of one test."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session", autouse=True)
def migrated_public_schema(database_url: str) -> None:
    """Workers started by tests project into DB_SCHEMA (``public`` unless a test names a scratch
    schema): migrate it once, as an operator runs ``bge migrate`` before the first worker."""
    import asyncio

    from projections import migrate

    asyncio.run(migrate(database_url, "public"))
