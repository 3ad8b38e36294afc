"""The noise of a private model, attacked the way an adversary with the released artifacts would:
regenerate it from every seed the lab logs and subtract it, replay DP-SGD's Poisson batches, and
scan every saved file, param, tag and artifact for the entropy the noise came from. Then the
test switch: reproducible noise that says it is not private."""

from __future__ import annotations

import secrets
from pathlib import Path

import mlflow
import numpy as np
import pytest

from personalize.data.matrix import IdIndex, InteractionData
from personalize.models import Recommender, create_model
from personalize.models.privacy import noise as N
from personalize.models.privacy.dp_ease import clipped_gram, noisy_clipped_gram
from personalize.models.privacy.dpsgd import PrivateSGD
from personalize.models.privacy.mechanisms import clip_rows


@pytest.fixture(scope="module")
def train(ml100k_small):
    d = ml100k_small
    index = IdIndex.build(d.users, d.items, d.interactions)
    return InteractionData.build(d.interactions, index, d.users, d.items)


def logged_integers(model: Recommender, folder: Path) -> set[int]:
    """Every integer an attacker can read about a fitted model: its seed, the integers of its
    config and of its guarantee, and every integer in its saved files' text."""
    found = {int(model.seed), 0, 1, 2}
    for value in [*model.config.model_dump().values(), *model.dp_.params().values()]:
        if isinstance(value, int | float) and not isinstance(value, bool) and float(value).is_integer():
            found.add(int(value))
    for path in folder.rglob("*"):
        if path.suffix in {".json", ".yaml", ".txt"}:
            import re

            found |= {int(x) for x in re.findall(rb"\d{1,19}", path.read_bytes())}
    return found


@pytest.mark.parametrize("seed", [0, 7])
def test_the_logged_seed_does_not_regenerate_dp_popularity_noise(train, tmp_path, seed):
    """The old attack: noise drawn from default_rng(model seed) is regenerated and subtracted,
    and the exact clipped item sums come back to 1e-6. With secret noise no logged integer does."""
    model = create_model("dp_popularity", {"epsilon": 1.0, "max_units": 1000}, seed=seed).fit(train)
    exact = np.asarray(clip_rows(train.matrix, 1.0).sum(axis=0)).ravel()
    released = model.scores_.astype(np.float64)
    assert np.abs(released - exact).max() > 10 * model.dp_.sigma * 1e-3  # noise was added
    for candidate in logged_integers(model, model.save(tmp_path / "m")):
        regenerated = np.random.default_rng(candidate).normal(0.0, model.dp_.sigma, size=exact.shape)
        assert np.abs(released - regenerated - exact).max() > 1e-3, candidate


def test_the_logged_seed_does_not_regenerate_dp_ease_noisy_diagonal(train, tmp_path):
    """DP-EASE's shipped fallback is the noisy Gram diagonal: regenerating the symmetric draw from
    any logged integer and subtracting it does not give the exact clipped diagonal."""
    model = create_model("dp_ease", {"epsilon": 2.0, "l2": 50.0, "max_units": 1000}, seed=3).fit(train)
    exact = np.diag(clipped_gram(train.matrix, 1.0))
    n, sigma = len(exact), model.dp_.sigma
    for candidate in logged_integers(model, model.save(tmp_path / "m")):
        upper = np.triu(np.random.default_rng(candidate).normal(0.0, sigma, size=(n, n)))
        assert np.abs(model.popularity_ - np.diag(upper) - exact).max() > 1e-3, candidate


def test_dp_sgd_batches_cannot_be_replayed_from_the_seed(train, monkeypatch):
    """Poisson batch membership, on which the accountant's amplification rests, is drawn from the
    secret stream: the seeded epoch generator (the old source) does not replay it."""
    from personalize.models.neural.training import epoch_rng

    drawn: list[np.ndarray] = []
    batches = PrivateSGD.batches

    def recording(self, rng):
        for positions in batches(self, rng):
            drawn.append(positions)
            yield positions

    monkeypatch.setattr(PrivateSGD, "batches", recording)
    params = {"epsilon": 2.0, "max_units": 80, "epochs": 2, "hidden": 16, "latent": 8, "batch_size": 20}
    model = create_model("dp_multvae", params, seed=5).fit(train)
    n, q, per_epoch = 80, model.dp_.sample_rate, 4
    assert len(drawn) == 2 * per_epoch and q == pytest.approx(0.25)
    replayed = []
    for epoch in (1, 2):
        rng = epoch_rng(5, epoch)
        replayed += [np.flatnonzero(rng.random(n) < q) for _ in range(per_epoch)]
    same = sum(np.array_equal(a, b) for a, b in zip(drawn, replayed, strict=True))
    assert same == 0  # a batch of about 20 of 80 users: a chance match is astronomically unlikely


def test_two_fits_with_one_seed_differ_only_in_their_noise(train):
    """Same seed, same data: the released Gram matrices differ, and what remains after taking
    away each fit's own noise draw is the same exact clipped Gram matrix."""
    draws = []
    symmetric = N.gaussian

    def recording(rng, sigma, size):
        out = symmetric(rng, sigma, size)
        draws.append(np.triu(out))
        return out

    config = create_model("dp_ease", {"epsilon": 1.0, "max_units": 1000}).config
    exact = clipped_gram(train.matrix, 1.0)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("personalize.models.privacy.dp_ease.gaussian", recording)
        first, _ = noisy_clipped_gram(train.matrix, config)
        second, _ = noisy_clipped_gram(train.matrix, config)
    assert len(draws) == 2 and not np.allclose(first, second)
    for released, upper in zip((first, second), draws, strict=True):
        noise = upper + np.triu(upper, 1).T
        np.testing.assert_allclose(released - noise, exact, atol=1e-9)


def test_no_file_param_tag_or_artifact_holds_the_noise_entropy(tracking_store, tmp_path, monkeypatch):
    """Every value drawn from the OS for noise keys and per-step seeds is recorded here, then a
    private experiment runs into a temporary store and every byte of the store (SQLite pages,
    artifacts) and of the saved models is scanned for it, as decimal, hex and raw bytes."""
    from personalize.recipe import load_experiment, run_experiment

    drawn: list[tuple[int, int]] = []
    real = secrets.randbits

    def recording(k: int) -> int:
        value = real(k)
        drawn.append((value, k))
        return value

    monkeypatch.setattr(N.secrets, "randbits", recording)
    config = load_experiment(
        data={
            "name": "noise_scan",
            "seeds": [0],
            "data": {"sample_users": 60},
            "split": {"name": "user_holdout"},
            "evaluation": {"bootstrap_resamples": 100},
            "training": {"refit": False},
            "tracking": {"uri": tracking_store},
            "models": [
                {"type": "dp_popularity", "params": {"epsilon": 1.0, "max_units": 1000}},
                {"type": "dp_ease", "params": {"epsilon": 1.0, "max_units": 1000}},
                {"type": "dp_als", "params": {"epsilon": 1.0, "max_units": 1000, "iterations": 2}},
                {
                    "type": "dp_multvae",
                    "params": {"epsilon": 1.0, "max_units": 1000, "epochs": 1, "hidden": 16, "latent": 8},
                },
            ],
        }
    )
    run_experiment(config, echo=None, progress=False)
    assert len(drawn) >= 4 and {k for _, k in drawn} >= {256, 64}
    store = Path(tracking_store.removeprefix("sqlite:///")).parent
    blobs = [p.read_bytes() for p in store.rglob("*") if p.is_file()]
    client = mlflow.MlflowClient(tracking_store)
    for run in client.search_runs([e.experiment_id for e in client.search_experiments()]):
        blobs.append(repr(run.data.params).encode() + repr(run.data.tags).encode())
    assert sum(len(b) for b in blobs) > 10_000  # the scan read the store
    for value, bits in drawn:
        n = bits // 8
        needles = {
            str(value).encode(),
            format(value, "x").encode(),
            value.to_bytes(n, "little"),
            value.to_bytes(n, "big"),
        }
        for blob in blobs:
            for needle in needles:
                assert needle not in blob, f"a {bits}-bit noise value was found in the store"


def test_the_test_switch_is_reproducible_and_says_the_model_is_not_private(train, tmp_path):
    with N.reproducible_noise(11):
        a = create_model("dp_ease", {"epsilon": 1.0, "max_units": 1000}, seed=0).fit(train)
        b = create_model("dp_ease", {"epsilon": 1.0, "max_units": 1000}, seed=0).fit(train)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    assert a.dp_.noise == "reproducible" and not a.dp_.private
    params = a.dp_.params()
    assert params["dp_noise"] == "reproducible" and params["dp_private"] is False
    loaded = Recommender.load(a.save(tmp_path / "m"))
    assert loaded.dp_.noise == "reproducible" and not loaded.dp_.private
    secret = create_model("dp_ease", {"epsilon": 1.0, "max_units": 1000}, seed=0).fit(train)
    assert secret.dp_.private and secret.dp_.params()["dp_noise"] == "secret"
    assert N.TEST_SEED_VARIABLE not in __import__("os").environ


def test_noise_generators_are_independent_chacha_streams():
    noise = N.Noise()
    a, b = noise.numpy(0), noise.numpy(0)
    assert type(a.bit_generator).__name__ == "ChaCha"
    assert not np.array_equal(a.random(8), b.random(8))
    seeded = N.Noise(3)
    np.testing.assert_array_equal(seeded.numpy(5).random(4), N.Noise(3).numpy(5).random(4))
    hardened = N.gaussian(N.Noise().numpy(1), 2.0, 200_000)
    assert hardened.std() == pytest.approx(2.0, rel=0.01) and abs(hardened.mean()) < 0.02
