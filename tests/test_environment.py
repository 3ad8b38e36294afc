"""environment.yml (conda) and pyproject.toml (pip) describe the same environment."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
# installed with --no-deps by the Makefile (TorchRec declares the CUDA fbgemm-gpu; recommenders
# is only the reference of the msr metric mode): listed in comments, not as requirements
NO_DEPS_EXCEPTIONS = {"torchrec", "recommenders"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    out = {}
    for req in requirements:
        name, sep, version = req.partition("==")
        assert sep, f"requirement {req!r} is not pinned with =="
        out[_norm(name)] = version.strip()
    return out


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _pins(
        project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    )
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    reqs = [r for r in pip_section if not r.startswith("-")]
    assert _pins(reqs) == wanted
    assert "-e ." in pip_section
    assert any(d.startswith("python=3.11") for d in env["dependencies"] if isinstance(d, str))
    text = (ROOT / "environment.yml").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for name in NO_DEPS_EXCEPTIONS:
        assert name in text and f"{name}==" in makefile
    assert not NO_DEPS_EXCEPTIONS & set(wanted)


def test_makefile_pins_the_cpu_torch_before_the_package():
    makefile = (ROOT / "Makefile").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    torch_pin = next(r for r in project["dependencies"] if r.startswith("torch=="))
    assert f"TORCH_SPEC ?= {torch_pin}" in makefile
    assert makefile.index("$(TORCH_SPEC)") < makefile.index('-e ".[dev,torchrec]"')
