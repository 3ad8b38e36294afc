"""Fit time, full-evaluation time and peak memory per model on MovieLens-100K, with RecBole's
evaluator timed on the same scores in the same run.

    .venv/bin/python benchmarks/bench_models.py [--repeats 5] [--split user_temporal]

"Full evaluation" = every test user ranked against the whole catalogue with seen items excluded,
then every metric at K = 5, 10, 20 (Precision, Recall, HitRate, MRR, NDCG, MAP, Coverage, Novelty,
Popularity, Diversity). It is split into scoring (the model's matrix products) and ranking + metrics
(the evaluator's own work), which is what RecBole's evaluator is compared with: RecBole's
``Collector`` (torch.topk + positive matrix) plus its ``Evaluator`` (Precision, Recall, Hit, MRR,
NDCG, MAP), on the same masked score matrix. Times are medians over ``--repeats`` runs; peak memory
is the peak of Python/NumPy allocations (tracemalloc) during one fit + evaluation. Threads are
pinned to one so that runs are comparable.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from personalize.config import EvaluationConfig, SplitConfig  # noqa: E402
from personalize.data import load_movielens_100k  # noqa: E402
from personalize.data.matrix import IdIndex, InteractionData  # noqa: E402
from personalize.data.splits import make_split  # noqa: E402
from personalize.evaluation import Evaluator, genre_matrix, make_target  # noqa: E402
from personalize.models import create_model  # noqa: E402
from personalize.scoring import mask as mask_seen  # noqa: E402

MODELS = [
    ("popularity", {}),
    ("recent_popularity", {}),
    ("itemknn", {"neighbours": 100}),
    ("ease", {"l2": 250}),
    ("als", {"iterations": 15}),
    ("bpr", {"iterations": 50}),
]
KS = [5, 10, 20]


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def recbole_evaluation(scores: np.ndarray, target, ks: list[int]):
    """RecBole 1.2.1's own evaluation of a masked (users x items) score matrix: its Collector's
    top-k step followed by its Evaluator. Returns (seconds, {metric: value})."""
    import torch

    from personalize.models.peers.recbole_adapter import recbole

    recbole()  # RecBole imported once, with the NumPy / SciPy shims it needs
    from recbole.evaluator.collector import DataStruct
    from recbole.evaluator.evaluator import Evaluator as RecBoleEvaluator

    config = {
        "metrics": ["Precision", "Recall", "Hit", "MRR", "NDCG", "MAP"],
        "topk": ks,
        "metric_decimal_place": 4,
    }
    evaluator = RecBoleEvaluator(config)
    scores_t = torch.from_numpy(scores)
    rel = target.relevant.tocoo()
    pos_u, pos_i = torch.from_numpy(rel.row.astype(np.int64)), torch.from_numpy(rel.col.astype(np.int64))
    t0 = time.perf_counter()
    _, topk_idx = torch.topk(scores_t, max(ks), dim=-1)
    pos_matrix = torch.zeros_like(scores_t, dtype=torch.int)
    pos_matrix[pos_u, pos_i] = 1
    pos_len = pos_matrix.sum(dim=1, keepdim=True)
    pos_idx = torch.gather(pos_matrix, dim=1, index=topk_idx)
    struct = DataStruct()
    struct.update_tensor("rec.topk", torch.cat((pos_idx, pos_len), dim=1))
    result = evaluator.evaluate(struct)
    return time.perf_counter() - t0, dict(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--split", default="user_temporal")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass

    data = load_movielens_100k(write_processed=False)
    split = make_split(data.interactions, SplitConfig(name=args.split), 0, data.users, data.items)
    index = IdIndex.build(split.users, split.items, split.train, split.valid, split.test)
    train_valid = split.train_valid()
    fit_data = InteractionData.build(train_valid, index, split.users, split.items)
    target = make_target("test", split.test, train_valid, index)
    genres = genre_matrix(fit_data.items)
    evaluator = Evaluator(EvaluationConfig(ks=KS), genres)
    recbole_mode = Evaluator(EvaluationConfig(ks=KS, mode="recbole"), genres)
    print(
        f"MovieLens-100K, {args.split}: {len(target.users)} test users x {index.n_items} items, "
        f"{fit_data.frame.shape[0]} training rows; median of {args.repeats} runs, 1 thread\n"
    )

    rows = []
    recbole_row = None
    for name, params in MODELS:
        fit_s, model = _median_time(
            lambda n=name, p=params: create_model(n, p, seed=0).fit(fit_data), args.repeats
        )
        score_s, _ = _median_time(lambda m=model: m.score(target.users), args.repeats)
        eval_s, result = _median_time(lambda m=model: evaluator.evaluate(m, target), args.repeats)
        tracemalloc.start()
        create_model(name, params, seed=0).fit(fit_data)
        evaluator.evaluate(model, target)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append(
            {
                "model": name,
                "fit s": fit_s,
                "score s": score_s,
                "rank+metrics s": eval_s - score_s,
                "full eval s": eval_s,
                "fit + full eval s": fit_s + eval_s,
                "peak MiB": peak / 2**20,
                "ndcg@10": result.summary["ndcg@10"],
            }
        )
        if name == "ease":
            scores = model.score(target.users)
            mask_seen(scores, target.seen)
            ours_s, ours = _median_time(
                lambda s=scores: recbole_mode.evaluate(_Fixed(s), target), args.repeats
            )
            try:
                times = [recbole_evaluation(scores.copy(), target, KS) for _ in range(args.repeats)]
                rb_s = statistics.median(t for t, _ in times)
                rb = times[0][1]
                agree = max(
                    abs(rb[f"{m}@{k}"] - ours.summary[f"{m}@{k}"])
                    for m in ("ndcg", "map", "recall", "precision", "mrr")
                    for k in KS
                )
                agree = max(agree, max(abs(rb[f"hit@{k}"] - ours.summary[f"hit@{k}"]) for k in KS))
                recbole_row = {
                    "ours (rank+metrics, recbole mode)": ours_s,
                    "RecBole Collector+Evaluator": rb_s,
                    "max |difference| of the 18 shared metrics": agree,
                }
            except ImportError as exc:  # pragma: no cover
                recbole_row = {"RecBole": f"not available: {exc}"}

    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    if recbole_row:
        print("\nSame EASE scores (seen items masked), evaluated by both evaluators, seconds:")
        print(pd.DataFrame([recbole_row]).to_markdown(index=False, floatfmt=".4f"))


class _Fixed:
    """A scorer that returns precomputed (already masked) scores for the target users, in order."""

    def __init__(self, scores: np.ndarray):
        self.scores = scores
        self.pos = 0

    def score(self, users: np.ndarray) -> np.ndarray:
        out = self.scores[self.pos : self.pos + len(users)]
        self.pos = (self.pos + len(users)) % len(self.scores)
        return out.copy()


if __name__ == "__main__":
    main()
