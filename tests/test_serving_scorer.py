"""The standalone scorer shipped with exported models: it answers exactly what the fitted model
answers (every scorer kind), validates requests, and runs without this package."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from personalize import columns as C
from personalize.evaluation.ranking import topk as reference_topk
from personalize.models import create_model
from personalize.serving.config import ExportConfig
from personalize.serving.export import STANDALONE, all_data, write_state
from personalize.serving.standalone.recsys_scorer import RequestError, TopKScorer, save_state, top_k

COLD = 999_999  # a known user without interactions
UNKNOWN = 123_456_789

CASES = {
    "popularity": ("popularity", {}),
    "recent_popularity": ("recent_popularity", {"half_life_days": 30}),
    "itemknn": ("itemknn", {"neighbours": 50, "shrink": 10}),
    "ease": ("ease", {"l2": 100}),
    "als": ("als", {"factors": 8, "iterations": 3}),
    "neumf": ("neumf", {"epochs": 1, "factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8]}),
    "fusion_minmax": (
        "fusion",
        {
            "components": [{"type": "ease", "params": {"l2": 100}}, {"type": "recent_popularity"}],
            "weights": [0.7, 0.3],
        },
    ),
    "fusion_rrf": (
        "fusion",
        {
            "components": [
                {"type": "ease", "params": {"l2": 100}},
                {"type": "als", "params": {"factors": 8, "iterations": 2}},
            ],
            "weights": [0.5, 0.5],
            "method": "rrf",
        },
    ),
    "fusion_one_hot": (
        "fusion",
        {
            "components": [{"type": "ease", "params": {"l2": 100}}, {"type": "popularity"}],
            "weights": [1.0, 0.0],
        },
    ),
}


@pytest.fixture(scope="module")
def data(ml100k_small):
    """All interactions of the small sample, plus one known user without interactions."""
    users = pd.concat([ml100k_small.users, pd.DataFrame({C.USER: [COLD]})], ignore_index=True)
    return all_data(dataclasses.replace(ml100k_small, users=users))


@pytest.fixture(scope="module")
def exported(data, tmp_path_factory):
    """Each case fitted on all data, its state written and read back."""
    out = {}
    for case, (model_type, params) in CASES.items():
        model = create_model(model_type, params, seed=0).fit(data)
        folder = write_state(model, tmp_path_factory.mktemp(case) / "state", ExportConfig())[0]
        out[case] = (model, TopKScorer.load(folder))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_scorer_answers_exactly_what_the_model_answers(case, exported, data):
    model, scorer = exported[case]
    ids = [int(u) for u in data.index.users[:25]] + [COLD, UNKNOWN]
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(scorer.score(users), model.score(users))
    np.testing.assert_array_equal(scorer.personalised(users), model.personalised(users))
    pd.testing.assert_frame_equal(scorer.recommend(ids, k=10), model.recommend(ids, k=10))
    for uid in ids[:4]:  # one user per request: the serving fast path gives the same answer
        pd.testing.assert_frame_equal(scorer.recommend([uid], k=10), model.recommend([uid], k=10))
    extra = {ids[0]: [int(data.index.items[5]), int(data.index.items[7])]}
    pd.testing.assert_frame_equal(
        scorer.recommend(ids[:3], k=4, exclude_items=[extra[ids[0]], None, []]),
        model.recommend(ids[:3], k=4, exclude_items=extra),
    )


def test_cold_and_unknown_users_get_the_popularity_fallback(exported, data):
    _, scorer = exported["ease"]
    recs = scorer.recommend([COLD, UNKNOWN, "somebody"], k=5)
    popular = data.index.items[np.argsort(-data.item_counts, kind="stable")[:5]].tolist()
    for uid in (COLD, UNKNOWN, "somebody"):
        rows = recs[recs[C.USER] == uid]
        assert rows[C.ITEM].tolist() == popular and not rows[C.PERSONALISED].any()
    # a blend with a part that handles cold users answers a cold user itself, as the model does
    blend_model, blend = exported["fusion_minmax"]
    assert blend.recommend([COLD], k=3)[C.PERSONALISED].all()
    assert blend_model.recommend([COLD], k=3)[C.PERSONALISED].all()


def test_seen_items_and_requested_exclusions_are_left_out(exported, data):
    _, scorer = exported["als"]
    user = int(data.index.users[0])
    seen = set(data.index.items[data.matrix[0].indices].tolist())
    first = scorer.recommend([user], k=10)
    assert not seen & set(first[C.ITEM]) and first[C.PERSONALISED].all()
    banned = first[C.ITEM].tolist()[:3]
    again = scorer.recommend([user], k=10, exclude_items=[banned])
    assert not set(banned) & set(again[C.ITEM])
    assert again[C.ITEM].tolist()[:7] == first[C.ITEM].tolist()[3:]


def test_k_per_row_and_ids_as_text(exported, data):
    _, scorer = exported["ease"]
    a, b = int(data.index.users[0]), int(data.index.users[1])
    recs = scorer.recommend([a, str(b), "nobody"], k=[2, None, 3])
    assert recs.groupby(C.USER, sort=False).size().tolist() == [2, scorer.default_k, 3]
    assert recs[recs[C.USER] == str(b)][C.PERSONALISED].all()  # '196' finds user 196
    assert list(recs[C.RANK]) == [1, 2, *range(1, 11), 1, 2, 3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": 0}, "row 0: k must be between 1 and 1000"),
        ({"k": -5}, "row 0: k must be between 1 and 1000"),
        ({"k": 10**9}, "got 1000000000"),
        ({"k": "5"}, "row 0: k must be an integer, got str"),
        ({"k": 2.5}, "k must be an integer"),
        ({"k": True}, "k must be an integer"),
        ({"user_ids": [1.5]}, "row 0: user_id must be an integer or a string, got float"),
        ({"user_ids": [1, None]}, "row 1: user_id"),
        ({"user_ids": [[1]]}, "user_id must be an integer or a string, got list"),
        ({"exclude_items": ["abc"]}, "row 0: exclude_items must be a list of item IDs"),
        ({"exclude_items": [[1.5]]}, "exclude_items must hold integers or strings"),
        ({"user_ids": list(range(10_001))}, "at most 10000 rows"),
    ],
)
def test_bad_requests_are_refused_with_the_row_and_field(exported, data, kwargs, message):
    _, scorer = exported["popularity"]
    kwargs = {"user_ids": [int(data.index.users[0])], **kwargs}
    with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scorer.recommend(**kwargs)


def test_empty_request_and_k_above_the_catalogue(exported):
    _, scorer = exported["popularity"]
    assert list(scorer.recommend([], k=5).columns) == [C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED]
    scorer_small = TopKScorer(
        scorer.root, scorer.users, scorer.items, scorer.seen, scorer.popularity, {"max_k": 5000}
    )
    everything = scorer_small.recommend(["nobody"], k=5000)
    assert len(everything) == scorer.n_items  # a list is never longer than the catalogue


def test_top_k_matches_the_evaluators_ranking():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(40, 30)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.2] = -np.inf
    for k in (1, 5, 30, 35):
        got = top_k(scores, k)
        want = reference_topk(scores, k)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_save_state_rejects_a_spec_that_does_not_match_the_index(data, tmp_path):
    pop = data.item_counts.astype(np.float32)
    with pytest.raises(ValueError, match="factors array 'items' has shape"):
        tree = {
            "kind": "factors",
            "arrays": {"users": np.zeros((data.n_users, 4)), "items": np.zeros((3, 4))},
        }
        save_state(tmp_path, tree, data.index.users, data.index.items, data.matrix, pop)
    with pytest.raises(ValueError, match="unknown scorer kind 'mystery'"):
        save_state(tmp_path, {"kind": "mystery"}, data.index.users, data.index.items, data.matrix, pop)
    with pytest.raises(ValueError, match="blend has 1 parts but weights"):
        tree = {
            "kind": "blend",
            "params": {"weights": [0.5, 0.5]},
            "parts": [{"kind": "static", "arrays": {"scores": pop}}],
        }
        save_state(tmp_path, tree, data.index.users, data.index.items, data.matrix, pop)


# ------------------------------------------------------------------ standalone: no training code

ALLOWED_TOP_LEVEL = {
    "__future__",
    "contextlib",
    "warnings",
    "dataclasses",
    "json",
    "math",
    "numbers",
    "pathlib",
    "typing",
    "numpy",
    "pandas",
    "scipy",
    "mlflow",
    "pydantic",
    "recsys_scorer",
}


@pytest.mark.parametrize("name", ["recsys_scorer.py", "recsys_pyfunc.py"])
def test_shipped_modules_import_only_numpy_pandas_scipy_and_mlflow(name):
    tree = ast.parse((STANDALONE / name).read_text())
    top = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            top.add((node.module or "").split(".")[0])
    assert top <= ALLOWED_TOP_LEVEL, top - ALLOWED_TOP_LEVEL
    nested = {
        a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    }
    assert nested <= ALLOWED_TOP_LEVEL | {"torch"}  # torch only inside the NeuMF functions


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("personalize", "torchrec", "recbole", "implicit"):
                raise ImportError(f"{name} must not be needed to serve")
    sys.meta_path.insert(0, Block())
    """
)


def test_the_state_is_served_in_a_process_that_cannot_import_the_training_code(exported, data, tmp_path):
    model, _ = exported["fusion_rrf"]
    folder = write_state(model, tmp_path / "state", ExportConfig())[0]
    ids = [int(u) for u in data.index.users[:5]] + [COLD, UNKNOWN]
    script = BLOCKER + textwrap.dedent(
        f"""
        sys.path.insert(0, {str(STANDALONE)!r})
        import json, recsys_scorer
        scorer = recsys_scorer.TopKScorer.load({str(folder)!r})
        frame = scorer.recommend({ids!r}, k=6)
        print(json.dumps(frame.to_dict(orient="list")))
        assert not any(m.startswith("personalize") for m in sys.modules)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    got = pd.DataFrame(json.loads(done.stdout.strip().splitlines()[-1]))
    want = model.recommend(ids, k=6)
    assert got[C.ITEM].tolist() == want[C.ITEM].tolist()
    assert got[C.PERSONALISED].tolist() == want[C.PERSONALISED].tolist()
    np.testing.assert_array_equal(got[C.SCORE].to_numpy(np.float32), want[C.SCORE].to_numpy())
