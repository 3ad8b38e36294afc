"""Every registered model type declares what erasing one user from it takes
(``Recommender.erasure``, read by the erasure log), and the declaration is checked against the
model itself: fitted with and without one user's interactions (same seed, same ID index), does
another user's answer change (the item side depends on every user), and does its fitted state
hold an array with a row per user (per-user state)?"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from personalize.core import columns as C
from personalize.data.matrix import InteractionData
from personalize.models.base import ErasureNeeds
from personalize.models.registry import available_models, create_model, get_model_class

HERE = Path(__file__).parent
TYPES = available_models()


def _contract_params() -> dict[str, dict]:
    """Each model type's params as its contract test writes them (its first contract class)."""
    out: dict[str, dict] = {}
    for path in sorted(HERE.glob("test_*.py")):
        if path.name == Path(__file__).name:
            continue
        spec = importlib.util.spec_from_file_location(f"_erasure_contract_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for obj in vars(module).values():
            if isinstance(obj, type) and isinstance(getattr(obj, "model_type", None), str):
                out.setdefault(obj.model_type, dict(getattr(obj, "params", {})))
    return out


PARAMS = _contract_params()


def test_every_registered_type_declares_what_erasure_needs():
    undeclared = [
        t for t in TYPES if not isinstance(getattr(get_model_class(t), "erasure", None), ErasureNeeds)
    ]
    assert undeclared == [], f"model types without an erasure declaration: {undeclared}"
    assert sorted(set(TYPES) - set(PARAMS)) == []  # each is checked below with its contract params


def test_a_hybrid_needs_what_its_components_need():
    fusion = get_model_class("fusion")
    content = {"type": "content", "params": {"vectors": "genres"}}
    ease = {"type": "ease", "params": {"l2": 50.0}}
    alone = fusion.erasure_needs({"components": [content, {"type": "random"}], "weights": [1, 0]})
    assert not alone.item_side_from_all_users and alone.per_user_state == "content profiles"
    assert fusion.erasure_needs({"components": [content, ease], "weights": [1, 0]}).item_side_from_all_users


@pytest.fixture(scope="module")
def with_and_without(contract_data):
    """The contract's training data (a segment per user) and the same without the interactions of
    one user (the last with any, so that every other user keeps their index)."""
    split, index, train, _ = contract_data

    def segmented(data: InteractionData) -> InteractionData:
        return dataclasses.replace(data, users=data.users.assign(**{C.SEGMENT: data.users[C.USER] % 3}))

    counts = np.diff(train.matrix.indptr)
    gone = int(np.flatnonzero(counts)[-1])
    frame = split.train[split.train[C.USER] != index.users[gone]]
    without = InteractionData.build(frame, index, split.users, split.items)
    others = np.flatnonzero(counts)[:12]
    assert gone not in others and without.matrix[gone].nnz == 0
    return segmented(train), segmented(without), others, index.n_users


def _per_user_arrays(state: dict, n_users: int) -> list[str]:
    """Names of fitted arrays with a dimension of one row per user (RecBole pads with one)."""
    out = []
    for name, value in state.items():
        if isinstance(value, dict):
            out += [f"{name}.{k}" for k in _per_user_arrays(value, n_users)]
        elif isinstance(value, np.ndarray | sp.spmatrix | sp.sparray) and set(value.shape) & {
            n_users,
            n_users + 1,
        }:
            out.append(name)
    return out


@pytest.mark.parametrize("model_type", TYPES)
def test_the_declaration_matches_the_fitted_model(model_type, with_and_without):
    full, without, others, n_users = with_and_without
    params = PARAMS[model_type]
    declared = get_model_class(model_type).erasure_needs(params)
    fitted = create_model(model_type, params, seed=0).fit(full)
    refit = create_model(model_type, params, seed=0).fit(without)
    changed = not np.allclose(fitted.score(others), refit.score(others), atol=1e-6, equal_nan=True)
    assert declared.item_side_from_all_users == changed, (
        f"{model_type}: other users' scores {'change' if changed else 'do not change'} without one "
        f"user, but the declaration says item_side_from_all_users={declared.item_side_from_all_users}"
    )
    per_user = _per_user_arrays(fitted._state(), n_users)
    assert (declared.per_user_state is not None) == bool(per_user), (
        f"{model_type}: fitted per-user arrays {per_user}, declared per_user_state={declared.per_user_state!r}"
    )
