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
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

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
from personalize.models.privacy.mechanisms import DPSpec, resolve_delta
from personalize.models.privacy.noise import NOT_PRIVATE_NOTE, SECRET
from personalize.models.registry import create_model
from personalize.segments.pipeline import fit_segmentation
from personalize.serving.champion import Candidate, ExportError

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


#: what a private export ships, per unit of its guarantee
SHIPS = {
    "user": (
        "the item side of the model and its private fallback only: no training user ID, history or "
        "per-user array; each request sends the user's history (`history`: item IDs) and is answered "
        "from it"
    ),
    "event": (
        "the users' IDs with their embeddings (DP-SGD output, covered at the event level), the item "
        "side and the private fallback; no history (each request's `history` gives the items to leave "
        "out)"
    ),
}


def export_is_private(model: Recommender, config: ExportConfig) -> bool:
    """Whether ``model`` is exported privately: ``config.private``, or when that is null exactly
    when the model is private (epsilon set). ExportError for ``private: true`` on a model that is not."""
    spec = getattr(model, "dp_", None)
    private_model = spec is not None and spec.epsilon is not None
    if config.private is None:
        return private_model
    if config.private and not private_model:
        raise ExportError(
            f"export.private: the champion ({model.name}) is not a private model (no epsilon); "
            "a private export ships what a private mechanism released"
        )
    return bool(config.private)


def check_registrable(model: Recommender, info: dict[str, Any] | None = None) -> None:
    """ExportError for a model fitted under the test switch of reproducible noise, or a state
    whose private fallback (``info["private_fallback"]``, as :func:`write_state` records it) was
    drawn under it: that noise can be regenerated, so it must never become a served model version."""
    spec = getattr(model, "dp_", None)
    if spec is not None and spec.epsilon is not None and spec.noise != SECRET:
        raise ExportError(f"{model.name}: {NOT_PRIVATE_NOTE}; registering it as a model version is refused")
    fallback = (info or {}).get("private_fallback") or {}
    if fallback.get("dp_noise") not in (None, SECRET):
        raise ExportError(
            f"export.private_fallback: {NOT_PRIVATE_NOTE}; registering it as a model version is refused"
        )


def _fit_delta(candidate: Candidate) -> float:
    """The delta of one private fit of ``candidate``: its params' delta, or the default for the
    public bound its params state (:func:`~personalize.models.privacy.mechanisms.resolve_delta`)."""
    p = candidate.params
    return float(resolve_delta(p["epsilon"], p.get("delta"), p.get("max_units"), candidate.unit or "unit"))


def guarantee(
    model: Recommender,
    private_export: bool,
    fallback: DPSpec | None = None,
    candidates: Sequence[Candidate] | None = None,
) -> dict[str, Any] | None:
    """The privacy record of an export (its provenance's ``privacy``): the unit; epsilon and
    delta of the refit model, of the selection (every private fit whose validation result the
    choice read: each candidate's grid points x seeds, basic composition) and of an
    ``export.private_fallback``; their total; what ships; what is not covered. None for a model
    that is not private and ships no private fallback."""
    spec = getattr(model, "dp_", None)
    private_model = spec is not None and spec.epsilon is not None
    if not private_model and fallback is None:
        return None
    unit = spec.unit if private_model else "user"
    out: dict[str, Any] = {"unit": unit, "composition": "basic (epsilons and deltas add up)"}
    not_covered: list[str] = []
    eps_total = delta_total = 0.0
    if private_model:
        out.update(
            epsilon_model=spec.epsilon,
            delta_model=spec.delta,
            mechanism=spec.mechanism,
            accountant=spec.accountant,
            noise=spec.noise,
            max_units=spec.max_units,
        )
        eps_total += spec.epsilon
        delta_total += spec.delta or 0.0
        not_covered.append(spec.not_covered)
        if spec.noise != SECRET:
            not_covered.append(NOT_PRIVATE_NOTE)
    earlier = next((c.selection for c in candidates or [] if c.selection), None)
    if earlier:  # params chosen before (an erasure re-export): that choice's cost
        keys = ("selection_fits", "epsilon_selection", "delta_selection")
        out.update({k: earlier[k] for k in keys if k in earlier})
        eps_total += float(earlier.get("epsilon_selection", 0.0))
        delta_total += float(earlier.get("delta_selection", 0.0))
    elif candidates:
        private = [c for c in candidates if c.params.get("epsilon") is not None and c.unit == unit]
        others = [c.label for c in candidates if c not in private]
        eps_sel = sum(c.fits * float(c.params["epsilon"]) for c in private)
        delta_sel = sum(c.fits * _fit_delta(c) for c in private)
        out.update(
            selection_fits=sum(c.fits for c in private), epsilon_selection=eps_sel, delta_selection=delta_sel
        )
        eps_total += eps_sel
        delta_total += delta_sel
        if others:
            not_covered.append(
                f"the choice of the champion, which also read candidates that are not private at the "
                f"{unit} level ({', '.join(others)})"
            )
    if fallback is not None and fallback.epsilon is not None:
        out.update(epsilon_fallback=fallback.epsilon, delta_fallback=fallback.delta or 0.0)
        eps_total += fallback.epsilon
        delta_total += fallback.delta or 0.0
    if not private_export:
        not_covered.append(
            "this export ships the training users' IDs, histories and per-user arrays: it is not private"
        )
    out.update(
        epsilon_total=eps_total,
        delta_total=delta_total,
        private=bool(private_export and private_model and spec.noise == SECRET),
        ships=SHIPS[unit]
        if private_export
        else "the full serving state (user IDs, histories, per-user arrays)",
        not_covered="; ".join(n for n in not_covered if n),
    )
    return out


def write_state(
    model: Recommender,
    folder: Path,
    config: ExportConfig,
    info: dict[str, Any] | None = None,
    segments: scoring.SegmentFallback | None = None,
    events: EventPolicy | None = None,
    consent: pd.DataFrame | None = None,
    candidates: Sequence[Candidate] | None = None,
) -> Path:
    """Write the fitted ``model``'s serving state (its scorer, ID maps, seen items, popularity,
    the ``segments`` when given, and the event types' weights and exclusion rule, so that
    events folded in at request time weigh as in training) to ``folder`` with the shipped codec.
    With ``config.private_fallback`` the popularity is the noisy counts of the model's training
    histories (its guarantee in ``info["private_fallback"]``).

    ``consent``: the dataset's consent table (:mod:`personalize.data.consent`; None: none
    configured). With it, the state lists the users without ``personalisation`` consent (no
    record: not granted), whom the served model answers non-personalised; the list is a state
    file, so it is part of the state hash and a withdrawal makes a new registry version.

    A private export (:func:`export_is_private`) ships what :data:`SHIPS` says for the model's
    unit; ``info["privacy"]`` records its guarantee (:func:`guarantee`, with the selection over
    ``candidates`` when given)."""
    settings = {"default_k": config.default_k, "max_k": config.max_k, "max_rows": config.max_rows}
    popularity = model.popularity_
    private = config.private_fallback
    fallback_spec = None
    if private is not None:
        counts, fallback_spec = noisy_item_counts(
            model.seen_,
            private.epsilon,
            private.delta,
            private.mechanism,
            private.max_items_per_user,
            max_users=private.max_units,
        )
        popularity = counts.astype(np.float32)
        info = {**(info or {}), "private_fallback": fallback_spec.params()}
    private_export = export_is_private(model, config)
    record = guarantee(model, private_export, fallback_spec, candidates)
    if record is not None:
        info = {**(info or {}), "privacy": record}
    if events is not None:
        settings["events"] = scoring.EventRules(
            dict(events.weights), frozenset(events.relevant), events.seen
        ).to_settings()
    scorer, users, seen, exclude = model.scorer(), model.index_.users, model.seen_, model.exclude_
    withdrawn = None if consent is None else np.flatnonzero(without(consent, PERSONALISATION, users))
    if private_export:
        if segments is not None:
            raise ExportError("export.segments: a private export ships no per-user segments")
        unit = model.dp_.unit
        if unit == "user":
            if not scorer.folds_in:
                raise ExportError(
                    f"{model.name}: a user-level private export answers from each request's history"
                )
            scorer, users, withdrawn = scoring.without_users(scorer), users[:0], None
        seen = sp.csr_matrix((len(users), len(model.index_.items)), dtype=np.float32)
        exclude = None
    return scoring.save_state(
        folder,
        scorer,
        users,
        model.index_.items,
        seen,
        popularity,
        settings=settings,
        info=info,
        exclude=exclude,
        segments=segments,
        no_personalisation=withdrawn,
        users_known=private_export and model.dp_.unit == "event",
        private=private_export,
    )


def read_info(folder: Path) -> dict[str, Any]:
    """The provenance ``info`` a state folder's manifest records."""
    return json.loads((Path(folder) / "manifest.json").read_text()).get("info", {})


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
    params default k. A user-level private export knows no user: one row of a user it has never
    seen, answered from the ``history`` the row sends (three of the private fallback's top items)."""
    top = np.argsort(-model.popularity_, kind="stable")
    if export_is_private(model, config) and model.dp_.unit == "user":
        users = model.index_.users
        stranger: Any = -1 if id_type(users) == "int" else "new-user"
        while stranger in users:
            stranger = stranger - 1 if isinstance(stranger, int) else stranger + "-"
        history = [_native(i) for i in model.index_.items[top[:3]]]
        return [{"user_id": stranger, "k": min(5, config.max_k), "history": history}], {"k": config.default_k}
    users = model.index_.users[np.flatnonzero(model.user_history_ > 0)[:2]]
    if len(users) == 0:
        users = model.index_.users[:1]
    rows: list[dict[str, Any]] = [{"user_id": _native(users[0]), "k": min(5, config.max_k)}]
    if len(users) > 1:
        rows.append({"user_id": _native(users[1]), "exclude_items": [_native(model.index_.items[top[0]])]})
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
