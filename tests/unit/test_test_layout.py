"""Test modules never import other test modules: what tests share lives in support modules
(``tests/integration/*_support.py``, ``tests/unit/domain_builders.py``, ``tests/conftest.py``).
Importing a test module drags its tests' imports and module-level work into the importer and ties
the importer to helpers that the other file may rename or delete at will."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TEST_FILES = sorted((ROOT / "tests").rglob("test_*.py"))


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


TEST_MODULES = {module_name(path) for path in TEST_FILES}

def imported_modules(source: str, module_of_source: str) -> list[tuple[int, str]]:
    """(line, module) for every module ``source`` imports, relative imports resolved against
    ``module_of_source``; for ``from package import name`` both ``package`` and ``package.name``
    (the name may be a module)."""
    package = module_of_source.split(".")[:-1]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]  # level 1: this package
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found.extend((node.lineno, f"{module}.{alias.name}") for alias in node.names)
    return found


def imported_test_modules(source: str, module_of_source: str) -> dict[str, int]:
    """The test modules ``source`` imports, with the first line importing each."""
    imported: dict[str, int] = {}
    for line, module in imported_modules(source, module_of_source):
        if module in TEST_MODULES and module != module_of_source:
            imported.setdefault(module, line)
    return imported


def imported_by(path: Path) -> dict[str, int]:
    return imported_test_modules(path.read_text(), module_name(path))


def test_the_test_files_are_found() -> None:
    assert len(TEST_FILES) >= 50
    assert "tests.integration.test_worker" in TEST_MODULES and "tests.unit.test_test_layout" in TEST_MODULES


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_a_test_module_imports_no_other_test_module(path: Path) -> None:
    relative = str(path.relative_to(ROOT))
    offending = imported_by(path)
    assert not offending, (
        f"{relative} imports test module(s) "
        + ", ".join(f"{module} (line {line})" for module, line in sorted(offending.items()))
        + ": move what they share into a support module (tests/integration/*_support.py) and import it from there"
    )


@pytest.mark.parametrize(("source", "expected"), [
    ("import tests.integration.test_worker", "tests.integration.test_worker"),
    ("import tests.integration.test_worker as w", "tests.integration.test_worker"),
    ("from tests.integration.test_worker import free_port", "tests.integration.test_worker"),
    ("from tests.integration import test_worker", "tests.integration.test_worker"),
    ("from .test_worker import free_port", "tests.integration.test_worker"),
    ("from . import test_worker", "tests.integration.test_worker"),
    ("from ..unit import test_log", "tests.unit.test_log"),
    ("def f():\n    from tests.integration.test_worker import ids", "tests.integration.test_worker"),
    ("from tests.integration.worker_support import free_port", None),
    ("from tests.integration import worker_support", None),
    ("from tests.conftest import ROOT", None),
])
def test_the_check_sees_every_form_of_import(source: str, expected: str | None) -> None:
    # as if written in tests/integration/test_probe.py, which places the relative imports
    found = set(imported_test_modules(source, "tests.integration.test_probe"))
    assert found == ({expected} if expected else set())
