"""Membership-inference attacks in the unit of a privacy guarantee, and the ceiling that
differential privacy puts on their success.

Two attacks, both threshold attacks on a statistic that any party holding the released model can
compute (Yeom et al., CSF 2018; the AUC over every threshold is reported, so no threshold is
chosen):

- **user-level** (:func:`user_attack`): the unit is a user's whole history. For each user the
  model scores the catalogue from the user's own full history through fold-in, exactly as it
  would score someone it never saw (so members and non-members go through the same code), and
  the statistic is the negative multinomial loss of that history,
  ``mean_{i in history} log_softmax(scores)_i`` (higher: the model explains the history better,
  guess "member"). Members are the users the model was trained on, non-members held-out users
  of the same population (``user_holdout`` test users).
- **event-level** (:func:`event_attack`): the unit is one interaction. The statistic is the
  model's score of the pair (user, item); members are training interactions, non-members test
  interactions of the same users (on a temporal split they are later in time as well, which the
  attack may pick up besides membership).

AUC is the Mann-Whitney probability that a random member scores above a random non-member
(ties count one half), with a percentile bootstrap interval (members and non-members resampled
separately).

The ceiling (:func:`dp_auc_bound`): an (epsilon, delta)-DP mechanism confines every test between
two neighbouring datasets to true- and false-positive rates with
``TPR <= e^eps FPR + delta`` and ``1 - FPR <= e^eps (1 - TPR) + delta``
(Kairouz, Oh & Viswanath, ICML 2015), so its ROC curve lies under
``min(1, e^eps x + delta, 1 - e^-eps (1 - delta - x))``; the area under that envelope is the
largest AUC any attack can reach against one unit. An attack's AUC above it would contradict
the stated guarantee.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import log_softmax
from scipy.stats import rankdata

from personalize.scoring import fold_context


@dataclass(frozen=True)
class AttackResult:
    """An attack's success: ``auc`` with its bootstrap interval [``low``, ``high``]."""

    unit: str  # "user" or "event"
    statistic: str
    auc: float
    low: float
    high: float
    n_members: int
    n_nonmembers: int

    def metrics(self) -> dict[str, float]:
        return {
            "attack_auc": self.auc,
            "attack_auc_low": self.low,
            "attack_auc_high": self.high,
            "attack_members": float(self.n_members),
            "attack_nonmembers": float(self.n_nonmembers),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """P(member statistic > non-member statistic) + P(tie) / 2 (the Mann-Whitney U / (m n))."""
    m, n = len(members), len(nonmembers)
    if m == 0 or n == 0:
        raise ValueError("an AUC needs at least one member and one non-member")
    ranks = rankdata(np.concatenate([members, nonmembers]))
    return float((ranks[:m].sum() - m * (m + 1) / 2.0) / (m * n))


def auc_interval(
    members: np.ndarray, nonmembers: np.ndarray, resamples: int, confidence: float, seed: int
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`auc`, members and non-members resampled apart."""
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for b in range(resamples):
        values[b] = auc(
            members[rng.integers(0, len(members), len(members))],
            nonmembers[rng.integers(0, len(nonmembers), len(nonmembers))],
        )
    alpha = (1.0 - confidence) / 2.0
    return float(np.quantile(values, alpha)), float(np.quantile(values, 1.0 - alpha))


def dp_auc_bound(epsilon: float | None, delta: float | None = 0.0, grid: int = 200_001) -> float:
    """The largest AUC of any membership test against one unit of an (epsilon, delta)-DP
    mechanism (module doc); 1.0 without a guarantee (epsilon None)."""
    if epsilon is None:
        return 1.0
    delta = delta or 0.0
    x = np.linspace(0.0, 1.0, grid)
    e = math.exp(min(epsilon, 700.0))
    tpr = np.minimum.reduce([np.ones_like(x), e * x + delta, 1.0 - (1.0 - delta - x) / e])
    tpr = np.clip(tpr, 0.0, 1.0)
    return float(np.sum((tpr[1:] + tpr[:-1]) * np.diff(x)) / 2.0)


def _result(unit, statistic, member_stats, nonmember_stats, resamples, confidence, seed) -> AttackResult:
    low, high = auc_interval(member_stats, nonmember_stats, resamples, confidence, seed)
    return AttackResult(
        unit=unit,
        statistic=statistic,
        auc=auc(member_stats, nonmember_stats),
        low=low,
        high=high,
        n_members=len(member_stats),
        n_nonmembers=len(nonmember_stats),
    )


def history_loss_statistic(model, histories: sp.csr_matrix, block: int = 256) -> np.ndarray:
    """For each row of ``histories`` (users x items, any weights): the mean over the row's items of
    ``log_softmax(s)_i``, ``s`` the model's scores from that history through fold-in (owner
    unknown to the model; nothing excluded). Items the model cannot score (-inf) get the row's
    lowest finite score."""
    histories = sp.csr_matrix(histories, dtype=np.float32)
    scorer, ctx = model.scorer(), model.context
    out = np.empty(histories.shape[0])
    for start in range(0, histories.shape[0], block):
        rows = histories[start : start + block]
        n = rows.shape[0]
        empty = sp.csr_matrix(rows.shape, dtype=np.float32)
        folded = fold_context(ctx, np.full(n, -1, dtype=np.int64), rows, empty)
        scores = np.asarray(scorer.answer(np.arange(n), folded), dtype=np.float64)
        finite = np.isfinite(scores)
        floor = np.where(finite, scores, np.inf).min(axis=1, keepdims=True)
        scores = np.where(finite, scores, np.where(np.isfinite(floor), floor, 0.0))
        logp = log_softmax(scores, axis=1)
        for r in range(n):
            items = rows.indices[rows.indptr[r] : rows.indptr[r + 1]]
            out[start + r] = logp[r, items].mean() if len(items) else np.nan
    return out


def user_attack(
    model,
    members: sp.csr_matrix,
    nonmembers: sp.csr_matrix,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> AttackResult:
    """The user-level loss-threshold attack (module doc). ``members`` / ``nonmembers``: the full
    histories (users x catalogue items) of the training users and of held-out users; rows
    without interactions are left out."""
    stats = []
    for matrix in (members, nonmembers):
        matrix = sp.csr_matrix(matrix)
        matrix = matrix[np.flatnonzero(np.diff(matrix.indptr) > 0)]
        stats.append(history_loss_statistic(model, matrix))
    return _result("user", "history log-likelihood", stats[0], stats[1], resamples, confidence, seed)


def pair_scores(model, users: np.ndarray, items: np.ndarray, block: int = 512) -> np.ndarray:
    """The model's score of each (user index, item index) pair."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    out = np.empty(len(users))
    order = np.argsort(users, kind="stable")
    unique, first = np.unique(users[order], return_index=True)
    bounds = np.append(first, len(order))
    for start in range(0, len(unique), block):
        chunk = unique[start : start + block]
        scores = model.score(chunk)
        for j in range(len(chunk)):
            rows = order[bounds[start + j] : bounds[start + j + 1]]
            out[rows] = scores[j, items[rows]]
    return out


def event_attack(
    model,
    members: tuple[np.ndarray, np.ndarray],
    nonmembers: tuple[np.ndarray, np.ndarray],
    max_pairs: int = 5000,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> AttackResult:
    """The event-level score-threshold attack (module doc). ``members`` / ``nonmembers``: (user
    indices, item indices) of training and of test interactions; at most ``max_pairs`` of each
    are drawn (seeded, without replacement)."""
    rng = np.random.default_rng(seed)
    stats = []
    for users, items in (members, nonmembers):
        users, items = np.asarray(users), np.asarray(items)
        if len(users) > max_pairs:
            pick = np.sort(rng.choice(len(users), max_pairs, replace=False))
            users, items = users[pick], items[pick]
        stats.append(pair_scores(model, users, items))
    return _result("event", "pair score", stats[0], stats[1], resamples, confidence, seed)
