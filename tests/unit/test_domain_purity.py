"""domain/ stays pure: it imports no runtime, infrastructure, clock or environment."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DOMAIN = Path(__file__).resolve().parents[2] / "domain"
SOURCES = sorted(DOMAIN.rglob("*.py"))

FORBIDDEN_MODULES = {
    "streams",
    "projections",
    "faust",
    "aiokafka",
    "kafka",
    "psycopg",
    "psycopg_pool",
    "websockets",
    "zstandard",
    "opentelemetry",
    "httpx",
    "requests",
    "aiohttp",
    "socket",
    "asyncio",
    "os",
    "time",
    "random",
    "secrets",
    "subprocess",
    "pathlib",
    "io",
    "logging",
    "pydantic_settings",
    "dotenv",
}
FORBIDDEN_ATTRIBUTES = {
    "environ", "getenv", "now", "utcnow", "today", "uuid1", "uuid4", "time_ns", "perf_counter", "monotonic",
    "read_text", "read_bytes", "urandom",
}
FORBIDDEN_NAMES = {"environ", "getenv", "open", "input", "print", "uuid1", "uuid4", "urandom"}


def test_domain_sources_exist() -> None:
    assert len(SOURCES) >= 9


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_domain_imports_nothing_impure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""] if node.level == 0 else []
        else:
            continue
        for module in modules:
            assert module.split(".")[0] not in FORBIDDEN_MODULES, f"{path.name} imports {module}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_domain_reads_no_clock_environment_or_files(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in FORBIDDEN_ATTRIBUTES, f"{path.name}:{node.lineno} uses .{node.attr}"
        elif isinstance(node, ast.Name):
            assert node.id not in FORBIDDEN_NAMES, f"{path.name}:{node.lineno} uses {node.id}"
