"""The six splits of the protocol, on one total order (timestamp, item_id, then user_id).

A :class:`Split` is a value: train, validation and test frames plus the parameters that made
them. Every model receives it unchanged. ``user_holdout`` also carries the input parts of its
validation and test users (``valid_input`` / ``test_input``; ``valid`` / ``test`` are then
their target parts), given to a model through fold-in at evaluation time. Frames keep the row
index of the dataset's interactions, so that disjointness and completeness can be checked
(:func:`check_split`).

Group sizes use round-half-to-even on exact fractions (``round(Fraction(n) * f)``), so that
``0.1 * 25`` is 2.5 and rounds to 2 (floating point would give 2.5000000000000004 for
``0.1 * 35`` and round up by accident).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import pandas as pd

from personalize.config.split import SplitConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError

ORDER = C.TOTAL_ORDER


@dataclass(frozen=True)
class Split:
    """Train, validation and test interactions plus everything needed to reproduce them."""

    name: str
    params: dict[str, object]
    seed: int
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    stochastic: bool = False
    extras: dict[str, object] = field(default_factory=dict)
    #: user_holdout: the first part of each validation / test user's history, given to the
    #: model as input at evaluation time (None for the other splits)
    valid_input: pd.DataFrame | None = None
    test_input: pd.DataFrame | None = None

    @property
    def folds_in(self) -> bool:
        """True when held-out users are scored through fold-in of their input part."""
        return self.test_input is not None

    def train_valid(self) -> pd.DataFrame:
        """Train and validation rows together, in the total order (what test-time models see).

        user_holdout: train plus every row of the validation users (input and target); the test
        users' rows never join."""
        parts = (
            [self.train, self.valid]
            if self.valid_input is None
            else [self.train, self.valid_input, self.valid]
        )
        return sort_total_order(pd.concat(parts))

    def summary(self) -> dict[str, int]:
        train_users = set(self.train[C.USER])
        seen_users = train_users | set(self.valid[C.USER])
        test_users = set(self.test[C.USER])
        valid_users = set(self.valid[C.USER])
        out = {
            "train_rows": len(self.train),
            "valid_rows": len(self.valid),
            "test_rows": len(self.test),
            "train_users": len(train_users),
            "valid_users": len(valid_users),
            "test_users": len(test_users),
            "catalogue_items": len(self.items),
            "train_items": self.train[C.ITEM].nunique(),
            "valid_users_cold": len(valid_users - train_users),
            "test_users_cold": len(test_users - seen_users),
            "test_users_cold_vs_train": len(test_users - train_users),
        }
        if self.valid_input is not None and self.test_input is not None:
            out.update(valid_input_rows=len(self.valid_input), test_input_rows=len(self.test_input))
        return out


def sort_total_order(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` in the protocol's total order (timestamp, item_id, user_id), stable: rows equal
    on all three keep their order, and keep their index labels. Integer IDs and timestamps with
    no missing value are sorted by NumPy's stable ``lexsort`` on their integer values (the same
    order as pandas' stable multi-key sort, which factorises every key first: 0.25x its time at
    10M rows); other keys (string IDs) by pandas."""
    keys = [_sort_key(frame[c]) for c in ORDER]
    if any(k is None for k in keys):
        return frame.sort_values(ORDER, kind="stable")
    return frame.take(np.lexsort(keys[::-1]))  # lexsort: the last key is the primary one


def _sort_key(column: pd.Series) -> np.ndarray | None:
    """The column's values as int64 in their order (datetimes: nanoseconds, any time zone being
    a fixed offset of UTC), or None when it is not an integer or datetime column without a
    missing value."""
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype) or (isinstance(dtype, np.dtype) and dtype.kind == "M"):
        if column.hasnans:
            return None
        return column.array.asi8
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        return column.to_numpy()
    return None


def make_split(
    interactions: pd.DataFrame,
    config: SplitConfig,
    seed: int = 0,
    users: pd.DataFrame | None = None,
    items: pd.DataFrame | None = None,
) -> Split:
    """Split ``interactions`` by ``config`` (seeded where the split is random)."""
    for col in (C.USER, C.ITEM, C.TIMESTAMP):
        if col not in interactions.columns:
            raise ConfigError(f"interactions have no '{col}' column; cannot split")
    data = sort_total_order(interactions)
    if config.name not in RULES:
        raise ConfigError(f"unknown split {config.name!r}; available: {', '.join(RULES)}")
    part = RULES[config.name](data, config, seed)  # 0 train, 1 / 2 valid / test (targets), 3 / 4 inputs
    if users is None:
        users = pd.DataFrame({C.USER: np.sort(data[C.USER].unique())})
    if items is None:
        items = pd.DataFrame({C.ITEM: np.sort(data[C.ITEM].unique())})
    split = Split(
        name=config.name,
        params={**config.params(), "seed": seed if config.stochastic else None},
        seed=seed,
        train=data[part == 0],
        valid=data[part == 1],
        test=data[part == 2],
        users=users,
        items=items,
        stochastic=config.stochastic,
        valid_input=data[part == 3] if config.folds_in else None,
        test_input=data[part == 4] if config.folds_in else None,
    )
    return split


# ------------------------------------------------------------------------------- rules

Rule = Callable[[pd.DataFrame, SplitConfig, int], np.ndarray]
#: split name -> rule: (interactions in the total order, config, seed) -> part per row
#: (0 train, 1 validation, 2 test; user_holdout: 1 / 2 the validation / test users' targets and
#: 3 / 4 their inputs); the names and defaults are :mod:`personalize.config.split`
RULES: dict[str, Rule] = {}


def rule(name: str) -> Callable[[Rule], Rule]:
    """Register the decorated function as the rule of split ``name``."""

    def register(fn: Rule) -> Rule:
        RULES[name] = fn
        return fn

    return register


@rule("user_temporal")
def _user_temporal_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _user_temporal(data, config.fractions()[1], config.min_user_interactions)


@rule("global_temporal")
def _global_temporal_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _global_temporal(data, *config.fractions())


@rule("leave_last_out")
def _leave_last_out_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _leave_last_out(data, config.n)


@rule("user_stratified")
def _user_stratified_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _stratified(data, C.USER, *config.fractions(), seed)


@rule("item_stratified")
def _item_stratified_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _item_stratified(data, *config.fractions(), seed)


@rule("user_holdout")
def _user_holdout_rule(data: pd.DataFrame, config: SplitConfig, seed: int) -> np.ndarray:
    return _user_holdout(data, *config.fractions(), config.input_fraction, seed)


def _user_holdout(data: pd.DataFrame, valid_f: float, test_f: float, input_f: float, seed: int) -> np.ndarray:
    """Held-out users (strong generalisation): a seeded random permutation of the distinct users
    (ascending IDs, permuted by ``default_rng(seed)``); its first round(test_f * U) users go to
    test, the next round(valid_f * U) to validation (round-half-to-even), the rest to train.
    Each held-out user's n rows are cut in the total order: the first
    ``clip(round(input_f * n), 1, n - 1)`` are the input (parts 3 / 4 for validation / test),
    the rest the target (parts 1 / 2); a held-out user with one row gives it as input only."""
    users = np.sort(data[C.USER].unique())
    order = np.random.default_rng(seed).permutation(len(users))
    n_test = int(half_even(np.array([len(users)]), test_f)[0])
    n_valid = int(half_even(np.array([len(users)]), valid_f)[0])
    group = pd.Series(0, index=users, dtype=np.int8)
    group.iloc[order[:n_test]] = 2
    group.iloc[order[n_test : n_test + n_valid]] = 1
    row_group = group.reindex(data[C.USER].to_numpy()).to_numpy()
    pos, n = _per_group_sizes(data, C.USER)
    n_input = np.clip(half_even(n, input_f), 1, np.maximum(n - 1, 1))
    is_input = pos < n_input
    part = np.where(row_group == 0, 0, np.where(is_input, row_group + 2, row_group)).astype(np.int8)
    return part


def half_even(n: np.ndarray, fraction: float) -> np.ndarray:
    """round(n * fraction) with exact arithmetic and ties to even, element-wise."""
    f = Fraction(str(fraction))
    unique = np.unique(n)
    table = {int(u): round(Fraction(int(u)) * f) for u in unique}
    return np.array([table[int(v)] for v in n], dtype=np.int64) if len(n) else np.zeros(0, np.int64)


def _per_group_sizes(data: pd.DataFrame, key: str) -> tuple[np.ndarray, np.ndarray]:
    grouped = data.groupby(key, sort=False)
    return grouped.cumcount().to_numpy(), grouped[key].transform("size").to_numpy()


def _user_temporal(data: pd.DataFrame, test_f: float, min_n: int) -> np.ndarray:
    pos, n = _per_group_sizes(data, C.USER)
    n_test = np.maximum(1, half_even(n, test_f))
    n_test = np.where(n - 2 * n_test >= 1, n_test, 0)  # always leave at least one train row
    n_test = np.where(n < min_n, 0, n_test)
    return _assign_from_end(pos, n, n_test, n_test)


def _leave_last_out(data: pd.DataFrame, n_last: int) -> np.ndarray:
    pos, n = _per_group_sizes(data, C.USER)
    n_test = np.where(n >= 2 * n_last + 1, n_last, 0)
    return _assign_from_end(pos, n, n_test, n_test)


def _assign_from_end(pos: np.ndarray, n: np.ndarray, n_valid: np.ndarray, n_test: np.ndarray) -> np.ndarray:
    part = np.zeros(len(pos), dtype=np.int8)
    from_end = n - pos  # 1 for the last row of the group
    part[from_end <= n_test + n_valid] = 1
    part[from_end <= n_test] = 2
    return part


def _global_temporal(data: pd.DataFrame, valid_f: float, test_f: float) -> np.ndarray:
    n = len(data)
    n_test = int(half_even(np.array([n]), test_f)[0])
    n_valid = int(half_even(np.array([n]), valid_f)[0])
    part = np.zeros(n, dtype=np.int8)
    part[n - n_test - n_valid : n - n_test] = 1
    part[n - n_test :] = 2
    return part


def _random_positions(
    data: pd.DataFrame, key: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Position of each row within its group under a seeded random permutation."""
    keys = rng.random(len(data))
    frame = pd.DataFrame({"g": data[key].to_numpy(), "r": keys, "i": np.arange(len(data))})
    frame = frame.sort_values(["g", "r"], kind="stable")
    pos = np.empty(len(data), dtype=np.int64)
    pos[frame["i"].to_numpy()] = frame.groupby("g", sort=False).cumcount().to_numpy()
    n = data.groupby(key, sort=False)[key].transform("size").to_numpy()
    return pos, n


def _stratified(data: pd.DataFrame, key: str, valid_f: float, test_f: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pos, n = _random_positions(data, key, rng)
    n_test = half_even(n, test_f)
    n_valid = half_even(n, valid_f)
    return _assign_from_end(pos, n, n_valid, n_test)


def _item_stratified(data: pd.DataFrame, valid_f: float, test_f: float, seed: int) -> np.ndarray:
    """Per item: a seeded random (1 - test_f) / test_f split; validation is then carved from
    each item's train part by the same rule with ``valid_f``."""
    rng = np.random.default_rng(seed)
    pos, n = _random_positions(data, C.ITEM, rng)
    n_test = half_even(n, test_f)
    part = np.where(n - pos <= n_test, 2, 0).astype(np.int8)
    train_mask = part == 0
    train = data[train_mask]
    pos_t, n_t = _random_positions(train, C.ITEM, rng)
    n_valid = half_even(n_t, valid_f)
    sub = np.where(n_t - pos_t <= n_valid, 1, 0).astype(np.int8)
    part[np.flatnonzero(train_mask)] = sub
    return part


# ------------------------------------------------------------------------ leakage checks


def check_split(split: Split, interactions: pd.DataFrame) -> list[str]:
    """The protocol's leakage checks; returns the violations (empty when the split is sound).

    - the three parts are disjoint and add up to the input rows;
    - global_temporal: every train row precedes every validation row, which precedes every test
      row, in the total order;
    - per-user temporal splits: each user's train rows precede that user's validation rows,
      which precede that user's test rows;
    - user_holdout (the parts being train, valid input, valid target, test input, test target):
      no held-out user has a train row, no user is in both validation and test, and each
      held-out user's input rows precede their target rows.
    """
    problems: list[str] = []
    parts = {"train": split.train, "valid": split.valid, "test": split.test}
    if split.valid_input is not None and split.test_input is not None:
        parts = {
            "train": split.train,
            "valid_input": split.valid_input,
            "valid": split.valid,
            "test_input": split.test_input,
            "test": split.test,
        }
    seen: set = set()
    for name, frame in parts.items():
        overlap = seen.intersection(frame.index)
        if overlap:
            problems.append(f"{name} shares {len(overlap)} rows with an earlier part")
        seen.update(frame.index)
    if seen != set(interactions.index):
        problems.append(
            f"parts hold {len(seen)} rows, input has {len(interactions)} "
            f"({len(set(interactions.index) - seen)} missing)"
        )
    key = lambda f: list(zip(f[C.TIMESTAMP], f[C.ITEM], f[C.USER]))  # noqa: E731
    if split.name == "global_temporal":
        for a, b in (("train", "valid"), ("valid", "test")):
            if len(parts[a]) and len(parts[b]) and max(key(parts[a])) > min(key(parts[b])):
                problems.append(f"a {a} row comes after a {b} row in the total order")
    if split.name in ("user_temporal", "leave_last_out"):
        last_train = _per_user_extreme(parts["train"], max)
        first_valid = _per_user_extreme(parts["valid"], min)
        last_valid = _per_user_extreme(parts["valid"], max)
        first_test = _per_user_extreme(parts["test"], min)
        for user, t in first_valid.items():
            if user in last_train and last_train[user] > t:
                problems.append(f"user {user}: a train row comes after a validation row")
        for user, t in first_test.items():
            before = (
                max(x for x in (last_train.get(user), last_valid.get(user)) if x is not None)
                if (user in last_train or user in last_valid)
                else None
            )
            if before is not None and before > t:
                problems.append(f"user {user}: a test row comes before a train or validation row")
    if "test_input" in parts:
        train_users = set(split.train[C.USER])
        valid_users = set(parts["valid_input"][C.USER]) | set(parts["valid"][C.USER])
        test_users = set(parts["test_input"][C.USER]) | set(parts["test"][C.USER])
        for name, held in (("validation", valid_users), ("test", test_users)):
            if held & train_users:
                problems.append(f"{len(held & train_users)} {name} users have a train row")
        if valid_users & test_users:
            problems.append(f"{len(valid_users & test_users)} users are in both validation and test")
        for inp, target in (("valid_input", "valid"), ("test_input", "test")):
            last_input = _per_user_extreme(parts[inp], max)
            for user, t in _per_user_extreme(parts[target], min).items():
                if user in last_input and last_input[user] > t:
                    problems.append(f"user {user}: an input row comes after a target row ({target})")
    return problems


def _per_user_extreme(frame: pd.DataFrame, fn) -> dict:
    out: dict = {}
    for user, ts, item in zip(frame[C.USER], frame[C.TIMESTAMP], frame[C.ITEM]):
        k = (ts, item)
        out[user] = k if user not in out else fn(out[user], k)
    return out
