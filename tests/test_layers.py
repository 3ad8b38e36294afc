"""The import-linter contract (pyproject.toml) holds the layers, and fails on a new upward import
or cycle: checked on a copy of the package with one bad import added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).parent / "lint-imports"


def _lint(src: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
        capture_output=True,
        text=True,
        env=env,
        cwd=src,
        timeout=300,
    )


@pytest.fixture
def copy(tmp_path) -> Path:
    src = tmp_path / "src"
    shutil.copytree(
        ROOT / "src" / "personalize", src / "personalize", ignore=shutil.ignore_patterns("__pycache__")
    )
    return src


def _append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_package_keeps_its_layers(copy):
    done = _lint(copy)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "Contracts: 2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_layers(copy):
    _append(
        copy / "personalize" / "models" / "collaborative" / "ease.py", "import personalize.recipe  # noqa"
    )
    done = _lint(copy)
    assert done.returncode != 0
    assert "Stages import downward only BROKEN" in done.stdout
    assert "personalize.models.collaborative.ease -> personalize.recipe" in done.stdout


def test_a_cycle_inside_a_package_is_refused(copy):
    _append(copy / "personalize" / "data" / "readers.py", "import personalize.data.ingest  # noqa")
    done = _lint(copy)
    assert done.returncode != 0
    assert "No import cycles between the modules of a package BROKEN" in done.stdout


def test_the_scoring_package_imports_nothing_of_personalize(copy):
    _append(copy / "personalize" / "scoring" / "ids.py", "from personalize.core import columns  # noqa")
    done = _lint(copy)
    assert done.returncode != 0 and "personalize.scoring.ids -> personalize.core.columns" in done.stdout
