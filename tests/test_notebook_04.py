"""Notebook 04 runs end to end on tiny data: export, load, recommend, inspect the registry."""

from __future__ import annotations

from notebooks import run_notebook


def test_export_and_serve_notebook(tracking_store, tmp_path):
    summary, nb = run_notebook(
        "04_export_and_serve.ipynb",
        {
            "sample_users": 60,
            "overrides": ["seeds=[0]"],
            "models": [{"type": "random"}, {"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
            "registered_model": "notebook-recommender",
            "k": 8,
        },
        tmp_path,
    )
    assert summary["champion"] in ("popularity", "ease")  # never random
    assert summary["version"] == "1" and summary["versions"] == 1
    assert summary["known_rows"] == 8 and summary["known_personalised"]
    assert summary["known_seen_recommended"] == 0
    assert summary["unknown_personalised"] is False
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 2
