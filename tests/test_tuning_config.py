"""Search spaces beside each model and the tuning block: typed, checked against the model, and
unknown keys rejected with a message that names the field."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from personalize.config.tuning import SearchDimension
from personalize.core.errors import ConfigError
from personalize.recipe import load_experiment

ROOT = Path(__file__).parents[1]


def _load(search: dict, model: str = "ease", **extra):
    return load_experiment(data={"name": "x", "models": [{"type": model, "search": search}], **extra})


def test_types_come_from_the_model_param():
    cfg = load_experiment(
        data={
            "name": "x",
            "models": [
                {"type": "ease", "search": {"l2": {"low": 1, "high": 1000, "log": True}}},
                {
                    "type": "itemknn",
                    "search": {
                        "neighbours": {"low": 10, "high": 400, "step": 10},
                        "shrink": {"choices": [0, 10]},
                    },
                },
            ],
        }
    )
    ease, knn = cfg.models
    assert ease.search["l2"].kind == "float"  # integer bounds, float param: sampled as a float
    assert knn.search["neighbours"].kind == "int" and knn.search["shrink"].kind == "categorical"
    trial = optuna.create_study().ask()
    assert isinstance(ease.search["l2"].suggest(trial, "l2"), float)
    value = knn.search["neighbours"].suggest(trial, "neighbours")
    assert isinstance(value, int) and value % 10 == 0 and 10 <= value <= 400


@pytest.mark.parametrize(
    ("search", "message"),
    [
        ({"l2": {"lo": 1, "high": 3}}, r"models\.0\.search\.l2\.lo: unknown key"),
        ({"lamda": {"low": 1, "high": 2}}, r"search\.lamda is not a param; accepted params: l2"),
        (
            {"l2": {"low": 0, "high": 10}},
            r"search\.l2 value 0\.0 is invalid: l2: Input should be greater than 0",
        ),
        ({"l2": {"low": -1, "high": 3, "log": True}}, "log scale needs low > 0"),
        ({"l2": {"low": 5, "high": 1}}, r"low \(5\) is greater than high \(1\)"),
        ({"l2": {"low": 1}}, "a range needs both low and high"),
        ({"l2": {"choices": []}}, "choices must be a non-empty list"),
        ({"l2": {"choices": [1], "low": 1}}, "either choices or low/high"),
        ({"l2": {"low": 1, "high": 10, "log": True, "step": 1}}, "log scale and step cannot be combined"),
    ],
)
def test_bad_search_spaces_are_clear_errors(search, message):
    with pytest.raises(ConfigError, match=message):
        _load(search)


def test_int_param_needs_integer_bounds():
    with pytest.raises(ConfigError, match=r"search\.neighbours: type int needs integer low, high and step"):
        _load({"neighbours": {"low": 10.5, "high": 20}}, model="itemknn")


def test_grid_and_search_are_exclusive():
    with pytest.raises(ConfigError, match="either grid or search"):
        load_experiment(
            data={
                "name": "x",
                "models": [{"type": "ease", "grid": {"l2": [1.0]}, "search": {"l2": {"low": 1, "high": 2}}}],
            }
        )


def test_tuning_block_is_typed():
    with pytest.raises(ConfigError, match=r"tuning\.trails: unknown key"):
        _load({}, tuning={"trails": 3})
    with pytest.raises(ConfigError, match=r"tuning\.metric uses K=7, which is not in evaluation\.ks"):
        _load({}, tuning={"metric": "ndcg@7"})
    with pytest.raises(ConfigError, match=r"tuning\.pruner"):
        _load({}, tuning={"pruner": "sometimes"})
    cfg = _load({}, tuning={"metric": "recall@20", "trials": 7, "heartbeat_seconds": 2})
    assert cfg.tuning.trials == 7 and cfg.tuning.grace == 6


def test_the_tuning_experiment_loads_and_round_trips():
    cfg = load_experiment(ROOT / "experiments" / "ml100k_tune.yaml")
    tuned = {m.label for m in cfg.models if m.search}
    assert tuned == {"recent_popularity", "itemknn", "ease", "als", "bpr"}
    assert not next(m for m in cfg.models if m.label == "popularity").search
    again = load_experiment(data=cfg.model_dump(mode="json"))
    assert again == cfg


def test_dimension_alone_infers_its_type():
    assert SearchDimension(low=1, high=5).kind == "int"
    assert SearchDimension(low=0.1, high=5).kind == "float"
    assert SearchDimension(choices=["a", "b"]).edge_values() == ["a", "b"]


def test_studies_start_from_the_default_params_moved_into_the_space():
    from personalize.models.collaborative.als import ALSConfig
    from personalize.tuning.studies import default_point

    assert SearchDimension(low=10, high=400, step=10).nearest(104) == 100
    assert SearchDimension(low=10, high=400).nearest(1000) == 400
    assert SearchDimension(low=0.5, high=5.0, log=True).nearest(0.1) == 0.5
    assert SearchDimension(choices=[1, 2]).nearest(3) is None
    cfg = load_experiment(
        data={
            "name": "x",
            "models": [
                {
                    "type": "als",
                    "params": {"factors": 16},
                    "search": {
                        "factors": {"low": 32, "high": 64},
                        "regularization": {"choices": [123.0, 456.0]},
                        "alpha": {"low": 0.1, "high": 100, "log": True},
                    },
                }
            ],
        }
    )
    # the spec's fixed factors (16) moved to the bound; a default outside the choices is left to the sampler
    assert default_point(cfg.models[0]) == {"factors": 32, "alpha": ALSConfig().alpha}
