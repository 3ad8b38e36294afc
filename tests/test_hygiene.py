"""The data hygiene audit: each check on small data with a known answer, severities, the run
stopping before fitting, ML-100K's facts, the CLI and tracking."""

from __future__ import annotations

import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from personalize.cli import app
from personalize.config.audit import AuditConfig
from personalize.core import columns as C
from personalize.core.errors import AuditFailed, ConfigError, PersonalizeError
from personalize.data import DataConfig, TableSource, ingest
from personalize.data.hygiene import audit_dataset
from personalize.data.ingest import Dataset, IngestReport
from personalize.recipe import load_experiment, run_experiment

ROOT = Path(__file__).parents[1]
T0 = 1_600_000_000  # 2020-09-13 12:26:40 UTC, in epoch seconds


def _files(tmp_path: Path, inter: str, items: str | None = None, users: str | None = None, **kw) -> Dataset:
    """Ingest small CSV tables (the way users feed their own data)."""
    (tmp_path / "inter.csv").write_text(inter)
    tables = {}
    for role, text in (("items", items), ("users", users)):
        if text is not None:
            (tmp_path / f"{role}.csv").write_text(text)
            tables[role] = TableSource(path=tmp_path / f"{role}.csv")
    config = DataConfig(
        source="files",
        name="hand",
        interactions=TableSource(path=tmp_path / "inter.csv"),
        write_processed=False,
        **tables,
        **kw,
    )
    return ingest(config)


def _frames(inter: pd.DataFrame, users=None, items=None) -> Dataset:
    """A Dataset straight from frames (to hold what ingestion would never produce)."""
    users = users if users is not None else pd.DataFrame({C.USER: inter[C.USER].drop_duplicates()})
    items = items if items is not None else pd.DataFrame({C.ITEM: inter[C.ITEM].drop_duplicates()})
    return Dataset("frames", inter, users, items, pd.DataFrame(), IngestReport(), "0" * 64)


def _events(users, items, seconds, ratings=None) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            C.USER: np.asarray(users, dtype=np.int64),
            C.ITEM: np.asarray(items, dtype=np.int64),
            C.TIMESTAMP: pd.to_datetime(np.asarray(seconds, dtype=np.int64), unit="s", utc=True),
        }
    )
    if ratings is not None:
        frame[C.RATING] = np.asarray(ratings, dtype=float)
    return frame


def _only(name: str, **cfg) -> AuditConfig:
    """Every check off but ``name`` (configured with ``cfg``)."""
    base = AuditConfig()
    off = {f: {"severity": "off"} for f in AuditConfig.model_fields if f != "show_rows"}
    current = getattr(base, name).model_dump()
    return AuditConfig.model_validate({**off, name: {**current, **cfg}})


# ------------------------------------------------------------------------------ each check


def test_completeness_lists_columns_below_the_share(tmp_path):
    data = _files(
        tmp_path,
        f"user_id,item_id,timestamp\nu1,m1,{T0}\nu2,m2,{T0}\nu3,m1,{T0}\nu4,m2,{T0}\n",
        items="item_id,title,genres\nm1,Alpha,Drama\nm2,Beta,\n",
        users="user_id,age,gender\nu1,30,F\nu2,,M\nu3,,F\nu4,41,M\n",
    )
    audit = audit_dataset(data, _only("completeness", min_share=0.8))
    flag = audit.flag("completeness")
    assert flag.status == "warn" and flag.count == 2
    rows = flag.rows.set_index(["table", "column"])
    assert rows.loc[("users", C.AGE), "complete_share"] == 0.5
    assert rows.loc[("users", C.AGE), "examples"] == "u2, u3"
    assert rows.loc[("items", C.GENRES), "missing"] == 1  # an empty list is missing
    assert ("users", C.GENDER) not in rows.index
    assert audit_dataset(data, _only("completeness", min_share=0.5)).flag("completeness").status == "ok"


def test_completeness_judges_interaction_values_within_event_types():
    inter = _events([1, 1, 2, 2], [1, 2, 1, 2], [T0] * 4, ratings=[4, np.nan, np.nan, np.nan])
    inter[C.EVENT] = pd.array(["purchase", "view", "purchase", "view"], dtype="string")
    flag = audit_dataset(_frames(inter), _only("completeness")).flag("completeness")
    # views never carry a rating (not incomplete); purchases miss one of two
    assert flag.rows[["column", "scope", "missing", "rows"]].to_dict("records") == [
        {"column": C.RATING, "scope": "event=purchase", "missing": 1, "rows": 2}
    ]
    assert flag.rows.loc[0, "examples"] == "2:1"


def test_types_lists_columns_of_the_wrong_type():
    inter = _events([1, 2], [1, 2], [T0, T0])
    inter[C.RATING] = ["4", "five"]  # text, not numbers
    inter[C.TIMESTAMP] = inter[C.TIMESTAMP].dt.tz_localize(None)  # naive, not UTC
    users = pd.DataFrame({C.USER: pd.array(["1", "2"], dtype="string")})  # IDs text here, integers there
    flag = audit_dataset(_frames(inter, users=users), _only("types")).flag("types")
    assert set(map(tuple, flag.rows[["table", "column"]].to_numpy())) == {
        ("interactions", C.RATING),
        ("interactions", C.TIMESTAMP),
        ("users", C.USER),
    }
    assert flag.status == "warn"


def test_ranges_list_implausible_values(tmp_path):
    data = _files(
        tmp_path,
        f"user_id,item_id,timestamp\n1,1,{T0}\n2,2,{T0}\n3,2,{T0}\n",
        items="item_id,year\n1,1850\n2,1999\n",
        users="user_id,age\n1,3\n2,30\n3,101\n",
    )
    flag = audit_dataset(data, _only("ranges")).flag("ranges")
    found = {(r["table"], r["column"], r["value"]) for r in flag.rows.to_dict("records")}
    assert found == {("users", C.AGE, 3.0), ("users", C.AGE, 101.0), ("items", C.YEAR, 1850.0)}
    assert flag.rows.loc[flag.rows["column"] == C.AGE, C.USER].tolist() == [1, 3]
    open_top = audit_dataset(data, _only("ranges", bounds={"age": [None, 200]})).flag("ranges")
    assert open_top.count == 0 and open_top.threshold == "age in [-inf, 200]"
    with pytest.raises(ValueError, match="low 9 is above high 1"):
        AuditConfig.model_validate({"ranges": {"bounds": {"age": [9, 1]}}})


def test_seconds_read_as_milliseconds_fail_the_audit(tmp_path):
    inter = "".join(f"u{i % 3},m{i % 2},{T0 + 60 * i}\n" for i in range(6))
    data = _files(tmp_path, "user_id,item_id,timestamp\n" + inter, timestamp={"epoch_unit": "ms"})
    assert data.interactions[C.TIMESTAMP].max() < pd.Timestamp("1970-02-01", tz="UTC")  # ingested
    audit = audit_dataset(data, AuditConfig())
    flag = audit.flag("epoch_timestamps")
    assert (flag.status, flag.count, flag.severity) == ("fail", 6, "fail")
    assert flag.note.startswith("100.00% of interactions")
    assert audit.metrics()["audit_failed"] == 1
    with pytest.raises(AuditFailed, match=r"epoch_timestamps: 6 interactions \(timestamp >= 1971-01-01\)"):
        audit.raise_if_failed()
    assert issubclass(AuditFailed, PersonalizeError)
    # warn: listed, the run goes on; off: not run, no metric
    warned = audit_dataset(data, AuditConfig.model_validate({"epoch_timestamps": {"severity": "warn"}}))
    assert warned.flag("epoch_timestamps").status == "warn" and not warned.failed
    warned.raise_if_failed()
    off = audit_dataset(data, AuditConfig.model_validate({"epoch_timestamps": {"severity": "off"}}))
    assert off.flag("epoch_timestamps").status == "off" and off.flag("epoch_timestamps").count == 0
    assert "audit_epoch_timestamps_count" not in off.metrics() and off.metrics()["audit_failed"] == 0


def test_interactions_before_the_release_year():
    year = lambda y: int(pd.Timestamp(f"{y}-06-01", tz="UTC").timestamp())  # noqa: E731
    inter = _events([1, 1, 2], [1, 1, 2], [year(1998), year(1999), year(1990)])
    items = pd.DataFrame({C.ITEM: [1, 2], C.YEAR: [2000.0, np.nan]})
    flag = audit_dataset(_frames(inter, items=items), _only("before_release")).flag("before_release")
    assert flag.rows[[C.USER, C.ITEM, C.YEAR]].to_dict("records") == [{C.USER: 1, C.ITEM: 1, C.YEAR: 2000.0}]
    strict = _only("before_release", tolerance_years=0)
    assert audit_dataset(_frames(inter, items=items), strict).flag("before_release").count == 2


def test_extreme_activity_by_robust_z_and_by_quantile():
    counts = {u: 20 + u % 5 for u in range(40)} | {99: 3000}  # one user far outside the bulk
    users = np.repeat(list(counts), list(counts.values()))
    inter = _events(users, np.arange(len(users)) % 50, T0 + np.arange(len(users)) * 3600)
    data = _frames(inter)
    flag = audit_dataset(data, _only("extreme_activity")).flag("extreme_activity")
    assert flag.rows[C.USER].tolist() == [99] and flag.rows["interactions"].tolist() == [3000]
    assert flag.rows["distinct_items"].tolist() == [50]
    # x = log counts: median log(22), MAD of the logs -> threshold exp(median + 3.5 * MAD / 0.6745)
    logs = np.log(list(counts.values()))
    mad = np.median(np.abs(logs - np.median(logs)))
    limit = np.exp(np.median(logs) + 3.5 * mad / 0.6745)
    assert flag.plot["limit"] == pytest.approx(limit)
    linear = audit_dataset(data, _only("extreme_activity", scale="linear", k=2.0)).flag("extreme_activity")
    assert set(linear.rows[C.USER]) == {99}  # 24 is 1.35 robust sigmas above the median 22
    quantile = audit_dataset(data, _only("extreme_activity", method="quantile", quantile=0.75))
    assert set(quantile.flag("extreme_activity").rows[C.USER]) == {99} | {u for u in range(40) if u % 5 == 4}


def test_extreme_activity_when_most_users_are_alike():
    """MAD 0 (most counts equal): the scale falls back to the mean absolute deviation."""
    counts = {u: 10 for u in range(30)} | {50: 11, 51: 400}
    users = np.repeat(list(counts), list(counts.values()))
    inter = _events(users, np.zeros(len(users)), T0 + np.arange(len(users)) * 3600)
    flag = audit_dataset(_frames(inter), _only("extreme_activity")).flag("extreme_activity")
    assert flag.rows[C.USER].tolist() == [51]


def test_bursts_on_a_known_case():
    # user 1: two runs of 5 within 160 s, 90 s apart: every 5 in a row lie within 210 s, so with
    # a 4-minute window all windows chain into one burst of 10; with 3 minutes only the two runs
    # qualify, and they do not overlap. user 2: 5 over an hour; user 3: 4 within 30 s (< 5).
    one = [T0 + 40 * i for i in range(5)] + [T0 + 250 + 40 * i for i in range(5)]
    two = [T0 + 900 * i for i in range(5)]
    three = [T0 + 10 * i for i in range(4)]
    inter = _events([1] * 10 + [2] * 5 + [3] * 4, range(19), one + two + three).sort_values(C.TIMESTAMP)
    flag = audit_dataset(_frames(inter), _only("bursts", interactions=5, minutes=4)).flag("bursts")
    assert flag.rows[[C.USER, "interactions"]].to_dict("records") == [{C.USER: 1, "interactions": 10}]
    assert flag.rows.loc[0, "minutes"] == pytest.approx((one[-1] - one[0]) / 60)
    assert flag.rows.loc[0, "start"] == pd.Timestamp(T0, unit="s", tz="UTC")
    assert flag.plot["daily_burst"].sum() == 10
    split = audit_dataset(_frames(inter), _only("bursts", interactions=5, minutes=3)).flag("bursts")
    assert split.rows["interactions"].tolist() == [5, 5]
    assert split.rows["minutes"].tolist() == pytest.approx([160 / 60, 160 / 60])


def _plain_bursts(inter: pd.DataFrame, n: int, seconds: float) -> set[tuple]:
    """Bursts by a plain loop over each user's sorted times (what the vectorised sweep must match)."""
    found = set()
    for user, group in inter.groupby(C.USER):
        t = np.sort(group[C.TIMESTAMP].dt.as_unit("s").astype("int64").to_numpy())
        ok = [i for i in range(len(t) - n + 1) if t[i + n - 1] - t[i] <= seconds]
        runs: list[list[int]] = []
        for i in ok:
            if runs and i <= runs[-1][1]:
                runs[-1][1] = i + n - 1
            else:
                runs.append([i, i + n - 1])
        found |= {(user, int(t[a]), b - a + 1) for a, b in runs}
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bursts_match_a_plain_loop(seed):
    rng = np.random.default_rng(seed)
    parts = []
    for user in range(60):
        spread = rng.integers(0, 14 * 86400, rng.integers(5, 80))
        start = rng.integers(0, 14 * 86400)
        clustered = start + np.cumsum(rng.integers(0, 90, rng.integers(0, 40)))
        times = np.concatenate([spread, clustered])
        parts.append(_events([user] * len(times), rng.integers(0, 30, len(times)), T0 + times))
    inter = pd.concat(parts, ignore_index=True).sample(frac=1, random_state=seed)  # any row order
    data = _frames(inter.reset_index(drop=True))
    for n, minutes in ((8, 5), (15, 10), (3, 0.5)):
        flag = audit_dataset(data, _only("bursts", interactions=n, minutes=minutes)).flag("bursts")
        got = {
            (r[C.USER], int(r["start"].timestamp()), r["interactions"]) for r in flag.rows.to_dict("records")
        }
        assert got and got == _plain_bursts(inter, n, minutes * 60), (n, minutes)


def test_items_rated_only_by_flagged_users():
    burst = [T0 + 5 * i for i in range(6)]
    inter = _events(
        [1] * 6 + [2, 3],
        [10, 10, 11, 12, 13, 14, 11, 12],
        [*burst, T0 + 86400, T0 + 2 * 86400],
    ).sort_values(C.TIMESTAMP)
    items = pd.DataFrame({C.ITEM: [10, 11, 12, 13, 14], C.TITLE: ["a", "b", "c", "d", "e"]})
    cfg = {
        "extreme_activity": {"severity": "off"},
        "bursts": {"interactions": 5, "minutes": 1},
    }
    audit = audit_dataset(_frames(inter, items=items), AuditConfig.model_validate(cfg))
    flag = audit.flag("flagged_user_items")
    assert flag.rows[[C.ITEM, "interactions", "flagged_users", C.TITLE]].to_dict("records") == [
        {C.ITEM: 10, "interactions": 2, "flagged_users": 1, C.TITLE: "a"},
        {C.ITEM: 13, "interactions": 1, "flagged_users": 1, C.TITLE: "d"},
        {C.ITEM: 14, "interactions": 1, "flagged_users": 1, C.TITLE: "e"},
    ]
    assert "1 flagged users (bursts)" in flag.note
    half = AuditConfig.model_validate({**cfg, "flagged_user_items": {"min_share": 0.5}})
    assert audit_dataset(_frames(inter, items=items), half).flag("flagged_user_items").count == 5
    both_off = AuditConfig.model_validate({**cfg, "bursts": {"severity": "off"}})
    assert audit_dataset(_frames(inter), both_off).flag("flagged_user_items").status == "skipped"


def test_rating_shift_by_total_variation_distance():
    jan, feb = (
        int(pd.Timestamp("2021-01-10", tz="UTC").timestamp()),
        int(pd.Timestamp("2021-02-10", tz="UTC").timestamp()),
    )
    ratings = [5] * 600 + [3] * 400 + [3] * 600 + [1] * 400  # jan: 60% 5s, feb: 60% 3s
    inter = _events(np.arange(2000) % 97, np.arange(2000) % 31, [jan] * 1000 + [feb] * 1000, ratings)
    flag = audit_dataset(_frames(inter), _only("rating_shift")).flag("rating_shift")
    # overall: 1: 0.2, 3: 0.5, 5: 0.3; jan (0, 0.4, 0.6): TV 0.3; feb (0.4, 0.6, 0): TV 0.3
    assert flag.rows["bin"].tolist() == ["2021-01", "2021-02"]
    np.testing.assert_allclose(flag.rows["tv_distance"], [0.3, 0.3])
    np.testing.assert_allclose(flag.rows["mean_rating"], [4.2, 2.2])
    lenient = audit_dataset(_frames(inter), _only("rating_shift", max_distance=0.31)).flag("rating_shift")
    assert lenient.status == "ok"
    few = audit_dataset(_frames(inter), _only("rating_shift", min_interactions=1001)).flag("rating_shift")
    assert few.count == 0 and few.note.startswith("0 of 2 month bins judged")
    yearly = audit_dataset(_frames(inter), _only("rating_shift", time_bin="year")).flag("rating_shift")
    assert yearly.count == 0  # one bin: the overall distribution itself
    weekly = audit_dataset(_frames(inter), _only("rating_shift", time_bin="week")).flag("rating_shift")
    assert weekly.rows["bin"].tolist() == ["week of 2021-01-04", "week of 2021-02-08"]  # Mondays
    no_ratings = audit_dataset(_frames(inter.drop(columns=[C.RATING])), _only("rating_shift"))
    assert no_ratings.flag("rating_shift").status == "skipped"
    assert "audit_rating_shift_count" not in no_ratings.metrics()


def test_duplicate_titles(tmp_path):
    data = _files(
        tmp_path,
        f"user_id,item_id,timestamp\n1,1,{T0}\n1,2,{T0}\n2,2,{T0}\n",
        items="item_id,title,year\n1,Alpha,1990\n2,  alpha ,1990\n3,ALPHA,2001\n4,Beta,1990\n5,,1990\n6,,1990\n",
    )
    flag = audit_dataset(data, _only("duplicate_titles")).flag("duplicate_titles")
    assert flag.rows[[C.ITEM, "group", "group_size", "interactions"]].to_dict("records") == [
        {C.ITEM: 1, "group": 1, "group_size": 2, "interactions": 1},
        {C.ITEM: 2, "group": 1, "group_size": 2, "interactions": 2},
    ]
    any_year = audit_dataset(data, _only("duplicate_titles", match_year=False)).flag("duplicate_titles")
    assert any_year.rows[C.ITEM].tolist() == [1, 2, 3]  # missing titles are not duplicates


# ------------------------------------------------------------------------ the report


def test_ml100k_passes_the_defaults_with_known_warnings(ml100k, tmp_path):
    start = time.perf_counter()
    audit = audit_dataset(ml100k, AuditConfig())
    assert time.perf_counter() - start < 1.0
    counts = audit.summary().set_index("check")["count"].to_dict()
    assert counts == {
        "completeness": 0,
        "types": 0,
        "ranges": 0,
        "epoch_timestamps": 0,
        "before_release": 0,
        "extreme_activity": 0,
        "bursts": 10,  # >= 100 ratings within 10 minutes, by 8 users (2,104 ratings)
        "flagged_user_items": 44,  # rated only by those 8 users
        "rating_shift": 0,  # largest monthly TV distance 0.040
        "duplicate_titles": 36,  # 18 (title, year) pairs under two IDs each
    }
    assert not audit.failed and [f.name for f in audit.warnings] == [
        "bursts",
        "flagged_user_items",
        "duplicate_titles",
    ]
    bursts = audit.flag("bursts")
    assert bursts.rows[C.USER].nunique() == 8 and bursts.rows["interactions"].sum() == 2104
    assert bursts.rows["interactions"].max() == 417
    assert audit.flag("duplicate_titles").rows.groupby("group").size().eq(2).all()
    assert audit.flag("extreme_activity").plot["limit"] > ml100k.interactions[C.USER].value_counts().max()
    metrics = audit.metrics()
    assert metrics["audit_failed"] == 0 and metrics["audit_warnings"] == 3
    assert metrics["audit_bursts_count"] == 10
    text = audit.to_markdown()
    assert text.startswith("# Data hygiene audit: ml-100k")
    assert "## bursts: warn (10 bursts)" in text and "... and 34 more rows" in text
    assert set(audit.figures()) == {
        "completeness.png",
        "epoch_timestamps.png",
        "extreme_activity.png",
        "bursts.png",
        "rating_shift.png",
    }
    paths = audit.write(tmp_path / "out")
    rows = pd.read_parquet(paths["rows"])
    assert len(rows) == 10 + 44 + 36 and rows["check"].value_counts()["bursts"] == 10
    assert rows[C.USER].dtype == "Int64" and (paths["report"]).read_text() == text
    assert (tmp_path / "out" / "rating_shift.png").stat().st_size > 0


def test_audit_block_in_experiment_files():
    config = load_experiment(data={"name": "x", "models": [{"type": "popularity"}]})
    assert config.audit == AuditConfig()
    changed = load_experiment(
        data={"name": "x", "models": [{"type": "popularity"}]}, overrides=["audit.bursts.minutes=5"]
    )
    assert changed.audit.bursts.minutes == 5
    with pytest.raises(ConfigError, match="audit"):
        load_experiment(data={"name": "x", "models": [{"type": "popularity"}], "audit": {"burst": {}}})


# ------------------------------------------------------------------------- integration

TINY = {
    "name": "tiny_audit",
    "seeds": [0],
    "data": {"sample_users": 30, "write_processed": False},
    "models": [{"type": "popularity"}],
}


def test_a_failing_check_stops_the_run_before_fitting(monkeypatch):
    import personalize.recipe.run as recipe

    fitted = []
    monkeypatch.setattr(recipe, "fit_and_evaluate", lambda *a, **k: fitted.append(a))
    said: list[str] = []
    config = load_experiment(data={**TINY, "audit": {"duplicate_titles": {"severity": "fail"}}})
    with pytest.raises(AuditFailed, match="duplicate_titles: 36 items") as err:
        run_experiment(config, track=False, progress=False, echo=said.append)
    assert "bursts" not in str(err.value)  # warnings do not stop a run
    assert fitted == []
    assert any(line.startswith("\nData hygiene audit: FAILED (duplicate_titles)") for line in said)


def test_a_tracked_run_logs_the_audit(tracking_store, tmp_path):
    result = run_experiment(load_experiment(data=TINY), progress=False, echo=None)
    client = mlflow.MlflowClient(tracking_uri=tracking_store)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.metrics["audit_failed"] == 0
    assert "audit_bursts_count" in parent.data.metrics and "audit_seconds" in parent.data.metrics
    assert parent.data.params["audit.bursts.interactions"] == "100"
    assert parent.data.tags["audit"].startswith("passed")
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "data")}
    assert {"data/audit.md", "data/audit_flags.parquet", "data/audit"} <= artifacts
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "data/audit")}
    assert "data/audit/extreme_activity.png" in figures
    local = Path(client.download_artifacts(parent.info.run_id, "data/audit.md", str(tmp_path)))
    assert local.read_text().startswith("# Data hygiene audit: ml-100k")
    # a run the audit stops is logged with its audit, and marked FAILED
    failing = load_experiment(
        data={**TINY, "name": "tiny_audit_fail", "audit": {"bursts": {"interactions": 2, "severity": "fail"}}}
    )
    with pytest.raises(AuditFailed):
        run_experiment(failing, progress=False, echo=None)
    runs = client.search_runs(
        [client.get_experiment_by_name("tiny_audit_fail").experiment_id],
        "tags.personalize.kind = 'experiment'",
    )
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert runs[0].data.metrics["audit_failed"] == 1
    assert not client.search_runs([runs[0].info.experiment_id], "tags.personalize.kind = 'model'")


def test_cli_audit_writes_the_report_and_fails_with_code_1(tmp_path):
    runner = CliRunner()
    experiment = str(ROOT / "experiments" / "ml100k.yaml")
    common = ["--set", "data.sample_users=30", "--set", "data.write_processed=false"]
    out = tmp_path / "audit"
    result = runner.invoke(app, ["audit", experiment, *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Data hygiene audit of ml-100k: passed" in result.output
    assert "| epoch_timestamps" in result.output and f"report:       {out / 'audit.md'}" in result.output
    assert {"audit.md", "audit_flags.parquet", "rating_shift.png"} <= {p.name for p in out.iterdir()}
    failing = ["--set", "audit.duplicate_titles.severity=fail", "--out", str(tmp_path / "fail")]
    result = runner.invoke(app, ["audit", experiment, *common, *failing])
    assert result.exit_code == 1
    assert "FAILED (duplicate_titles)" in result.output
    assert (tmp_path / "fail" / "audit.md").exists()  # the lists are written either way
