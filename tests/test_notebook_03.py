"""notebooks/03_tuning.ipynb runs end to end with tiny parameters (two trials, one epoch)."""

from __future__ import annotations

import mlflow

from notebooks import run_notebook


def test_tuning_notebook(tmp_path, tracking_store):
    parameters = {
        "trials": 2,
        "max_epochs": 1,
        "sample_users": 60,
        "seeds": [0],
        "models": ["popularity", "recent_popularity", "ease", "als"],
        "storage": "memory",
    }
    summary, nb = run_notebook("03_tuning.ipynb", parameters, tmp_path)
    assert summary["trials"] == 2
    assert summary["tuned"] == ["recent_popularity", "ease", "als"]
    assert summary["finished_per_model"] == {"recent_popularity": 2, "ease": 2, "als": 2}  # equal budget
    assert set(summary["leaderboard"]) == {
        "popularity",
        "recent_popularity",
        "recent_popularity (default)",
        "ease",
        "ease (default)",
        "als",
        "als (default)",
    }
    assert summary["best_model"] == summary["leaderboard"][0]
    assert 0.0 < summary["best_test_ndcg"] < 1.0
    assert set(summary["significant_vs_best"]) <= set(summary["leaderboard"][1:])
    assert all(0.0 <= p <= 1.0 for p in summary["tuned_vs_default_p"].values())
    # history for each tuned model, importances where defined, intervals plot
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 5
    # the session was logged to the store the tests use
    run = mlflow.MlflowClient(tracking_uri=tracking_store).get_run(summary["session_run_id"])
    assert run.data.tags["personalize.kind"] == "session" and run.info.status == "FINISHED"
