"""Notebook 08 runs quietly on a small generated log (its structure, the models against the
generator's ceiling, the scale benchmark's growth) and its findings quote the numbers it recorded."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, images, run_notebook


def test_scale_notebook(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))  # the generated log's cache
    summary, nb = run_notebook("08_scale.ipynb", {"interactions": 30_000}, tmp_path)
    assert_quiet(nb)
    assert -2.0 < summary["popularity_slope"] < -0.3  # a power law's body
    assert 0 < summary["popularity_ndcg"] < summary["best_ndcg"] < summary["oracle_ndcg"] < 1
    assert summary["best_model"] in {"als", "itemknn"}
    assert summary["e2e_minutes"] > 0 and summary["e2e_peak_gib"] > 0  # read from the benchmark
    assert_findings_quote(nb, summary, ["popularity_slope", "best_ndcg", "popularity_ndcg", "oracle_ndcg"])
    assert images(nb) >= 2
    assert not (tmp_path / "data" / "processed").exists()
