"""The autoencoder route: segments from what users consumed rather than from their profile.

Each training user is a binary vector over the catalogue (1 where the training part holds an
interaction with the item). An autoencoder (catalogue -> ``hidden`` -> ``latent`` -> ``hidden``
-> catalogue, ReLU between layers, sigmoid output) learns to reconstruct it, minimising the
binary cross-entropy averaged over users and items, with Adam (``learning_rate``, mini-batches
of ``batch_size`` users in a seeded random order, ``epochs`` passes). It is seeded with
``torch.manual_seed(seed)`` inside a forked RNG state (the caller's global generator is left as
it was) and trains on one thread, so a seed gives the same latent space.
``AutoencoderConfig.device`` (cpu by default, cuda, or auto = cuda when available) is where it
trains: the weights are initialised and the batch order drawn on the CPU either way, so a CUDA
latent space matches the CPU's within floating-point tolerance, not bit for bit; asking for cuda
without a GPU is a ConfigError.
The latent vectors are standardised (zero mean, unit variance per dimension) and clustered by
K-Means with the k of the profile segments.

Comparison (:func:`compare_routes`). Silhouettes of different spaces cannot be compared, so
every route's segments are scored in the SAME space: the scaled profile
(:class:`~personalize.features.profile_table.ProfileScaler` output of the segment model). The
latent-space silhouette is reported beside it for reading only. Stability is the bootstrap
adjusted Rand index, with the same resamples as the profile route
(:func:`~personalize.segments.clustering.bootstrap_resamples`): by default the latent space is
kept and K-Means is refitted on each resample of its rows (every user assigned to the nearest
centroid, ARI against the full-data segments): this measures the clustering's stability, not
the autoencoder's. With ``AutoencoderConfig.refit_bootstrap`` the autoencoder is also retrained
on each resample, which measures both and costs ``bootstrap`` trainings.

The route is kept when its profile-space silhouette beats K-Means on the profile by at least
``keep_margin`` at equal stability: a bootstrap ARI no lower than the profile route's minus
one standard deviation of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from personalize.config.device import resolve_device_name
from personalize.config.segments import AutoencoderConfig, ClusteringConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.matrix import InteractionData
from personalize.features.profile_table import ProfileTable
from personalize.segments.clustering import (
    SEGMENT,
    SegmentModel,
    bootstrap_resamples,
    bootstrap_stability,
    canonical_labels,
    clustering_input,
    fit_and_assign,
    one_thread,
    segments_of,
)

ROUTE_COLUMNS = [
    "route",
    "k",
    "silhouette",
    "silhouette_own_space",
    "bootstrap_ari",
    "bootstrap_ari_std",
    "margin",
    "kept",
    "seconds",
]


def interaction_vectors(train: InteractionData, users: pd.Index) -> np.ndarray:
    """Binary users x catalogue-items matrix (float32): row i is 1 at the items user
    ``users[i]`` interacted with in ``train`` (any event, any weight)."""
    rows = train.index.user_index(users)
    if (rows < 0).any():
        unknown = users[rows < 0][:5].tolist()
        raise DataError(
            f"{int((rows < 0).sum())} user(s) are not in the training data's index, e.g. {unknown}"
        )
    matrix = train.matrix[rows]
    return (matrix.toarray() > 0).astype(np.float32)


@contextlib.contextmanager
def _torch_one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class AutoencoderFit:
    """A trained autoencoder's latent vectors (rows aligned with the input) and its training loss
    (mean binary cross-entropy per epoch)."""

    latent: np.ndarray
    losses: list[float]


def fit_autoencoder(
    vectors: np.ndarray,
    config: AutoencoderConfig,
    seed: int = 0,
    encode: np.ndarray | None = None,
    progress: bool = False,
) -> AutoencoderFit:
    """Train the autoencoder (module doc) on the rows of ``vectors`` and return the latent
    vectors of ``encode`` (default: ``vectors`` itself)."""
    import torch
    from torch import nn

    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or len(vectors) == 0 or vectors.shape[1] == 0:
        raise DataError(f"expected a users x items matrix with at least one user, got shape {vectors.shape}")
    n_items = vectors.shape[1]
    device = torch.device(resolve_device_name(config.device, "segments autoencoder"))
    with _torch_one_thread(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        encoder = nn.Sequential(
            nn.Linear(n_items, config.hidden), nn.ReLU(), nn.Linear(config.hidden, config.latent)
        )
        decoder = nn.Sequential(
            nn.Linear(config.latent, config.hidden), nn.ReLU(), nn.Linear(config.hidden, n_items)
        )
        encoder.to(device)
        decoder.to(device)
        params = [*encoder.parameters(), *decoder.parameters()]
        optimiser = torch.optim.Adam(params, lr=config.learning_rate)
        loss_fn = nn.BCEWithLogitsLoss()
        data = torch.from_numpy(vectors).to(device)
        losses: list[float] = []
        epochs = range(config.epochs)
        if progress:
            from tqdm.auto import tqdm

            epochs = tqdm(epochs, desc="autoencoder")
        for _ in epochs:
            order = torch.randperm(len(data), generator=generator).to(device)
            total = 0.0
            for start in range(0, len(data), config.batch_size):
                batch = data[order[start : start + config.batch_size]]
                optimiser.zero_grad()
                loss = loss_fn(decoder(encoder(batch)), batch)
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
            losses.append(total / len(data))
        with torch.no_grad():
            source = data if encode is None else torch.from_numpy(np.asarray(encode, dtype=np.float32))
            latent = encoder(source.to(device)).cpu().numpy().astype(np.float64)
    return AutoencoderFit(latent=latent, losses=losses)


def _standardise(latent: np.ndarray, fit_rows: np.ndarray | None = None) -> np.ndarray:
    ref = latent if fit_rows is None else latent[fit_rows]
    std = ref.std(axis=0)
    return (latent - ref.mean(axis=0)) / np.where(std > 0, std, 1.0)


@dataclass
class AutoencoderRoute:
    """The autoencoder route's segments (user_id -> segment, numbered by
    :func:`~personalize.segments.clustering.canonical_labels` in the latent space), its
    standardised latent vectors (rows in ``labels``' order) and its scores."""

    labels: pd.Series
    latent: np.ndarray
    losses: list[float]
    silhouette: float
    silhouette_latent: float
    bootstrap: np.ndarray
    seconds: float


def autoencoder_route(
    train: InteractionData,
    profiles: ProfileTable,
    model: SegmentModel,
    clustering_config: ClusteringConfig,
    config: AutoencoderConfig,
    progress: bool = False,
) -> AutoencoderRoute:
    """Train the autoencoder on the profiled users' training interactions, cluster its latent
    space with K-Means at ``model.k`` and score the segments: silhouette in the model's scaled
    profile space, silhouette in the latent space, bootstrap ARI (module doc)."""
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    started = time.perf_counter()
    data = clustering_input(profiles)
    users = data.table.index
    x = model.transform(data)
    vectors = interaction_vectors(train, users)
    fit = fit_autoencoder(vectors, config, model.seed, progress=progress)
    z = _standardise(fit.latent)
    labels = canonical_labels(segments_of(z, "kmeans", model.k, model.seed, clustering_config.n_init)[0], z)
    resamples = bootstrap_resamples(len(z), clustering_config.bootstrap, model.seed)
    if config.refit_bootstrap:
        scores = []
        for idx in resamples:
            refit = fit_autoencoder(vectors[idx], config, model.seed, encode=vectors)
            zb = _standardise(refit.latent, idx)
            assigned = fit_and_assign(zb[idx], zb, "kmeans", model.k, model.seed, clustering_config.n_init)
            scores.append(adjusted_rand_score(labels, assigned))
        boot = np.array(scores)
    else:
        boot = bootstrap_stability(
            z, labels, "kmeans", model.k, resamples, model.seed, clustering_config.n_init
        )
    found = len(np.unique(labels)) > 1
    with one_thread():
        sil = float(silhouette_score(x, labels)) if found else float("nan")
        sil_latent = float(silhouette_score(z, labels)) if found else float("nan")
    return AutoencoderRoute(
        labels=pd.Series(labels, index=users.rename(C.USER), name=SEGMENT),
        latent=z,
        losses=fit.losses,
        silhouette=sil,
        silhouette_latent=sil_latent,
        bootstrap=boot,
        seconds=time.perf_counter() - started,
    )


def compare_routes(
    train: InteractionData,
    profiles: ProfileTable,
    model: SegmentModel,
    clustering_config: ClusteringConfig,
    config: AutoencoderConfig,
    table: pd.DataFrame | None = None,
    route: AutoencoderRoute | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per route at ``model.k``: ``profile k-means`` (the reference: K-Means on the
    scaled profile; taken from the selection ``table`` when it has that row) and, when
    ``config.enabled``, ``autoencoder k-means`` (``route``, trained here when not given).
    Columns: route, k, silhouette (in the scaled profile space, every route), silhouette_own_space
    (the space the route clustered in), bootstrap_ari and its std, margin (silhouette minus the
    reference's), kept (the reference always; the autoencoder when margin >= keep_margin and
    bootstrap_ari >= the reference's minus its std), seconds."""
    from sklearn.metrics import silhouette_score

    started = time.perf_counter()
    data = clustering_input(profiles)
    x = model.transform(data)
    k = model.k
    row = None
    if table is not None:
        match = table[(table["method"] == "kmeans") & (table["k"] == k)]
        row = match.iloc[0] if len(match) else None
    if row is not None:
        ref_sil, ref_ari, ref_std = (
            float(row["silhouette"]),
            float(row["bootstrap_ari"]),
            float(row["bootstrap_ari_std"]),
        )
    else:
        labels, _, _ = segments_of(x, "kmeans", k, model.seed, clustering_config.n_init)
        boot = bootstrap_stability(
            x,
            labels,
            "kmeans",
            k,
            bootstrap_resamples(len(x), clustering_config.bootstrap, model.seed),
            model.seed,
            clustering_config.n_init,
        )
        with one_thread():
            ref_sil = float(silhouette_score(x, labels))
        ref_ari, ref_std = float(boot.mean()), float(boot.std())
    rows = [
        {
            "route": "profile k-means",
            "k": k,
            "silhouette": ref_sil,
            "silhouette_own_space": ref_sil,
            "bootstrap_ari": ref_ari,
            "bootstrap_ari_std": ref_std,
            "margin": 0.0,
            "kept": True,
            "seconds": time.perf_counter() - started,
        }
    ]
    if config.enabled:
        if route is None:
            route = autoencoder_route(train, profiles, model, clustering_config, config, progress)
        ari, std = float(route.bootstrap.mean()), float(route.bootstrap.std())
        margin = route.silhouette - ref_sil
        rows.append(
            {
                "route": "autoencoder k-means",
                "k": k,
                "silhouette": route.silhouette,
                "silhouette_own_space": route.silhouette_latent,
                "bootstrap_ari": ari,
                "bootstrap_ari_std": std,
                "margin": margin,
                "kept": bool(margin >= config.keep_margin and ari >= ref_ari - ref_std),
                "seconds": route.seconds,
            }
        )
    return pd.DataFrame(rows, columns=ROUTE_COLUMNS)
