"""RecBole (1.2.1) run on exactly our data: the one module that imports it, with every
compatibility workaround in one place.

(One module on purpose: whoever upgrades RecBole reads one file.)

What the adapter does
    Writes one split as RecBole atomic *benchmark* files in a temporary working directory --
    ``<name>.train.inter`` / ``.valid.inter`` / ``.test.inter`` plus ``<name>.user`` and
    ``<name>.item`` listing every indexed user and catalogue item, so RecBole knows the same
    users and items as we do (items without interactions included, and recommendable). Tokens
    are OUR integer indices (user_idx, item_idx), so mapping back never depends on raw ID
    types. Every interaction file holds distinct (user, item) pairs, sorted, without ratings or
    timestamps (RecBole's general models use neither; relevance is binary in our protocol too).
    It then builds RecBole's config, dataset, dataloaders, model and trainer through its Python
    API, trains epoch by epoch (``Trainer._train_epoch``, the call ``Trainer.fit`` makes), or
    with RecBole's own ``fit`` loop (its early stopping on its valid file, for "RecBole's
    defaults"), and scores users through the model's ``full_sort_predict`` (or ``predict``
    over every item, as RecBole's trainer does for models without it), mapped back to our
    catalogue order. RecBole's own evaluator can be run on the valid / test files
    (:meth:`RecBoleRun.evaluate_recbole`) to cross-check ours.

Workarounds (each needed with the pinned stack: NumPy 2, SciPy 1.17, pandas 3, torch 2.13)
    1. NumPy aliases removed in NumPy 2 that RecBole still uses, set before importing it:
       ``np.float_``, ``np.complex_``, ``np.unicode_``, ``np.bool8`` (its ``Config`` and
       dependencies) and ``np.float`` / ``np.int`` (its metrics). Only missing names are added.
    2. ``recbole.quick_start`` is never imported: it imports an old Ray that fails on import.
    3. ``Trainer.fit(..., saved=False)`` and ``evaluate(..., load_best_model=False)``: its
       checkpoints hold non-tensor objects that torch's ``weights_only`` loading rejects; the
       best epoch's weights are kept in memory instead.
    4. LightGCN (and NGCF, GCMC, NCL) call ``scipy.sparse.dok_matrix._update``, which current
       SciPy no longer has: it is restored as the public, checked ``dok_matrix.update``.
    5. RecBole's ``Config`` parses ``sys.argv`` for ``--key=value`` overrides; under pytest or
       our CLI those are not RecBole's, so ``sys.argv`` is reduced to the program name while a
       config is built.
    6. RecBole writes ``log_tensorboard/`` and ``saved/`` into the current directory: every
       RecBole call runs inside the run's temporary working directory (``checkpoint_dir`` and
       ``data_path`` point there too), removed by :meth:`RecBoleRun.close`.
    7. RecBole seeds the global ``random`` / NumPy / torch generators (``init_seed``) and its
       negative sampler draws from NumPy's global one: a run keeps its own copies of the
       three states and swaps them in around each RecBole call, so it is deterministic given
       its seed whatever runs in between, and leaves the caller's generators untouched.
    8. Warnings RecBole triggers on this stack and that do not affect results here are
       silenced inside RecBole calls only: pandas' chained-assignment warning from
       ``Dataset._fill_nan`` (its ``fillna(inplace=True)`` on a column no longer writes under
       copy-on-write; the files written here have no missing values), torch's
       non-writable-array and ``torch.cuda.amp`` deprecation warnings, the sparse-tensor
       constructor deprecation (LightGCN).
    9. Scores are float32 in our catalogue order; RecBole's padding item 0 is dropped.

Difference to keep in mind: RecBole masks a user's history *minus* their test positives in
full-sort evaluation, our protocol masks all seen items; the two agree when no (user, item)
pair repeats across parts, which holds for every file written here (pairs are distinct within
a part, and our splits put each interaction in one part; MovieLens-100K has no repeats).
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import logging
import random
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import yaml

RECBOLE_VERSION = "1.2.1"
DATASET = "split"  # the dataset name inside the working directory (not a RecBole built-in)
PARTS = ("train", "valid", "test")

# keys the adapter sets itself; a model config may not override them
RESERVED_KEYS = frozenset(
    {
        "data_path",
        "checkpoint_dir",
        "benchmark_filename",
        "load_col",
        "unload_col",
        "seed",
        "use_gpu",
        "gpu_id",
        "device",
        "show_progress",
        "save_dataset",
        "save_dataloaders",
        "dataset_save_path",
        "dataloaders_save_path",
        "log_wandb",
        "USER_ID_FIELD",
        "ITEM_ID_FIELD",
        "eval_args",
        "model",
        "dataset",
    }
)


# ---------------------------------------------------------------------------- import shims


def _shim_numpy() -> None:
    aliases = {
        "float_": np.float64,
        "complex_": np.complex128,
        "unicode_": np.str_,
        "bool8": np.bool_,
        "float": float,
        "int": int,
    }
    for name, value in aliases.items():
        if name not in np.__dict__:
            setattr(np, name, value)


def _shim_scipy() -> None:
    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self, data):  # the pre-1.13 private bulk update, via the public API
            self.update(data)

        sp.dok_matrix._update = _update


@cache
def recbole() -> SimpleNamespace:
    """RecBole's Python API, imported once with the shims applied (never ``quick_start``)."""
    _shim_numpy()
    _shim_scipy()
    spec = importlib.util.find_spec("recbole")
    if spec is None:
        raise ImportError("the RecBole peers need the 'recbole' package (pinned recbole==1.2.1)")
    with _quiet():
        import recbole as rb
        from recbole.config import Config
        from recbole.data import create_dataset, data_preparation
        from recbole.data.dataloader import FullSortEvalDataLoader
        from recbole.data.interaction import Interaction
        from recbole.utils import get_model, get_trainer, init_seed
    if rb.__version__ != RECBOLE_VERSION:
        warnings.warn(
            f"the RecBole adapter is written for recbole=={RECBOLE_VERSION}, found {rb.__version__}",
            stacklevel=2,
        )
    return SimpleNamespace(
        Config=Config,
        create_dataset=create_dataset,
        data_preparation=data_preparation,
        FullSortEvalDataLoader=FullSortEvalDataLoader,
        Interaction=Interaction,
        get_model=get_model,
        get_trainer=get_trainer,
        init_seed=init_seed,
        version=rb.__version__,
    )


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*[Cc]hained assignment.*")
        warnings.filterwarnings("ignore", message=r".*NumPy array is not writable.*")
        warnings.filterwarnings("ignore", message=r".*torch\.cuda\.amp.*")
        warnings.filterwarnings("ignore", message=r".*torch\.sparse.*Tensor.*")
        warnings.filterwarnings("ignore", message=r".*sparse_coo_tensor.*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"recbole\..*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        yield


def model_defaults(model: str) -> dict[str, Any]:
    """RecBole's documented defaults for ``model`` (its ``overall.yaml`` + model YAML)."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the RecBole peers need the 'recbole' package (pinned recbole==1.2.1)")
    root = Path(next(iter(spec.submodule_search_locations))) / "properties"
    out: dict[str, Any] = yaml.safe_load((root / "overall.yaml").read_text()) or {}
    model_file = root / "model" / f"{model}.yaml"
    if model_file.exists():
        out.update(yaml.safe_load(model_file.read_text()) or {})
    return out


# ------------------------------------------------------------------------------ the files


Pairs = tuple[np.ndarray, np.ndarray]  # (user indices, item indices)


def distinct_pairs(users: np.ndarray, items: np.ndarray) -> Pairs:
    """Distinct (user, item) pairs sorted by user then item."""
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    if len(users) == 0:
        return users, items
    keys = np.unique(users * (int(items.max()) + 1) + items)
    return keys // (int(items.max()) + 1), keys % (int(items.max()) + 1)


def pairs_from_matrix(matrix: sp.spmatrix) -> Pairs:
    """The stored (row, column) pairs of a user x item matrix, sorted."""
    coo = sp.csr_matrix(matrix).tocoo()
    order = np.lexsort((coo.col, coo.row))
    return coo.row[order].astype(np.int64), coo.col[order].astype(np.int64)


def write_benchmark(folder: Path, n_users: int, n_items: int, parts: dict[str, Pairs | None]) -> Path:
    """Write the atomic files of one split under ``folder/<DATASET>/`` and return that folder.

    ``parts`` maps train / valid / test to (user_idx, item_idx) pairs (``None``: an empty
    file with the header only, which RecBole accepts). Tokens are our indices.
    """
    root = Path(folder) / DATASET
    root.mkdir(parents=True, exist_ok=True)
    for part in PARTS:
        users, items = parts.get(part) or (np.zeros(0, np.int64), np.zeros(0, np.int64))
        users, items = distinct_pairs(users, items)
        if len(users) and (
            users.min() < 0 or users.max() >= n_users or items.min() < 0 or items.max() >= n_items
        ):
            raise ValueError(f"{part}: pairs outside the index ({n_users} users, {n_items} items)")
        lines = "".join(f"{u}\t{i}\n" for u, i in zip(users.tolist(), items.tolist()))
        (root / f"{DATASET}.{part}.inter").write_text("user_id:token\titem_id:token\n" + lines)
    (root / f"{DATASET}.user").write_text("user_id:token\n" + "".join(f"{u}\n" for u in range(n_users)))
    (root / f"{DATASET}.item").write_text("item_id:token\n" + "".join(f"{i}\n" for i in range(n_items)))
    return root


# --------------------------------------------------------------------------------- a run


class RecBoleRun:
    """One RecBole model on one split, in its own temporary working directory.

    ``model``: a RecBole general model name (``BPR``, ``NeuMF``, ``LightGCN``, ``MultiVAE``,
    ``EASE``, ``ItemKNN``, ``Pop``, ...). ``train`` / ``valid`` / ``test``: (user_idx, item_idx)
    pairs in our index space (``valid`` / ``test`` may be ``None``). ``params``: RecBole
    config keys (model hyperparameters, ``epochs``, ``learning_rate``, ...); everything else
    is RecBole's default except what the adapter sets (files, seed, CPU, metrics for
    :meth:`evaluate_recbole`).
    """

    def __init__(
        self,
        model: str,
        n_users: int,
        n_items: int,
        train: Pairs,
        valid: Pairs | None = None,
        test: Pairs | None = None,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        num_threads: int = 1,
        metrics_at: list[int] | None = None,
    ):
        api = recbole()
        params = dict(params or {})
        reserved = sorted(set(params) & RESERVED_KEYS)
        if reserved:
            raise ValueError(f"RecBole keys set by the adapter cannot be overridden: {reserved}")
        self.model_name = model
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.seed = int(seed)
        self.num_threads = int(num_threads)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"recbole-{model.lower()}-"))
        self._rng_state: tuple | None = None
        self._depth = 0
        try:
            write_benchmark(
                self.workdir, self.n_users, self.n_items, {"train": train, "valid": valid, "test": test}
            )
            config_dict = {
                "data_path": str(self.workdir),
                "checkpoint_dir": str(self.workdir / "saved"),
                "benchmark_filename": list(PARTS),
                "load_col": {"inter": ["user_id", "item_id"], "user": ["user_id"], "item": ["item_id"]},
                "USER_ID_FIELD": "user_id",
                "ITEM_ID_FIELD": "item_id",
                "use_gpu": False,
                "seed": self.seed,
                "show_progress": False,
                "save_dataset": False,
                "save_dataloaders": False,
                "log_wandb": False,
                "eval_args": {
                    "group_by": "user",
                    "order": "RO",
                    "mode": "full",
                    "split": {"RS": [0.8, 0.1, 0.1]},
                },
                "metrics": ["Recall", "MRR", "NDCG", "Hit", "Precision", "MAP"],
                "topk": list(metrics_at or [10]),
                "valid_metric": "NDCG@10"
                if 10 in (metrics_at or [10])
                else f"NDCG@{(metrics_at or [10])[0]}",
                **params,
            }
            with self._call():
                self.config = api.Config(model=model, dataset=DATASET, config_dict=config_dict)
                api.init_seed(self.config["seed"], self.config["reproducibility"])
                self.dataset = api.create_dataset(self.config)
                self.train_data, self.valid_data, self.test_data = api.data_preparation(
                    self.config, self.dataset
                )
                self.model = api.get_model(self.config["model"])(self.config, self.train_data._dataset).to(
                    self.config["device"]
                )
                self.trainer = api.get_trainer(self.config["MODEL_TYPE"], self.config["model"])(
                    self.config, self.model
                )
            self._build_maps()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ RecBole call scope

    @contextlib.contextmanager
    def _call(self) -> Iterator[None]:
        """cwd = the working directory, argv without our flags, threads pinned, RecBole's
        log messages below ERROR dropped, and the run's own RNG states swapped in."""
        if self._depth:  # nested (e.g. scoring from a training callback): already set up
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        outer = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
        if self._rng_state is not None:
            random.setstate(self._rng_state[0])
            np.random.set_state(self._rng_state[1])
            torch.random.set_rng_state(self._rng_state[2])
        argv = sys.argv
        root = logging.getLogger()
        level = root.level
        threads = torch.get_num_threads()
        self._depth = 1
        try:
            sys.argv = argv[:1]
            root.setLevel(max(level, logging.ERROR))
            torch.set_num_threads(self.num_threads)
            # after close() (scoring a fitted model) nothing is written: stay where we are
            where = self.workdir if self.workdir.exists() else Path.cwd()
            with contextlib.chdir(where), _quiet():
                yield
        finally:
            self._depth = 0
            self._rng_state = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())
            random.setstate(outer[0])
            np.random.set_state(outer[1])
            torch.random.set_rng_state(outer[2])
            sys.argv = argv
            root.setLevel(level)
            torch.set_num_threads(threads)

    def _build_maps(self) -> None:
        uid_tokens = self.dataset.field2id_token[self.config["USER_ID_FIELD"]]
        iid_tokens = self.dataset.field2id_token[self.config["ITEM_ID_FIELD"]]
        self.uid_of = np.full(self.n_users, -1, dtype=np.int64)  # our user idx -> RecBole uid
        self.uid_of[np.asarray(uid_tokens[1:], dtype=np.int64)] = np.arange(1, len(uid_tokens))
        self.item_of = np.asarray(iid_tokens[1:], dtype=np.int64)  # RecBole iid - 1 -> our item idx
        if len(self.item_of) != self.n_items or (self.uid_of < 0).any():
            raise RuntimeError(
                "RecBole's ID remapping lost users or items; the atomic files are inconsistent"
            )

    # ---------------------------------------------------------------------------- training

    def train_epoch(self, epoch: int) -> float:
        """One RecBole training epoch (0-based ``epoch``); returns the mean loss per batch."""
        with self._call():
            loss = self.trainer._train_epoch(self.train_data, epoch, show_progress=False)
        total = float(sum(loss)) if isinstance(loss, tuple) else float(loss)
        if not np.isfinite(total):
            raise FloatingPointError(
                f"RecBole {self.model_name}: training loss is {total} at epoch {epoch + 1}"
            )
        return total / max(1, len(self.train_data))

    def fit_recbole(self, callback: Callable[[int, float], None] | None = None) -> tuple[float, dict | None]:
        """RecBole's own training loop (``Trainer.fit``): early stopping on its valid file with
        its config (``valid_metric``, ``stopping_step``, ``eval_step``), best weights kept in
        memory (``saved=False``). ``callback(epoch, valid_score)`` after each validation."""
        best: dict[str, Any] = {}

        def on_valid(epoch_idx: int, valid_score: float) -> None:
            if self.trainer.cur_step == 0:  # this epoch is the best so far
                best["state"] = self.state()
                best["epoch"] = epoch_idx + 1
            if callback is not None:
                callback(epoch_idx, valid_score)

        with self._call():
            score, result = self.trainer.fit(
                self.train_data,
                self.valid_data,
                verbose=False,
                saved=False,
                show_progress=False,
                callback_fn=on_valid,
            )
        if "state" in best:
            self.load_state(best["state"])
        self.best_epoch = best.get("epoch")
        return score, result

    def evaluate_recbole(self, part: str = "test") -> dict[str, float]:
        """RecBole's own evaluator on its valid or test file (``load_best_model=False``)."""
        data = {"valid": self.valid_data, "test": self.test_data}[part]
        with self._call():
            result = self.trainer.evaluate(data, load_best_model=False, show_progress=False)
        return {k: float(v) for k, v in (result or {}).items()}

    # ----------------------------------------------------------------------------- scoring

    @torch.no_grad()
    def score(self, users: np.ndarray, block: int = 256) -> np.ndarray:
        """Scores (float32, len(users) x n_items, our item order) for our user indices."""
        api = recbole()
        users = np.asarray(users, dtype=np.int64)
        out = np.empty((len(users), self.n_items), dtype=np.float32)
        uid_field, iid_field = self.config["USER_ID_FIELD"], self.config["ITEM_ID_FIELD"]
        n_rb = self.n_items + 1
        with self._call():
            self.model.eval()
            for start in range(0, len(users), block):
                uid = torch.as_tensor(self.uid_of[users[start : start + block]])
                try:
                    scores = self.model.full_sort_predict(api.Interaction({uid_field: uid}))
                except NotImplementedError:  # as RecBole's trainer: predict every (user, item)
                    inter = api.Interaction(
                        {
                            uid_field: uid.repeat_interleave(n_rb),
                            iid_field: torch.arange(n_rb).repeat(len(uid)),
                        }
                    )
                    scores = self.model.predict(inter)
                scores = scores.reshape(len(uid), n_rb)[:, 1:].to(torch.float32).cpu().numpy()
                block_out = np.empty_like(scores)
                block_out[:, self.item_of] = scores
                out[start : start + len(uid)] = block_out
        return out

    # ---------------------------------------------------------------------- state, cleanup

    def state(self) -> dict[str, Any]:
        """The model's weights and RecBole "other parameters" (deep copies)."""
        return {
            "state_dict": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
            "other": copy.deepcopy(self.model.other_parameter()),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["state_dict"])
        self.model.load_other_parameter(state.get("other"))

    def arrays(self) -> dict[str, np.ndarray]:
        """Weights and tensor-valued other parameters as NumPy arrays (for saving); other
        parameters that are not tensors are recomputed from the data when rebuilt."""
        out = {f"sd.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}
        for key, value in self.model.other_parameter().items():
            if isinstance(value, torch.Tensor):
                out[f"op.{key}"] = value.detach().cpu().numpy()
        return out

    def load_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        sd = {
            k[3:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if k.startswith("sd.")
        }
        if sd:
            self.model.load_state_dict(sd)
        other = {
            k[3:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items() if k.startswith("op.")
        }
        if other:
            self.model.load_other_parameter(other)

    def close(self) -> None:
        """Close RecBole's TensorBoard writer and delete the working directory."""
        writer = getattr(getattr(self, "trainer", None), "tensorboard", None)
        if writer is not None:
            with contextlib.suppress(Exception):
                writer.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RecBoleRun:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            shutil.rmtree(self.workdir, ignore_errors=True)
