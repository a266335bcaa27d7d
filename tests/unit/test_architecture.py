"""The layers' import rules, beside the domain's purity test (``test_domain_purity``).

- ``projections`` imports nothing of the product but ``domain``;
- ``streams.topology`` imports nothing of the product;
- the runtime (configuration, the app, ingest, kafka, stages, adapters, observability, health,
  api) never imports ``streams.cli``, ``streams.local`` or ``streams.bench``;
- ``streams.local`` (stand-ins for unreachable services) is imported only by the tests, the bench,
  ``bge demo`` and ``bge jetstream-serve``;
- no folder of ``streams`` holds more than a dozen modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STREAMS = ROOT / "streams"
RUNTIME = ("config.py", "app.py", "topology.py", "ingest", "kafka", "stages", "adapters", "observability",
           "health", "api")
TOOLS = ("streams.cli", "streams.local", "streams.bench")
LOCAL_IMPORTERS = ("streams/local", "streams/bench", "streams/cli/demo.py", "streams/cli/main.py")


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, at any depth (lazy imports inside functions count)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append(node.module)
            found += [f"{node.module}.{alias.name}" for alias in node.names]
    return found


def sources(*places: str) -> list[Path]:
    paths: list[Path] = []
    for place in places:
        target = STREAMS / place
        paths += [target] if target.is_file() else sorted(target.rglob("*.py"))
    return paths


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def test_the_runtime_folders_exist() -> None:
    assert all((STREAMS / place).exists() for place in RUNTIME)
    assert len(sources(*RUNTIME)) >= 30


@pytest.mark.parametrize("path", sorted((ROOT / "projections").rglob("*.py")), ids=lambda p: p.name)
def test_projections_import_only_the_domain_of_the_product(path: Path) -> None:
    for module in imports(path):
        assert not within(module, "streams"), f"{path.relative_to(ROOT)} imports {module}"


def test_the_topology_imports_nothing_of_the_product() -> None:
    path = STREAMS / "topology.py"
    product = [m for m in imports(path) if m.split(".")[0] in ("streams", "projections", "domain")]
    assert product == [], product


@pytest.mark.parametrize("path", sources(*RUNTIME), ids=lambda p: str(p.relative_to(STREAMS)))
def test_the_runtime_never_imports_the_tools_or_the_stand_ins(path: Path) -> None:
    for module in imports(path):
        assert not any(within(module, tool) for tool in TOOLS), f"{path.relative_to(ROOT)} imports {module}"


def test_only_the_tests_bench_demo_and_jetstream_serve_import_the_stand_ins() -> None:
    offenders = []
    for path in sorted(ROOT.glob("streams/**/*.py")) + sorted(ROOT.glob("projections/**/*.py")) + sorted(ROOT.glob("domain/**/*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if any(relative == allowed or relative.startswith(allowed + "/") for allowed in LOCAL_IMPORTERS):
            continue
        offenders += [f"{relative} imports {m}" for m in imports(path) if within(m, "streams.local")]
    assert offenders == []


@pytest.mark.parametrize("folder", sorted(p for p in STREAMS.iterdir() if p.is_dir() and p.name not in ("data", "__pycache__")),
                         ids=lambda p: p.name)
def test_no_folder_holds_more_than_a_dozen_modules(folder: Path) -> None:
    assert len(list(folder.glob("*.py"))) <= 12, sorted(p.name for p in folder.glob("*.py"))


@pytest.mark.parametrize("path", [p for p in sorted(STREAMS.rglob("*.py")) + sorted((ROOT / "projections").rglob("*.py"))
                                  + sorted((ROOT / "domain").rglob("*.py")) if len(p.read_text().splitlines()) > 500],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_past_500_lines_says_why_in_its_docstring(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "One module of about" in docstring, f"{path.relative_to(ROOT)}: say why it is one module"


def test_header_names_are_exact_str_as_aiokafkas_record_builder_requires() -> None:
    from streams.topology import Header

    names = {key: value for key, value in vars(Header).items() if key.isupper()}
    assert names and all(type(value) is str for value in names.values()), names
