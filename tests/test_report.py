"""Report helpers: intervals over seeds, the benchmark table, title lookup."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from personalize.core import columns as C
from personalize.reports import comparison as report


def _outcome(label: str, values: dict[str, list[float]]):
    n = len(next(iter(values.values())))
    seeds = [SimpleNamespace(test=SimpleNamespace(metric=lambda m, i=i: values[m][i])) for i in range(n)]
    return SimpleNamespace(label=label, family="collaborative", seeds=seeds)


def test_seed_interval_is_a_student_t_interval():
    mean, lo, hi = report.seed_interval([0.40, 0.42, 0.44, 0.46, 0.48])
    # mean 0.44, s = 0.0316228, t(0.975, 4) = 2.776445
    assert mean == pytest.approx(0.44)
    assert hi - mean == pytest.approx(2.776445 * 0.0316228 / np.sqrt(5), rel=1e-5)
    assert mean - lo == pytest.approx(hi - mean)
    one = report.seed_interval([0.5])
    assert one[0] == 0.5 and np.isnan(one[1]) and np.isnan(one[2])


def test_msr_table_marks_models_that_beat_the_published_best():
    result = SimpleNamespace(
        outcomes=[
            _outcome("strong", {"ndcg@10": [0.48, 0.49], "map_r@10": [0.15, 0.151]}),
            _outcome("half", {"ndcg@10": [0.48, 0.48], "map_r@10": [0.14, 0.14]}),
        ],
        config=SimpleNamespace(evaluation=SimpleNamespace(confidence=0.95)),
    )
    table = report.msr_table(result)
    assert table["model"].tolist()[:2] == ["strong", "half"]
    assert table["beats published best"].tolist() == ["yes", "no", "-"]
    assert table.iloc[-1]["ndcg@10"] == report.MSR_PUBLISHED["ndcg@10"]
    text = report.format_intervals(table)
    assert text.loc[0, "ndcg@10"].startswith("0.4850 [")


def test_seed_spread_is_mean_and_sample_std_over_seeds():
    outcomes = [
        _outcome("one_seed", {"ndcg@10": [0.30]}),
        _outcome("three_seeds", {"ndcg@10": [0.40, 0.42, 0.47]}),
    ]
    table = report.seed_spread(outcomes, ["ndcg@10"])
    assert table["model"].tolist() == ["three_seeds", "one_seed"]  # sorted by the mean
    assert table.loc[0, "ndcg@10 mean"] == pytest.approx(0.43)
    # sample std: sqrt(((-0.03)^2 + (-0.01)^2 + 0.04^2) / 2) = sqrt(0.0013)
    assert table.loc[0, "ndcg@10 std"] == pytest.approx(np.sqrt(0.0013))
    assert table.loc[1, "seeds"] == 1 and np.isnan(table.loc[1, "ndcg@10 std"])


def test_find_items_by_title():
    items = pd.DataFrame({C.ITEM: [1, 2, 3], C.TITLE: ["Alien", "Aliens", "Star Wars"]})
    assert report.find_items(items, ["alien", "star"]) == [1, 3]  # exact first, then contains
    with pytest.raises(ValueError, match="no catalogue item has a title like 'Casablanca'"):
        report.find_items(items, ["Casablanca"])


@pytest.mark.slow
def test_the_msr_benchmark_table_of_the_readme_is_reproduced():
    """Full MovieLens-100K, the MS Recommenders protocol, 5 split seeds (about a minute): the
    README's table (``personalize msr experiments/ml100k_msr.yaml``), to 4 decimals."""
    from pathlib import Path

    experiment = Path(__file__).parents[1] / "experiments" / "ml100k_msr.yaml"
    table = report.msr_report(experiment, ["data.write_processed=false"], track=False, echo=None)
    rows = table.set_index("model")
    readme = {
        "ease+itemknn+genres": (0.4828, 0.1500),
        "ease": (0.4796, 0.1475),
        "als": (0.4455, 0.1365),
        "itemknn": (0.4398, 0.1314),
    }
    for model, (ndcg, map_r) in readme.items():
        assert rows.loc[model, "ndcg@10"] == pytest.approx(ndcg, abs=5e-5), model
        assert rows.loc[model, "map_r@10"] == pytest.approx(map_r, abs=5e-5), model
    assert rows.loc["ease+itemknn+genres", "beats published best"] == "yes"
