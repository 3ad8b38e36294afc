"""Notebook 05 runs quietly on a user sample (the study, the classifier, both splits by segment) and
its findings quote the numbers it recorded."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, images, run_notebook

TINY = {
    "overrides": [
        "data.sample_users=150",
        "segments.clustering.ks=[2,3,4]",
        "segments.clustering.choose_from=[2,4]",
        "segments.clustering.bootstrap=3",
        "segments.clustering.n_init=3",
        "segments.autoencoder.epochs=2",
    ],
}


def test_segments_notebook(tracking_store, tmp_path):
    summary, nb = run_notebook("05_segments.ipynb", TINY, tmp_path)
    assert_quiet(nb)
    assert summary["k"] in (2, 3, 4) and summary["segments"] == summary["k"]
    assert -1 <= summary["silhouette"] <= 1 and 0 <= summary["bootstrap_ari"] <= 1
    assert 0 <= summary["macro_f1_n5"] <= 1 and 0 <= summary["macro_f1_demographics"] <= 1
    assert "user_temporal_routing_difference" in summary
    assert "global_temporal_cold_segment_popularity" in summary
    assert_findings_quote(
        nb, summary, ["user_temporal_routing_difference", "global_temporal_cold_segment_popularity"]
    )
    assert images(nb) >= 8
