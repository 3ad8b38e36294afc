"""NeuMF and the two-tower at scale: streamed NeuMF epochs (every pair once, memory bounded by the
chunk), lazy Adam for large ID tables, TF-IDF item text, and the MovieLens results unchanged by
any of it (each default path compared bit for bit against the code it replaced)."""

from __future__ import annotations

import tracemalloc
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from personalize.features.items import tfidf_text_vectors
from personalize.models import create_model
from personalize.models.hybrid.two_tower import TwoTower, TwoTowerConfig
from personalize.models.neural.neumf import NeuMF, NeuMFConfig
from personalize.models.neural.training import NegativeSampler, SparseDenseAdam, epoch_rng, seeded
from personalize.serving.state import all_data

# ------------------------------------------------------------------ the code the changes replaced


class ReferenceNeuMF(NeuMF):
    """NeuMF's epoch as it was before streaming: every example built at once, one permutation."""

    def _build(self, data):
        c = self.config
        self.net_ = self._make_net(data.n_users, data.n_items)
        self.net_.init_weights(c.init_std)
        self.optimizer_ = torch.optim.Adam(
            self.net_.parameters(), lr=c.learning_rate, weight_decay=c.weight_decay, foreach=True
        )
        coo = data.matrix.tocoo()
        k = c.negatives
        self._users = np.repeat(coo.row.astype(np.int64), 1 + k)
        self._items = np.repeat(coo.col.astype(np.int64), 1 + k)
        self._labels = np.zeros(len(self._users), dtype=np.float32)
        self._labels[:: 1 + k] = 1.0
        self._neg = self._labels == 0
        self._neg_users = self._users[self._neg]
        self._sampler = ReferenceSampler(data.matrix)

    def _train_epoch(self, data, epoch, rng):
        c = self.config
        items = self._items.copy()
        items[self._neg] = self._sampler.sample(self._neg_users, rng)
        order = rng.permutation(len(items))
        users_t = torch.from_numpy(self._users[order])
        items_t = torch.from_numpy(items[order])
        labels_t = torch.from_numpy(self._labels[order])
        total, batches = 0.0, 0
        for start in range(0, len(order), c.batch_size):
            sl = slice(start, start + c.batch_size)
            logits = self.net_(users_t[sl], items_t[sl])
            loss = F.binary_cross_entropy_with_logits(logits, labels_t[sl])
            self.optimizer_.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer_.step()
            total += float(loss.detach())
            batches += 1
        return total / max(1, batches)


class ReferenceSampler(NegativeSampler):
    """The sampler as it was: every round rechecks every entry."""

    def sample(self, users, rng):
        items = rng.integers(0, self.n_items, size=len(users))
        for _ in range(self.rounds):
            bad = np.flatnonzero(self.is_positive(users, items))
            if len(bad) == 0:
                break
            items[bad] = rng.integers(0, self.n_items, size=len(bad))
        return items


class ReferenceTwoTower(TwoTower):
    """The two-tower with its optimiser built as before (plain Adam over every parameter)."""

    def _build(self, data):
        super()._build(data)
        self.optimizer_ = torch.optim.Adam(
            self.net_.parameters(),
            lr=self.config.learning_rate,
            weight_decay=self.config.weight_decay,
            foreach=True,
        )


@pytest.fixture(scope="module")
def small_data(ml100k_small):
    return all_data(ml100k_small)


def _scores(model, data) -> np.ndarray:
    return model.fit(data).score(np.arange(data.n_users))


def test_neumf_on_movielens_is_bit_identical_to_the_unstreamed_epoch(small_data):
    params = {"epochs": 2, "progress": False}
    assert small_data.matrix.nnz <= NeuMFConfig().chunk_pairs  # the default takes the one-chunk path
    new = _scores(NeuMF(params, seed=3), small_data)
    old = _scores(ReferenceNeuMF(params, seed=3), small_data)
    assert np.array_equal(new, old)
    # streaming in chunks is a different (equally valid) order: the results move
    chunked = _scores(NeuMF({**params, "chunk_pairs": 1000}, seed=3), small_data)
    assert not np.array_equal(chunked, old) and np.isfinite(chunked).all()


@pytest.mark.parametrize("loss", ["softmax", "bpr"])
def test_two_tower_default_path_is_bit_identical(small_data, loss):
    params = {"epochs": 1, "progress": False, "text": False, "loss": loss}
    new = _scores(TwoTower(params, seed=1), small_data)
    old = _scores(ReferenceTwoTower(params, seed=1), small_data)
    assert np.array_equal(new, old)


def test_negative_sampler_redraws_like_before():
    rng = np.random.default_rng(0)
    dense = rng.random((50, 12)) < 0.7  # most cells positive: many rounds of redraws
    dense[:, 0] = False  # every user keeps an unobserved item
    matrix = sp.csr_matrix(dense.astype(np.float32))
    users = np.repeat(np.arange(50), 40)
    new = NegativeSampler(matrix).sample(users, np.random.default_rng(5))
    old = ReferenceSampler(matrix).sample(users, np.random.default_rng(5))
    assert np.array_equal(new, old)
    assert not NegativeSampler(matrix).is_positive(users, new).all()


# ------------------------------------------------------------------------- streamed NeuMF epochs


def _random_matrix(n_users: int, n_items: int, pairs: int, seed: int = 0) -> sp.csr_matrix:
    keys = np.unique(np.random.default_rng(seed).integers(0, n_users * n_items, size=pairs))
    m = sp.csr_matrix(
        (np.ones(len(keys), np.float32), (keys // n_items, keys % n_items)), shape=(n_users, n_items)
    )
    return m


def _built(matrix: sp.csr_matrix, **params) -> NeuMF:
    """A NeuMF with its training state built on ``matrix`` (no training)."""
    model = NeuMF({"factors": 4, "mlp_embedding": 4, "mlp_layers": [4], "progress": False, **params}, seed=0)
    data = SimpleNamespace(matrix=matrix, n_users=matrix.shape[0], n_items=matrix.shape[1])
    with seeded(0):
        model._build(data)
    return model


def test_chunked_epoch_visits_every_pair_once_with_its_negatives():
    matrix = _random_matrix(3000, 400, 24_000)
    pairs, k, chunk, batch = matrix.nnz, 3, 5000, 1000
    model = _built(matrix, chunk_pairs=chunk, negatives=k, batch_size=batch)
    chunks = list(model.epoch_examples(epoch_rng(0, 1)))
    assert len(chunks) == -(-pairs // chunk)
    keys = []
    for users, items, labels in chunks:
        positive = labels == 1
        assert len(users) == positive.sum() * (1 + k) <= chunk * (1 + k)
        # each positive's k negatives are of the same user and in the same chunk
        assert np.array_equal(
            np.bincount(users[~positive], minlength=3000), k * np.bincount(users[positive], minlength=3000)
        )
        assert not model._sampler.is_positive(users[~positive], items[~positive]).any()
        keys.append(users[positive] * 400 + items[positive])
    coo = matrix.tocoo()
    assert np.array_equal(np.sort(np.concatenate(keys)), np.sort(coo.row * 400 + coo.col.astype(np.int64)))
    # batches run across chunk boundaries: every batch but the last is full, the order kept
    batches = list(model._batches(epoch_rng(0, 1)))
    assert [len(b[0]) for b in batches[:-1]] == [batch] * (len(batches) - 1)
    assert sum(len(b[0]) for b in batches) == pairs * (1 + k)
    for j in range(3):
        assert np.array_equal(np.concatenate([b[j] for b in batches]), np.concatenate([c[j] for c in chunks]))
    # at most chunk_pairs pairs: one chunk, everything shuffled together
    whole = _built(matrix, chunk_pairs=pairs, negatives=k)
    assert len(list(whole.epoch_examples(epoch_rng(0, 1)))) == 1


def _epoch_peak(matrix: sp.csr_matrix, chunk_pairs: int) -> int:
    """Peak traced bytes of building NeuMF's training state and one epoch's examples."""
    tracemalloc.start()
    try:
        model = _built(matrix, chunk_pairs=chunk_pairs, negatives=4, batch_size=2048)
        for _ in model._batches(epoch_rng(0, 1)):
            pass
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_streamed_epoch_memory_is_bounded_by_the_chunk():
    matrix = _random_matrix(20_000, 2_000, 300_000)
    whole = _epoch_peak(matrix, chunk_pairs=matrix.nnz)
    chunked = _epoch_peak(matrix, chunk_pairs=20_000)
    # whole: pairs x 5 examples (users, items, labels, mask, copies); chunked: O(pairs) indices
    assert whole > 60 * 2**20
    assert chunked < 0.3 * whole


# --------------------------------------------------------------------------- lazy Adam (sparse)


def test_sparse_embeddings_update_only_the_rows_in_the_batch():
    matrix = _random_matrix(200, 50, 2000)
    moved = {}
    for sparse in (False, True):
        model = _built(matrix, sparse_embeddings=sparse, learning_rate=0.1)
        assert isinstance(model.optimizer_, SparseDenseAdam) == sparse
        net = model.net_
        for users in ([0, 1], [2, 3]):  # two steps on disjoint users
            u = torch.tensor(users)
            loss = F.binary_cross_entropy_with_logits(net(u, torch.tensor([0, 1])), torch.ones(2))
            model.optimizer_.zero_grad(set_to_none=True)
            if users == [2, 3]:
                before = net.user_gmf.weight[:2].detach().clone()
            loss.backward()
            model.optimizer_.step()
        moved[sparse] = not torch.equal(before, net.user_gmf.weight[:2])
    assert moved == {False: True, True: False}  # dense Adam's momentum moves rows 0-1 in step 2


def test_sparse_embeddings_need_no_weight_decay_and_plain_bags():
    with pytest.raises(ValidationError, match="weight_decay"):
        NeuMFConfig(sparse_embeddings=True, weight_decay=0.01)
    with pytest.raises(ValidationError, match="weight_decay"):
        TwoTowerConfig(sparse_embeddings=True, weight_decay=0.01)
    with pytest.raises(ValidationError, match="backend"):
        TwoTowerConfig(sparse_embeddings=True, backend="torchrec")


def test_two_tower_sparse_trains_and_scores(small_data):
    model = create_model(
        "two_tower", {"epochs": 1, "progress": False, "text": False, "sparse_embeddings": True}, 0
    ).fit(small_data)
    assert model.backend_ == "torch"
    assert all(bag.sparse for bag in model.net_.user.bags.embedding_bags.values())
    scores = model.score(np.arange(small_data.n_users))
    assert scores.shape == (small_data.n_users, small_data.n_items) and np.isfinite(scores).all()


# ------------------------------------------------------------------------------- TF-IDF item text


def test_tfidf_text_vectors_are_unit_rows_of_fixed_width_and_follow_the_words():
    items = pd.DataFrame(
        {
            "item_id": [1, 2, 3, 4],
            "title": ["Red River", "Red River Two", "Quiet Moon", None],
            "year": [1990, 1991, None, None],
            "genres": [["Western"], ["Western"], ["Drama"], []],
            "description": ["cattle drive across texas", "another cattle drive", "a lunar silence", None],
        }
    )
    v = tfidf_text_vectors(items, dim=16, seed=0)
    assert v.shape == (4, 16) and v.dtype == np.float32
    norms = np.linalg.norm(v, axis=1)
    np.testing.assert_allclose(norms[norms > 0], 1.0, rtol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3  # shared title, genre and description words
    assert np.array_equal(v, tfidf_text_vectors(items, dim=16, seed=0))
    # without the description column the documents are item_texts' alone, still usable
    assert tfidf_text_vectors(items.drop(columns="description"), dim=8).shape == (4, 8)
    with pytest.raises(ValueError, match="width"):
        tfidf_text_vectors(items, dim=0)


def test_two_tower_tfidf_text_feeds_the_item_tower(small_data):
    params = {"epochs": 1, "progress": False, "text_source": "tfidf", "tfidf_dim": 24}
    model = create_model("two_tower", params, 0).fit(small_data)
    dense = model.item_features_.dense
    assert dense.shape == (small_data.n_items, 24)
    assert np.array_equal(dense, tfidf_text_vectors(small_data.items, 24, 0))
    without = create_model("two_tower", {**params, "text": False}, 0).fit(small_data)
    assert not np.array_equal(model.score(np.arange(5)), without.score(np.arange(5)))


def test_sparse_two_tower_starts_from_the_dense_default_weights(small_data):
    nets = {}
    for sparse in (False, True):
        model = TwoTower({"text": False, "backend": "torch", "sparse_embeddings": sparse}, seed=0)
        model._build(small_data)
        nets[sparse] = model.net_.state_dict()
    assert nets[False].keys() == nets[True].keys()
    assert all(torch.equal(nets[False][k], nets[True][k]) for k in nets[False])


def test_dp_neumf_refuses_sparse_embeddings():
    """DP-SGD clips dense per-sample gradients: the private NeuMF keeps its tables dense."""
    from personalize.core.errors import ConfigError

    with pytest.raises(ConfigError, match="dp_neumf trains dense embedding tables"):
        create_model("dp_neumf", {"sparse_embeddings": True}, 0)
    assert create_model("dp_neumf", {}, 0).config.sparse_embeddings is False
