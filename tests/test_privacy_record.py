"""The record of processing and the notice to end users: generated from the config, logged with runs."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core.errors import DataError
from personalize.data.records import FORGET
from personalize.privacy.record import (
    NOTICE_ARTIFACT,
    RECORD_ARTIFACT,
    data_categories,
    privacy_notice,
    record_of_processing,
    redact_url,
)
from personalize.recipe import load_experiment, run_experiment

KEY = "9f1c5e7a2b4d6f80a1c3e5f7091b2d4f6e8a0c2e4f6a8b0d"
SUPPRESSION_KEY = "5a3b1c9d7e5f3a1b9c7d5e3f1a9b7c5d3e1f9a7b"
RECORD = {
    "controller": "Acme Streaming Ltd",
    "purposes": {
        "training": "improving our recommendation models",
        "personalisation": "showing you films picked for you",
        "analytics": "counting how many people use each feature",
    },
    "legal_basis": "legitimate interests (Art. 6(1)(f) GDPR)",
    "retention_days": 180,
    "contact": "privacy@acme.example",
}


def _config(**extra):
    data = {
        "name": "privacy-demo",
        "data": {
            "sample_users": 60,
            "write_processed": False,
            "privacy": {
                "pseudonymise": True,
                "key": {"env": "ACME_PSEUDONYM_KEY", "file": "/etc/acme/pseudonym.key"},
                "suppression_key": {"env": "ACME_SUPPRESSION_KEY"},
                "record": RECORD,
            },
        },
        "models": [{"type": "popularity"}],
        "tracking": {"uri": "http://alice:tracking-password@mlflow.acme.example:5000"},
        "export": {"registered_model": "acme-films"},
        "online": {"redis_url": "redis://:redis-password@redis.acme.example:6379/2", "namespace": "acme"},
        **extra,
    }
    return load_experiment(data=data)


def test_record_names_every_store_purpose_and_basis():
    text = record_of_processing(_config())
    assert "Acme Streaming Ltd" in text and "privacy@acme.example" in text
    assert "legitimate interests (Art. 6(1)(f) GDPR)" in text
    assert "180 days" in text
    for purpose, what in RECORD["purposes"].items():
        assert f"`{purpose}`: {what}" in text
    # ML-100K's categories, from the embedded files' headers
    for column in ("age", "gender", "occupation", "zip_code", "rating", "timestamp", "item_id"):
        assert f"`{column}`" in text
    assert "ratings with timestamps" in text
    # every store, where it is, and its erasure
    for heading in (
        "### Processed data",
        "### MLflow tracking store",
        "### Exported models",
        "### Online store",
    ):
        section = text.split(heading, 1)[1].split("###", 1)[0]
        assert "**Where:**" in section
        assert f"**Erasure:** `{FORGET}`" in section
    assert "`data/processed/ml-100k/`" in text
    assert "mlflow.acme.example:5000" in text
    assert "acme-films" in text and "seen items" in text
    assert "redis.acme.example:6379/2" in text and "`acme:events`" in text and "`acme:dead`" in text
    for artifact in ("split/", "recommendations.parquet", "per_user_metrics.parquet"):
        assert artifact in text
    # URL passwords are never shown
    assert "tracking-password" not in text and "redis-password" not in text


def test_record_and_notice_hold_key_names_never_values(monkeypatch):
    monkeypatch.setenv("ACME_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("ACME_SUPPRESSION_KEY", SUPPRESSION_KEY)
    config = _config()
    record, notice = record_of_processing(config), privacy_notice(config)
    assert "ACME_PSEUDONYM_KEY" in record and "/etc/acme/pseudonym.key" in record
    assert "ACME_SUPPRESSION_KEY" in record
    assert "On: user IDs are replaced at ingestion" in record
    for text in (record, notice):
        assert KEY not in text and SUPPRESSION_KEY not in text
        assert KEY[:16] not in text and SUPPRESSION_KEY[:16] not in text


def test_defaults_state_pseudonymisation_off_and_missing_consent_table():
    config = load_experiment(data={"name": "plain", "models": [{"type": "popularity"}]})
    text = record_of_processing(config)
    assert "Off: user IDs are stored as they appear in the input." in text
    assert "No consent table configured" in text
    assert "**Check:** the legal basis names consent" in text  # default basis is consent
    assert "`MLFLOW_TRACKING_URI` when set" in text
    assert "embedded Redis" in text and "`plain-data`" not in text
    assert "`ml-100k-recommender`" in text


def test_categories_follow_the_configured_files(tmp_path):
    (tmp_path / "users.csv").write_text("customer,age,sex,postcode,loyalty_tier\nc1,34,F,75011,gold\n")
    (tmp_path / "events.csv").write_text("customer,sku,action,ts\nc1,i1,view,2024-01-01T00:00:00Z\n")
    (tmp_path / "consent.csv").write_text("user_id,purpose,granted,timestamp\n")
    config = load_experiment(
        data={
            "name": "shop",
            "data": {
                "source": "files",
                "users": {
                    "path": str(tmp_path / "users.csv"),
                    "columns": {"user_id": "customer", "gender": "sex", "zip_code": "postcode"},
                },
                "interactions": {
                    "path": str(tmp_path / "events.csv"),
                    "columns": {
                        "user_id": "customer",
                        "item_id": "sku",
                        "event": "action",
                        "timestamp": "ts",
                    },
                },
                "events": {"view": {"weight": 0.2}, "purchase": {"weight": 1.0}},
                "privacy": {
                    "consent": str(tmp_path / "consent.csv"),
                    "coarsen": {"age_band_years": 10, "zip_digits": 2, "drop": ["gender"]},
                },
            },
            "models": [{"type": "popularity"}],
        }
    )
    cats = {(c.table, c.column): c for c in data_categories(config.data)}
    assert {col for table, col in cats if table == "users"} == {"age", "gender", "zip_code", "loyalty_tier"}
    assert "coarsened to 10-year bands" in cats["users", "age"].notes
    assert "coarsened to its first 2 characters" in cats["users", "zip_code"].notes
    assert "dropped at ingestion (not stored)" in cats["users", "gender"].notes
    assert cats["users", "loyalty_tier"].notes == ()  # not a quasi-identifier
    events = cats["interactions (events)", "(events)"].description
    assert "`view`" in events and "`purchase`" in events
    assert ("consent", "user_id, purpose, granted, timestamp") in cats
    record = record_of_processing(config)
    assert "`consent.parquet`" in record and "**Check:**" not in record
    notice = privacy_notice(config)
    assert "your age" in notice and "your loyalty tier" in notice and "your gender" not in notice
    assert "what kind of action it was" in notice

    (tmp_path / "users.csv").unlink()
    with pytest.raises(DataError, match=r"users file not found: .*users\.csv"):
        data_categories(config.data)


def test_notice_is_plain_language_with_rights_and_contact():
    notice = privacy_notice(_config())
    assert notice.startswith("# How we use your data")
    assert "Acme Streaming Ltd uses information about you" in notice
    for right in ("**See your data:**", "**Have your data deleted:**", "**Withdraw your consent:**"):
        assert right in notice
    assert "Contact: privacy@acme.example" in notice
    assert "180 days" in notice
    assert "- Showing you films picked for you." in notice
    for jargon in ("HMAC", "MLflow", "Redis", "parquet", "pseudonym", "quasi", "artifact", "suppression"):
        assert jargon.lower() not in notice.lower(), jargon


def test_redact_url():
    assert redact_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redact_url("https://bob:pw@mlflow.example/") == "https://bob:***@mlflow.example/"
    assert redact_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_cli_writes_record_and_notice(tmp_path):
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(
        "name: cli-demo\nmodels: [{type: popularity}]\n"
        "data:\n  privacy:\n    record:\n      contact: dpo@example.org\n      retention_days: 90\n"
    )
    out = tmp_path / "records"
    result = CliRunner().invoke(app, ["privacy", "record", str(experiment), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record, notice = (out / "record.md").read_text(), (out / "notice.md").read_text()
    assert record.startswith("# Record of processing: cli-demo") and "90 days" in record
    assert "Contact: dpo@example.org" in notice
    assert str(out / "record.md") in result.output

    bad = CliRunner().invoke(app, ["privacy", "record", str(tmp_path / "missing.yaml")])
    assert bad.exit_code == 2


def test_tracked_run_logs_record_and_notice(tracking_store, tmp_path):
    config = load_experiment(
        data={
            "name": "record-run",
            "seeds": [0],
            "data": {"sample_users": 60, "write_processed": False, "privacy": {"record": RECORD}},
            "models": [{"type": "popularity"}],
        }
    )
    result = run_experiment(config, progress=False, echo=None)
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "privacy")}
    assert logged == {RECORD_ARTIFACT, NOTICE_ARTIFACT}
    folder = tmp_path / "downloaded"
    folder.mkdir()
    record = Path(client.download_artifacts(result.parent_run_id, RECORD_ARTIFACT, str(folder))).read_text()
    notice = Path(client.download_artifacts(result.parent_run_id, NOTICE_ARTIFACT, str(folder))).read_text()
    assert record == record_of_processing(config)
    assert notice == privacy_notice(config)
    assert "Acme Streaming Ltd" in record
