"""Notebook 02 (collaborative vs content vs hybrid) runs end to end on tiny data and logs its report."""

from __future__ import annotations

import mlflow

from notebooks import run_notebook

TINY = {
    "overrides": ["data.sample_users=100", "seeds=[0]"],
    "models": ["popularity", "recent_popularity", "ease", "content_tfidf", "ease+tfidf"],
    "hybrid": "ease+tfidf",
    "hybrid_parts": ["ease", "content_tfidf"],
    "mlt_titles": ["Star Wars", "Toy Story"],
    "mlt_vectors": "tfidf",
    "mlt_k": 3,
    "peers_overrides": ["data.sample_users=100", "seeds=[0]"],
    "peers_models": ["ease", "recbole_pop", "recbole_itemknn"],
}


def test_model_comparison_notebook(tmp_path, tracking_store):
    summary, nb = run_notebook("02_model_comparison.ipynb", TINY, tmp_path)
    assert summary["models"] == 5
    assert summary["families"] == ["baseline", "collaborative", "content", "hybrid"]
    parts = summary["parts_ndcg@10"]
    assert set(parts) == {"ease", "content_tfidf"} and set(summary["hybrid_p"]) == set(parts)
    assert 0 <= parts["content_tfidf"] < parts["ease"] <= 1  # collaborative beats content-only
    assert all(0 <= p <= 1 for p in summary["hybrid_p"].values())
    assert summary["cold_users"] > 0 and summary["warm_users"] > 0
    assert summary["more_like_this_rows"] == 2 * 3
    # RecBole's models ran on the same split and were scored by our evaluator
    assert summary["peers_models"] and set(summary["peers_models"]) == {
        "ease",
        "recbole_pop",
        "recbole_itemknn",
    }
    assert summary["peers_families"] == ["collaborative", "peer"]
    peer_scores = summary["peers_ndcg@10"]
    assert all(0 < v <= 1 for v in peer_scores.values())
    assert peer_scores["recbole_itemknn"] > peer_scores["recbole_pop"]
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 5
    # the figures and tables went to MLflow with the runs
    assert summary["tracked"]
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`personalize.kind` = 'experiment'"
    )
    assert len(parents) == 3  # user_temporal, the cold split and the peers
    logged = {a.path for run in parents for a in client.list_artifacts(run.info.run_id, "report")}
    assert {
        "report/leaderboard.png",
        "report/more_like_this.png",
        "report/warm_cold.png",
        "report/seed_spread.csv",
    } <= logged
