"""User segments: the profile table's training-only input, clustering, the choice of k, its
stability, the segment model that labels new users, and the autoencoder route."""

from __future__ import annotations

import dataclasses
import pickle
import time

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import silhouette_score

from personalize.config.segments import AutoencoderConfig, ClusteringConfig, ProfileConfig
from personalize.config.split import SplitConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.splits import make_split
from personalize.features.profile_table import BEHAVIOUR, ProfileTable, build_profile_table
from personalize.segments.autoencoder import (
    AutoencoderRoute,
    autoencoder_route,
    compare_routes,
    fit_autoencoder,
    interaction_vectors,
)
from personalize.segments.clustering import (
    canonical_labels,
    choose_k,
    cluster,
    clustering_input,
    fit_segment_model,
    selection_table,
    subset_silhouettes,
)

# Small settings that keep each test to a few seconds; the defaults are measured in the slow test.
FAST = ClusteringConfig(ks=[2, 3, 4], choose_from=(3, 4), seeds=[0, 1], bootstrap=3, n_init=3)
FAST_AE = AutoencoderConfig(latent=4, hidden=32, epochs=3, batch_size=256)


def _train(split) -> InteractionData:
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    return InteractionData.build(split.train, index, split.users, split.items)


def _fake_embeddings(items: pd.DataFrame, dim: int = 12) -> np.ndarray:
    """Item vectors that exercise the embedding block without the sentence model."""
    return np.random.default_rng(0).normal(size=(len(items), dim)).astype(np.float32)


@pytest.fixture(scope="module")
def prepared(ml100k):
    split = make_split(ml100k.interactions, SplitConfig(), 0, ml100k.users, ml100k.items)
    train = _train(split)
    profiles = build_profile_table(train, _fake_embeddings(train.items), ml100k.fingerprint)
    return split, train, profiles


@pytest.fixture(scope="module")
def fitted(prepared):
    _, _, profiles = prepared
    return fit_segment_model(profiles, ProfileConfig(), FAST, seed=0)


def _with_table(profiles: ProfileTable, table: pd.DataFrame) -> ProfileTable:
    return ProfileTable(
        table, profiles.cutoff, profiles.data_fingerprint, profiles.feature_set, profiles.first_n
    )


# ------------------------------------------------------------------------ profile input


def test_profile_table_uses_training_rows_only(prepared, ml100k):
    split, _, profiles = prepared
    test = split.test.copy()
    test[C.RATING] = 6.0 - test[C.RATING]  # changed test rows
    test[C.TIMESTAMP] = test[C.TIMESTAMP] + pd.Timedelta(days=30)
    test = test.iloc[::2]  # and half of them removed
    newcomer = pd.DataFrame(  # a user whose only rows are test rows
        {
            C.USER: [10_000] * 3,
            C.ITEM: split.items[C.ITEM].iloc[:3].to_numpy(),
            C.RATING: [5.0, 4.0, 3.0],
            C.TIMESTAMP: [split.train[C.TIMESTAMP].max() + pd.Timedelta(hours=h) for h in (1, 2, 3)],
        }
    )
    test = pd.concat([test, newcomer], ignore_index=True)
    train = _train(dataclasses.replace(split, test=test))
    assert 10_000 in train.index.users  # the newcomer is indexed ...
    again = build_profile_table(train, _fake_embeddings(train.items), ml100k.fingerprint)
    pd.testing.assert_frame_equal(profiles.table, again.table)  # ... but nothing of test enters
    assert 10_000 not in again.table.index
    assert set(again.table.index) == set(split.train[C.USER])
    assert again.fingerprint == profiles.fingerprint


def test_scaler_is_fitted_on_training_users_only(prepared, fitted):
    split, _, profiles = prepared
    model, _, _ = fitted
    behaviour = model.scaler.pipeline_.named_transformers_["behaviour"]
    np.testing.assert_allclose(behaviour.mean_, profiles.table[BEHAVIOUR].mean().to_numpy())
    before = pickle.dumps((model.scaler, model.centroids, model.labels))
    x_before = model.transform(profiles)
    # the same users with more interactions (train + validation + test): changed profiles
    everything = pd.concat([split.train, split.valid, split.test], ignore_index=True)
    later = InteractionData.build(everything, _train(split).index, split.users, split.items)
    changed = build_profile_table(later, _fake_embeddings(later.items), "later")
    assigned = model.assign(changed)
    assert assigned.index.equals(changed.table.index) and assigned.between(0, model.k - 1).all()
    assert pickle.dumps((model.scaler, model.centroids, model.labels)) == before
    np.testing.assert_array_equal(model.transform(profiles), x_before)


# ------------------------------------------------------------------------ clustering


def test_segments_are_deterministic_by_seed(prepared, fitted):
    _, _, profiles = prepared
    model, table, choice = fitted
    again, table_again, choice_again = fit_segment_model(profiles, ProfileConfig(), FAST, seed=0)
    pd.testing.assert_frame_equal(table, table_again)
    pd.testing.assert_series_equal(model.labels, again.labels)
    np.testing.assert_array_equal(model.centroids, again.centroids)
    assert choice == choice_again
    assert model.profile_fingerprint == profiles.fingerprint


def test_labels_do_not_depend_on_row_order(prepared, fitted):
    _, _, profiles = prepared
    model, table, _ = fitted
    shuffled = profiles.table.sample(frac=1.0, random_state=7)
    assert not shuffled.index.equals(profiles.table.index)
    other, other_table, _ = fit_segment_model(_with_table(profiles, shuffled), ProfileConfig(), FAST, seed=0)
    pd.testing.assert_frame_equal(table, other_table)
    pd.testing.assert_series_equal(model.labels, other.labels)
    # the same partition under other numbers (a relabelled solution) gets the same labels
    x = model.transform(clustering_input(profiles))
    relabelled = (model.labels.to_numpy() + 1) % model.k
    np.testing.assert_array_equal(canonical_labels(relabelled, x), model.labels.to_numpy())
    sizes = np.bincount(model.labels.to_numpy())
    assert (np.diff(sizes) <= 0).all(), "segment 0 is the largest"


def test_canonical_labels_break_size_ties_by_centroid():
    x = np.array([[0.0], [0.1], [5.0], [5.1], [9.0]])
    a = canonical_labels(np.array([3, 3, 1, 1, 7]), x)
    b = canonical_labels(np.array([1, 1, 3, 3, 0]), x)
    np.testing.assert_array_equal(a, [0, 0, 1, 1, 2])
    np.testing.assert_array_equal(a, b)
    with pytest.raises(DataError, match="one per row"):
        canonical_labels(np.array([0, 1]), x)


def test_selection_finds_well_separated_segments():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [8, 0, 0], [0, 8, 0]], dtype=float)
    x = np.vstack([c + rng.normal(size=(60, 3)) for c in centres])
    config = ClusteringConfig(ks=[2, 3, 4, 5], choose_from=(2, 5), seeds=[0, 1, 2], bootstrap=5, n_init=5)
    table = selection_table(x, config, seed=0)
    assert list(table[["method", "k"]].itertuples(index=False, name=None)) == [
        (m, k) for m in ("kmeans", "ward") for k in (2, 3, 4, 5)
    ]
    at3 = table[table["k"] == 3].set_index("method")
    assert (at3["silhouette"] > 0.6).all() and (at3["bootstrap_ari"] > 0.98).all()
    assert (table[table["method"] == "ward"]["seed_ari"] == 1.0).all()  # Ward has no seed
    best = table.loc[table.groupby("method")["silhouette"].idxmax()]
    assert (best["k"] == 3).all()
    choice = choose_k(table, config)
    assert (choice.k, choice.stability_met) == (3, True)
    assert cluster(x, "ward", 3).tolist() == cluster(x, "ward", 3, seed=9).tolist()


def test_choose_k_rule_on_a_hand_made_table():
    table = pd.DataFrame(
        {
            "method": ["kmeans"] * 6 + ["ward"],
            "k": [2, 3, 4, 5, 6, 7, 5],
            "silhouette": [0.50, 0.30, 0.20, 0.25, 0.22, 0.40, 0.90],
            "bootstrap_ari": [0.99, 0.95, 0.85, 0.81, 0.70, 0.90, 0.99],
        }
    )
    config = ClusteringConfig(ks=list(range(2, 8)), choose_from=(3, 6), min_stability=0.8)
    choice = choose_k(table, config)  # k=2 and k=7 (and Ward) are outside the rule
    assert (choice.k, choice.stability_met, choice.silhouette) == (3, True, 0.30)
    choice = choose_k(table, config.model_copy(update={"min_stability": 0.84}))
    assert choice.k == 3
    choice = choose_k(table, config.model_copy(update={"choose_from": (4, 6)}))
    assert (choice.k, choice.stability_met) == (5, True)  # highest silhouette of the stable ones
    missed = choose_k(table, config.model_copy(update={"choose_from": (4, 6), "min_stability": 0.9}))
    assert (missed.k, missed.stability_met) == (4, False)  # none stable enough: the most stable
    assert "target missed" in missed.reason
    tie = table.assign(silhouette=0.2, bootstrap_ari=0.9)
    assert choose_k(tie, config).k == 3  # ties go to the smaller k
    with pytest.raises(ConfigError, match="no row of method 'ward'"):
        choose_k(table, config.model_copy(update={"method": "ward", "choose_from": (6, 7)}))


def test_assign_reproduces_the_fitted_labels(prepared, fitted):
    _, _, profiles = prepared
    model, _, choice = fitted
    assert model.k == choice.k and model.method == "kmeans"
    pd.testing.assert_series_equal(model.assign(profiles).sort_index(), model.labels)
    # for K-Means the nearest-centroid rule is the fitted partition itself
    x = model.transform(clustering_input(profiles))
    direct = canonical_labels(cluster(x, "kmeans", model.k, 0, FAST.n_init), x)
    assert model.reassigned == 0
    np.testing.assert_array_equal(direct, model.labels.to_numpy())
    assert model.silhouette == pytest.approx(silhouette_score(x, direct))
    ward, table, _ = fit_segment_model(profiles, ProfileConfig(), FAST.model_copy(update={"method": "ward"}))
    pd.testing.assert_series_equal(ward.assign(profiles).sort_index(), ward.labels)
    # for Ward the rule moves the users whose Ward cluster is not their nearest centroid: counted,
    # and the table scores the segments the model assigns
    pure = cluster(x, "ward", ward.k)
    moved = len(x) - (pd.crosstab(pure, ward.labels.to_numpy()).max(axis=1)).sum()
    assert 0 < moved <= ward.reassigned
    row = table[(table["method"] == "ward") & (table["k"] == ward.k)].iloc[0]
    assert row["reassigned_share"] == ward.reassigned / len(x)
    assert row["silhouette"] == pytest.approx(ward.silhouette)


def test_assign_rejects_profiles_of_another_feature_set(prepared, fitted):
    _, _, profiles = prepared
    model, _, _ = fitted
    with pytest.raises(DataError, match="lacks 1 column"):
        model.assign(_with_table(profiles, profiles.table.drop(columns=["frequency"])))
    broken = profiles.table.copy()
    broken.iloc[3, broken.columns.get_loc("frequency")] = np.nan
    with pytest.raises(DataError, match=str(broken.index[3])):
        model.assign(_with_table(profiles, broken))
    with pytest.raises(ConfigError, match="unknown clustering method"):
        cluster(np.zeros((5, 2)), "dbscan", 2)


def test_the_embedding_switch_and_blocks_shape_the_space(prepared):
    _, _, profiles = prepared
    no_embedding = ProfileConfig(embedding=False)
    model, _, _ = fit_segment_model(profiles, no_embedding, FAST.model_copy(update={"methods": ["kmeans"]}))
    assert not any(name.startswith("embedding") for name in model.feature_names)
    assert len(model.assign(profiles)) == len(profiles.table)
    behaviour, _, _ = fit_segment_model(profiles, ProfileConfig(blocks=["behaviour"]), FAST)
    assert len(behaviour.feature_names) == len(BEHAVIOUR)
    pd.testing.assert_series_equal(behaviour.assign(profiles).sort_index(), behaviour.labels)
    table = subset_silhouettes(profiles, ProfileConfig(), FAST, k=3)
    assert table["profile"].tolist() == ["full", "behaviour", "taste"]
    assert table.set_index("profile").loc["behaviour", "dimensions"] == len(BEHAVIOUR)
    assert table["silhouette"].between(-1, 1).all()


# ------------------------------------------------------------------------ autoencoder


def test_autoencoder_route_is_scored_in_the_profile_space(prepared, fitted):
    _, train, profiles = prepared
    model, table, _ = fitted
    route = autoencoder_route(train, profiles, model, FAST, FAST_AE)
    x = model.transform(clustering_input(profiles))
    assert route.labels.index.equals(model.labels.index)
    assert route.silhouette == pytest.approx(silhouette_score(x, route.labels.to_numpy()))
    assert route.silhouette_latent == pytest.approx(silhouette_score(route.latent, route.labels.to_numpy()))
    assert route.silhouette != pytest.approx(route.silhouette_latent)
    assert len(route.bootstrap) == FAST.bootstrap and len(route.losses) == FAST_AE.epochs
    routes = compare_routes(train, profiles, model, FAST, FAST_AE, table=table, route=route)
    reference = table[(table["method"] == "kmeans") & (table["k"] == model.k)].iloc[0]
    assert routes["route"].tolist() == ["profile k-means", "autoencoder k-means"]
    assert routes.loc[0, "silhouette"] == reference["silhouette"]
    assert routes.loc[1, "silhouette"] == route.silhouette
    # the same reference computed without the table
    alone = compare_routes(train, profiles, model, FAST, FAST_AE.model_copy(update={"enabled": False}))
    assert len(alone) == 1 and alone.loc[0, "silhouette"] == pytest.approx(reference["silhouette"])


def test_the_autoencoder_route_is_kept_only_by_the_margin_at_equal_stability(prepared, fitted):
    _, train, profiles = prepared
    model, table, _ = fitted
    ref = table[(table["method"] == "kmeans") & (table["k"] == model.k)].iloc[0]

    def kept(silhouette: float, ari: float, margin: float = 0.05) -> bool:
        route = AutoencoderRoute(
            model.labels, np.zeros((1, 1)), [], silhouette, 0.0, np.array([ari, ari]), 0.0
        )
        config = FAST_AE.model_copy(update={"keep_margin": margin})
        return bool(compare_routes(train, profiles, model, FAST, config, table, route).loc[1, "kept"])

    sil, ari, std = ref["silhouette"], ref["bootstrap_ari"], ref["bootstrap_ari_std"]
    assert kept(sil + 0.06, ari)
    assert not kept(sil + 0.04, ari)
    assert kept(sil + 0.04, ari, margin=0.0)
    assert not kept(sil + 0.5, ari - std - 0.05)  # better separated but less stable


def test_autoencoder_is_deterministic_by_seed(prepared):
    _, train, profiles = prepared
    vectors = interaction_vectors(train, profiles.table.index[:200])
    assert vectors.shape == (200, train.n_items) and set(np.unique(vectors)) == {0.0, 1.0}
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = fit_autoencoder(vectors, FAST_AE, seed=3)
    # the fit seeds a fork of torch's generator: the caller's stream goes on where it was
    assert torch.equal(torch.random.get_rng_state(), before)
    b = fit_autoencoder(vectors, FAST_AE, seed=3)
    c = fit_autoencoder(vectors, FAST_AE, seed=4)
    np.testing.assert_array_equal(a.latent, b.latent)
    assert not np.allclose(a.latent, c.latent)
    assert a.losses[-1] < a.losses[0]
    with pytest.raises(DataError, match="not in the training data's index"):
        interaction_vectors(train, pd.Index([10_000]))


def test_figures_are_drawn(fitted, prepared):
    from matplotlib.figure import Figure

    from personalize.segments.plots import plot_routes, plot_selection, plot_stability

    _, train, profiles = prepared
    model, table, choice = fitted
    routes = compare_routes(
        train, profiles, model, FAST, FAST_AE.model_copy(update={"enabled": False}), table
    )
    for fig in (plot_selection(table, choice), plot_stability(table, choice), plot_routes(routes)):
        assert isinstance(fig, Figure) and fig.axes


# ------------------------------------------------------------------------ real numbers


@pytest.mark.slow
def test_ml100k_segments_with_the_default_config(ml100k):
    """MovieLens-100K, user_temporal train part, the default configuration and the real sentence
    embeddings: weak structure (silhouette under 0.1), K-Means at k=3 the best separated."""
    from personalize.features.text import dense_item_embeddings

    split = make_split(ml100k.interactions, SplitConfig(), 0, ml100k.users, ml100k.items)
    train = _train(split)
    profiles = build_profile_table(train, dense_item_embeddings(train.items), ml100k.fingerprint)
    clustering, started = ClusteringConfig(), time.perf_counter()
    model, table, choice = fit_segment_model(profiles, ProfileConfig(), clustering, seed=0)
    fit_seconds = time.perf_counter() - started
    subsets = subset_silhouettes(profiles, ProfileConfig(), clustering, choice.k).set_index("profile")
    routes = compare_routes(train, profiles, model, clustering, AutoencoderConfig(), table)
    print(table.round(3).to_string(), choice, subsets.round(3), routes.round(3).to_string(), sep="\n")
    print(f"fit_segment_model: {fit_seconds:.1f} s")

    assert len(table) == 2 * len(clustering.ks) and len(model.labels) == 943
    kmeans = table[table["method"] == "kmeans"].set_index("k")
    assert kmeans["silhouette"].idxmax() == 3 and 0.07 < kmeans.loc[3, "silhouette"] < 0.1
    assert kmeans.loc[3, "bootstrap_ari"] > 0.8
    assert choice.k in (4, 5, 6) and choice.bootstrap_ari < 0.85
    assert 0.06 < choice.silhouette < 0.09
    assert subsets.loc["behaviour", "silhouette"] > 2 * subsets.loc["full", "silhouette"]
    assert subsets.loc["full", "silhouette"] == pytest.approx(choice.silhouette)
    assert routes["silhouette"].between(-1, 1).all() and routes.loc[0, "kept"]
