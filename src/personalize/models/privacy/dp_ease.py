"""User-level differentially private EASE and popularity by sufficient-statistics perturbation.

Each user's row x_u of the interaction matrix is scaled to L2 norm at most ``clip``
(x_u <- x_u min(1, clip / ||x_u||)). Adding or removing one user then changes

- the Gram matrix G = X^T X by x_u x_u^T, of Frobenius norm ||x_u||^2 <= clip^2 (its upper
  triangle, diagonal included, by no more), and
- the item sums s = X^T 1 by x_u, of L2 norm <= clip.

Gaussian noise calibrated by the analytic Gaussian mechanism to that sensitivity is added once
(G: the upper triangle drawn, then mirrored, so the noisy G stays symmetric); everything after it
is post-processing and keeps the (epsilon, delta) guarantee, in the unit of one user's whole
training history. The guarantee covers the learned weights and the popularity fallback (taken
from the noisy statistics); the histories a scorer reads at answer time are the users' own input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, model_validator

from personalize import scoring
from personalize.config.model import ModelConfig
from personalize.core.errors import ConfigError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor
from personalize.models.baselines.popularity import StaticScores
from personalize.models.collaborative.ease import EASE
from personalize.models.privacy.mechanisms import DPSpec, analytic_gaussian_sigma, clip_rows

MECHANISM = "analytic_gaussian"


class DPConfig(ModelConfig):
    epsilon: float | None = Field(
        default=None, gt=0, description="Privacy budget (user-level); null: not private (no noise)."
    )
    delta: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Privacy delta; null: 1 / (10 n), n = users with training rows; must be below 1 / n.",
    )
    clip: float | None = Field(
        default=1.0,
        gt=0,
        description="L2 bound on each user's row; null: no clipping (only without epsilon).",
    )

    @model_validator(mode="after")
    def _noise_needs_clipping(self):
        if self.epsilon is not None and self.clip is None:
            raise ValueError("clip: a private model (epsilon set) needs a clipping norm")
        return self


def dp_spec(config: DPConfig, n_users: int, sensitivity: float | None) -> DPSpec:
    """The guarantee of ``config`` over ``n_users`` units for a statistic of L2 ``sensitivity``:
    delta defaults to 1 / (10 n_users) and must stay below 1 / n_users (ConfigError otherwise)."""
    if config.epsilon is None:
        return DPSpec("user", None, None, config.clip, 0.0, "none")
    delta = config.delta if config.delta is not None else 1.0 / (10.0 * max(n_users, 1))
    if delta >= 1.0 / max(n_users, 1):
        raise ConfigError(
            f"delta: {delta} is not below 1 / number of users (1 / {n_users}); a guarantee with such a "
            "delta allows publishing one user's data outright"
        )
    sigma = analytic_gaussian_sigma(config.epsilon, delta, float(sensitivity))
    return DPSpec("user", config.epsilon, delta, config.clip, sigma, MECHANISM)


def _n_units(x) -> int:
    return int(np.count_nonzero(np.diff(x.indptr)))


def clipped_gram(matrix, clip: float | None) -> np.ndarray:
    """G = X_c^T X_c (dense float64) for the row-clipped matrix X_c."""
    x = clip_rows(matrix, clip)
    return (x.T @ x).toarray()


def symmetric_noise(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """An n x n symmetric matrix: N(0, sigma^2) on and above the diagonal, mirrored below."""
    upper = np.triu(rng.normal(0.0, sigma, size=(n, n)))
    return upper + np.triu(upper, 1).T


class DPEASEConfig(DPConfig):
    l2: float = Field(
        default=250.0, gt=0, description="L2 regularisation lambda added to the noisy Gram diagonal."
    )


class DPEASE(EASE):
    """EASE solved from a noisy clipped Gram matrix: G~ = X_c^T X_c + N (N symmetric Gaussian,
    sigma from the analytic mechanism at (epsilon, delta) for sensitivity clip^2),
    P = (G~ + l2 I)^-1, B = -P / diag(P) (column-wise), diag(B) = 0; score(u) = x_u B.
    Private: the popularity fallback is diag(G~) (post-processing, no further budget)."""

    name = "dp_ease"
    Config = DPEASEConfig

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        return params.get("epsilon") is not None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        x = data.matrix
        clip = self.config.clip
        self.dp_ = dp_spec(self.config, _n_units(x), None if clip is None else clip**2)
        gram = clipped_gram(x, clip)
        if self.config.epsilon is not None:
            rng = np.random.default_rng(self.seed)
            gram += symmetric_noise(gram.shape[0], self.dp_.sigma, rng)
            self.popularity_ = np.diag(gram).astype(np.float32)
        gram[np.diag_indices_from(gram)] += self.config.l2
        p = np.linalg.inv(gram)
        b = p / -np.diag(p)[None, :]
        np.fill_diagonal(b, 0.0)
        self.weights_ = b.astype(np.float32)

    def _scorer(self) -> scoring.ItemItem:
        return scoring.ItemItem(weights=self.weights_)


class DPPopularity(StaticScores):
    """score(u, i) = sum_u x_c[u, i] + N(0, sigma^2): the item sums of the row-clipped matrix
    with Gaussian noise (sensitivity clip, analytic mechanism); the same for every user."""

    name = "dp_popularity"
    Config = DPConfig

    @classmethod
    def is_stochastic(cls, params: dict[str, Any]) -> bool:
        return params.get("epsilon") is not None

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        x = data.matrix
        self.dp_ = dp_spec(self.config, _n_units(x), self.config.clip)
        sums = np.asarray(clip_rows(x, self.config.clip).sum(axis=0)).ravel()
        if self.config.epsilon is not None:
            sums = sums + np.random.default_rng(self.seed).normal(0.0, self.dp_.sigma, size=sums.shape)
            self.popularity_ = sums.astype(np.float32)
        self.scores_ = sums.astype(np.float32)
