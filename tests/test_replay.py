"""Prequential replay: batches, leakage, hits by hand, pairing and Holm, choice on validation
only, the CLI end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from personalize.cli import app
from personalize.config import ModelSpec
from personalize.config.replay import ReplayConfig
from personalize.core import columns as C
from personalize.evaluation.replay import (
    FoldIn,
    OnlinePopularity,
    Scores,
    Static,
    Stream,
    replay,
    replay_study,
    summarise,
)
from personalize.evaluation.stats import holm
from personalize.models.registry import create_model

T0 = pd.Timestamp("2020-01-01", tz="UTC")


def _stream(rows: list[tuple[int, int, int]], n_items: int = 6) -> Stream:
    """rows: (user, item, second)."""
    frame = pd.DataFrame(rows, columns=[C.USER, C.ITEM, "s"])
    frame[C.TIMESTAMP] = T0 + pd.to_timedelta(frame.pop("s"), unit="s")
    users = pd.DataFrame({C.USER: sorted(frame[C.USER].unique())})
    items = pd.DataFrame({C.ITEM: np.arange(n_items)})
    return Stream.build(frame, users, items)


class Fixed(Scores):
    """Always the same scores; records what it was shown, in order."""

    def __init__(self, scores):
        self.values = np.asarray(scores, dtype=np.float32)
        self.log: list[tuple[str, int, int]] = []

    def scores(self, user, second):
        self.log.append(("score", user, second))
        return self.values

    def learn(self, user, rows, second):
        self.log.append(("learn", user, second))


def test_hits_by_hand():
    # fit rows: user 1 saw item 0; replay: user 1 at t=10 item 1 and item 4 (one batch),
    # user 2 at t=11 item 5. Scores rank items 0 > 1 > 2 > 3 > 4 > 5, K = 2.
    s = _stream([(1, 0, 0), (1, 1, 10), (1, 4, 10), (2, 5, 11)])
    res = replay(s, 1, 4, Fixed([6, 5, 4, 3, 2, 1]), k=2)
    # user 1's list excludes item 0: [1, 2] -> item 1 at rank 1, item 4 missed
    # user 2 has nothing seen: [0, 1] -> item 5 missed
    assert res["rank"].tolist() == [1, 0, 0]
    assert res["hr"].tolist() == [1.0, 0.0, 0.0]
    assert res["ndcg"].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert res["warm"].tolist() == [True, True, False]
    assert res["batch"].tolist() == [0, 0, 1]
    # rank 2 gives 1/log2(3)
    res = replay(s, 1, 4, Fixed([6, 1, 4, 3, 5, 0]), k=2)  # user 1: [4, 2]
    assert res["rank"].tolist() == [0, 1, 0]
    assert res["ndcg"].tolist() == pytest.approx([0.0, 1.0, 0.0])


def test_same_second_burst_is_one_batch():
    # user 1 saw item 0 (which co-occurs with item 3) and then watches items 1 and 2 in the same
    # second; items 1 and 2 always co-occur in the fitted data. Revealed one at a time, fold-in
    # would hit item 2 after seeing item 1; as one batch the list is [3] for both.
    fit = [(u, i, u) for u in range(10, 30) for i in (1, 2)] + [
        (u, i, u) for u in range(30, 40) for i in (0, 3)
    ]
    s = _stream([*fit, (1, 0, 100), (1, 1, 200), (1, 2, 200)], n_items=5)
    start = len(fit) + 1  # user 1's item 0 is in the fitted data
    model = create_model("itemknn", {"neighbours": 10, "shrink": 0}, 0).fit(s.fit_data(start))
    res = replay(s, start, len(s), FoldIn(model, s), k=1)
    assert res["batch"].nunique() == 1
    assert res["hr"].tolist() == [0.0, 0.0]  # one batch: neither can help predict the other
    # the same events in two seconds: the second one is a hit because of the first
    s2 = _stream([*fit, (1, 0, 100), (1, 1, 200), (1, 2, 201)], n_items=5)
    model2 = create_model("itemknn", {"neighbours": 10, "shrink": 0}, 0).fit(s2.fit_data(start))
    res2 = replay(s2, start, len(s2), FoldIn(model2, s2), k=1)
    assert res2["hr"].tolist() == [0.0, 1.0]


def test_no_event_is_seen_before_it_is_predicted():
    rng = np.random.default_rng(0)
    rows = [(int(rng.integers(0, 8)), int(rng.integers(0, 30)), int(t // 2)) for t in range(300)]
    s = _stream(rows, n_items=30)
    start = s.cut(150)
    seen_rows: list[int] = []

    class Spy(OnlinePopularity):
        def scores(self, user, second):
            # every applied row is of an earlier batch: none of them is at or after this batch
            assert all(s.seconds[r] <= second for r in seen_rows)
            assert int(self.counts.sum().round()) == start + len(seen_rows)
            return super().scores(user, second)

        def learn(self, user, rows, second):
            seen_rows.extend(rows.tolist())
            super().learn(user, rows, second)

    batches = s.batches(start, len(s))
    spy = Spy(s, start)
    res = replay(s, start, len(s), spy, k=5, batches=batches)
    assert sorted(seen_rows) == list(range(start, len(s)))
    # the score of a batch never depends on it: a batch's own item counts are those before it
    for rows in batches[:20]:
        before = np.bincount(s.item[: rows.min()], minlength=30)
        assert (
            before[s.item[rows]].sum()
            < np.bincount(s.item[: rows.max() + 1], minlength=30)[s.item[rows]].sum()
        )
    assert len(res) == len(s) - start


def test_cut_never_splits_a_second():
    s = _stream([(1, 0, 0), (1, 1, 5), (2, 2, 5), (2, 3, 5), (3, 4, 9)])
    assert s.cut(2) == 1 and s.cut(3) == 1 and s.cut(4) == 4


def test_static_is_frozen_and_new_users_get_popularity_at_the_cut(ml100k_small):
    d = ml100k_small
    s = Stream.build(d.interactions, d.users, d.items)
    start = s.cut(int(0.8 * len(s)))
    model = create_model("ease", {"l2": 250}, 0).fit(s.fit_data(start))
    static = Static(model)
    new = np.setdiff1d(s.user[start:], s.user[:start])
    if len(new):
        np.testing.assert_allclose(static.scores(int(new[0]), 0), model.popularity_)
    u = int(s.user[start])
    before = static.scores(u, 0)
    static.learn(u, np.array([start]), 0)
    np.testing.assert_array_equal(static.scores(u, 0), before)


def test_pairing_and_holm():
    s = _stream([(u, i, 10 * u + i) for u in range(1, 13) for i in range(6)], n_items=8)
    start = s.cut(36)
    a = replay(s, start, len(s), Fixed([8, 7, 6, 5, 4, 3, 2, 1]), k=3, label=("test", "m", "a"))
    b = replay(
        s,
        start,
        len(s),
        Fixed([1, 2, 3, 4, 5, 6, 7, 8]),
        k=3,
        label=("test", "popularity", "online_popularity"),
    )
    c = replay(s, start, len(s), Fixed([1, 8, 2, 7, 3, 6, 4, 5]), k=3, label=("test", "m", "c"))
    summary = summarise(pd.concat([a, b, c]), resamples=200)
    rows = summary[(summary["slice"] == "all") & (summary["per"] == "user") & (summary["metric"] == "ndcg")]
    p = rows.set_index("strategy")["p"]
    assert np.isnan(p["online_popularity"])
    assert rows.set_index("strategy")["p_holm"].drop("online_popularity").tolist() == pytest.approx(
        holm([p["a"], p["c"]])
    )
    assert (rows["users"] == 6).all()
    # a row that replayed other events cannot be compared
    with pytest.raises(ValueError, match="pair events"):
        summarise(pd.concat([a, b.iloc[1:]]), resamples=200)


def test_choice_uses_validation_only(ml100k_small):
    d = ml100k_small
    specs = [ModelSpec(type="itemknn", grid={"neighbours": [2, 50]})]
    config = ReplayConfig(
        strategies=["static", "online_popularity", "retrain"],
        retrain_days=[7, 30],
        popularity_half_life_days=[None, 3],
    )
    s = Stream.build(d.interactions, d.users, d.items)
    study = replay_study(s, specs, config, resamples=100)
    # scramble the test period's items: the choice must not move, the test results must
    _, test_start = s.periods(config.valid_fraction, config.test_fraction)
    inter = s.rows.copy()
    rng = np.random.default_rng(1)
    inter.loc[test_start:, C.ITEM] = rng.permutation(inter.loc[test_start:, C.ITEM].to_numpy())
    s2 = Stream.build(inter, d.users, d.items)
    study2 = replay_study(s2, specs, config, resamples=100)
    cols = ["model", "strategy", "setting", "valid_ndcg_user", "chosen"]
    pd.testing.assert_frame_equal(study.selection[cols], study2.selection[cols])
    assert not study.results["rank"].equals(study2.results["rank"])
    assert set(study.results["event"]) == set(range(test_start, len(s)))
    assert study.selection.groupby(["model", "strategy"])["chosen"].sum().eq(1).all()


def test_cli_replay_end_to_end(tracking_store, tmp_path):
    import mlflow

    path = tmp_path / "replay.yaml"
    path.write_text(
        "name: replay_cli\n"
        "data: {source: movielens-100k, sample_users: 60, write_processed: false}\n"
        "models:\n  - type: itemknn\n    params: {neighbours: 20}\n"
        "replay: {retrain_days: [14], popularity_half_life_days: [null]}\n"
    )
    result = CliRunner().invoke(app, ["replay", str(path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "itemknn" in result.output and "online_popularity" in result.output
    runs = mlflow.MlflowClient(tracking_store).search_runs(
        [mlflow.get_experiment_by_name("replay_cli").experiment_id]
    )
    assert len(runs) == 1
    run = runs[0]
    assert run.data.tags["personalize.kind"] == "replay"
    assert "itemknn/foldin/ndcg_at_10_user" in run.data.metrics
    assert "itemknn/foldin/ndcg_at_10_user_p_holm" in run.data.metrics
    artifacts = {
        f.path for f in mlflow.MlflowClient(tracking_store).list_artifacts(run.info.run_id, "replay")
    }
    assert "replay/events.parquet" in artifacts
    bad = CliRunner().invoke(app, ["replay", str(path), "--quiet", "-s", "replay.models=[nope]"])
    assert bad.exit_code == 2 and "nope" in bad.output
