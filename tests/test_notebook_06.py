"""Notebook 06 runs quietly on a user sample (the replay, one user's story, latency) and its
findings quote the numbers it recorded."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, images, run_notebook

TINY = {
    "overrides": [
        "data.sample_users=150",
        "replay.retrain_days=[14]",
        "replay.popularity_half_life_days=[7]",
        "models=[{type: ease, params: {l2: 250}}, {type: als, params: {iterations: 5}}]",
    ],
    "latency_users": 40,
}


def test_real_time_notebook(tmp_path):
    summary, nb = run_notebook("06_real_time.ipynb", TINY, tmp_path)
    assert_quiet(nb)
    assert summary["story_personalised_after_first"] is True
    assert 0 <= summary["all_foldin"] <= 1 and 0 <= summary["all_popularity"] <= 1
    assert summary["latency_p95_ease"] > 0 and summary["latency_p95_als"] > 0
    assert_findings_quote(nb, summary, ["all_foldin", "all_popularity", "retrain_gain"])
    assert images(nb) >= 2
