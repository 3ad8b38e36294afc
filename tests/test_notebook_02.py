"""Notebook 02 (collaborative vs content vs hybrid) runs quietly on tiny data, ends with findings
that quote its numbers, and logs its report."""

from __future__ import annotations

import mlflow

from notebooks import assert_findings_quote, assert_quiet, images, run_notebook

TINY = {
    "full": True,  # the peers section too, on a few models
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
    assert_quiet(nb)
    assert sorted(summary["models"]) == sorted(TINY["models"])
    assert summary["families"] == ["baseline", "collaborative", "content", "hybrid"]
    assert summary["best_model"] == summary["models"][0]
    assert set(summary["hybrid_vs_parts_p_holm"]) == {"ease", "content_tfidf"}
    assert summary["cold_users"] > 0 and summary["warm_users"] > 0
    assert summary["cold_vs_train"] >= summary["cold_users"]  # train alone is the smaller reference
    assert summary["cold_fallback_models"] >= 3  # popularity, ease and content answer cold users alike
    assert summary["more_like_this_rows"] == 2 * 3
    assert set(summary["peers"]) == {"ease", "recbole_pop", "recbole_itemknn"}
    assert summary["peers_families"] == ["collaborative", "peer"]
    assert_findings_quote(
        nb, summary, ["best_value", "warm_users", "cold_users", "cold_vs_train", "cold_fallback_value"]
    )
    assert images(nb) >= 3
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    parents = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`personalize.kind` = 'experiment'"
    )
    assert len(parents) == 3  # user_temporal, the cold split and the peers
    logged = {a.path for run in parents for a in client.list_artifacts(run.info.run_id, "report")}
    assert {"report/ndcg_by_family.png", "report/warm_cold.png", "report/hybrid_vs_parts.csv"} <= logged
