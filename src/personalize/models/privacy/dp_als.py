"""User-level differentially private ALS in the billboard model (Chien, Jain, Krichene, Rendle,
Song, Thakurta & Zhang, "Private Alternating Least Squares", ICML 2021).

Objective: implicit's weighted ALS (Hu, Koren & Volinsky 2008, as :mod:`implicit` computes it)
on the binary matrix P (p_uj = 1 for an interaction): confidence c_uj = alpha for an observed
pair, 1 for every other pair, preference 1 / 0,

    L = sum_u s_u sum_j c_uj (p_uj - v_u . y_j)^2 + regularization (sum ||v_u||^2 + sum ||y_j||^2),

with each user's loss weighted by s_u = min(1, clip / sqrt(n_u)) on the item side (n_u the user's
item count: the L2 row clip of DP-EASE applied to the binary row, i.e. users with more than clip^2
items count as clip^2 items' worth, the L2 form of Chien et al.'s bound on items per user).

Billboard: only the item factors Y are released. Each iteration

1. *user step* (private to each user, never released): v_u solves the user's own least-squares
   problem against the released Y from the user's own history H_u (with its event weights),
   exactly as a user folds in at answer time: ``scoring.als_user_vectors(Y, H_u, regularization,
   alpha)``, i.e. v_u = (Y^T Y + reg I + sum_{j in u} (alpha h_uj - 1) y_j y_j^T)^-1 sum alpha h_uj y_j;
   then v_u is clipped to L2 norm ``factor_clip`` = F: v~_u = v_u min(1, F / ||v_u||);
2. *item step* (released): the sufficient statistics of the item side,

       G   = sum_u s_u v~_u v~_u^T                (f x f, every user: the unobserved pairs),
       A_j = sum_{u in j} s_u v~_u v~_u^T         (f x f per item; needed only when alpha != 1),
       b_j = sum_{u in j} s_u v~_u                (f per item),

   each with Gaussian noise (G and every A_j symmetric: upper triangle drawn, mirrored), and
   y_j = (psd(G~ + (alpha - 1) A~_j) + reg I)^-1 alpha b~_j, psd() the projection onto the positive
   semidefinite cone (eigenvalues below 0 set to 0; post-processing, skipped without noise).
   Whether A is released depends on ``alpha`` only (a setting, not data): with alpha = 1 the
   confidence of an observed pair equals that of an unobserved one and A drops out.

Sensitivity of one iteration (adding or removing one user, for any fixed released Y, which is all
the user's vector depends on besides their own data): the user adds s_u v~ v~^T to G (Frobenius
norm s_u ||v~||^2 <= F^2), s_u v~ v~^T to A_j for each of their n_u items (stacked norm
s_u sqrt(n_u) ||v~||^2 <= clip F^2) and s_u v~ to b_j (stacked norm s_u sqrt(n_u) ||v~|| <= clip F).
The upper triangle of a symmetric matrix has norm at most its Frobenius norm, so the released
vector (G, A, b) has L2 sensitivity

    Delta = sqrt(F^4 + [alpha != 1] clip^2 F^4 + clip^2 F^2).

The popularity fallback is the clipped item counts sum_u s_u p_uj (sensitivity clip) with Gaussian
noise. Composition in zero-concentrated DP (Bun & Steinke 2016): the T iterations and the counts
are k = T + 1 adaptively composed Gaussian mechanisms, each given rho / k of the budget rho, the
largest for which rho-zCDP implies (epsilon, delta)-DP (OpenDP's conversion,
:func:`~.aggregates.zcdp_budget`): an item step's noise std is Delta / sqrt(2 rho / k), and the
counts go through OpenDP's exact Gaussian sampler at the scale whose privacy map spends rho / k.
Item-step noise is drawn from a secret ChaCha20 stream, hardened against floating-point attacks
(:mod:`.noise`). Everything else is post-processing.

Scope of the guarantee: the item factors and the popularity fallback. The stored training users'
vectors (like the histories every scorer reads) are each user's own data processed with the
released Y; a served model answers a user from their own history (``fold="als"``), so a user who
is not in training folds in exactly as the user step above. Choosing the epoch on validation
reads the validation users, who are not covered.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp
from pydantic import Field, model_validator

from personalize import scoring
from personalize.core.errors import DataError
from personalize.data.matrix import InteractionData
from personalize.models.base import EpochMonitor, ErasureNeeds, Recommender
from personalize.models.collaborative.als import ALSScoring
from personalize.models.privacy.aggregates import gaussian_release, gaussian_scale, zcdp_budget
from personalize.models.privacy.dp_ease import _n_units, dp_spec, symmetric_noise
from personalize.models.privacy.mechanisms import DPConfig, DPSpec, PrivateModel, clip_rows
from personalize.models.privacy.noise import Noise, fit_noise, gaussian

MECHANISM = "gaussian_zcdp_composition"


class DPALSConfig(DPConfig):
    factors: int = Field(default=16, ge=1, description="Latent dimensions f.")
    iterations: int = Field(
        default=3,
        ge=1,
        description="ALS sweeps T (each one noisy release); the best is kept under validation.",
    )
    regularization: float = Field(default=5.0, ge=0, description="L2 regularisation of the factors.")
    alpha: float = Field(
        default=1.0,
        gt=0,
        description="Confidence of an observed interaction, c = alpha * weight (implicit's).",
    )
    clip: float | None = Field(
        default=1.0,
        gt=0,
        description=(
            "L2 bound on each user's binary row on the item side: a user with n items weighs "
            "min(1, clip / sqrt(n)); null: no bound (only without epsilon)."
        ),
    )
    factor_clip: float | None = Field(
        default=0.1, gt=0, description="L2 bound F on each user vector; null: none (only without epsilon)."
    )
    init_scale: float = Field(
        default=0.1, gt=0, description="Std of the initial item factors (data-independent, seeded)."
    )

    @model_validator(mode="after")
    def _noise_needs_factor_clipping(self):
        if self.epsilon is not None and self.factor_clip is None:
            raise ValueError("factor_clip: a private model (epsilon set) needs a bound on the user vectors")
        return self


def item_step_sensitivity(clip: float, factor_clip: float, with_a: bool) -> float:
    """L2 sensitivity of one iteration's released (G, A, b) (module doc):
    sqrt(F^4 + [with_a] clip^2 F^4 + clip^2 F^2)."""
    f2 = factor_clip**2
    return math.sqrt(f2 * f2 + (clip**2 * f2 * f2 if with_a else 0.0) + clip**2 * f2)


def clip_norms(vectors: np.ndarray, bound: float | None) -> np.ndarray:
    """Rows scaled by min(1, bound / ||row||_2) (a copy); None: unchanged."""
    out = np.array(vectors, dtype=np.float64, copy=True)
    if bound is None:
        return out
    norms = np.linalg.norm(out, axis=1)
    big = norms > bound
    out[big] *= (bound / norms[big])[:, None]
    return out


def item_statistics(
    presence: sp.csr_matrix, user_weights: np.ndarray, vectors: np.ndarray, with_a: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """The item side's sufficient statistics (module doc), without noise: G (f x f),
    A (items x f x f, or None when not ``with_a``) and b (items x f), from the binary ``presence``
    (users x items), the per-user weights s_u and the (clipped) user vectors."""
    weighted = vectors * user_weights[:, None]
    gram = vectors.T @ weighted
    pt = sp.csr_matrix(presence.T)
    b = np.asarray(pt @ weighted)
    a = None
    if with_a:
        f = vectors.shape[1]
        outer = (weighted[:, :, None] * vectors[:, None, :]).reshape(len(vectors), f * f)
        a = np.asarray(pt @ outer).reshape(presence.shape[1], f, f)
    return gram, a, b


def batched_symmetric_noise(n: int, f: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """n symmetric f x f matrices: N(0, sigma^2) on and above each diagonal (hardened draws),
    mirrored below."""
    upper = np.triu(gaussian(rng, sigma, (n, f, f)))
    return upper + np.swapaxes(np.triu(upper, 1), 1, 2)


def psd(matrices: np.ndarray) -> np.ndarray:
    """Projection of symmetric matrices (..., f, f) onto the PSD cone (negative eigenvalues -> 0)."""
    w, q = np.linalg.eigh(matrices)
    return (q * np.maximum(w, 0.0)[..., None, :]) @ np.swapaxes(q, -1, -2)


class DPALS(PrivateModel, ALSScoring, Recommender):
    """Private ALS, billboard model (module doc): item factors from noisy sufficient statistics,
    user vectors solved from each user's own history. Non-private without epsilon (clipping only
    when clip / factor_clip are set). Scorer: ``factors`` with implicit's fold-in rule."""

    name = "dp_als"
    erasure = ErasureNeeds(item_side_from_all_users=True, per_user_state="user factors")
    dp_unit = "user"
    Config = DPALSConfig
    stochastic = True
    iterative = True
    epoch_param = "iterations"

    def _fit(self, data: InteractionData, monitor: EpochMonitor | None) -> None:
        c = self.config
        history = sp.csr_matrix(data.matrix, dtype=np.float64)
        presence = history.copy()
        presence.data = (presence.data != 0).astype(np.float64)
        presence.eliminate_zeros()
        if (history.data < 0).any():
            raise DataError(
                "dp_als: the training matrix holds negative interaction weights; expected weights >= 0"
            )
        n_users, n_items = presence.shape
        counts = np.diff(presence.indptr).astype(np.float64)
        weights = np.ones(n_users)
        if c.clip is not None:
            big = counts > c.clip**2
            weights[big] = c.clip / np.sqrt(counts[big])
        with_a = c.alpha != 1.0
        mechanisms = c.iterations + 1
        source = fit_noise()
        self.dp_ = self._spec(_n_units(presence), with_a, mechanisms, source)
        sigma = self.dp_.sigma
        rng = np.random.default_rng(self.seed)
        noise = source.numpy(2)
        items = rng.normal(0.0, c.init_scale, size=(n_items, c.factors))
        if c.epsilon is not None:
            pop_sigma = gaussian_scale(c.clip, zcdp_budget(c.epsilon, self.dp_.delta) / mechanisms)
            clipped = np.asarray(clip_rows(presence, c.clip).sum(axis=0)).ravel()
            self.popularity_ = gaussian_release(clipped, pop_sigma, source).astype(np.float32)
            self.popularity_sigma_ = pop_sigma
        users = scoring.als_user_vectors(items, history, c.regularization, c.alpha)
        best = None
        for epoch in range(1, c.iterations + 1):
            clipped_users = clip_norms(users, c.factor_clip)
            gram, a, b = item_statistics(presence, weights, clipped_users, with_a)
            if c.epsilon is not None:
                gram += symmetric_noise(c.factors, sigma, noise)
                if a is not None:
                    a += batched_symmetric_noise(n_items, c.factors, sigma, noise)
                b += gaussian(noise, sigma, b.shape)
            items = self._solve_items(gram, a, b)
            users = scoring.als_user_vectors(items, history, c.regularization, c.alpha)
            self.user_factors_ = users.astype(np.float32)
            self.item_factors_ = items.astype(np.float32)
            report = self._epoch_done(monitor, epoch, None)
            if report.improved:
                best = (self.user_factors_, self.item_factors_)
            if report.stop:
                break
        if best is not None:
            self.user_factors_, self.item_factors_ = best
        self._training_done(best is not None)

    def _spec(self, n_units: int, with_a: bool, mechanisms: int, noise: Noise) -> DPSpec:
        """The guarantee: rho (the zCDP budget of (epsilon, delta)) split evenly over the
        ``mechanisms`` releases; an item step's std is sensitivity / sqrt(2 rho / mechanisms)."""
        c = self.config
        self.dp_sensitivity_ = None
        if c.epsilon is None:
            return dp_spec(c, n_units, None)
        sensitivity = item_step_sensitivity(c.clip, c.factor_clip, with_a)
        base = dp_spec(c, n_units, sensitivity, noise)
        sigma = sensitivity / math.sqrt(2.0 * zcdp_budget(c.epsilon, base.delta) / mechanisms)
        self.dp_sensitivity_ = sensitivity
        return dataclasses.replace(
            base,
            sigma=sigma,
            mechanism=MECHANISM,
            noise_multiplier=sigma / sensitivity,
            sample_rate=1.0,
            steps=mechanisms,
            accountant="zcdp",
            epsilon_spent=c.epsilon,
        )

    def _solve_items(self, gram: np.ndarray, a: np.ndarray | None, b: np.ndarray) -> np.ndarray:
        """y_j = (psd(G + (alpha - 1) A_j) + reg I)^-1 alpha b_j (psd only with noise)."""
        c = self.config
        eye = c.regularization * np.eye(c.factors)
        private = c.epsilon is not None
        if a is None:
            m = psd(gram) if private else gram
            return np.linalg.solve(m + eye, c.alpha * b.T).T
        m = gram[None, :, :] + (c.alpha - 1.0) * a
        if private:
            m = psd(m)
        return np.linalg.solve(m + eye, c.alpha * b[:, :, None])[:, :, 0]

    def _state(self):
        return {"user_factors": self.user_factors_, "item_factors": self.item_factors_}

    def _set_state(self, state) -> None:
        self.user_factors_ = state["user_factors"]
        self.item_factors_ = state["item_factors"]
