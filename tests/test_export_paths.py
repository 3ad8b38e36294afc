"""One export path: ``personalize run`` with ``export.enabled``, ``personalize export RUN_ID`` and
erasure's re-export of a served version build the same model, with the experiment's ``online:``
block (URL, namespace) as the defaults of ``export.online``."""

from __future__ import annotations

import mlflow
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.config.experiment import read_experiment
from personalize.core import columns as C
from personalize.recipe import load_experiment, run_experiment
from personalize.tracking import records

URL = "redis://127.0.0.1:9/0"  # recorded in the model only; nothing listens there
NS = "labns"
SPEC = {
    "name": "one_export_path",
    "seeds": [0],
    "data": {"sample_users": 60, "write_processed": False},
    "models": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
    "export": {"enabled": True, "registered_model": "one-path", "online": {"enabled": True}},
    "online": {"redis_url": URL, "namespace": NS},
}


def _served_config(uri: str) -> dict:
    """The ``model_config`` a registered model serves with, as MLflow stored it."""
    return dict(mlflow.pyfunc.load_model(uri).model_config)


def test_run_cli_and_erasure_exports_build_the_same_model(tracking_store):
    result = run_experiment(load_experiment(data=SPEC), progress=False, echo=None)
    by_run = result.extras["export"]
    run_config = _served_config("models:/one-path@champion")
    assert (run_config["export_online_url"], run_config["export_online_namespace"]) == (URL, NS)

    # personalize export RUN_ID, registered under another name so that it logs its own model
    res = CliRunner().invoke(
        app, ["export", result.parent_run_id, "--registered-model", "one-path-cli", "--quiet"]
    )
    assert res.exit_code == 0, res.output
    cli_config = _served_config("models:/one-path-cli@champion")
    assert (cli_config["export_online_url"], cli_config["export_online_namespace"]) == (URL, NS)
    client = mlflow.MlflowClient()
    cli_version = client.get_model_version_by_alias("one-path-cli", "champion")
    assert cli_version.tags["promotion.state_hash"] == by_run.state_hash
    assert cli_config == run_config

    # the run's logged config.yaml keeps the namespace unresolved (null), so a later export of the
    # run resolves it as the run did
    logged = read_experiment(data=yaml.safe_load(records.read_experiment(result.parent_run_id).config_yaml))
    assert logged.export.online.namespace is None and logged.online.namespace == NS

    # erasure's re-export of the served version (here for an ID the data does not hold: same data)
    from personalize.privacy.erasure import reexport_version
    from personalize.privacy.subject import Subject
    from personalize.tracking.erasure import version_findings

    user = str(result.dataset.interactions[C.USER].iloc[0])
    held = next(f for f in version_findings({user}) if f.name == "one-path")
    again, removed = reexport_version(held, "champion", Subject("nobody-in-this-data"), tracking_store)
    assert removed == 0
    assert again.state_hash == by_run.state_hash and again.unchanged  # the same model: no new version
    assert again.model_config == by_run.model_config == run_config
