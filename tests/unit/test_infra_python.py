"""``infra/python``: the interpreter the project's virtual environments are made from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "infra" / "python"


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "BGE_PYTHON"}
    return subprocess.run([str(SCRIPT)], env={**environment, **env}, capture_output=True, text=True, check=False)


def _version(interpreter: str) -> tuple[int, int]:
    out = subprocess.run([interpreter, "-c", "import sys; print(*sys.version_info[:2])"], capture_output=True,
                         text=True, check=True).stdout
    major, minor = out.split()
    return int(major), int(minor)


def test_bge_python_wins_when_it_is_a_python_3_11() -> None:
    result = _run(BGE_PYTHON=sys.executable)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == sys.executable


def test_a_bge_python_that_is_no_interpreter_is_refused_not_replaced() -> None:
    result = _run(BGE_PYTHON="/nonexistent/python3.11")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "BGE_PYTHON=/nonexistent/python3.11" in result.stderr


def test_without_bge_python_the_distributions_build_comes_first() -> None:
    result = _run()
    assert result.returncode == 0, result.stderr
    chosen = result.stdout.strip()
    if Path("/usr/bin/python3.11").exists():
        assert chosen == "/usr/bin/python3.11"
    assert _version(chosen) >= (3, 11)


def test_identity_tells_a_venv_from_another_interpreter_by_base_prefix_and_version() -> None:
    result = subprocess.run([str(SCRIPT), "--identity", sys.executable], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == f"{sys.base_prefix} {sys.version}"
