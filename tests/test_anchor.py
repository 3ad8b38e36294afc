"""The sanity anchor: RecBole's default protocol reproduced on full MovieLens-100K.

RecBole 1.2.1 under its own defaults (per-user random 80/10/10, full ranking, no refit) gave
NDCG@10 ItemKNN 0.283 and EASE 0.330 on this machine. The same protocol here
(``experiments/ml100k_anchor.yaml``: user_stratified, split seeds 0-2, ``recbole`` metrics,
RecBole's hyperparameters) must land within 0.02; a larger gap would mean a bug in the split,
the masking or the metric. (Pop and BPR differ by implementation: see tests/test_peers.py and
the README.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from personalize.recipe import load_experiment, run_experiment
from personalize.reports.comparison import select_models

ANCHOR = Path(__file__).parents[1] / "experiments" / "ml100k_anchor.yaml"
RECBOLE_NDCG_AT_10 = {"itemknn": 0.283, "ease": 0.330}


def test_itemknn_and_ease_reproduce_recboles_numbers_under_its_protocol():
    config = select_models(load_experiment(ANCHOR, ["data.write_processed=false"]), ["itemknn", "ease"])
    assert config.split.name == "user_stratified" and config.evaluation.mode == "recbole"
    assert not config.training.refit and config.seeds == [0, 1, 2]
    result = run_experiment(config, track=False, progress=False, echo=None)
    for outcome in result.outcomes:
        assert len(outcome.seeds) == 3  # one split per seed: the mean is over three splits
        mean = sum(s.test.metric("ndcg@10") for s in outcome.seeds) / 3
        assert mean == pytest.approx(RECBOLE_NDCG_AT_10[outcome.label], abs=0.02), outcome.label
