"""Dynamic segment labels: which segment a user will end up in, predicted from their first N
interactions, evaluated on users who joined later, and shipped as plain arrays.

The model
    scikit-learn's ``HistGradientBoostingClassifier``: no new library (scikit-learn is already a
    dependency), trees need no scaling of features with mixed units (log counts, shares, PCA
    scores, 0/1 indicators), it fits a few hundred users in well under a second on 2 cores, and
    its fitted trees are plain node arrays (feature, threshold, children, missing-value
    direction, leaf value) that :meth:`SegmentClassifier.to_arrays` exports for the NumPy
    evaluator :mod:`personalize.scoring.trees`. Boosting stops early by default (log-loss on a
    held-out share of the training users, ``ClassifierConfig.early_stopping``): with a few
    hundred users the full ``max_iter`` iterations overfit and the probabilities become
    over-confident.

Features (from ``build_profile_table(train, item_embeddings, first_n=N)``, in this order)
    behaviour and genre shares as they are; the mean item embedding reduced by PCA
    (``embedding_components``, fitted on the training users: the embedding is a part of the
    profile the segments were found in; on MovieLens-100K, over three K-Means seeds, it raised
    macro-F1 by about 0.03 and lowered the log-loss at N = 10 and 20, at a small cost at N = 5;
    0 leaves it out); the age bucket as its position among the buckets (ordered; NaN when
    unknown, sent the way each split learned for missing values); gender, occupation and region
    one-hot with vocabularies fixed at fit time (the values seen among the training users; any
    other value, ``unknown`` included, is an all-zero block). No native categorical support:
    one-hot keeps every exported split numeric. The demographics-only model (N = 0) reads the
    age bucket and the one-hot blocks only: the features a cold user's request carries
    (:func:`personalize.scoring.trees.encode_request` encodes a request's raw attributes).

Temporal evaluation (:func:`evaluate_classifier`)
    Users are ordered by their first training interaction (ties by user ID); the first
    ``train_share`` of them (``round(n * train_share)``, exact fraction, half to even) are the
    training users, the later ones the test users. The target is each user's segment from the
    full training profile (the labels given); the features are those of the first N
    interactions only, so the score says how well a user's destination is read from their
    start. (A classifier given the very features that were clustered would score near 100% by
    construction; that is not this test.) Users with fewer than N interactions are left out of
    that N's evaluation and counted (``excluded_train``, ``excluded_test``). Beside each N:

    - ``majority``: the most frequent segment among the training users (ties: the smaller
      label), its probabilities the training users' segment shares;
    - ``demographics``: the demographics-only model, fitted once on all training users (N = 0).

    Scores per model and N on the same test users: accuracy; macro-F1 (the unweighted mean of
    per-segment F1 over the segments present in the truth or the predictions); the expected
    calibration error of the top probability over ``calibration_bins`` equal bins of [0, 1]
    (bin ``b`` holds ``b/B <= p < (b+1)/B``, the last also ``p = 1``):
    ``ECE = sum_b (n_b / n) * |accuracy_b - mean top probability_b|``; the reliability table
    behind it and the confusion matrix (rows: true segment, columns: predicted).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from personalize.config.segments import ClassifierConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.data.matrix import InteractionData
from personalize.features.profile_table import AGE_BUCKETS, BEHAVIOUR, ProfileTable, build_profile_table
from personalize.plotting import figure, house_style, legend_outside
from personalize.scoring import trees

MODELS = ("classifier", "majority", "demographics")
CATEGORICAL = (C.GENDER, C.OCCUPATION, "region")
AGE = "age_bucket"
UNKNOWN = "unknown"  # the profile table's value for a missing attribute
SEGMENT = "segment"
THREADS = 1  # OpenMP threads for fitting and predicting: over a few hundred users the threads' hand-offs
# cost more than they save (ML-100K, 2 busy cores: 14 s for the evaluation with 2 threads, 0.8 s with 1)


# --------------------------------------------------------------------------------- the model


@dataclass
class SegmentClassifier:
    """A user's segment from profile rows (module doc). ``demographics_only``: the N = 0 model
    (age bucket, gender, occupation, region). ``first_n``: the N the profile rows were built
    with (recorded in the export). ``seed``: the early-stopping split and the PCA."""

    config: ClassifierConfig = field(default_factory=ClassifierConfig)
    demographics_only: bool = False
    first_n: int | None = None
    seed: int = 0

    def fit(self, profiles: ProfileTable | pd.DataFrame, labels: pd.Series) -> SegmentClassifier:
        """Fit on profile rows (index: user_id) and each row's segment (``labels``: user_id ->
        int). Every row needs a label; labels of other users are not read."""
        from sklearn.decomposition import PCA
        from sklearn.ensemble import HistGradientBoostingClassifier

        table = _table(profiles)
        if len(table) == 0:
            raise DataError("the segment classifier got no training users")
        y = _labels_for(table.index, labels)
        numeric = [] if self.demographics_only else [*BEHAVIOUR, *_genre_columns(table)]
        embedding = [] if self.demographics_only or not self.config.embedding_components else [
            c for c in table.columns if str(c).startswith("embedding:")
        ]  # fmt: skip
        _require(table, [*numeric, *embedding, AGE, *CATEGORICAL])
        vocabularies = {c: sorted({str(v) for v in table[c] if not trees.is_missing(v)} - {UNKNOWN})
                        for c in CATEGORICAL}  # fmt: skip
        arrays: dict[str, np.ndarray] = {
            "pca_mean": np.zeros(0, dtype=np.float64),
            "pca_components": np.zeros((0, 0), dtype=np.float64),
        }
        if embedding:
            n_components = min(self.config.embedding_components, len(embedding), len(table))
            pca = PCA(n_components, random_state=self.seed).fit(table[embedding].to_numpy(np.float64))
            arrays["pca_mean"] = pca.mean_.astype(np.float64)
            arrays["pca_components"] = pca.components_.astype(np.float64)
        names = [
            *numeric,
            *[f"embedding_pc:{j}" for j in range(len(arrays["pca_components"]))],
            AGE,
            *[f"{c}={v}" for c, vocabulary in vocabularies.items() for v in vocabulary],
        ]
        params: dict[str, Any] = {
            "format": trees.FORMAT,
            "model": "HistGradientBoostingClassifier",
            "first_n": self.first_n,
            "demographics_only": self.demographics_only,
            "feature_names": names,
            "numeric": numeric,
            "embedding": embedding,
            "age": AGE,
            "age_buckets": [[lo, hi, label] for lo, hi, label in AGE_BUCKETS],
            "categorical": vocabularies,
        }
        x = trees.encode(_columns(table, params), arrays, params)
        _check_trainable(y, self.config)
        model = HistGradientBoostingClassifier(
            learning_rate=self.config.learning_rate,
            max_iter=self.config.max_iter,
            max_leaf_nodes=self.config.max_leaf_nodes,
            early_stopping=self.config.early_stopping,
            validation_fraction=self.config.validation_fraction,
            n_iter_no_change=self.config.n_iter_no_change,
            scoring="loss",
            random_state=self.seed,
        )
        with threadpool_limits(THREADS, user_api="openmp"):
            model.fit(x, y)
        self.model_ = model
        self.arrays_, self.params_ = _export(model, arrays, params)
        return self

    @property
    def classes(self) -> list[int]:
        return [int(c) for c in self.model_.classes_]

    @property
    def feature_names(self) -> list[str]:
        return list(self.params_["feature_names"])

    def features(self, profile_rows: ProfileTable | pd.DataFrame) -> np.ndarray:
        """The encoded feature matrix of profile rows (rows in the given order)."""
        table = _table(profile_rows)
        needed = [*self.params_["numeric"], *self.params_["embedding"], AGE, *CATEGORICAL]
        _require(table, needed)
        return trees.encode(_columns(table, self.params_), self.arrays_, self.params_)

    def predict_proba(self, profile_rows: ProfileTable | pd.DataFrame) -> pd.DataFrame:
        """Segment probabilities (index: user_id, columns: segments)."""
        table = _table(profile_rows)
        x = self.features(table)
        with threadpool_limits(THREADS, user_api="openmp"):
            proba = self.model_.predict_proba(x)
        return pd.DataFrame(proba, index=table.index, columns=self.classes)

    def assign_segment(self, profile_rows: ProfileTable | pd.DataFrame) -> pd.Series:
        """The segment of each profile row (new or changing users): the most probable one
        (the smaller label on ties). A Series user_id -> segment."""
        proba = self.predict_proba(profile_rows)
        labels = np.asarray(self.classes, dtype=np.int64)[np.argmax(proba.to_numpy(), axis=1)]
        return pd.Series(labels, index=proba.index, name=SEGMENT)

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The model as plain data: NumPy arrays and JSON-serialisable params (the layout is
        :mod:`personalize.scoring.trees`); ``trees.predict_proba(arrays, params, x)`` answers
        like ``predict_proba`` without scikit-learn."""
        arrays = {k: v.copy() for k, v in self.arrays_.items()}
        return arrays, _json_copy(self.params_)


def _export(
    model: Any, arrays: dict[str, np.ndarray], params: dict[str, Any]
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Node arrays from the fitted model's predictors (``model._predictors``: one list per
    iteration, one tree per raw output) and its ``_baseline_prediction``."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("feature", "threshold", "missing_left", "left",
                                                          "right", "is_leaf", "value")}  # fmt: skip
    starts, offset = [], 0
    for iteration in model._predictors:
        for predictor in iteration:
            nodes = predictor.nodes
            if nodes["is_categorical"].any():
                raise ValueError("categorical splits cannot be exported: features must be numeric")
            leaf = nodes["is_leaf"].astype(bool)
            starts.append(offset)
            parts["feature"].append(np.where(leaf, -1, nodes["feature_idx"]).astype(np.int64))
            parts["threshold"].append(np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64))
            parts["missing_left"].append(nodes["missing_go_to_left"].astype(bool))
            parts["left"].append(np.where(leaf, -1, nodes["left"].astype(np.int64) + offset))
            parts["right"].append(np.where(leaf, -1, nodes["right"].astype(np.int64) + offset))
            parts["is_leaf"].append(leaf)
            parts["value"].append(np.where(leaf, nodes["value"], 0.0).astype(np.float64))
            offset += len(nodes)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    out["tree_start"] = np.asarray(starts, dtype=np.int64)
    out["baseline"] = np.asarray(model._baseline_prediction, dtype=np.float64).reshape(-1)
    out["classes"] = np.asarray(model.classes_, dtype=np.int64)
    out.update(arrays)
    outputs = int(model.n_trees_per_iteration_)
    params = {
        **params,
        "loss": "binomial" if outputs == 1 else "multinomial",
        "classes": [int(c) for c in model.classes_],
        "n_outputs": outputs,
        "n_iterations": int(model.n_iter_),
    }
    return out, params


def _json_copy(params: dict[str, Any]) -> dict[str, Any]:
    import json

    return json.loads(json.dumps(params))


def _table(profiles: ProfileTable | pd.DataFrame) -> pd.DataFrame:
    table = profiles.table if isinstance(profiles, ProfileTable) else profiles
    if not isinstance(table, pd.DataFrame):
        raise DataError(f"profile rows must be a DataFrame or ProfileTable, got {type(table).__name__}")
    return table


def _genre_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if str(c).startswith("genre:")]


def _require(table: pd.DataFrame, needed: list[str]) -> None:
    absent = [c for c in needed if c not in table.columns]
    if absent:
        raise DataError(f"profile rows lack the columns {absent}; expected a profile table's columns")


def _columns(table: pd.DataFrame, params: dict[str, Any]) -> dict[str, np.ndarray]:
    names = [*params["numeric"], *params["embedding"], params["age"], *params["categorical"]]
    return {c: table[c].to_numpy() for c in names}


def _labels_for(users: pd.Index, labels: pd.Series) -> np.ndarray:
    """The segment of each of ``users`` (int64); a DataError for missing or bad labels."""
    if not isinstance(labels, pd.Series):
        raise DataError(
            f"segment labels must be a pandas Series user_id -> segment, got {type(labels).__name__}"
        )
    if labels.index.has_duplicates:
        dup = labels.index[labels.index.duplicated()].unique()
        raise DataError(f"segment labels name {len(dup)} users twice, e.g. {list(dup[:5])}")
    missing = users.difference(labels.index)
    if len(missing):
        raise DataError(f"no segment label for {len(missing)} users, e.g. {list(missing[:5])}")
    values = labels.reindex(users)
    numbers = pd.to_numeric(values, errors="coerce")
    bad = values.index[numbers.isna() | (numbers != np.round(numbers)) | (numbers < 0)]
    if len(bad):
        raise DataError(
            f"segment labels must be integers >= 0; {len(bad)} users have others, e.g. "
            f"{dict(values.loc[bad[:5]].items())}"
        )
    return numbers.to_numpy().astype(np.int64)


def _check_trainable(y: np.ndarray, config: ClassifierConfig) -> None:
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise DataError(f"the training users hold {len(classes)} segment(s) {list(classes)}; need at least 2")
    if config.early_stopping:
        held_out = int(np.ceil(config.validation_fraction * len(y)))
        if counts.min() < 2 or held_out < len(classes) or len(y) - held_out < len(classes):
            raise DataError(
                f"early stopping holds out {held_out} of {len(y)} training users, stratified by segment "
                f"(users per segment {dict(zip(classes.tolist(), counts.tolist()))}): every segment needs "
                "2 users and both parts one user per segment; set early_stopping: false or use more users"
            )


# --------------------------------------------------------------------------------- evaluation


def temporal_users(train: InteractionData, train_share: float) -> pd.DataFrame:
    """Every user with training interactions, ordered by first interaction (ties by user ID):
    ``user_id``, ``first_interaction``, ``interactions`` and ``role`` (``train`` for the first
    ``round(n * train_share)`` users, exact fraction, half to even, at least one per role;
    ``test`` for the rest)."""
    frame = train.frame
    grouped = frame.groupby(C.USER_IDX)[C.TIMESTAMP]
    first, count = grouped.min(), grouped.size()
    users = pd.DataFrame(
        {
            C.USER: train.index.users[first.index.to_numpy()],
            "first_interaction": first.to_numpy(),
            "interactions": count.reindex(first.index).to_numpy(np.int64),
        }
    )
    if len(users) < 2:
        raise DataError(
            f"the temporal split needs at least 2 users with training interactions, got {len(users)}"
        )
    users = users.sort_values(["first_interaction", C.USER], kind="mergesort").reset_index(drop=True)
    n_train = min(max(round(Fraction(len(users)) * Fraction(train_share)), 1), len(users) - 1)
    users["role"] = np.where(np.arange(len(users)) < n_train, "train", "test")
    return users


@dataclass
class ClassifierEvaluation:
    """The temporal evaluation (module doc).

    ``summary``: one row per (first_n, model) with train_users, test_users, excluded_train,
    excluded_test, accuracy, macro_f1, ece, fit_seconds, predict_seconds, iterations (boosting
    iterations kept); first_n 0 holds the two baselines on every test user. ``reliability``:
    model, first_n, bin, lo, hi, users, confidence (mean top probability), accuracy.
    ``confusion``: counts per (model, first_n), true segments as rows, predicted as columns.
    ``users``: the temporal split (:func:`temporal_users`). ``classifiers``: the model fitted
    per N; ``demographics``: the N = 0 model; ``majority``: the majority segment."""

    summary: pd.DataFrame
    reliability: pd.DataFrame
    confusion: dict[tuple[str, int], pd.DataFrame]
    users: pd.DataFrame
    classifiers: dict[int, SegmentClassifier]
    demographics: SegmentClassifier
    majority: int
    classes: list[int]
    seconds: float

    def scores(self, metric: str = "macro_f1") -> pd.DataFrame:
        """One metric as a table: first_n by model."""
        return self.summary.pivot(index="first_n", columns="model", values=metric).reindex(
            columns=list(MODELS)
        )


def evaluate_classifier(
    train: InteractionData,
    labels: pd.Series,
    item_embeddings: np.ndarray | None,
    config: ClassifierConfig | None = None,
    seed: int = 0,
    data_fingerprint: str = "",
) -> ClassifierEvaluation:
    """Train on the users who joined earlier, score on the later ones, for each N in
    ``config.first_n`` (module doc). ``train``: the training part of a split; ``labels``:
    user_id -> segment (int) of every user with training interactions (from the full training
    profile); ``item_embeddings``: rows aligned with ``train.items`` (None: no embedding
    features)."""
    started = time.perf_counter()
    config = config or ClassifierConfig()
    if not config.first_n or any(n < 1 for n in config.first_n):
        raise ConfigError(f"segments.classifier.first_n must list N >= 1, got {config.first_n}")
    users = temporal_users(train, config.train_share)
    ids = pd.Index(users[C.USER])
    extra = pd.Index(labels.index).difference(ids) if isinstance(labels, pd.Series) else pd.Index([])
    if len(extra):
        raise DataError(
            f"segment labels name {len(extra)} users without training interactions, e.g. {list(extra[:5])}"
        )
    y = pd.Series(_labels_for(ids, labels), index=ids, name=SEGMENT)
    classes = sorted(int(c) for c in y.unique())
    role = users.set_index(C.USER)["role"]
    count = users.set_index(C.USER)["interactions"]
    train_ids, test_ids = ids[role.to_numpy() == "train"], ids[role.to_numpy() == "test"]

    shares = y.loc[train_ids].value_counts()
    prior = pd.Series([shares.get(c, 0) / len(train_ids) for c in classes], index=classes)
    majority = int(prior.index[int(np.argmax(prior.to_numpy()))])

    base = build_profile_table(train, None, data_fingerprint).table
    tic = time.perf_counter()
    demographics = SegmentClassifier(config, demographics_only=True, seed=seed).fit(base.loc[train_ids], y)
    demo_fit = time.perf_counter() - tic
    tic = time.perf_counter()
    demo_proba = demographics.predict_proba(base.loc[test_ids])
    demo_predict = time.perf_counter() - tic

    rows: list[dict[str, Any]] = []
    reliability: list[pd.DataFrame] = []
    confusion: dict[tuple[str, int], pd.DataFrame] = {}

    def score(model: str, n: int, proba: pd.DataFrame, n_train: int, fit_s: float, pred_s: float,
              iterations: float) -> None:  # fmt: skip
        truth = y.loc[proba.index].to_numpy()
        result = classification_scores(truth, proba, classes, config.calibration_bins)
        rows.append({"first_n": n, "model": model, "train_users": n_train, "test_users": len(proba),
                     "excluded_train": len(train_ids) - n_train, "excluded_test": len(test_ids) - len(proba),
                     "accuracy": result["accuracy"], "macro_f1": result["macro_f1"], "ece": result["ece"],
                     "fit_seconds": fit_s, "predict_seconds": pred_s, "iterations": iterations})  # fmt: skip
        reliability.append(result["reliability"].assign(model=model, first_n=n))
        confusion[(model, n)] = result["confusion"]

    def majority_proba(index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(np.tile(prior.to_numpy(), (len(index), 1)), index=index, columns=classes)

    demo_iterations = float(demographics.params_["n_iterations"])
    score("majority", 0, majority_proba(test_ids), len(train_ids), 0.0, 0.0, np.nan)
    score("demographics", 0, demo_proba, len(train_ids), demo_fit, demo_predict, demo_iterations)
    classifiers: dict[int, SegmentClassifier] = {}
    for n in sorted(set(config.first_n)):
        profiles = build_profile_table(train, item_embeddings, data_fingerprint, first_n=n).table
        tr = train_ids[count.loc[train_ids].to_numpy() >= n]
        te = test_ids[count.loc[test_ids].to_numpy() >= n]
        if len(te) == 0:
            raise DataError(f"no test user has {n} training interactions; lower segments.classifier.first_n")
        tic = time.perf_counter()
        model = SegmentClassifier(config, first_n=n, seed=seed).fit(profiles.loc[tr], y)
        fit_s = time.perf_counter() - tic
        tic = time.perf_counter()
        proba = model.predict_proba(profiles.loc[te])
        pred_s = time.perf_counter() - tic
        classifiers[n] = model
        score("classifier", n, proba, len(tr), fit_s, pred_s, float(model.params_["n_iterations"]))
        score("majority", n, majority_proba(te), len(tr), 0.0, 0.0, np.nan)
        score("demographics", n, demo_proba.loc[te], len(train_ids), demo_fit, 0.0, demo_iterations)
    summary = pd.DataFrame(rows)
    summary["model"] = pd.Categorical(summary["model"], categories=list(MODELS))
    summary = summary.sort_values(["first_n", "model"], kind="mergesort").reset_index(drop=True)
    summary["model"] = summary["model"].astype(str)
    columns = ["model", "first_n", "bin", "lo", "hi", "users", "confidence", "accuracy"]
    return ClassifierEvaluation(
        summary=summary,
        reliability=pd.concat(reliability, ignore_index=True)[columns],
        confusion=confusion,
        users=users,
        classifiers=classifiers,
        demographics=demographics,
        majority=majority,
        classes=classes,
        seconds=time.perf_counter() - started,
    )


def classification_scores(
    truth: np.ndarray, proba: pd.DataFrame, classes: list[int], bins: int
) -> dict[str, Any]:
    """Accuracy, macro-F1, ECE with its reliability table, and the confusion matrix of
    probabilities ``proba`` (columns: the model's classes) against ``truth`` (module doc)."""
    from sklearn.metrics import confusion_matrix, f1_score

    model_classes = np.asarray(proba.columns, dtype=np.int64)
    p = proba.to_numpy(dtype=np.float64)
    predicted = model_classes[np.argmax(p, axis=1)]
    correct = predicted == truth
    ece, table = expected_calibration_error(p.max(axis=1), correct, bins)
    counts = confusion_matrix(truth, predicted, labels=classes)
    return {
        "accuracy": float(correct.mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
        "ece": ece,
        "reliability": table,
        "confusion": pd.DataFrame(
            counts, index=pd.Index(classes, name="true"), columns=pd.Index(classes, name="predicted")
        ),
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int
) -> tuple[float, pd.DataFrame]:
    """``sum_b (n_b / n) |accuracy_b - confidence_b|`` over ``bins`` equal bins of the top
    probability (bin b: ``b/bins <= p < (b+1)/bins``, the last also ``p = 1``), and the table
    bin, lo, hi, users, confidence, accuracy (empty bins: 0 users, NaN means)."""
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    if len(confidence) == 0:
        raise DataError("calibration needs at least one prediction")
    index = np.clip(np.floor(confidence * bins).astype(np.int64), 0, bins - 1)
    users = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=confidence, minlength=bins) / users
        accuracy = np.bincount(index, weights=correct, minlength=bins) / users
    gaps = np.where(users > 0, np.abs(accuracy - mean_conf), 0.0)
    ece = float((users * gaps).sum() / len(confidence))
    table = pd.DataFrame(
        {
            "bin": np.arange(bins),
            "lo": np.arange(bins) / bins,
            "hi": np.arange(1, bins + 1) / bins,
            "users": users,
            "confidence": mean_conf,
            "accuracy": accuracy,
        }
    )
    return ece, table


# --------------------------------------------------------------------------------- figures

STYLES = {
    "classifier": {"color": "tab:blue", "marker": "o", "linestyle": "-", "label": "classifier (first N)"},
    "demographics": {"color": "tab:orange", "marker": "s", "linestyle": ":", "label": "demographics only"},
    "majority": {"color": "tab:gray", "marker": "", "linestyle": "--", "label": "majority segment"},
}


@house_style
def plot_scores(evaluation: ClassifierEvaluation):
    """Macro-F1 and accuracy on the later users against N, with both baselines (N = 0: the
    baselines on every test user)."""
    fig, axes = figure(1, 2, height=3.4)
    summary = evaluation.summary
    ns = sorted(summary["first_n"].unique())
    for ax, metric, name in zip(axes[0], ("macro_f1", "accuracy"), ("macro-F1", "accuracy")):
        for model in MODELS:
            part = summary[summary["model"] == model].sort_values("first_n")
            ax.plot(part["first_n"], part[metric], **STYLES[model])
        ax.set_xticks(ns)  # the N evaluated (integers)
        ax.set_xlabel("interactions seen, N (0: demographics only)")
        ax.set_ylabel(f"{name} on later users")
        ax.set_title(name)
        ax.set_ylim(0, max(1e-9, float(summary[metric].max())) * 1.15)
    fig.suptitle("Segment predicted from a user's first N interactions", fontweight="bold", fontsize=11)
    legend_outside(fig, axes[0][0], below=True)
    return fig


@house_style
def plot_reliability(evaluation: ClassifierEvaluation, model: str = "classifier"):
    """Reliability diagram: per N, the share of correct labels against the mean top
    probability in each non-empty bin, the marker's area proportional to the bin's users (the
    diagonal is perfect calibration); ECE in the legend."""
    fig, axes = figure(1, 1, width=5.6, height=4.2)
    ax = axes[0][0]
    ax.plot([0, 1], [0, 1], color="0.5", linestyle="--", linewidth=1, label="perfect calibration")
    table = evaluation.reliability[evaluation.reliability["model"] == model]
    ece = evaluation.summary.set_index(["model", "first_n"])["ece"]
    colours = [f"C{i}" for i in range(10)]
    for i, (n, part) in enumerate(table.groupby("first_n")):
        part = part[part["users"] > 0]
        colour = colours[i % 10]
        ax.plot(part["confidence"], part["accuracy"], color=colour, linewidth=1.2,
                label=f"N = {n} (ECE {ece.loc[(model, n)]:.3f})")  # fmt: skip
        ax.scatter(part["confidence"], part["accuracy"], s=8 + 160 * part["users"] / part["users"].max(),
                   color=colour, alpha=0.8, zorder=3)  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean top probability in bin")
    ax.set_ylabel("share of users labelled correctly")
    ax.set_title(f"Reliability of the top probability ({model})")
    legend_outside(fig, ax)
    return fig


@house_style
def plot_confusion(evaluation: ClassifierEvaluation, first_n: int, model: str = "classifier"):
    """Confusion matrix at one N: colour the share of each true segment's users (rows sum to
    1), the count and share written in each cell."""
    if (model, first_n) not in evaluation.confusion:
        raise ValueError(f"no confusion matrix for model {model!r} at N = {first_n}")
    counts = evaluation.confusion[(model, first_n)]
    totals = counts.sum(axis=1).to_numpy()[:, None]
    shares = np.divide(counts.to_numpy(), totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, axes = figure(1, 1, width=5.6, height=4.4)
    ax = axes[0][0]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(shares.shape[0]):
        for j in range(shares.shape[1]):
            colour = "white" if shares[i, j] > 0.6 else "black"
            ax.text(j, i, f"{counts.iat[i, j]}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color=colour)  # fmt: skip
    labels = [str(c) for c in counts.columns]
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), [str(c) for c in counts.index])
    ax.set_xlabel("predicted segment")
    ax.set_ylabel("true segment (full training profile)")
    ax.grid(False)
    ax.set_title(f"Segments confused at N = {first_n} ({model})")
    fig.colorbar(image, ax=ax, label="share of the true segment's users (row)")
    return fig
