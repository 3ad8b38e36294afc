"""The model contract, as a reusable test class: a model's own test file subclasses
:class:`RecommenderContract` and says how to build the model (a few lines)."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import pytest

from personalize.config import EvaluationConfig
from personalize.core import columns as C
from personalize.evaluation import Evaluator
from personalize.evaluation.monitor import ValidationMonitor
from personalize.models import EpochReport, Recommender, create_model
from personalize.models.privacy.noise import reproducible_noise

COLD_USER = 999_999


class RecommenderContract:
    """Behaviour every model must have. Subclasses set ``model_type`` and ``params``."""

    model_type: str
    params: dict = {}
    beats_random: bool = True

    def make(self, seed: int = 0) -> Recommender:
        return create_model(self.model_type, dict(self.params), seed=seed)

    @property
    def private(self) -> bool:
        """A private model (epsilon set): its noise is secret, so the checks of its behaviour fit
        it under the test switch (the same mechanics, reproducible noise; tests/test_dp_noise.py
        checks the secret noise itself)."""
        return self.params.get("epsilon") is not None

    def noise(self):
        return reproducible_noise(5) if self.private else contextlib.nullcontext()

    @pytest.fixture(scope="class")
    def fitted(self, contract_data):
        _, _, train, _ = contract_data
        with self.noise():
            return self.make().fit(train)

    def test_fit_returns_self_and_scores_have_the_right_shape(self, contract_data):
        _, index, train, _ = contract_data
        model = self.make()
        assert model.fit(train) is model
        scores = model.score(np.arange(5))
        assert scores.shape == (5, index.n_items) and scores.dtype == np.float32
        assert not np.isnan(scores).any()
        assert np.isfinite(scores).any(axis=1).all()

    def test_config_is_typed_and_rejects_unknown_keys(self):
        with pytest.raises(Exception, match="no_such_param"):
            create_model(self.model_type, {**self.params, "no_such_param": 1})
        model = self.make()
        before = model.config.model_dump()
        assert model.config.model_dump() == before

    def test_recommend_excludes_seen_items(self, fitted, contract_data):
        _, index, train, _ = contract_data
        users = list(index.users[:10])
        recs = fitted.recommend(users, k=10)
        assert list(recs.columns) == [C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED]
        seen = train.frame.groupby(C.USER_IDX)[C.ITEM_IDX].apply(set)
        for uid, rows in recs.groupby(C.USER):
            u = int(index.user_index([uid])[0])
            assert rows[C.RANK].tolist() == list(range(1, 11))
            assert (np.diff(rows[C.SCORE].to_numpy()) <= 1e-6).all()
            assert not set(index.item_index(rows[C.ITEM])) & seen.get(u, set())

    def test_cold_and_unknown_users(self, fitted, contract_data):
        _, index, _, _ = contract_data
        cold = int(index.user_index([COLD_USER])[0])
        assert cold >= 0
        recs = fitted.recommend([COLD_USER, "no-such-user"], k=5)
        assert len(recs) == 10
        unknown = recs[recs[C.USER] == "no-such-user"]
        assert not unknown[C.PERSONALISED].any()
        popular = np.argsort(-fitted.popularity_, kind="stable")[:5]
        assert list(index.item_index(unknown[C.ITEM])) == list(popular)
        cold_rows = recs[recs[C.USER] == COLD_USER]
        if not type(fitted).handles_cold_users:
            assert not cold_rows[C.PERSONALISED].any()
            assert list(index.item_index(cold_rows[C.ITEM])) == list(popular)

    def test_save_and_load_give_identical_answers(self, fitted, contract_data, tmp_path):
        _, index, _, _ = contract_data
        fitted.save(tmp_path / "m")
        loaded = Recommender.load(tmp_path / "m")
        assert type(loaded) is type(fitted)
        users = np.arange(min(20, index.n_users))
        np.testing.assert_allclose(loaded.score(users), fitted.score(users), rtol=1e-6, atol=1e-6)
        ids = [*index.users[:5], COLD_USER, "unknown"]
        pd.testing.assert_frame_equal(loaded.recommend(ids, k=7), fitted.recommend(ids, k=7))

    def test_answers_go_through_its_scorer(self, fitted, contract_data):
        """``score`` is the scorer's answer: an exportable model's scorer is a shipped kind
        (its export is covered by tests/test_serving_scorer.py for every registered type)."""
        _, index, _, _ = contract_data
        scorer = fitted.scorer()
        assert scorer.exportable == type(fitted).exportable
        assert scorer.handles_cold_users == type(fitted).handles_cold_users
        users = np.arange(min(10, index.n_users))
        np.testing.assert_array_equal(fitted.score(users), scorer.answer(users, fitted.context))

    def test_same_seed_same_model(self, contract_data):
        """Seeded and reproducible; a private model's noise is secret instead: two fits with one
        seed differ, and agree only under the test switch (everything but the noise is seeded)."""
        _, _, train, _ = contract_data
        with self.noise():
            a = self.make(seed=3).fit(train).score(np.arange(10))
            b = self.make(seed=3).fit(train).score(np.arange(10))
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        if self.private:
            c = self.make(seed=3).fit(train).score(np.arange(10))
            d = self.make(seed=3).fit(train).score(np.arange(10))
            assert not np.allclose(c, d, rtol=1e-5, atol=1e-6)

    def test_beats_random_on_validation(self, fitted, contract_data):
        if not self.beats_random:
            pytest.skip("the random baseline itself")
        _, _, train, valid = contract_data
        ev = Evaluator(EvaluationConfig(ks=[10]))
        rnd = create_model("random", seed=0).fit(train)
        assert ev.evaluate(fitted, valid).summary["ndcg@10"] > ev.evaluate(rnd, valid).summary["ndcg@10"]


class IterativeContract(RecommenderContract):
    """Extra behaviour of iterative models: per-epoch reports, best epoch, early stop."""

    epochs_param: str = "iterations"

    def test_reports_every_epoch_and_keeps_the_best(self, contract_data):
        _, _, train, valid = contract_data
        monitor = ValidationMonitor(valid, patience=None)
        model = self.make().fit(train, monitor)
        epochs = (
            self.params.get(self.epochs_param) or type(model.config).model_fields[self.epochs_param].default
        )
        assert [row["epoch"] for row in monitor.history] == list(range(1, epochs + 1))
        assert all("valid_ndcg_at_10" in row for row in monitor.history)
        assert model.best_epoch_ == monitor.best_epoch
        assert getattr(model.selected_config(), self.epochs_param) == monitor.best_epoch
        # the kept state is the best epoch's: re-evaluating gives the best value
        again = Evaluator(EvaluationConfig(ks=[10])).evaluate(model, valid).summary["ndcg@10"]
        assert again == pytest.approx(monitor.best_value, abs=1e-6)

    def test_monitor_can_stop_training(self, contract_data):
        _, _, train, _ = contract_data
        calls = []

        def stop_at_two(model, epoch, loss):
            calls.append(epoch)
            return EpochReport(value=float(epoch), improved=True, stop=epoch >= 2)

        model = self.make().fit(train, stop_at_two)
        assert calls == [1, 2]
        assert model.epochs_run_ == 2 and model.best_epoch_ == 2
