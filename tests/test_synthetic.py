"""The synthetic log generator: deterministic by seed whatever the write chunk, bounded memory,
defects that land in ingestion's quarantine with their reasons, the structure of real logs
(power-law popularity, heavy-tailed activity, releases, daily and weekly cycles, learnable
clusters), the oracle, the cache of ``data.source: synthetic`` and the ``generate`` command."""

from __future__ import annotations

import json
import math
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from personalize.config import EvaluationConfig, SplitConfig
from personalize.config.data import DataConfig, InteractionSource
from personalize.config.synthetic import SyntheticConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data import synthetic as syn
from personalize.data.ingest import ingest
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.evaluation import Evaluator, make_target
from personalize.models import create_model

EVENTS = ("view", "click", "purchase")


def _config(**kw) -> SyntheticConfig:
    base = {"interactions": 20_000, "users": 200, "items": 500, "seed": 3, "block_events": 5_000}
    return SyntheticConfig(**{**base, **kw})


def _read(folder: Path, name: str) -> pd.DataFrame:
    path = next(folder.glob(f"{name}.*"))
    return pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)


@pytest.fixture(scope="module")
def csv_log(tmp_path_factory) -> syn.SyntheticLog:
    """20k events as CSV with 1% duplicates and 1% malformed lines (10 clusters of ~50 items,
    popularity^0.7: the taste signal is a clear part of the choices)."""
    folder = tmp_path_factory.mktemp("synthetic") / "csv"
    cfg = _config(
        format="csv", duplicate_share=0.01, malformed_share=0.01, clusters=10, popularity_weight=0.7
    )
    return syn.generate(cfg, folder, write_rows=4_000)


@pytest.fixture(scope="module")
def csv_data(csv_log):
    return ingest(csv_log.data_config(DataConfig(write_processed=False)))


# ------------------------------------------------------------------ determinism, memory


def test_same_seed_same_rows_whatever_the_write_chunk(tmp_path):
    a = syn.generate(_config(), tmp_path / "a", write_rows=3_000)
    b = syn.generate(_config(), tmp_path / "b", write_rows=1_000_000)
    other = syn.generate(_config(seed=4), tmp_path / "c")
    assert a.meta == b.meta  # settings, counts and the parameters' fingerprint
    for name in ("users", "items", *EVENTS):
        pd.testing.assert_frame_equal(_read(a.folder, name), _read(b.folder, name))
    assert not _read(a.folder, "view").equals(_read(other.folder, "view"))
    assert a.meta["params_fingerprint"] != other.meta["params_fingerprint"]
    assert a.params().fingerprint() == a.meta["params_fingerprint"]
    # row groups follow the write chunk; the rows do not
    import pyarrow.parquet as pq

    assert pq.ParquetFile(a.files["view"]).metadata.num_row_groups > 1
    assert pq.ParquetFile(b.files["view"]).metadata.num_row_groups == 1


def test_csv_bytes_do_not_depend_on_the_write_chunk(tmp_path):
    cfg = _config(format="csv", duplicate_share=0.01, malformed_share=0.01)
    a = syn.generate(cfg, tmp_path / "a", write_rows=777)
    b = syn.generate(cfg, tmp_path / "b")
    for name in ("users", "items", *EVENTS):
        assert a.files[name].read_bytes() == b.files[name].read_bytes()


def test_block_size_is_a_generating_setting():
    """Blocks draw from their own streams: another block size gives other rows (and another cache key)."""
    a, b = _config(), _config(block_events=4_000)
    assert a.key() != b.key()
    pa, pb = syn.draw_params(a), syn.draw_params(b)
    assert pa.fingerprint() == pb.fingerprint()  # the parameters do not depend on blocks
    rows_a = syn._Model.build(a, pa).block(1)["view"]
    rows_b = syn._Model.build(b, pb).block(1)["view"]
    assert not rows_a.equals(rows_b)


def test_memory_is_bounded_by_the_block_not_the_log(tmp_path):
    def peak(n: int) -> float:
        cfg = SyntheticConfig(interactions=n, users=100, items=500, block_events=5_000)
        tracemalloc.start()
        syn.generate(cfg, tmp_path / str(n), write_rows=5_000)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(10_000), peak(160_000)  # (whole-log buffering: about twice the peak)
    assert large < 1.25 * small, f"peak {small / 2**20:.1f} MiB at 10k, {large / 2**20:.1f} MiB at 160k"


# ----------------------------------------------------------------- counts and quarantine


def test_row_counts_and_defects_land_in_the_quarantine(csv_log, csv_data):
    meta = csv_log.meta
    assert meta["totals"] == {
        "users": 200,
        "items": 500,
        "events": 20_000,
        "duplicates": 200,
        "malformed": 200,
    }
    report = csv_data.report.tables
    assert report["users"].accepted == 200 and report["items"].accepted == 500
    for event in EVENTS:
        f, rep = meta["files"][event], report[f"interactions.{event}"]
        assert rep.input_rows == f["rows"] == f["events"] + f["duplicates"] + f["malformed"]
        assert rep.accepted == f["events"]
        assert rep.accepted + rep.quarantined == rep.input_rows
        assert dict(rep.reasons) == {
            k: v for k, v in (("exact duplicate", f["duplicates"]), ("malformed line", f["malformed"])) if v
        }
    q = csv_data.quarantine
    assert len(q) == 400 and q[C.Q_REASON].str.len().gt(0).all()
    assert (q.loc[q[C.Q_REASON] == "malformed line", "raw"].str.len() > 0).all()
    assert len(csv_data.interactions) == 20_000
    assert set(csv_data.interactions[C.EVENT]) == set(EVENTS)
    assert (
        csv_data.interactions.loc[csv_data.interactions[C.EVENT] == "purchase", C.RATING].between(1, 5).all()
    )
    assert csv_data.interactions.loc[csv_data.interactions[C.EVENT] == "view", C.RATING].isna().all()
    shares = csv_data.interactions[C.EVENT].value_counts(normalize=True)
    assert shares["view"] == pytest.approx(0.7, abs=0.02) and shares["purchase"] == pytest.approx(
        0.1, abs=0.02
    )


def test_no_accidental_collision_a_users_timestamps_are_distinct(csv_data):
    inter = csv_data.interactions
    assert not inter.duplicated([C.USER, C.TIMESTAMP]).any()


# ------------------------------------------------------------------- the structure of logs


def test_popularity_follows_a_power_law(csv_data):
    counts = csv_data.interactions[C.ITEM].value_counts().reindex(csv_data.items[C.ITEM], fill_value=0)
    ranked = np.sort(counts.to_numpy())[::-1]
    top = ranked[: len(ranked) // 100].sum() / ranked.sum()
    assert top > 0.1, f"top 1% of items hold {top:.1%}"  # uniform would be 1%
    assert ranked[: len(ranked) // 10].sum() / ranked.sum() > 0.4
    # log-log: count against rank falls about linearly over the head (Zipf s = 1, weight a = 0.7)
    r = np.arange(1, 51)
    slope = np.polyfit(np.log(r), np.log(ranked[:50]), 1)[0]
    assert -1.3 < slope < -0.4, slope


def test_activity_is_heavy_tailed(csv_data):
    per_user = csv_data.interactions[C.USER].value_counts()
    assert len(per_user) == 200 and per_user.min() >= 5
    assert per_user.max() > 5 * per_user.median()
    assert per_user.mean() > 1.2 * per_user.median()


def test_no_event_before_its_items_release(csv_data):
    items = csv_data.items.set_index(C.ITEM)
    released = pd.to_datetime(items["released"], utc=True)
    at = csv_data.interactions
    assert (at[C.TIMESTAMP].to_numpy() >= released.reindex(at[C.ITEM]).to_numpy()).all()
    assert (items[C.YEAR] == released.dt.year).all()
    # items released during the log exist and do get events
    late = released[released > pd.Timestamp("2022-06-01", tz="UTC")].index
    assert len(late) > 50 and at[C.ITEM].isin(late).any()


def test_daily_and_weekly_cycles_are_visible(csv_data):
    ts = csv_data.interactions[C.TIMESTAMP]
    hours = ts.dt.hour.value_counts().reindex(range(24), fill_value=0)
    assert hours[[19, 20, 21]].sum() > 2.5 * hours[[7, 8, 9]].sum()
    days = ts.dt.day_of_week.value_counts().sort_index()
    assert days[[5, 6]].mean() > 1.15 * days[[0, 1, 2, 3, 4]].mean()
    assert ts.min() >= pd.Timestamp("2022-01-01", tz="UTC") and ts.max() < pd.Timestamp(
        "2024-01-01", tz="UTC"
    )


def test_attributes_and_texts_follow_the_clusters(csv_log, csv_data):
    params = csv_log.params()
    items = csv_data.items.assign(cluster=params.item_cluster[csv_data.items[C.ITEM].to_numpy() - 1])
    words = items.assign(word=items["description"].str.split()).explode("word")
    words = words[~words["word"].isin(syn.SHARED_WORDS)]
    # a cluster's own words: every non-shared word of an item belongs to its cluster's vocabulary
    assert words.groupby("word")["cluster"].nunique().max() == 1
    genre = items.assign(g=items[C.GENRES]).explode("g")
    top_share = genre.groupby("cluster")["g"].agg(lambda g: g.value_counts(normalize=True).iloc[0])
    assert top_share.mean() > 0.4  # 18 genres: ~0.06 if genres ignored clusters
    users = csv_data.users.assign(cluster=params.theta.argmax(axis=1)[csv_data.users[C.USER].to_numpy() - 1])
    by_cluster = users.groupby("cluster")[C.AGE].mean()
    assert by_cluster.max() - by_cluster.min() > 10
    assert set(users["region"]) <= set(syn.REGIONS) and set(users[C.OCCUPATION]) <= set(syn.OCCUPATIONS)


# ------------------------------------------------------------- clusters learnable, the oracle


class _Oracle:
    def __init__(self, params: syn.GeneratorParams, index: IdIndex):
        self.params, self.index = params, index

    def score(self, users: np.ndarray) -> np.ndarray:
        return syn.oracle_scores(self.params, self.index.users[users], self.index.items)


def test_clusters_are_learnable_and_the_oracle_is_a_ceiling(csv_log, csv_data):
    d = csv_data
    inter = d.interactions.drop(columns=[C.EVENT, C.RATING])
    split = make_split(inter, SplitConfig(), 0, d.users, d.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train = InteractionData.build(split.train, index, split.users, split.items)
    target = make_target("valid", split.valid, split.train, index)
    ev = Evaluator(EvaluationConfig(ks=[10]))

    def ndcg(model) -> float:
        return ev.evaluate(model, target).summary["ndcg@10"]

    pop = ndcg(create_model("popularity").fit(train))
    ease = ndcg(create_model("ease", {"l2": 100}).fit(train))
    rnd = ndcg(create_model("random", seed=0).fit(train))
    oracle = ndcg(_Oracle(csv_log.params(), index))
    assert ease > 1.5 * pop, (ease, pop)
    assert oracle > 1.5 * pop, (oracle, pop)
    assert oracle > 5 * rnd, (oracle, rnd)
    # each held-out choice's percentile among the items the user had not seen, under the oracle
    scores = syn.oracle_scores(csv_log.params(), index.users[target.users], index.items)
    scores[target.seen.nonzero()] = -np.inf
    rows, cols = target.relevant.nonzero()
    new = np.isfinite(scores[rows, cols])  # (a choice seen in training is no prediction)
    rows, cols = rows[new], cols[new]
    unseen = np.isfinite(scores).sum(axis=1)
    below = (np.isfinite(scores[rows]) & (scores[rows] < scores[rows, cols][:, None])).sum(axis=1)
    percentile = below / (unseen[rows] - 1)
    assert len(rows) > 500
    assert percentile.mean() > 0.75, percentile.mean()  # chance: 0.5


def test_oracle_scores_are_the_choice_probabilities(csv_log):
    params = csv_log.params()
    p = syn.oracle_scores(params, [1, 2, 200], params.item_ids)
    assert p.shape == (3, 500)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    w = params.phi * (params.popularity**params.popularity_weight)[:, None]
    np.testing.assert_allclose(p[0], params.theta[0] @ w.T / (params.theta[0] @ w.sum(axis=0)))
    with pytest.raises(DataError, match="user ID 201 was not generated"):
        syn.oracle_scores(params, [201], [1])


def test_parameters_round_trip(tmp_path, csv_log):
    params = csv_log.params()
    params.save(tmp_path / "p.npz")
    assert syn.GeneratorParams.load(tmp_path / "p.npz").fingerprint() == params.fingerprint()
    with pytest.raises(DataError, match="not found"):
        syn.GeneratorParams.load(tmp_path / "none.npz")


# ---------------------------------------------------------------------- config, cache, CLI


def test_settings_are_checked():
    with pytest.raises(ValidationError, match="needs format csv"):
        SyntheticConfig(interactions=10_000, malformed_share=0.01)
    with pytest.raises(ValidationError, match="min_user_interactions x users"):
        SyntheticConfig(interactions=10_000, users=5_000)
    with pytest.raises(ValidationError, match="must sum to 1"):
        SyntheticConfig(event_shares={"view": 0.5, "buy": 0.4}, rated_events=[])
    with pytest.raises(ValidationError, match="rated_events"):
        SyntheticConfig(event_shares={"view": 1.0})
    with pytest.raises(ValidationError, match=r"only used with data\.source: files"):
        DataConfig(source="synthetic", interactions=InteractionSource(path=Path("x.csv")))
    with pytest.raises(ValidationError, match=r"data\.synthetic is only used with data\.source: synthetic"):
        DataConfig(synthetic=SyntheticConfig())
    assert SyntheticConfig(interactions=1_000_000).settings()["users"] == 10_000
    assert SyntheticConfig(interactions=1_000_000).n_items == 2_000


def test_generate_refuses_an_existing_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(DataError, match="already exists"):
        syn.generate(_config(), tmp_path / "taken")
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]  # no temporary folder left behind


def test_source_synthetic_generates_once_then_reuses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    cfg = _config(interactions=5_000, users=100, items=200)
    data = DataConfig(source="synthetic", synthetic=cfg, write_processed=False, name="tiny")
    first = ingest(data)
    folder = syn.cache_folder(cfg)
    assert folder.parent == tmp_path / "cache" / "synthetic" and (folder / syn.META_FILE).is_file()
    assert first.name == "tiny" and len(first.interactions) == 5_000
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # renamed into place

    def refuse(*args, **kwargs):
        raise AssertionError("generated again")

    monkeypatch.setattr(syn, "generate", refuse)
    again = ingest(data)
    assert again.fingerprint == first.fingerprint
    # an incomplete folder (an interrupted copy) is replaced
    meta = json.loads((folder / syn.META_FILE).read_text())
    (folder / meta["files"]["view"]["path"]).unlink()
    monkeypatch.undo()
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path))
    assert ingest(data).fingerprint == first.fingerprint


def test_generate_command(tmp_path):
    from personalize.cli import app

    out = tmp_path / "log"
    args = ["generate", "--out", str(out), "--interactions", "5000", "--seed", "2", "--format", "csv"]
    result = CliRunner().invoke(app, [*args, "--malformed-share", "0.01"])
    assert result.exit_code == 0, result.output
    assert "planted: users 50, items 10, events 5000, duplicates 5, malformed 50" in result.output
    assert "source: files" in result.output
    log = syn.SyntheticLog.open(out)
    assert log.settings.seed == 2 and log.settings.format == "csv"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["users.csv", "items.csv", "view.csv", "click.csv", "purchase.csv", "params.npz", "generator.json"]
    )
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "already exists" in again.output
    bad = CliRunner().invoke(app, ["generate", "--out", str(tmp_path / "p"), "--malformed-share", "0.1"])
    assert bad.exit_code == 2 and "needs format csv" in bad.output


def test_share_counts_add_up_over_blocks():
    for share in (0.001, 0.013, 0.5):
        total = sum(syn._share_count(share, lo, min(123_457, lo + 5_000)) for lo in range(0, 123_457, 5_000))
        assert total == math.floor(share * 123_457)
