"""The command line, as a user calls it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from personalize.cli import app

runner = CliRunner()
ROOT = Path(__file__).parents[1]


def test_help_explains_every_option():
    result = runner.invoke(app, ["run", "--help"])
    assert result.exit_code == 0
    for option in ("--set", "--tracking-uri", "--no-track", "--quiet", "EXPERIMENT"):
        assert option in result.output


def test_top_level_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    for command in ("run", "validate", "defaults", "models", "ingest", "ui"):
        assert command in result.output


def test_bad_experiment_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{type: ease, params: {lamda: 1}}]\n")
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 2
    assert "lamda: unknown key" in result.output


def test_run_as_a_user_would(tracking_store):
    """`personalize run` in a subprocess: prints the leaderboard, the UI command and the run link."""
    cmd = [
        str(Path(sys.executable).with_name("personalize")),
        "run",
        str(ROOT / "experiments" / "ml100k.yaml"),
        "--set",
        "data.sample_users=30",
        "--set",
        "data.write_processed=false",
        "--set",
        "seeds=[0]",
        "--set",
        "models=[{type: popularity}, {type: ease}]",
        "--quiet",
        "--tracking-uri",
        tracking_store,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "Leaderboard" in out.stdout and "| ease" in out.stdout
    assert "mlflow ui --backend-store-uri" in out.stdout
    assert "#/experiments/" in out.stdout and "/runs/" in out.stdout


def test_models_lists_registered_types():
    result = runner.invoke(app, ["models"])
    assert "ease" in result.output and "bpr" in result.output
