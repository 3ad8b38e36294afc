"""Notebook 07 (privacy) runs quietly on small samples: the enumeration attack recovers every
plainly hashed ID and no pseudonym, consent changes what the served model answers, and the scan
after ``forget`` finds nothing; the differential-privacy section reads the curve logged in MLflow
(here the tiny curve, logged first) without recomputing it; its findings quote the numbers it
recorded."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, run_notebook
from personalize.privacy.dp import tiny_config
from personalize.recipe import run_experiment
from personalize.tracking.curve import latest_curve

TINY = {"consent_sample_users": 120, "erasure_sample_users": 30, "candidates": 2_000}


def test_privacy_notebook(tmp_path, tracking_store):
    config = tiny_config()
    run_experiment(config, echo=None, progress=False)
    logged = latest_curve(config.name, tracking_store)
    params = {**TINY, "privacy_experiment": config.name, "run_tiny_if_missing": False}
    summary, nb = run_notebook("07_privacy.ipynb", params, tmp_path)
    # read back, not recomputed: still one curve run in the store, and the notebook quotes it
    assert latest_curve(config.name, tracking_store).run_id == logged.run_id
    t = logged.table
    ease = t[(t["model"] == "dp_ease") & (t["point"] == "non-private")]["ndcg@10"].iloc[0]
    assert summary["ease_non_private"] == round(float(ease), 4)
    assert summary["attack_over_ceiling"] == 0
    assert_quiet(nb)
    assert summary["hash_ids"] == 943 and summary["hash_recovered"] == 943
    assert summary["hmac_recovered"] == 0
    assert summary["k_before"] == 1 and summary["k_after"] >= summary["k_before"]
    assert summary["small_users_after"] < summary["small_users_before"] == 943
    assert summary["consent_users"] == 120
    assert 0 < summary["no_training_users"] < 120 and summary["no_consent_interactions"] > 0
    assert summary["no_personalisation_users"] > 0
    assert summary["erasure_found_before"] > 0 and summary["erasure_found_after"] == 0
    assert summary["erasure_rows_removed"] > 0 and summary["erasure_runs_rewritten"] > 0
    assert summary["erasure_cached_answer_deleted"] is True
    assert summary["epsilon_total_best_at_8"] == 8.0  # the tiny curve: one grid point, one seed
    assert_findings_quote(
        nb,
        summary,
        [
            "hash_ids",
            "hash_recovered",
            "hmac_recovered",
            "k_before",
            "unique_before",
            "small_users_before",
            "k_after",
            "small_users_after",
            "consent_users",
            "no_training_users",
            "no_consent_interactions",
            "no_personalisation_users",
            "erasure_found_before",
            "erasure_found_after",
            "erasure_rows_removed",
            "erasure_runs_rewritten",
            "ease_non_private",
            "best_at_8_value",
        ],
    )
