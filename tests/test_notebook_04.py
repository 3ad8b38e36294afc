"""Notebook 04 runs quietly on tiny data (export, load, recommend, the registry) and, run twice,
leaves one registry version and says why."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, findings_text, images, run_notebook

TINY = {
    "sample_users": 60,
    "overrides": ["seeds=[0]"],
    "models": [{"type": "random"}, {"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
    "registered_model": "notebook-recommender",
    "k": 8,
}


def test_export_and_serve_notebook_twice(tracking_store, tmp_path):
    summary, nb = run_notebook("04_export_and_serve.ipynb", TINY, tmp_path / "first")
    assert_quiet(nb)
    assert summary["champion"] in ("popularity", "ease")  # never random
    assert summary["version"] == "1" and summary["versions"] == 1 and summary["unchanged"] is False
    assert summary["demo_rows"] == 8 and summary["demo_personalised"] and summary["demo_seen"] == 0
    assert summary["demo_unknown_personalised"] is False
    assert_findings_quote(nb, summary, ["valid_value", "demo_history", "demo_rows"])
    assert images(nb) >= 1
    again, nb = run_notebook("04_export_and_serve.ipynb", TINY, tmp_path / "again")
    assert again["champion"] == summary["champion"]
    assert again["unchanged"] is True and again["versions"] == 1  # the same state: no new version
    assert "The champion is unchanged: version 1" in findings_text(nb)
