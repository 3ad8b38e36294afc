"""Every scorer kind on a tiny fixture, against scores and top-k lists worked out by hand.

Three users and four items. User 0 has seen items 0 and 1, user 1 has seen item 2, user 2 is
known but cold (no history); index -1 is an unknown user. The popularity fallback is
[2, 5, 1, 0].
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personalize import scoring

SEEN = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]], dtype=np.float32))
POPULARITY = np.array([2, 5, 1, 0], dtype=np.float32)
CTX = scoring.Context.build(SEEN, POPULARITY)
ALL = np.array([0, 1, 2, -1])


def static(handles_cold_users=True) -> scoring.Static:
    return scoring.Static(
        scores=np.array([0.5, 0.1, 0.3, 0.3], np.float32), handles_cold_users=handles_cold_users
    )


def item_item(sparse: bool = False) -> scoring.ItemItem:
    w = np.array([[0, 1, 2, 0], [1, 0, 0, 3], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32)
    return scoring.ItemItem(weights=sp.csr_matrix(w) if sparse else w)


def factors() -> scoring.Factors:
    users = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    items = np.array([[1, 2], [3, 0], [0, 0], [-1, 1]], dtype=np.float32)
    return scoring.Factors(users=users, items=items)


def neumf() -> scoring.NeuMF:
    """One GMF factor, one MLP embedding, one hidden unit:
    score(u, i) = 2 * g_u * g_i + relu(m_u - m_i + 0.5) + 0.25."""
    w = {
        "user_gmf.weight": np.array([[1.0], [2.0], [0.0]], np.float32),
        "item_gmf.weight": np.array([[1.0], [0.0], [-1.0], [2.0]], np.float32),
        "user_mlp.weight": np.array([[1.0], [0.0], [0.0]], np.float32),
        "item_mlp.weight": np.array([[0.0], [1.0], [2.0], [3.0]], np.float32),
        "mlp.0.weight": np.array([[1.0, -1.0]], np.float32),
        "mlp.0.bias": np.array([0.5], np.float32),
        "out.weight": np.array([[2.0, 1.0]], np.float32),
        "out.bias": np.array([0.25], np.float32),
    }
    return scoring.NeuMF(weights=w, factors=1, mlp_embedding=1, mlp_layers=[1])


def autoencoder() -> scoring.Autoencoder:
    """One hidden unit and one latent dimension on each side:
    score(u) = tanh(tanh(x_u . [1, 1, 2, 0]) + 0.5) * [1, -1, 2, 0] + [0, 0, 0, 0.25]."""
    return scoring.Autoencoder(
        w1=np.array([[1.0], [1.0], [2.0], [0.0]], np.float32),
        b1=np.array([0.0], np.float32),
        w_mu=np.array([[1.0]], np.float32),
        b_mu=np.array([0.5], np.float32),
        w2=np.array([[1.0]], np.float32),
        b2=np.array([0.0], np.float32),
        w3=np.array([[1.0, -1.0, 2.0, 0.0]], np.float32),
        b3=np.array([0.0, 0.0, 0.0, 0.25], np.float32),
    )


def top(scorer, users, k, exclude=None):
    rows, items, _, values, personal = scoring.rank_rows(
        scorer, CTX, np.asarray(users), np.full(len(users), k), exclude
    )
    return [items[rows == r].tolist() for r in range(len(users))], values, personal


def test_static_scores_every_user_alike_and_breaks_ties_by_item_index():
    s = static()
    np.testing.assert_allclose(
        s.answer(ALL, CTX),
        [[0.5, 0.1, 0.3, 0.3]] * 3 + [[2, 5, 1, 0]],  # unknown: popularity
    )
    lists, _, personal = top(s, [0, 2, -1], k=2)
    assert lists == [[2, 3], [0, 2], [1, 0]]  # user 0 has seen 0 and 1; items 2 and 3 tie at 0.3
    assert personal.tolist() == [True, True, True, True, False, False]


@pytest.mark.parametrize("sparse", [False, True])
def test_item_item_sums_the_rows_of_the_seen_items(sparse):
    s = item_item(sparse)
    np.testing.assert_array_equal(
        s.answer(ALL, CTX),
        [[1, 1, 2, 3], [0, 0, 0, 1], [2, 5, 1, 0], [2, 5, 1, 0]],  # cold and unknown: popularity
    )
    lists, values, personal = top(s, [0, 1, 2], k=2)
    assert lists == [[3, 2], [3, 0], [1, 0]]  # user 1: items 0, 1 and 3 left; 0 and 1 tie at 0
    np.testing.assert_array_equal(values, [3, 2, 1, 0, 5, 2])
    assert personal.tolist() == [True, True, True, True, False, False]


def test_factors_are_dot_products_and_cold_users_fall_back():
    s = factors()
    np.testing.assert_array_equal(
        s.answer(ALL, CTX), [[1, 3, 0, -1], [2, 0, 0, 1], [2, 5, 1, 0], [2, 5, 1, 0]]
    )
    s.handles_cold_users = True  # e.g. a two-tower: the cold user's own vector answers
    np.testing.assert_array_equal(s.answer(ALL, CTX)[2:], [[3, 3, 0, 0], [2, 5, 1, 0]])


def test_neumf_is_the_worked_forward_pass():
    want = [[3.75, 0.75, -1.75, 4.25], [4.75, 0.25, -3.75, 8.25]]
    np.testing.assert_allclose(neumf().answer(np.array([0, 1]), CTX), want, rtol=1e-6)
    lists, _, _ = top(neumf(), [0, 1], k=3)
    assert lists == [[3, 2], [3, 0, 1]]  # user 0 has seen 0 and 1, user 1 has seen 2


def test_autoencoder_is_the_worked_mean_forward_pass_over_the_normalised_history():
    # user 0: x = [1, 1, 0, 0] / sqrt(2), x . w1 = sqrt(2); user 1: x = [0, 0, 1, 0], x . w1 = 2
    t0, t1 = np.tanh(np.tanh(np.sqrt(2.0)) + 0.5), np.tanh(np.tanh(2.0) + 0.5)  # 0.8829, 0.8983
    want = [
        [t0, -t0, 2 * t0, 0.25],
        [t1, -t1, 2 * t1, 0.25],
        [2, 5, 1, 0],  # cold: popularity
        [2, 5, 1, 0],  # unknown: popularity
    ]
    np.testing.assert_allclose(autoencoder().answer(ALL, CTX), want, rtol=1e-6)
    lists, _, personal = top(autoencoder(), [0, 1, 2], k=3)
    assert lists == [[2, 3], [0, 3, 1], [1, 0, 2]]  # user 0 has seen 0 and 1, user 1 has seen 2
    assert personal.tolist() == [True, True, True, True, True, False, False, False]
    # the row is L2-normalised: scaling a history's weights does not change the answer
    heavier = scoring.Context.build(SEEN * 3.0, POPULARITY)
    np.testing.assert_allclose(autoencoder().answer(ALL, heavier), want, rtol=1e-6)


def test_minmax_blend_normalises_over_unseen_items():
    blend = scoring.Blend(members=[static(), item_item()], weights=np.array([0.5, 0.5]))
    np.testing.assert_allclose(
        blend.answer(np.array([0, 1, 2]), CTX),
        [
            [-0.5, -0.5, 0.0, 0.5],  # static is constant over user 0's candidates {2, 3}: 0
            [0.5, 0.0, 0.25, 0.75],
            [0.7, 0.5, 0.35, 0.25],  # cold: the static part answers, item-item gives popularity
        ],
        rtol=1e-6,
    )
    assert blend.personalised(np.array([0, 2, -1]), CTX.history).tolist() == [True, True, False]


def test_rrf_blend_uses_ranks_among_unseen_items():
    blend = scoring.Blend(
        members=[static(), item_item()], weights=np.array([0.5, 0.5]), method="rrf", rrf_k=1.0
    )
    third = 1.0 / 3.0
    np.testing.assert_allclose(
        blend.answer(np.array([0]), CTX),
        [[0, 0, 0.5 * 0.5 + 0.5 * third, 0.5 * third + 0.5 * 0.5]],
        rtol=1e-6,
    )


def test_one_hot_blend_is_that_part_and_minus_inf_vetoes():
    one_hot = scoring.Blend(members=[static(), item_item()], weights=np.array([0.0, 1.0]))
    np.testing.assert_array_equal(
        one_hot.answer(np.array([0, 1]), CTX), item_item().answer(np.array([0, 1]), CTX)
    )
    banned = scoring.Static(scores=np.array([0.5, -np.inf, 0.3, 0.3], np.float32), handles_cold_users=True)
    blend = scoring.Blend(members=[banned, item_item()], weights=np.array([0.5, 0.5]))
    scores = blend.answer(np.array([1]), CTX)
    assert scores[0, 1] == -np.inf and np.isfinite(scores[0, [0, 2, 3]]).all()
    lists, _, _ = top(blend, [1], k=4)
    assert 1 not in lists[0] and 2 not in lists[0]  # -inf and seen are never recommended


def test_requested_exclusions_and_short_lists():
    lists, _, _ = top(item_item(), [0, 1], k=4, exclude=[np.array([3]), None])
    assert lists == [[2], [3, 0, 1]]  # user 0: seen 0, 1 and excluded 3 leave one item


def test_topk_is_exact_with_ties_across_the_kth_place():
    scores = np.array([[1, 3, 3, 3, 0], [np.inf * -1, 2, 2, 1, 2]], dtype=np.float32)
    items, values = scoring.topk(scores, 2)
    assert items.tolist() == [[1, 2], [1, 2]]
    items, values = scoring.topk(scores, 5)
    assert items.tolist() == [[1, 2, 3, 0, 4], [1, 2, 4, 3, -1]]
    assert values[1, 4] == -np.inf


@pytest.mark.parametrize("make", [static, item_item, factors, neumf, autoencoder], ids=lambda f: f.__name__)
def test_a_saved_scorer_answers_the_same(make, tmp_path):
    scorer = make()
    users, items = np.array([10, 11, 12]), np.array([100, 101, 102, 103])
    scoring.save_state(tmp_path, scorer, pd.Index(users), pd.Index(items), SEEN, POPULARITY)
    state = scoring.load_state(tmp_path)
    assert type(state.scorer) is type(scorer) and state.scorer.handles_cold_users == scorer.handles_cold_users
    np.testing.assert_array_equal(state.scorer.answer(ALL, state.context), scorer.answer(ALL, CTX))


def test_autoencoder_weights_that_do_not_chain_are_refused(tmp_path):
    bad = autoencoder()
    bad.w3 = np.zeros((2, 4), np.float32)  # hidden is 1
    with pytest.raises(ValueError, match=r"autoencoder array 'w3' has shape \(2, 4\), expected \(1, 4\)"):
        scoring.save_state(tmp_path, bad, pd.Index([10, 11, 12]), pd.Index(range(4)), SEEN, POPULARITY)
    short = autoencoder()
    short.b3 = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="'b3' has shape"):
        short.check(3, 4)
