"""The scoring code shipped with every exported model answers exactly what the trained model
answers -- for every exportable model type in the registry, and fusions of every scorer kind --
validates requests, and runs without the training code."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest

from personalize import scoring
from personalize.config.serving import ExportConfig
from personalize.core import columns as C
from personalize.models import create_model, exportable_models, get_model_class
from personalize.serving.state import MODEL_CODE, SCORING_CODE, SHIPPED_NAME, all_data, ship_code, write_state

COLD = 999_999  # a known user without interactions
UNKNOWN = 123_456_789

# Defaults are what users get; these only keep the default suite quick (sentence embeddings of the
# whole catalogue take ~20 s without the cache). A model type registered later is covered with its
# defaults and its epoch budget capped at two.
QUICK = {"two_tower": {"text": False}}
NEUMF = {"factors": 8, "mlp_embedding": 8, "mlp_layers": [16, 8], "epochs": 2}
FUSIONS = {
    # every scorer kind appears as a part, with both blend methods, one-hot weights and a nested blend
    "fusion[static+item_item, minmax]": {
        "components": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
        "weights": [0.3, 0.7],
    },
    "fusion[factors+neumf, rrf]": {
        "components": [
            {"type": "als", "params": {"factors": 8, "iterations": 2}},
            {"type": "neumf", "params": NEUMF},
        ],
        "method": "rrf",
        "weights": [0.5, 0.5],
    },
    "fusion[one-hot]": {
        "components": [{"type": "ease", "params": {"l2": 100}}, {"type": "recent_popularity"}],
        "weights": [1.0, 0.0],
    },
    "fusion[blend+factors, cold-answering part]": {
        "components": [
            {
                "type": "fusion",
                "params": {
                    "components": [{"type": "itemknn"}, {"type": "content", "params": {"vectors": "genres"}}],
                    "weights": [0.5, 0.5],
                },
            },
            {"type": "two_tower", "params": {"text": False, "epochs": 2}},
        ],
        "weights": [0.6, 0.4],
    },
}


# models that read the users' segments (a user attribute the segmentation stage assigns); they are
# fitted on the same data with a segment column: three segments by user ID, the cold user in one
ROUTED = {
    "routed[static | item_item, by segment]": {
        "components": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
        "routes": {0: 0, 1: 1, 2: 1},
        "default": 0,
    },
}
SEGMENT_AWARE = {"segment_popularity", *ROUTED}


def quick_params(model_type: str) -> dict:
    cls = get_model_class(model_type)
    params = dict(QUICK.get(model_type, {}))
    if cls.epoch_param is not None:
        params[cls.epoch_param] = 2
    return params


def export_cases() -> dict[str, tuple[str, dict]]:
    hybrids = ("fusion", "routed")
    cases = {name: (name, quick_params(name)) for name in exportable_models() if name not in hybrids}
    cases.update({label: ("fusion", params) for label, params in FUSIONS.items()})
    cases.update({label: ("routed", params) for label, params in ROUTED.items()})
    return cases


CASES = export_cases()


@pytest.fixture(scope="module")
def data(ml100k_small):
    """All interactions of the small sample, plus one known user without interactions."""
    users = pd.concat([ml100k_small.users, pd.DataFrame({C.USER: [COLD]})], ignore_index=True)
    return all_data(dataclasses.replace(ml100k_small, users=users))


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The scoring package as it ships with a model: copied, and imported from the copy under
    another name (so a passing test cannot be the installed package answering)."""
    folder = ship_code(tmp_path_factory.mktemp("code"))
    name = "shipped_scoring_under_test"
    spec = importlib.util.spec_from_file_location(
        name, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    yield module
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def _with_segments(data):
    users = data.users.assign(**{C.SEGMENT: data.users[C.USER] % 3})
    return dataclasses.replace(data, users=users)


def _fit_and_ship(case, data, shipped, folder):
    model_type, params = CASES[case]
    model = create_model(model_type, params, seed=0).fit(
        _with_segments(data) if case in SEGMENT_AWARE else data
    )
    return model, shipped.TopKScorer.load(write_state(model, folder, ExportConfig()))


@pytest.mark.parametrize("case", list(CASES))
def test_the_shipped_scorer_answers_as_the_trained_model(case, data, shipped, tmp_path):
    model, scorer = _fit_and_ship(case, data, shipped, tmp_path / "state")
    assert type(scorer.root).__module__.startswith("shipped_scoring_under_test")
    assert scorer.root.kind == model.scorer().kind
    users = np.arange(data.n_users)
    np.testing.assert_allclose(scorer.score(users), model.score(users), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(scorer.personalised(users), model.personalised(users))

    known = [int(u) for u in data.index.users[np.flatnonzero(data.user_counts > 0)[:12]]]
    ids = [*known, COLD, UNKNOWN]
    banned = {known[0]: [int(i) for i in data.index.items[:3]], COLD: [int(data.index.items[0])]}
    for exclude in (None, banned):
        want = model.recommend(ids, k=10, exclude_items=exclude)
        got = scorer.recommend(ids, k=10, exclude_items=[exclude.get(u) for u in ids] if exclude else None)
        assert got[C.USER].tolist() == want[C.USER].tolist()
        assert got[C.ITEM].tolist() == want[C.ITEM].tolist()
        assert got[C.RANK].tolist() == want[C.RANK].tolist()
        assert got[C.PERSONALISED].tolist() == want[C.PERSONALISED].tolist()
        np.testing.assert_allclose(got[C.SCORE], want[C.SCORE], rtol=1e-5, atol=1e-5)
    by_user = want.groupby(C.USER, sort=False)[C.PERSONALISED].first()
    assert not by_user[UNKNOWN]
    assert by_user[COLD] == bool(model.personalised(data.index.user_index([COLD]))[0])


# ------------------------------------------------------------------ requests and the fallback


@pytest.fixture(scope="module")
def exported(data, shipped, tmp_path_factory):
    out = {}
    for case in ("popularity", "ease", "als", "fusion[one-hot]", "fusion[static+item_item, minmax]"):
        out[case] = _fit_and_ship(case, data, shipped, tmp_path_factory.mktemp("state") / "state")
    return out


def test_cold_and_unknown_users_get_the_popularity_fallback(exported, data):
    _, scorer = exported["ease"]
    recs = scorer.recommend([COLD, UNKNOWN, "somebody"], k=5)
    popular = data.index.items[np.argsort(-data.item_counts, kind="stable")[:5]].tolist()
    for uid in (COLD, UNKNOWN, "somebody"):
        rows = recs[recs[C.USER] == uid]
        assert rows[C.ITEM].tolist() == popular and not rows[C.PERSONALISED].any()
    # a blend with a part that handles cold users answers a cold user itself, as the model does
    blend_model, blend = exported["fusion[static+item_item, minmax]"]
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
def test_bad_requests_are_refused_with_the_row_and_field(exported, data, shipped, kwargs, message):
    _, scorer = exported["popularity"]
    kwargs = {"user_ids": [int(data.index.users[0])], **kwargs}
    with pytest.raises(shipped.RequestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        scorer.recommend(**kwargs)


def test_empty_request_and_k_above_the_catalogue(exported, shipped):
    _, scorer = exported["popularity"]
    assert list(scorer.recommend([], k=5).columns) == [C.USER, C.ITEM, C.RANK, C.SCORE, C.PERSONALISED]
    wide = shipped.TopKScorer(scorer.root, scorer.users, scorer.items, scorer.ctx, {"max_k": 5000})
    everything = wide.recommend(["nobody"], k=5000)
    assert len(everything) == scorer.n_items  # a list is never longer than the catalogue


def test_save_state_rejects_a_scorer_that_does_not_match_the_index(data, tmp_path):
    pop = data.item_counts.astype(np.float32)
    index = (data.index.users, data.index.items, data.matrix, pop)
    bad = scoring.Factors(users=np.zeros((data.n_users, 4)), items=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="factors array 'items' has shape"):
        scoring.save_state(tmp_path, bad, *index)
    with pytest.raises(ValueError, match="blend has 1 parts but weights"):
        blend = scoring.Blend(members=[scoring.Static(scores=pop)], weights=np.array([0.5, 0.5]))
        scoring.save_state(tmp_path, blend, *index)
    with pytest.raises(ValueError, match="unknown scorer kind 'computed'"):
        scoring.save_state(tmp_path, scoring.Computed(function=lambda u: None), *index)


# ------------------------------------------------------------------ shipped: no training code

ALLOWED_TOP_LEVEL = {
    "__future__",
    "collections",
    "contextlib",
    "dataclasses",
    "hashlib",
    "hmac",
    "json",
    "logging",
    "math",
    "numbers",
    "os",
    "pathlib",
    "time",
    "typing",
    "numpy",
    "pandas",
    "scipy",
    "mlflow",
    "pydantic",
    SHIPPED_NAME,
}


def _imports(path) -> tuple[set[str], set[str]]:
    """(top-level absolute imports, absolute imports anywhere) of a module."""
    tree = ast.parse(path.read_text())
    top, nested = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = {(node.module or "").split(".")[0]}
        else:
            continue
        nested |= names
        if node in tree.body:
            top |= names
    return top, nested


@pytest.mark.parametrize("path", [*sorted(SCORING_CODE.glob("*.py")), MODEL_CODE], ids=lambda p: p.name)
def test_shipped_modules_import_only_numpy_pandas_scipy_and_mlflow(path):
    top, nested = _imports(path)
    assert top <= ALLOWED_TOP_LEVEL, top - ALLOWED_TOP_LEVEL
    # torch only inside the NeuMF scorer; redis (the online store's client) only inside the
    # online store module, when a store is opened
    also = {"torch", "redis"} if path.name == "online.py" else {"torch"}
    assert nested <= ALLOWED_TOP_LEVEL | also, nested - ALLOWED_TOP_LEVEL - also


BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("personalize", "torchrec", "recbole", "implicit", "torch"):
                raise ImportError(f"{name} must not be needed to serve")
    sys.meta_path.insert(0, Block())
    """
)


def test_the_state_is_served_in_a_process_that_cannot_import_the_training_code(exported, data, tmp_path):
    model, _ = exported["fusion[static+item_item, minmax]"]
    folder = write_state(model, tmp_path / "state", ExportConfig())
    code = ship_code(tmp_path / "code")
    ids = [int(u) for u in data.index.users[:5]] + [COLD, UNKNOWN]
    script = BLOCKER + textwrap.dedent(
        f"""
        sys.path.insert(0, {str(code.parent)!r})
        import json, {SHIPPED_NAME}
        scorer = {SHIPPED_NAME}.TopKScorer.load({str(folder)!r})
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
