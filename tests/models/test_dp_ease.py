from contract import RecommenderContract


# The private variants fit 80 users at delta 1e-6 (N = 1000): the Gram noise outweighs their
# co-occurrences, so only the clipped, noiseless variant is held to beating random.
class TestDPEASE(RecommenderContract):
    model_type = "dp_ease"
    params = {"max_units": 1000, "epsilon": 8.0, "l2": 50.0}
    beats_random = False


class TestDPEASENotPrivate(RecommenderContract):
    model_type = "dp_ease"
    params = {"l2": 50.0, "clip": 3.0}


class TestDPPopularity(RecommenderContract):
    model_type = "dp_popularity"
    params = {"max_units": 1000, "epsilon": 8.0}


class TestDPEASELowRank(RecommenderContract):
    model_type = "dp_ease"
    params = {"max_units": 1000, "epsilon": 8.0, "l2": 50.0, "rank": 20}
    beats_random = False


def test_low_rank_is_the_ridge_autoencoder_on_the_top_directions(contract_data):
    """rank k: B = V_k diag(w / (w + l2)) V_k^T with a zero diagonal (w: the k largest eigenvalues of
    the clipped Gram matrix, here without noise); with every direction kept it is the ridge
    solution G (G + l2 I)^-1, checked by hand; fewer directions change the weights."""
    import numpy as np

    from personalize.models.privacy.dp_ease import clipped_gram
    from personalize.models.registry import create_model

    _, _, train, _ = contract_data
    gram = clipped_gram(train.matrix, 1.0)
    n = gram.shape[0]
    full = create_model("dp_ease", {"l2": 5.0, "rank": n}).fit(train).weights_
    ridge = gram @ np.linalg.inv(gram + 5.0 * np.eye(n))
    np.fill_diagonal(ridge, 0.0)
    np.testing.assert_allclose(full, ridge, atol=1e-5)
    low = create_model("dp_ease", {"l2": 5.0, "rank": 5}).fit(train).weights_
    w, v = np.linalg.eigh(gram)
    top = np.argsort(w)[::-1][:5]
    expected = (v[:, top] * (w[top] / (w[top] + 5.0))) @ v[:, top].T
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(low, expected, atol=1e-5)
    assert np.abs(low - full).max() > 1e-3
