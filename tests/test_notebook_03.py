"""notebooks/03_tuning.ipynb runs quietly with tiny parameters (two trials, one epoch), says when
it resumes, and ends with findings that quote its numbers."""

from __future__ import annotations

import mlflow

from notebooks import assert_quiet, findings_text, images, run_notebook

TINY = {
    "trials": 2,
    "max_epochs": 1,
    "sample_users": 60,
    "seeds": [0],
    "models": ["popularity", "recent_popularity", "ease", "als"],
}


def test_tuning_notebook_resumes_and_says_so(tmp_path, tracking_store):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    summary, nb = run_notebook("03_tuning.ipynb", {**TINY, "storage": storage}, tmp_path / "first")
    assert_quiet(nb)
    assert summary["trials"] == 2 and summary["tuned"] == ["recent_popularity", "ease", "als"]
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
    text = findings_text(nb)
    assert "3 models were tuned with the same budget of 2 trials" in text
    assert "Tuning changed" in text and "Holm-adjusted across the 3 tuned models" in text
    assert "Resumed" not in text
    assert images(nb) >= 4
    run = mlflow.MlflowClient(tracking_uri=tracking_store).get_run(summary["session_run_id"])
    assert run.data.tags["personalize.kind"] == "session" and run.info.status == "FINISHED"
    # the same notebook again: the stored studies are resumed, no trial is added, and it says so
    again, nb = run_notebook("03_tuning.ipynb", {**TINY, "storage": storage}, tmp_path / "again")
    assert again["new_trials"] == {"recent_popularity": 0, "ease": 0, "als": 0}
    assert "Resumed from the study storage" in findings_text(nb) and "0 new" in findings_text(nb)
    # fresh: new studies
    _, nb = run_notebook("03_tuning.ipynb", {**TINY, "storage": storage, "fresh": True}, tmp_path / "fresh")
    assert "Resumed" not in findings_text(nb)
