"""User-level differentially private EASE and popularity by sufficient-statistics perturbation.

Each user's row x_u of the interaction matrix is scaled to L2 norm at most ``clip``
(x_u <- x_u min(1, clip / ||x_u||)). Adding or removing one user then changes

- the Gram matrix G = X^T X by x_u x_u^T, of Frobenius norm ||x_u||^2 <= clip^2 (its upper
  triangle, diagonal included, by no more), and
- the item sums s = X^T 1 by x_u, of L2 norm <= clip.

Gaussian noise calibrated by the analytic Gaussian mechanism to that sensitivity is added once
(G: the upper triangle drawn, then mirrored, so the noisy G stays symmetric; drawn from a secret
ChaCha20 stream and hardened against floating-point attacks, :mod:`.noise`); everything after it
is post-processing and keeps the (epsilon, delta) guarantee, in the unit of one user's whole
training history. The guarantee covers the learned weights and the popularity fallback (taken
from the noisy statistics); the histories a scorer reads at answer time are the users' own input.
DP popularity releases the item sums alone, through OpenDP's exact Gaussian sampler
(:mod:`.aggregates`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from pydantic import Field

from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds
from personalize.models.baselines.popularity import StaticScores
from personalize.models.collaborative.ease import EASE, ease_weights
from personalize.models.privacy.aggregates import GAUSSIAN, gaussian_release, gaussian_scale, zcdp_budget
from personalize.models.privacy.mechanisms import (
    NOT_COVERED,
    DPConfig,
    DPSpec,
    PrivateModel,
    analytic_gaussian_sigma,
    clip_rows,
    resolve_delta,
)
from personalize.models.privacy.noise import Noise, fit_noise, gaussian

MECHANISM = "analytic_gaussian"


def dp_spec(config: DPConfig, n_users: int, sensitivity: float | None, noise: Noise | None = None) -> DPSpec:
    """The guarantee of ``config`` for a statistic of L2 ``sensitivity`` over ``n_users`` users
    (at most ``config.max_units``): delta from the public bound
    (:func:`~.mechanisms.resolve_delta`), sigma by the analytic Gaussian mechanism."""
    if config.epsilon is None:
        return DPSpec("user", None, None, config.clip, 0.0, "none")
    delta = resolve_delta(config.epsilon, config.delta, config.max_units, "user", n_users)
    sigma = analytic_gaussian_sigma(config.epsilon, delta, float(sensitivity))
    return DPSpec(
        "user",
        config.epsilon,
        delta,
        config.clip,
        sigma,
        MECHANISM,
        noise=(noise or Noise()).kind,
        max_units=config.max_units,
        not_covered=NOT_COVERED["user"],
    )


def _n_units(x) -> int:
    return int(np.count_nonzero(np.diff(x.indptr)))


def clipped_gram(matrix, clip: float | None) -> np.ndarray:
    """G = X_c^T X_c (dense float64) for the row-clipped matrix X_c."""
    x = clip_rows(matrix, clip)
    return (x.T @ x).toarray()


def symmetric_noise(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """An n x n symmetric matrix: N(0, sigma^2) on and above the diagonal (hardened draws,
    :func:`~.noise.gaussian`), mirrored below."""
    upper = np.triu(gaussian(rng, sigma, (n, n)))
    return upper + np.triu(upper, 1).T


def noisy_clipped_gram(matrix, config: DPConfig, noise: Noise | None = None) -> tuple[np.ndarray, DPSpec]:
    """The released Gram matrix of the row-clipped ``matrix`` and its guarantee: G = X_c^T X_c
    (sensitivity clip^2, module doc) plus, when ``config.epsilon`` is set, one symmetric Gaussian
    draw (:func:`symmetric_noise`) of the analytic sigma from ``noise`` (default: the fit's,
    secret); without epsilon, the clipped Gram itself (sigma 0). Shared by DP-EASE and DP-ItemKNN."""
    clip = config.clip
    noise = fit_noise() if noise is None else noise
    spec = dp_spec(config, _n_units(matrix), None if clip is None else clip**2, noise)
    gram = clipped_gram(matrix, clip)
    if config.epsilon is not None:
        gram += symmetric_noise(gram.shape[0], spec.sigma, noise.numpy(1))
    return gram, spec


class DPEASEConfig(DPConfig):
    l2: float = Field(
        default=250.0, gt=0, description="L2 regularisation lambda added to the noisy Gram diagonal."
    )
    rank: int | None = Field(
        default=None,
        ge=1,
        description="Keep the top `rank` eigen-directions of the noisy Gram matrix (a low-rank ridge "
        "autoencoder; the noise spreads over every direction, the signal over few); null: full EASE.",
    )


class DPEASE(PrivateModel, EASE):
    """EASE solved from a noisy clipped Gram matrix: G~ = X_c^T X_c + N (N symmetric Gaussian,
    sigma from the analytic mechanism at (epsilon, delta) for sensitivity clip^2),
    P = (G~ + l2 I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0; score(u) = x_u B.

    With ``rank`` k: G~ = V diag(w) V^T (eigendecomposition), and from its k largest eigenvalues
    B = V_k diag(w+ / (w+ + l2)) V_k^T with diag(B) = 0 (w+ = max(w, 0)): the ridge-regularised
    linear autoencoder restricted to the top k directions. The noise N has about the same energy
    in every direction (its eigenvalues lie within about 2 sigma sqrt(items)), while the signal
    lives in few, so truncation removes most of the noise; at small epsilon that is what keeps any
    signal. Post-processing of G~: no further budget.

    Private: the popularity fallback is diag(G~) (post-processing, no further budget)."""

    name = "dp_ease"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    dp_unit = "user"
    Config = DPEASEConfig

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        return params.get("epsilon") is not None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        gram, self.dp_ = noisy_clipped_gram(data.matrix, self.config)
        if self.config.epsilon is not None:
            self.popularity_ = np.diag(gram).astype(np.float32)
        c = self.config
        if c.rank is not None:
            w, v = np.linalg.eigh(gram)
            top = np.argsort(w)[::-1][: c.rank]
            w = np.maximum(w[top], 0.0)
            b = (v[:, top] * (w / (w + c.l2))) @ v[:, top].T
            np.fill_diagonal(b, 0.0)
            self.weights_ = b.astype(np.float32)
        else:
            self.weights_ = ease_weights(gram, c.l2)


class DPPopularity(PrivateModel, StaticScores):
    """score(u, i) = sum_u x_c[u, i] + N(0, sigma^2): the item sums of the row-clipped matrix
    with Gaussian noise (sensitivity clip), the same for every user. The noise comes from
    OpenDP's exact sampler, calibrated in zCDP (:mod:`.aggregates`)."""

    name = "dp_popularity"
    erasure = ErasureNeeds(item_side_from_all_users=True)
    dp_unit = "user"
    Config = DPConfig

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        return params.get("epsilon") is not None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c, x = self.config, data.matrix
        noise = fit_noise()
        sums = np.asarray(clip_rows(x, c.clip).sum(axis=0)).ravel()
        self.dp_ = dp_spec(c, _n_units(x), c.clip, noise)
        if c.epsilon is not None:
            sigma = gaussian_scale(c.clip, zcdp_budget(c.epsilon, self.dp_.delta))
            self.dp_ = dataclasses.replace(self.dp_, sigma=sigma, mechanism=GAUSSIAN, accountant="zcdp")
            sums = gaussian_release(sums, sigma, noise)
            self.popularity_ = sums.astype(np.float32)
        self.scores_ = sums.astype(np.float32)
