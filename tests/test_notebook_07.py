"""Notebook 07 (privacy) runs quietly on small samples: the enumeration attack recovers every
plainly hashed ID and no pseudonym, consent changes what the served model answers, and the scan
after ``forget`` finds nothing; its findings quote the numbers it recorded."""

from __future__ import annotations

from notebooks import assert_findings_quote, assert_quiet, run_notebook

TINY = {"consent_sample_users": 120, "erasure_sample_users": 30, "candidates": 2_000}


def test_privacy_notebook(tmp_path):
    summary, nb = run_notebook("07_privacy.ipynb", TINY, tmp_path)
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
        ],
    )
