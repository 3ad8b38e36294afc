import numpy as np
import pytest
import scipy.sparse as sp
import torch

from contract import IterativeContract
from personalize import scoring
from personalize.models import create_model
from personalize.models.neural.multvae import multvae_loss

PARAMS = {"hidden": 16, "latent": 8, "epochs": 2, "batch_size": 32, "total_anneal_steps": 4}


class TestMultVAE(IterativeContract):
    model_type = "multvae"
    epochs_param = "epochs"
    params = PARAMS


def test_the_numpy_scorer_is_the_networks_mean_forward_pass(contract_data):
    _, _, train, _ = contract_data
    model = create_model("multvae", PARAMS, seed=1).fit(train)
    scorer = model.scorer()
    assert scorer.kind == "autoencoder" and scorer.folds_in
    users = np.flatnonzero(model.user_history_ > 0)[:10]
    x = torch.from_numpy(train.matrix[users].toarray())
    model.net_.eval()
    with torch.no_grad():
        logits, _, _ = model.net_(x)
        again, _, _ = model.net_(x)
    torch.testing.assert_close(logits, again)  # eval: no sampling, no dropout
    np.testing.assert_allclose(model.score(users), logits.numpy(), rtol=1e-4, atol=1e-5)
    arrays, params = scorer.state()
    assert set(arrays) == set(scoring.Autoencoder.ARRAYS) and params == {}
    assert arrays["w1"].shape == (train.n_items, 16) and arrays["w_mu"].shape == (16, 8)


def test_a_folded_in_history_changes_the_answer(contract_data):
    _, _, train, _ = contract_data
    model = create_model("multvae", PARAMS, seed=1).fit(train)
    user = int(np.flatnonzero(model.user_history_ > 0)[0])
    row = train.matrix[user].toarray()
    unseen = np.flatnonzero(row[0] == 0)[:20]
    row[0, unseen] = 1.0
    ctx = scoring.Context.build(sp.csr_matrix(row), model.popularity_, owners=np.array([user]))
    folded = model.scorer().answer(np.array([0]), ctx)
    assert not np.allclose(folded, model.score(np.array([user])))
    # a user the model never saw, with history, is answered by the model itself
    ctx_new = scoring.Context.build(sp.csr_matrix(row), model.popularity_, owners=np.array([-1]))
    assert model.scorer().personalised(np.array([0]), ctx_new.history, ctx_new.owners).all()
    np.testing.assert_allclose(model.scorer().answer(np.array([0]), ctx_new), folded)


def test_kl_weight_rises_linearly_to_the_cap():
    model = create_model("multvae", {"anneal_cap": 0.2, "total_anneal_steps": 10})
    assert [model.beta(s) for s in (0, 1, 2, 5, 100)] == pytest.approx([0.0, 0.1, 0.2, 0.2, 0.2])


def test_loss_is_multinomial_nll_plus_weighted_kl():
    logits = torch.tensor([[0.0, np.log(3.0)]])  # softmax = [1/4, 3/4]
    x = torch.tensor([[1.0, 2.0]])
    mu, logvar = torch.tensor([[1.0]]), torch.tensor([[0.0]])  # KL = 0.5 * mu^2 = 0.5
    want = -(np.log(0.25) + 2 * np.log(0.75)) + 0.5 * 0.5
    assert float(multvae_loss(logits, x, mu, logvar, beta=0.5)) == pytest.approx(want, rel=1e-6)
