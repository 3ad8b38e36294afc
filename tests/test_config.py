"""Experiment files: typed, overrides only, unknown keys rejected; every file runs on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest

from personalize.config import parse_overrides
from personalize.core.errors import ConfigError
from personalize.models.registry import get_model_class
from personalize.recipe import describe_defaults, load_experiment, run_experiment
from personalize.recipe.curve import curve_parts
from samples import EVENTS_EXPERIMENT, in_folder

EXPERIMENTS = sorted((Path(__file__).parents[1] / "experiments").glob("*.yaml"))


def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"exp.yaml: splitt: unknown key"):
        load_experiment(_write(tmp_path, "models: [{type: popularity}]\nsplitt: {name: user_temporal}\n"))


def test_unknown_nested_key_and_bad_value(tmp_path):
    with pytest.raises(ConfigError, match=r"split.nme: unknown key"):
        load_experiment(_write(tmp_path, "models: [{type: popularity}]\nsplit: {nme: x}\n"))
    with pytest.raises(ConfigError, match=r"split.name: Input should be 'user_temporal'"):
        load_experiment(_write(tmp_path, "models: [{type: popularity}]\nsplit: {name: random}\n"))


def test_unknown_model_and_model_param(tmp_path):
    with pytest.raises(ConfigError, match="unknown model type 'easy'"):
        load_experiment(_write(tmp_path, "models: [{type: easy}]\n"))
    with pytest.raises(ConfigError, match=r"model 'ease' \(ease\): lambda: unknown key; accepted params: l2"):
        load_experiment(_write(tmp_path, "models: [{type: ease, params: {lambda: 3}}]\n"))


def test_duplicate_model_names(tmp_path):
    with pytest.raises(ConfigError, match=r"repeated: \['ease'\]"):
        load_experiment(_write(tmp_path, "models: [{type: ease}, {type: ease}]\n"))


def test_overrides_and_defaults(tmp_path):
    cfg = load_experiment(
        _write(tmp_path, "models: [{type: popularity}]\n"),
        ["split.name=global_temporal", "seeds=[1,2]"],
    )
    assert cfg.name == "exp" and cfg.split.name == "global_temporal" and cfg.seeds == [1, 2]
    assert cfg.evaluation.ks == [5, 10, 20] and cfg.training.refit is True
    assert parse_overrides(["a.b.c=3"]) == {"a": {"b": {"c": 3}}}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["nonsense"])


def test_primary_metric_must_use_a_configured_k():
    with pytest.raises(ConfigError, match=r"K=10, which is not in evaluation\.ks"):
        load_experiment(data={"name": "x", "models": [{"type": "popularity"}], "evaluation": {"ks": [5, 20]}})


def test_defaults_are_documented():
    text = describe_defaults()
    for key in (
        "split:",
        "test_fraction:",
        "primary_metric: ndcg@10",
        "refit: true",
        "ease:",
        "l2: 250.0",
    ):
        assert key in text


def _shrink(config):
    """Tiny data and few epochs, so that every experiment file runs in seconds."""
    models = []
    for spec in config.models:
        fields = get_model_class(spec.type).Config.model_fields
        params = dict(spec.params)
        for key in ("iterations", "epochs"):
            if key in fields:
                params[key] = 2
        models.append(spec.model_copy(update={"params": params}))
    return config.model_copy(update={"models": models, "seeds": config.seeds[:1]})


@pytest.fixture(scope="module")
def events_sample(tmp_path_factory) -> Path:
    from personalize.data.samples import write_events_sample

    return write_events_sample(tmp_path_factory.mktemp("events"), users=60).folder


@pytest.mark.parametrize("path", EXPERIMENTS, ids=lambda p: p.name)
def test_every_experiment_file_runs_on_tiny_data(path, request):
    overrides = ["data.sample_users=40", "data.write_processed=false"]
    if load_experiment(path).data.source == "synthetic":  # a tiny log of the same structure
        overrides.append("data.synthetic.interactions=20000")
    config = load_experiment(path, overrides)
    if path == EVENTS_EXPERIMENT:  # its files are written by `personalize sample-events`
        config = in_folder(config, request.getfixturevalue("events_sample"))
    config = _shrink(config)
    metric = config.evaluation.primary_metric
    if config.privacy_curve is not None:  # every private model at each point of a two-point curve
        # public bounds stated for the 40-user sample (3,603 interactions): DP-SGD plans its steps
        # for it, not for the whole data set
        bounds = {"user": 40, "event": 5_000}
        curve = config.privacy_curve.model_copy(update={"epsilons": [1.0, 8.0], "max_units": bounds})
        config = config.model_copy(update={"privacy_curve": curve})
        result = run_experiment(config, track=False, progress=False, echo=None)
        assert len(result.table) == sum(len(part.points) for part in curve_parts(config))
        assert result.table[metric].between(0, 1).all()
        return
    result = run_experiment(config, track=False, progress=False, echo=None)
    assert len(result.leaderboard) == len(config.models)
    assert result.leaderboard[metric].between(0, 1).all()
