"""Scoring an exported NeuMF spec with NumPy only (no torch, no training code).

A ``neumf`` :class:`~personalize.models.base.ScorerSpec` holds the network's ``state_dict`` as
NumPy arrays and the architecture in ``params``; :func:`neumf_scores` is the forward pass
written against those arrays, so a serving process needs nothing but NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def neumf_scores(
    arrays: dict[str, np.ndarray], params: dict[str, Any], users: np.ndarray, block_elements: int = 1 << 23
) -> np.ndarray:
    """NeuMF logits (float32, len(users) x items) for user indices ``users``.

    score(u, i) = w_out . [p_u * q_i ; MLP([p'_u ; q'_i])] + b_out, where the MLP's first layer
    W1 [p'_u ; q'_i] + b1 is computed as (W1_u p'_u + b1) + W1_i q'_i for every item at once,
    followed by ReLU and the further layers (each Linear then ReLU). ``arrays`` keys:
    ``user_gmf.weight``, ``item_gmf.weight``, ``user_mlp.weight``, ``item_mlp.weight``,
    ``mlp.<j>.weight`` / ``mlp.<j>.bias``, ``out.weight`` / ``out.bias``.
    """
    users = np.asarray(users, dtype=np.int64)
    n_layers = len(params["mlp_layers"])
    factors = int(params["factors"])
    m = int(params["mlp_embedding"])
    w1 = arrays["mlp.0.weight"].astype(np.float32)
    item_first = arrays["item_mlp.weight"] @ w1[:, m:].T  # (items, h1)
    w_out = arrays["out.weight"].reshape(-1).astype(np.float32)
    w_gmf, w_mlp = w_out[:factors], w_out[factors:]
    item_gmf = arrays["item_gmf.weight"] * w_gmf[None, :]  # (items, f)
    n_items = item_first.shape[0]
    widest = max(params["mlp_layers"])
    step = max(1, block_elements // max(1, n_items * widest))
    out = np.empty((len(users), n_items), dtype=np.float32)
    for start in range(0, len(users), step):
        u = users[start : start + step]
        user_first = arrays["user_mlp.weight"][u] @ w1[:, :m].T + arrays["mlp.0.bias"]  # (b, h1)
        h = np.maximum(user_first[:, None, :] + item_first[None, :, :], 0.0)
        for j in range(1, n_layers):
            h = np.maximum(h @ arrays[f"mlp.{j}.weight"].T + arrays[f"mlp.{j}.bias"], 0.0)
        gmf = arrays["user_gmf.weight"][u] @ item_gmf.T
        out[start : start + step] = gmf + h @ w_mlp + arrays["out.bias"][0]
    return out
