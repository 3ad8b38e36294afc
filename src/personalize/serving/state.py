"""What an exported model carries: the champion refit on all the data, its scorer written as
plain files by the shipped scoring code, the code itself, and the pinned requirements.

The shipped code is the package :mod:`personalize.scoring` copied under the name
:data:`SHIPPED_NAME` (it uses relative imports only, so the copy is the same code); the MLflow
model file :data:`MODEL_CODE` imports it by that name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalize import scoring
from personalize.config.segments import SegmentsConfig
from personalize.config.serving import ExportConfig
from personalize.core import columns as C
from personalize.data.consent import PERSONALISATION, without
from personalize.data.events import EventPolicy
from personalize.data.ingest import Dataset
from personalize.data.matrix import IdIndex, InteractionData
from personalize.models.base import Recommender
from personalize.models.privacy.aggregates import noisy_item_counts
from personalize.models.registry import create_model
from personalize.segments.pipeline import fit_segmentation
from personalize.serving.champion import Candidate

SCORING_CODE = Path(scoring.__file__).resolve().parent
MODEL_CODE = Path(__file__).resolve().parent / "standalone" / "recsys_pyfunc.py"
SHIPPED_NAME = "recsys_scoring"
SERVING_PACKAGES = ("numpy", "pandas", "scipy", "pyarrow", "pydantic")
ONLINE_PACKAGE = "redis"  # the online store's client (export.online.enabled)


def all_data(dataset: Dataset) -> InteractionData:
    """Every interaction of the dataset (train + validation + test), indexed over every known
    user and the whole catalogue."""
    index = IdIndex.build(dataset.users, dataset.items, dataset.interactions)
    return InteractionData.build(dataset.interactions, index, dataset.users, dataset.items, dataset.events)


def refit_on_all_data(candidate: Candidate, data: InteractionData) -> Recommender:
    """The candidate's model, fitted with its selected params and seed on ``data``."""
    return create_model(candidate.model_type, candidate.params, candidate.seed).fit(data)


def write_state(
    model: Recommender,
    folder: Path,
    config: ExportConfig,
    info: dict[str, Any] | None = None,
    segments: scoring.SegmentFallback | None = None,
    events: EventPolicy | None = None,
    consent: pd.DataFrame | None = None,
) -> Path:
    """Write the fitted ``model``'s serving state (its scorer, ID maps, seen items, popularity,
    the ``segments`` when given, and the event types' weights and exclusion rule, so that
    events folded in at request time weigh as in training) to ``folder`` with the shipped codec.
    With ``config.private_fallback`` the popularity is the noisy counts of the model's training
    histories (its guarantee in ``info["private_fallback"]``).

    ``consent``: the dataset's consent table (:mod:`personalize.data.consent`; None: none
    configured). With it, the state lists the users without ``personalisation`` consent (no
    record: not granted), whom the served model answers non-personalised; the list is a state
    file, so it is part of the state hash and a withdrawal makes a new registry version."""
    settings = {"default_k": config.default_k, "max_k": config.max_k, "max_rows": config.max_rows}
    popularity = model.popularity_
    private = config.private_fallback
    if private is not None:
        counts, spec = noisy_item_counts(
            model.seen_,
            private.epsilon,
            private.delta,
            private.mechanism,
            private.max_items_per_user,
            np.random.default_rng(private.seed),
        )
        popularity = counts.astype(np.float32)
        info = {**(info or {}), "private_fallback": spec.params()}
    if events is not None:
        settings["events"] = scoring.EventRules(
            dict(events.weights), frozenset(events.relevant), events.seen
        ).to_settings()
    return scoring.save_state(
        folder,
        model.scorer(),
        model.index_.users,
        model.index_.items,
        model.seen_,
        popularity,
        settings=settings,
        info=info,
        exclude=model.exclude_,
        segments=segments,
        no_personalisation=None
        if consent is None
        else np.flatnonzero(without(consent, PERSONALISATION, model.index_.users)),
    )


def segment_data(data: InteractionData, config: SegmentsConfig, fingerprint: str):
    """``data`` with every user's segment (fitted on ``data``: all of it, for export) and the
    serving fallback: each known user's segment, segment popularity, the demographics labeller."""
    seg = fit_segmentation(data, config, fingerprint)
    labels = seg.labels(data)
    users = data.users.assign(**{C.SEGMENT: labels.reindex(data.index.users).to_numpy()})
    labelled = dataclasses.replace(data, users=users)
    popular = create_model("segment_popularity", {}).fit(labelled)
    fallback = scoring.SegmentFallback(
        user_segment=labels.reindex(data.index.users).to_numpy(dtype=np.int64),
        scores=popular.scores_,
        names=[seg.names.get(i, f"segment {i}") for i in range(seg.k)],
        labeller=None if seg.labeller is None else seg.labeller.to_arrays(),
    )
    return labelled, fallback


def ship_code(folder: Path) -> Path:
    """Copy the scoring package to ``folder/<SHIPPED_NAME>`` (without caches); returns it."""
    target = Path(folder) / SHIPPED_NAME
    shutil.copytree(SCORING_CODE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return target


def pip_requirements(scorer: scoring.Scorer, online: bool = False) -> list[str]:
    """What the served model imports, pinned to the versions it was exported with (torch only
    when a NeuMF scorer needs it; redis, the online store's client, only with ``online``, i.e.
    ``export.online.enabled``; never the training stack)."""
    names = [
        *SERVING_PACKAGES,
        *(["torch"] if scorer.uses("neumf") else []),
        *([ONLINE_PACKAGE] if online else []),
    ]
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in names]


def input_example(model: Recommender, config: ExportConfig) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Two request rows for known users (one with its own k, one excluding an item) and the
    params default k."""
    users = model.index_.users[np.flatnonzero(model.user_history_ > 0)[:2]]
    if len(users) == 0:
        users = model.index_.users[:1]
    rows: list[dict[str, Any]] = [{"user_id": _native(users[0]), "k": min(5, config.max_k)}]
    if len(users) > 1:
        top = int(np.argmax(model.popularity_))
        rows.append({"user_id": _native(users[1]), "exclude_items": [_native(model.index_.items[top])]})
    return rows, {"k": config.default_k}


def id_type(ids: pd.Index) -> str:
    """'int' for integer IDs, else 'str': the type requests must use (the model's signature)."""
    return "int" if pd.api.types.is_integer_dtype(ids.dtype) else "str"


def _native(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def state_hash(state: Path, code: Path, config: ExportConfig, requirements: list[str]) -> str:
    """What the exported model answers with, as one SHA-256: every state file (the manifest
    without its provenance ``info``), every shipped code file, the serving settings and the
    pinned requirements (and the online settings when ``export.online.enabled``). Equal hashes mean
    the served answers are equal (given the same online state)."""
    digest = hashlib.sha256()
    for root, skip_info in ((state, True), (code, False)):
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            digest.update(str(path.relative_to(root)).encode())
            data = path.read_bytes()
            if skip_info and path.name == "manifest.json":
                manifest = json.loads(data)
                manifest.pop("info", None)
                data = json.dumps(manifest, sort_keys=True).encode()
            digest.update(hashlib.sha256(data).digest())
    settings: dict[str, Any] = {
        "default_k": config.default_k,
        "max_k": config.max_k,
        "max_rows": config.max_rows,
    }
    if config.online.enabled:  # where the model looks for its online state is part of what it answers
        settings["online"] = config.online.model_dump(mode="json")
    digest.update(json.dumps({"settings": settings, "requirements": requirements}, sort_keys=True).encode())
    digest.update(MODEL_CODE.read_bytes())
    return digest.hexdigest()
