"""Fold-in: a user's scores from their history plus events that arrived after the fit, without
refitting (:mod:`personalize.scoring.foldin`).

ALS folds in exactly as implicit's ``recalculate_user``; item-item models score the updated
history with their fixed matrix; a fusion folds in through its parts; a user the model never saw
is personalised after one event by every model that can fold in, and stays on the fallback with
the models that cannot (BPR, NeuMF, the two-tower: their user vectors are learned, so a new
history needs a refit). Served requests with ``recent`` events leave consumed items out at once,
weigh typed events as in training, and answer rows without events exactly as before.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personalize import scoring
from personalize.models import create_model
from personalize.scoring.serve import RequestError
from personalize.serving.state import all_data

EASE = {"l2": 250}
ITEMKNN = {"neighbours": 100, "shrink": 10}
ALS = {"factors": 16, "iterations": 3}
PARAMS = {
    "ease": EASE,
    "itemknn": ITEMKNN,
    "als": ALS,
    "content": {"vectors": "genres"},
    "popularity": {},
    "bpr": {"factors": 16, "iterations": 2},
    "neumf": {"factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8], "epochs": 1},
    "two_tower": {"text": False, "epochs": 1},
    "fusion[ease+popularity]": {
        "components": [{"type": "ease", "params": EASE}, {"type": "popularity"}],
        "weights": [0.7, 0.3],
    },
    "fusion[ease+itemknn, rrf]": {
        "components": [{"type": "ease", "params": EASE}, {"type": "itemknn", "params": ITEMKNN}],
        "method": "rrf",
        "weights": [0.5, 0.5],
    },
}
FOLDS_IN = ["ease", "itemknn", "als", "content"]
NO_FOLD_IN = ["bpr", "neumf", "two_tower"]
NEW_USER = "a user nobody has seen"


@pytest.fixture(scope="module")
def data(ml100k_small):
    return all_data(ml100k_small)


@pytest.fixture(scope="module")
def fitted(data):
    """Models fitted once per module, on first use."""
    cache: dict[str, object] = {}

    def get(case: str):
        if case not in cache:
            model_type = case.split("[")[0]
            cache[case] = create_model(model_type, PARAMS[case], seed=0).fit(data)
        return cache[case]

    return get


def served(model, folder, events: scoring.EventRules | None = None) -> scoring.TopKScorer:
    settings = None if events is None else {"events": events.to_settings()}
    scoring.save_state(
        folder,
        model.scorer(),
        model.index_.users,
        model.index_.items,
        model.seen_,
        model.popularity_,
        settings=settings,
        exclude=model.exclude_,
    )
    return scoring.TopKScorer.load(folder)


def unseen_items(model, user: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct items user index ``user`` has not interacted with."""
    seen = set(model.seen_[user].indices)
    pool = np.array([i for i in range(model.n_items) if i not in seen])
    return rng.choice(pool, size=count, replace=False)


def added(rows: list[tuple[list[int], list[float]]], n_items: int):
    return scoring.added_matrices(
        [(np.array(i, dtype=np.int64), np.array(w, dtype=float), np.ones(len(i), bool)) for i, w in rows],
        n_items,
    )


def updated_rows(model, owners: list[int], new: sp.csr_matrix) -> np.ndarray:
    """The users' history rows (zeros for -1) merged with the new events, each pair weighing
    the maximum of its weights: what fold-in must score."""
    base = np.zeros((len(owners), model.n_items), dtype=np.float32)
    for r, u in enumerate(owners):
        if u >= 0:
            base[r] = model.seen_[u].toarray()[0]
    return np.maximum(base, new.toarray())


# ------------------------------------------------------------------------------- ALS


def test_als_fold_in_equals_implicit_recalculate_user(fitted):
    from implicit.cpu.als import AlternatingLeastSquares

    model = fitted("als")
    c = model.config
    reference = AlternatingLeastSquares(factors=c.factors, regularization=c.regularization, alpha=c.alpha)
    reference.item_factors = np.ascontiguousarray(model.item_factors_, dtype=np.float32)
    rng = np.random.default_rng(0)
    owners = [3, 17, -1, 3]
    new_items = [unseen_items(model, max(u, 0), 2, rng) for u in owners[:3]]
    new_items.append(new_items[0])
    new, _ = added([(list(i), [1.0] * len(i)) for i in new_items], model.n_items)
    rows = sp.csr_matrix(updated_rows(model, owners, new))

    expected = np.vstack([reference.recalculate_user(0, rows[r]) for r in range(len(owners))])
    vectors = scoring.als_user_vectors(model.item_factors_, rows, c.regularization, c.alpha)
    np.testing.assert_allclose(vectors, expected, rtol=0, atol=1e-5)
    assert np.abs(expected).max() > 0.01  # not a pair of zero vectors

    ctx = scoring.fold_context(model.context, np.array(owners), new)
    assert ctx.folded and list(ctx.owner(np.arange(4))) == owners
    scores = model.scorer().answer(np.arange(len(owners)), ctx)
    np.testing.assert_allclose(scores, expected @ model.item_factors_.T, rtol=0, atol=1e-5)
    # the same user with the same new events folds in alike in any row of a request
    np.testing.assert_array_equal(scores[0], scores[3])
    # the fitted vectors differ from the folded ones: fold-in does not read the learned user side
    assert not np.allclose(scores[0], model.score(np.array([3]))[0], atol=1e-3)


def test_als_fold_in_of_an_unchanged_history_solves_the_same_problem(fitted):
    """No new event: the folded vector is the user's least-squares solution on their history
    (what implicit's ``recalculate_user`` returns for the stored row)."""
    from implicit.cpu.als import AlternatingLeastSquares

    model = fitted("als")
    c = model.config
    reference = AlternatingLeastSquares(factors=c.factors, regularization=c.regularization, alpha=c.alpha)
    reference.item_factors = np.ascontiguousarray(model.item_factors_, dtype=np.float32)
    ctx = scoring.fold_context(model.context, np.array([5]), sp.csr_matrix((1, model.n_items)))
    got = model.scorer().user_vectors(np.array([0]), ctx)
    np.testing.assert_allclose(
        got[0], np.ravel(reference.recalculate_user(0, model.seen_[5])), rtol=0, atol=1e-5
    )


# --------------------------------------------------------------------- item-item models


@pytest.mark.parametrize("case", ["ease", "itemknn"])
def test_item_item_fold_in_scores_the_updated_history(case, fitted):
    model = fitted(case)
    scorer = model.scorer()
    rng = np.random.default_rng(1)
    a, b = unseen_items(model, 7, 2, rng)
    old = int(model.seen_[7].indices[0])
    # user 7: a new item twice (the larger weight counts), an old item again with a smaller
    # weight (the history's weight stays); an unknown user with one event
    new, _ = added([([a, a, old, b], [0.3, 2.0, 0.5, 1.0]), ([b], [1.0])], model.n_items)
    owners = [7, -1]
    ctx = scoring.fold_context(model.context, np.array(owners), new)
    history = updated_rows(model, owners, new)
    assert history[0, a] == 2.0 and history[0, old] == 1.0
    np.testing.assert_array_equal(ctx.seen.toarray(), history)
    weights = scorer.weights.toarray() if sp.issparse(scorer.weights) else scorer.weights
    expected = (history.astype(np.float64) @ weights).astype(np.float32)
    np.testing.assert_allclose(scorer.answer(np.arange(2), ctx), expected, rtol=1e-5, atol=1e-6)
    assert scorer.personalised(np.arange(2), ctx.history, ctx.owners).all()


@pytest.mark.parametrize("case", ["fusion[ease+popularity]", "fusion[ease+itemknn, rrf]"])
def test_fusion_folds_in_through_its_parts(case, fitted):
    """A blend on a fold-in context answers as the blend on a plain context whose rows are the
    updated histories (and the updated exclusions)."""
    model = fitted(case)
    scorer = model.scorer()
    assert scorer.kind == "blend"
    rng = np.random.default_rng(2)
    owners = [2, 40, -1]
    new_items = [unseen_items(model, max(u, 0), 3, rng) for u in owners]
    new, new_ex = added([(list(i), [1.0] * 3) for i in new_items], model.n_items)
    folded = scoring.fold_context(model.context, np.array(owners), new, new_ex)

    history = sp.csr_matrix(updated_rows(model, owners, new))
    exclude = np.zeros((len(owners), model.n_items), dtype=np.float32)
    for r, u in enumerate(owners):
        if u >= 0:
            exclude[r] = model.excluded_[u].toarray()[0]
    exclude = np.maximum(exclude, new_ex.toarray())
    plain = scoring.Context.build(history, model.popularity_, sp.csr_matrix(exclude))
    assert not plain.folded
    got = scorer.answer(np.arange(3), folded)
    np.testing.assert_allclose(got, scorer.answer(np.arange(3), plain), rtol=1e-6, atol=1e-7)
    # the fold changed the answer of the known users (new history) and personalised the new one
    np.testing.assert_array_less(0, np.abs(got[:2] - model.score(np.array([2, 40]))).max(axis=1))
    assert scorer.personalised(np.arange(3), folded.history, folded.owners).all()


# ------------------------------------------------------------------------- a new user


def _popularity_list(scorer: scoring.TopKScorer, k: int, leave_out: int) -> list:
    order = np.lexsort((np.arange(scorer.n_items), -scorer.popularity))
    ids = scorer.items.to_numpy()[order]
    return [i for i in ids if i != leave_out][:k]


@pytest.mark.parametrize("case", FOLDS_IN)
def test_a_new_user_is_personalised_after_their_first_event(case, fitted, tmp_path):
    server = served(fitted(case), tmp_path / "state")
    item = server.items[int(np.argmax(server.popularity))]  # the most popular item
    before = server.recommend([NEW_USER], k=10)
    assert not before.personalised.any()
    after = server.recommend([NEW_USER], k=10, recent=[[(item, None)]])
    assert after.personalised.all() and len(after) == 10
    assert item not in set(after.item_id)
    assert list(after.item_id) != _popularity_list(server, 10, item)
    assert not np.allclose(after.score, np.sort(server.popularity)[::-1][1:11])


@pytest.mark.parametrize("case", NO_FOLD_IN)
def test_models_with_learned_user_vectors_keep_a_new_user_on_the_fallback(case, fitted, tmp_path):
    """BPR, NeuMF and the two-tower learn each user's vector (or the tower's input is the user's
    ID); a user they never saw cannot be folded in, so popularity answers until a refit. The
    consumed item still leaves the list."""
    model = fitted(case)
    assert not model.scorer().folds_in
    server = served(model, tmp_path / "state")
    item = server.items[int(np.argmax(server.popularity))]
    after = server.recommend([NEW_USER], k=10, recent=[[(item, None)]])
    assert not after.personalised.any()
    assert list(after.item_id) == _popularity_list(server, 10, item)
    # a known user keeps the vector learned at fit time: scores unchanged, the item left out
    known = server.users[0]
    seen = set(server.items[model.seen_[0].indices])
    fresh = next(i for i in server.recommend([known], k=5).item_id if i not in seen)
    plain = server.recommend([known], k=11)
    folded = server.recommend([known], k=10, recent=[[(fresh, None)]])
    expected = plain[plain.item_id != fresh].head(10)
    assert list(folded.item_id) == list(expected.item_id)
    np.testing.assert_array_equal(folded.score.to_numpy(), expected.score.to_numpy())


# ----------------------------------------------------------------- served: exclusion


@pytest.mark.parametrize("case", ["ease", "itemknn"])
def test_a_consumed_item_leaves_the_list_and_its_neighbours_gain(case, fitted, tmp_path):
    model = fitted(case)
    server = served(model, tmp_path / "state")
    user = server.users[10]
    weights = model.scorer().weights
    weights = weights.toarray() if sp.issparse(weights) else np.asarray(weights)
    before = server.recommend([user], k=10)
    top = before.item_id.iloc[0]
    after = server.recommend([user], k=10, recent=[[(top, None)]])
    assert top not in set(after.item_id) and len(after) == 10
    i = server.item_index([top])[0]
    # every item's score rose by its weight from the consumed item (a one-event history row)
    full_before = server.score(server.user_index([user]))[0]
    for item, score in zip(after.item_id, after.score):
        j = server.item_index([item])[0]
        assert score == pytest.approx(full_before[j] + weights[i, j], rel=1e-5, abs=1e-6)
    # the consumed item's nearest unseen neighbour gains and ranks no lower than before
    seen = set(model.seen_[10].indices) | {i}
    order = [j for j in np.argsort(-weights[i], kind="stable") if j not in seen]
    neighbour = server.items[order[0]]
    assert weights[i, order[0]] > 0
    rank = {r.item_id: r.rank for r in server.recommend([user], k=50).itertuples()}
    new_rank = {
        r.item_id: r.rank for r in server.recommend([user], k=50, recent=[[(top, None)]]).itertuples()
    }
    assert neighbour in new_rank and new_rank[neighbour] <= rank.get(neighbour, 51)


def test_typed_events_weigh_as_in_training_and_only_relevant_ones_exclude(fitted, tmp_path):
    model = fitted("itemknn")
    rules = scoring.EventRules({"view": 0.25, "purchase": 1.0}, frozenset({"purchase"}), "relevant")
    server = served(model, tmp_path / "state", rules)
    assert server.events == rules
    user = server.users[4]
    weights = model.scorer().weights.toarray()
    base = server.score(server.user_index([user]))[0]
    top = server.recommend([user], k=10).item_id.iloc[0]
    i = server.item_index([top])[0]

    viewed = server.recommend([user], k=server.max_k, recent=[[(top, "view")]])
    assert top in set(viewed.item_id)  # a view does not exclude under seen: relevant
    got = viewed.set_index("item_id").score
    items = server.item_index(list(got.index))
    np.testing.assert_allclose(got.to_numpy(), base[items] + 0.25 * weights[i, items], rtol=1e-5, atol=1e-6)

    bought = server.recommend([user], k=server.max_k, recent=[[(top, "view"), (top, "purchase")]])
    assert top not in set(bought.item_id)
    got = bought.set_index("item_id").score  # the larger weight of the pair's events counts
    items = server.item_index(list(got.index))
    np.testing.assert_allclose(got.to_numpy(), base[items] + weights[i, items], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------- served: rows and request order


@pytest.mark.parametrize("case", ["ease", "als"])
def test_rows_without_events_answer_as_before_and_rows_keep_request_order(case, fitted, tmp_path):
    server = served(fitted(case), tmp_path / "state")
    users = [server.users[1], server.users[2], NEW_USER, server.users[1], server.users[3]]
    plain = server.recommend(users, k=5)
    pd.testing.assert_frame_equal(server.recommend(users, k=5, recent=[None] * 5), plain)
    pd.testing.assert_frame_equal(server.recommend(users, k=5, recent=[[]] * 5), plain)

    item = plain.item_id.iloc[0]
    recent = [None, [(item, None)], [(item, None)], [], None]
    ks = [5, 4, 3, 5, 2]
    mixed = server.recommend(users, k=ks, recent=recent)
    alone = [server.recommend([uid], k=k, recent=[events]) for uid, k, events in zip(users, ks, recent)]
    pd.testing.assert_frame_equal(mixed, pd.concat(alone, ignore_index=True))
    assert list(mixed.user_id) == [u for u, k in zip(users, ks) for _ in range(k)]
    for r in (0, 3, 4):  # without events: the unfolded answer
        pd.testing.assert_frame_equal(alone[r], server.recommend([users[r]], k=ks[r]))
    assert item not in set(alone[1].item_id) and item in set(alone[0].item_id)
    assert alone[2].personalised.all()  # the new user, folded in


# ---------------------------------------------------------------------- bad input


def test_an_unknown_event_type_is_a_clear_error(fitted, tmp_path):
    rules = scoring.EventRules({"view": 0.25, "purchase": 1.0}, frozenset({"purchase"}), "relevant")
    server = served(fitted("ease"), tmp_path / "state", rules)
    item = server.items[0]
    with pytest.raises(ValueError, match=r"event type 'click' is not one the model was trained with"):
        server.recommend([server.users[0]], recent=[[(item, "click")]])
    with pytest.raises(ValueError, match=r"event type None"):
        server.recommend([server.users[0]], recent=[[(item, None)]])


def test_recent_lists_must_match_the_rows(fitted, tmp_path):
    server = served(fitted("ease"), tmp_path / "state")
    users = [server.users[0], server.users[1]]
    item = server.items[0]
    with pytest.raises(RequestError, match="got 1 recent-event lists for 2 rows"):
        server.recommend(users, recent=[[(item, None)]])
    with pytest.raises(RequestError, match="got 3 recent-event lists for 2 rows"):
        server.recommend(users, recent=[None, None, [(item, None)]])
