import numpy as np
import scipy.sparse as sp
import torch

from contract import IterativeContract
from personalize.models import create_model
from personalize.models.neural.training import NegativeSampler

PARAMS = {"factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8], "epochs": 3, "batch_size": 512}


class TestNeuMF(IterativeContract):
    model_type = "neumf"
    epochs_param = "epochs"
    params = PARAMS


def test_the_scorer_reads_the_networks_weights_and_saves_them_as_arrays(contract_data):
    _, _, train, _ = contract_data
    model = create_model("neumf", {**PARAMS, "dropout": 0.1}, seed=1).fit(train)
    scorer = model.scorer()
    assert scorer.kind == "neumf" and scorer.mlp_layers == [16, 8]
    arrays, params = scorer.state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    assert params == {"factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8]}


def test_all_items_scoring_matches_the_pairwise_forward(contract_data):
    _, index, train, _ = contract_data
    model = create_model("neumf", PARAMS, seed=2).fit(train)
    users = torch.tensor([0, 3, 7])
    grid_u = users.repeat_interleave(index.n_items)
    grid_i = torch.arange(index.n_items).repeat(len(users))
    with torch.no_grad():
        pairwise = model.net_(grid_u, grid_i).reshape(len(users), -1).numpy()
    np.testing.assert_allclose(model.score(users.numpy()), pairwise, rtol=1e-5, atol=1e-5)


def test_fitting_leaves_the_global_torch_rng_alone(contract_data):
    _, _, train, _ = contract_data
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    create_model("neumf", {**PARAMS, "epochs": 1}, seed=5).fit(train)
    assert torch.equal(torch.rand(3), expected)


def test_different_seeds_give_different_models(contract_data):
    _, _, train, _ = contract_data
    a = create_model("neumf", {**PARAMS, "epochs": 1}, seed=0).fit(train).score(np.arange(5))
    b = create_model("neumf", {**PARAMS, "epochs": 1}, seed=1).fit(train).score(np.arange(5))
    assert not np.allclose(a, b)


def test_negative_sampler_avoids_positives():
    rng = np.random.default_rng(0)
    dense = (rng.random((30, 12)) < 0.6).astype(np.float32)
    dense[:, 0] = 0  # every user has at least one unseen item
    sampler = NegativeSampler(sp.csr_matrix(dense), rounds=50)
    users = np.repeat(np.arange(30), 40)
    items = sampler.sample(users, np.random.default_rng(1))
    assert (dense[users, items] == 0).all()
    assert len(np.unique(items)) > 1
