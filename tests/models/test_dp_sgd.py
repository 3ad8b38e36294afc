"""DP-SGD models: user-level Mult-VAE and event-level NeuMF (Opacus), their accounting checked
against Google's dp_accounting, per-sample clipping checked against per-sample gradients formed
one backward pass at a time, empty Poisson batches, the epsilon record and persistence."""

from __future__ import annotations

import dp_accounting
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from dp_accounting import pld, rdp

from contract import IterativeContract
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models import EpochReport, Recommender, create_model
from personalize.models.neural.multvae import MultVAENet
from personalize.models.neural.neumf import NeuMFNet
from personalize.models.privacy.dp_neumf import sample_negatives
from personalize.models.privacy.dpsgd import (
    EPSILON_TOLERANCE,
    DPSGDConfig,
    PrivateSGD,
    calibrate_noise,
    epsilon_spent,
    sampling_plan,
)
from personalize.models.privacy.noise import reproducible_noise

VAE = {
    "max_units": 1000,
    "hidden": 16,
    "latent": 8,
    "epochs": 3,
    "batch_size": 40,
    "total_anneal_steps": 4,
    "accountant": "rdp",
}
NEUMF = {
    "max_units": 10_000,
    "factors": 8,
    "mlp_embedding": 8,
    "mlp_layers": [16, 8],
    "epochs": 2,
    "batch_size": 512,
    "accountant": "rdp",
    "learning_rate": 0.01,
}


class TestDPMultVAE(IterativeContract):
    model_type = "dp_multvae"
    epochs_param = "epochs"
    params = {**VAE, "epsilon": 8.0}
    # 80 users under a public bound of 1,000: a Poisson batch holds about 3 users, whose clipped
    # gradients the noise of an expected batch of 40 outweighs; the clipped model below is held to
    # beating random
    beats_random = False


class TestDPMultVAEClippingOnly(IterativeContract):
    model_type = "dp_multvae"
    epochs_param = "epochs"
    params = {**VAE, "clip": 0.5, "grad_sample_mode": "hooks"}


class TestDPNeuMF(IterativeContract):
    model_type = "dp_neumf"
    epochs_param = "epochs"
    params = {**NEUMF, "epsilon": 8.0}
    # 80 users, 2 epochs: the noise on every per-user embedding row, which Adam rescales to steps of
    # the learning rate's size, leaves the private model near random here (the clipped model below
    # is held to beating it)
    beats_random = False


class TestDPNeuMFClippingOnly(IterativeContract):
    model_type = "dp_neumf"
    epochs_param = "epochs"
    params = {**NEUMF, "batch_size": 256, "learning_rate": 0.02, "grad_sample_mode": "hooks"}


# ----------------------------------------------------------------------------- accounting


def dp_accounting_epsilon(sigma: float, q: float, steps: int, delta: float, kind: str) -> float:
    """epsilon of ``steps`` Poisson-subsampled Gaussian steps by Google's dp_accounting."""
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
    )
    accountant = (
        rdp.RdpAccountant() if kind == "rdp" else pld.PLDAccountant(value_discretization_interval=1e-3)
    )
    accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.mark.parametrize(
    "sigma, q, steps, delta",
    [(1.1, 0.01, 1000, 1e-5), (0.7, 0.25, 12, 1e-3), (0.9, 0.032, 62, 1.25e-5)],
)
def test_our_accountants_agree_with_dp_accounting(sigma, q, steps, delta):
    """Opacus' RDP (the same bound, other orders) within 1%; PRV (an upper bound at eps_error 0.01)
    against dp_accounting's PLD (pessimistic discretisation 1e-3) within 0.03 absolute."""
    ours_rdp = epsilon_spent(sigma, q, steps, delta, "rdp")
    assert ours_rdp == pytest.approx(dp_accounting_epsilon(sigma, q, steps, delta, "rdp"), rel=0.01)
    ours_prv = epsilon_spent(sigma, q, steps, delta, "prv")
    assert ours_prv == pytest.approx(dp_accounting_epsilon(sigma, q, steps, delta, "pld"), abs=0.03)
    assert ours_prv < ours_rdp  # the PRV/PLD accounting is the tighter one


@pytest.mark.parametrize("accountant, independent", [("prv", "pld"), ("rdp", "rdp")])
def test_the_calibrated_noise_spends_the_target_per_dp_accounting(accountant, independent):
    eps, delta, q, steps = 2.0, 1e-5, 0.02, 300
    z = calibrate_noise(eps, delta, q, steps, accountant)
    spent = epsilon_spent(z, q, steps, delta, accountant)
    assert eps - EPSILON_TOLERANCE <= spent <= eps
    assert dp_accounting_epsilon(z, q, steps, delta, independent) == pytest.approx(eps, abs=0.03)
    # 10% less noise would overspend
    assert dp_accounting_epsilon(0.9 * z, q, steps, delta, independent) > eps + 0.05


def test_sampling_plan_and_delta_rules():
    """q, the steps per epoch and delta come from the public bound N (max_units), never from the
    number of units in the data (30 here)."""
    assert sampling_plan(500, 943) == (500 / 943, 2)
    assert sampling_plan(1024, 80_000) == (1024 / 80_000, 78)
    assert sampling_plan(1000, 80) == (1.0, 1)  # q capped at 1: every unit in every step
    with pytest.raises(ConfigError, match=r"delta.*below 1 / \(10 N\)"):
        create_model("dp_multvae", {**VAE, "epsilon": 1.0, "delta": 1e-4})
    net = torch.nn.Linear(3, 1)
    private = PrivateSGD(
        net,
        torch.optim.SGD(net.parameters(), lr=0.1),
        config=DPSGDConfig(epsilon=1.0, max_units=1000, accountant="rdp"),
        batch_size=40,
        epochs=2,
        n_units=30,
        unit="user",
    )
    assert (private.sample_rate, private.steps_per_epoch, private.planned_steps) == (0.04, 25, 50)
    assert private.expected_batch_size == 40 and private.delta == 1e-6
    private.close()
    model = create_model("dp_multvae", {**VAE, "epsilon": 1.0, "max_units": 29})
    with pytest.raises(DataError, match="max_units"):
        model.fit(tiny_data(n_users=30))
    with pytest.raises(ConfigError, match="clip"):
        create_model("dp_neumf", {"epsilon": 1.0, "clip": None, "max_units": 10_000})


# ----------------------------------------------------------------------------- clipping


def tiny_data(n_users: int = 12, n_items: int = 9, seed: int = 0) -> InteractionData:
    import pandas as pd

    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.4
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # every user has a row
    u, i = np.nonzero(dense)
    frame = pd.DataFrame({C.USER: u + 1, C.ITEM: i + 1, C.TIMESTAMP: np.arange(len(u))})
    users = pd.DataFrame({C.USER: np.arange(1, n_users + 1)})
    items = pd.DataFrame({C.ITEM: np.arange(1, n_items + 1)})
    index = IdIndex.build(users, items, frame)
    return InteractionData.build(frame, index, users, items)


def neumf_losses(net: torch.nn.Module, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    logits = net(users, items)
    labels = torch.zeros_like(logits)
    labels[:, 0] = 1.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=1)


def vae_losses(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    logits, mu, logvar = net(x)
    nll = -(torch.log_softmax(logits, dim=1) * x).sum(dim=1)
    return nll - 0.1 * (1.0 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)


def neumf_case():
    torch.manual_seed(0)
    net = NeuMFNet(6, 9, 4, 4, [8, 4])
    net.init_weights(0.5)
    rng = np.random.default_rng(0)
    users = torch.from_numpy(np.repeat(rng.integers(0, 6, (7, 1)), 3, axis=1))
    items = torch.from_numpy(rng.integers(0, 9, (7, 3)))
    return net, (users, items), neumf_losses


def vae_case():
    torch.manual_seed(0)
    net = MultVAENet(9, 8, 3, dropout=0.0)
    net.init_weights()
    x = torch.from_numpy((np.random.default_rng(0).random((7, 9)) < 0.5).astype(np.float32))
    x[:, 0] = 1.0
    return net, (x,), vae_losses


def per_sample_gradients(net, batch, losses) -> torch.Tensor:
    """One backward pass per sample: (b, number of parameters)."""
    rows = []
    for j in range(len(batch[0])):
        net.zero_grad()
        losses(net, *(t[j : j + 1] for t in batch)).sum().backward()
        rows.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    return torch.stack(rows)


def summed_update(net, state, batch, losses, clip, mode) -> torch.Tensor:
    """The gradient sum the plumbing applies, read back from one plain SGD step (lr 1): the
    update times the expected batch size (no noise: epsilon unset)."""
    net.load_state_dict(state)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    config = DPSGDConfig(clip=clip, grad_sample_mode=mode)
    private = PrivateSGD(
        net,
        torch.optim.SGD(net.parameters(), lr=1.0),
        config=config,
        batch_size=5,
        epochs=1,
        n_units=20,
        unit="user",
    )
    net.train()
    private.step(lambda: losses(net, *batch))
    private.close()
    after = torch.cat([p.detach().flatten() for p in net.parameters()])
    return (before - after) * private.expected_batch_size


@pytest.mark.parametrize("case", [neumf_case, vae_case], ids=["neumf", "multvae"])
@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_clipping_bounds_each_samples_contribution(case, mode, monkeypatch):
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # Mult-VAE: z = mu, deterministic
    net, batch, losses = case()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    clip = 0.05
    grads = per_sample_gradients(net, batch, losses)
    norms = grads.norm(dim=1)
    assert (norms > clip).all()  # every sample would exceed the bound unclipped
    clipped = grads * torch.clamp(clip / (norms + 1e-6), max=1.0)[:, None]
    assert (clipped.norm(dim=1) <= clip * (1 + 1e-6)).all()
    full = summed_update(net, state, batch, losses, clip, mode)
    torch.testing.assert_close(full, clipped.sum(dim=0), rtol=1e-4, atol=1e-6)
    # removing any one sample moves the summed update by at most clip; without clipping, by more
    unclipped = summed_update(net, state, batch, losses, None, mode)
    for j in range(len(batch[0])):
        keep = [k for k in range(len(batch[0])) if k != j]
        rest = tuple(t[keep] for t in batch)
        assert (full - summed_update(net, state, rest, losses, clip, mode)).norm() <= clip * (1 + 1e-4)
        assert (unclipped - summed_update(net, state, rest, losses, None, mode)).norm() > clip


def test_ghost_and_hooks_train_the_same_model():
    data = tiny_data()
    params = {**VAE, "epsilon": 4.0, "batch_size": 4, "dropout": 0.0}
    with reproducible_noise(2):  # the same batches and noise for both
        a = create_model("dp_multvae", {**params, "grad_sample_mode": "ghost"}, seed=2).fit(data)
        b = create_model("dp_multvae", {**params, "grad_sample_mode": "hooks"}, seed=2).fit(data)
    for k, v in a.net_.state_dict().items():
        torch.testing.assert_close(v, b.net_.state_dict()[k], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- empty batches


def test_empty_poisson_batches_add_noise_and_are_counted():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    for mode in ("ghost", "hooks"):
        private = PrivateSGD(
            net,
            torch.optim.SGD(net.parameters(), lr=0.1),
            config=DPSGDConfig(epsilon=5.0, max_units=500, grad_sample_mode=mode, accountant="rdp"),
            batch_size=1,
            epochs=2,
            n_units=500,
            unit="user",
        )
        assert private.sample_rate == 1 / 500 and private.steps_per_epoch == 500
        batches = list(private.batches(np.random.default_rng(0)))
        empty = [b for b in batches if len(b) == 0]
        assert len(empty) > 100  # P(empty) = (1 - 1/500)^500, about 0.37
        before = net.weight.detach().clone()
        assert private.step(None) is None  # no samples: noise only
        assert not torch.equal(before, net.weight)
        x = torch.ones(1, 3)
        private.step(lambda x=x: net(x).squeeze(-1))
        private.close()
        assert private.steps == 2 and private.empty_steps == 1
        assert private.accountant.history == [(private.noise_multiplier, 1 / 500, 2)]


def test_a_model_fits_through_empty_batches_and_counts_them(monkeypatch):
    data = tiny_data(n_users=40)
    sizes = []
    batches = PrivateSGD.batches

    def recorded(self, rng):
        for positions in batches(self, rng):
            sizes.append(len(positions))
            yield positions

    monkeypatch.setattr(PrivateSGD, "batches", recorded)
    params = {**VAE, "epsilon": 4.0, "batch_size": 1, "epochs": 1, "max_units": 40}
    model = create_model("dp_multvae", params, seed=0).fit(data)
    assert len(sizes) == 40 and sizes.count(0) > 0  # P(empty) = (1 - 1/40)^40, about 0.36 each
    assert model.dp_.steps == 40
    z = model.dp_.noise_multiplier
    assert model.epsilon_history_[-1] == pytest.approx(epsilon_spent(z, 1 / 40, 40, model.dp_.delta, "rdp"))


# ----------------------------------------------------------------------------- epsilon record


def test_epsilon_history_rises_to_the_target_and_early_stopping_spends_less():
    data = tiny_data(n_users=30)
    params = {**VAE, "epsilon": 3.0, "batch_size": 10, "epochs": 4, "accountant": "prv", "max_units": 30}
    model = create_model("dp_multvae", params, seed=0).fit(data)
    history = model.epsilon_history_
    assert len(history) == 4 and np.all(np.diff(history) > 0)
    assert 3.0 - EPSILON_TOLERANCE <= history[-1] <= 3.0 + 1e-9
    spec = model.dp_
    assert (spec.unit, spec.mechanism, spec.accountant) == ("user", "dp_sgd", "prv")
    assert spec.delta == 1e-6 and spec.sample_rate == pytest.approx(1 / 3)
    assert spec.steps == 12 and spec.epsilon_spent == history[-1] and spec.sigma == spec.noise_multiplier

    def stop_at_two(model, epoch, loss):
        return EpochReport(value=float(-epoch), improved=epoch == 1, stop=epoch >= 2)

    stopped = create_model("dp_multvae", params, seed=0).fit(data, stop_at_two)
    assert stopped.epsilon_history_ == history[:2] and stopped.dp_.steps == 6
    assert stopped.dp_.noise_multiplier == spec.noise_multiplier  # calibrated for the planned 4 epochs
    # the refit plans best_epoch epochs and is calibrated again: it spends the target
    refit = create_model("dp_multvae", stopped.selected_config().model_dump(), seed=0).fit(data)
    assert refit.config.epochs == 1 and refit.dp_.noise_multiplier < spec.noise_multiplier
    assert 3.0 - EPSILON_TOLERANCE <= refit.epsilon_history_[-1] <= 3.0 + 1e-9


def test_same_seed_same_weights_only_under_the_test_switch_and_the_record_survives_save_and_load(tmp_path):
    data = tiny_data(n_users=30)
    params = {**NEUMF, "epsilon": 2.0, "batch_size": 16, "negatives": 2, "max_units": 1000}
    with reproducible_noise(4):
        a = create_model("dp_neumf", params, seed=4).fit(data)
        b = create_model("dp_neumf", params, seed=4).fit(data)
    for k, v in a.net_.state_dict().items():
        assert torch.equal(v, b.net_.state_dict()[k])
    c = create_model("dp_neumf", params, seed=4).fit(data)  # secret noise and batches: other weights
    assert not torch.equal(a.net_.user_gmf.weight, c.net_.user_gmf.weight)
    assert a.dp_.unit == "event" and a.dp_.delta == 1e-6 and a.dp_.max_units == 1000
    assert a.dp_.noise == "reproducible" and not a.dp_.private and c.dp_.private
    for model in (a, c):
        loaded = Recommender.load(model.save(tmp_path / str(id(model))))
        assert loaded.dp_ == model.dp_ and loaded.epsilon_history_ == model.epsilon_history_
        np.testing.assert_array_equal(loaded.popularity_, model.popularity_)


def test_private_models_do_not_fall_back_on_the_raw_item_counts():
    from personalize import scoring

    data = tiny_data(n_users=30)
    vae = create_model("dp_multvae", {**VAE, "epsilon": 2.0}, seed=0).fit(data)
    empty = scoring.Context.build(sp.csr_matrix((1, vae.n_items), dtype=np.float32), vae.popularity_)
    # the fallback is the network's own answer to an empty history (post-processing of the weights)
    np.testing.assert_allclose(
        vae.popularity_, vae.scorer().score(np.array([0]), empty)[0], rtol=1e-5, atol=1e-6
    )
    neumf = create_model("dp_neumf", {**NEUMF, "epsilon": 2.0, "batch_size": 16}, seed=0).fit(data)
    assert not np.allclose(neumf.popularity_, data.item_popularity)
    plain = create_model("dp_multvae", VAE, seed=0).fit(data)
    np.testing.assert_array_equal(plain.popularity_, data.item_popularity.astype(np.float32))


def test_event_level_negatives_avoid_only_the_samples_own_item():
    items = np.array([0, 3, 8, 8])
    neg = sample_negatives(items, 9, 500, np.random.default_rng(0))
    assert neg.shape == (4, 500) and neg.min() >= 0 and neg.max() <= 8
    assert not (neg == items[:, None]).any()
    for row, item in zip(neg, items):
        assert set(np.unique(row)) == set(range(9)) - {item}  # uniform over the other items
