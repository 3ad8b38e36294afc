"""The MLflow model of an exported recommender (a model from code).

(One module: MLflow loads a model from code as one file; the scoring code it ships beside it is
the package ``recsys_scoring``.)

MLflow runs this file when the model is logged and when it is loaded; the scoring package
(``personalize.scoring``, the code the models score with) is shipped beside it as
``recsys_scoring`` (``code_paths``) and the fitted state as the artifact ``state``. Nothing here
needs the code that trained the model.

Request: a list of rows ``{"user_id": ..., "k": optional int, "exclude_items": optional list}``
(and optionally the user's attributes ``age``, ``gender``, ``occupation``, ``zip_code``: with a
state exported with segments, a cold or unknown user's segment comes from them) and optionally
``params = {"k": int}`` (the k of rows that give none). IDs have the type the
training data gave them (integers or strings; the model config ``user_id_type`` /
``item_id_type`` set at export). Unknown fields, a missing ``user_id`` or a value of the wrong type
are rejected by the signature (validated against :class:`RecommendationRequest`), a k out of range
by the scorer; both answer HTTP 400 when served. Response: one row per recommendation
``{"user_id", "item_id", "rank", "score", "personalised", "segment"}`` (``segment``: the row's
segment when the state carries segments and the row has one, else null; ``fresh``: true when the
user's online state was read for this answer, see below; ``consent``: false when the user has
no personalisation consent and the row is the non-personalised answer, see below).

**Consent.** A state exported with a consent table lists the users without ``personalisation``
consent; they get the overall popularity (nothing of their history, segment or recent events),
``personalised: false`` and ``consent: false``. The online store's consent records
(``{ns}:consent:{user_id}``, read in the same round trip as the recent events) apply at once: a
withdrawal recorded there (``personalize stream publish consent.csv`` with the columns
user_id, purpose, granted, timestamp, then the stream workers; or
``OnlineStore.set_consent(user, "personalisation", False)``) changes the user's very next
answer, and bumps their version so no cached answer of theirs is served again. The full rule is
in :mod:`recsys_scoring.serve`. When the store cannot be read the answer follows the exported
state's consent alone.

**Online fold-in.** With an online store (Redis; :mod:`recsys_scoring.online` holds the key
layout), each request reads its users' recent events (events after the fit, written by the
stream workers) and event counts in one pipelined round trip and folds the events in
(``TopKScorer.recommend(..., recent=...)``): a consumed item leaves the user's list, similar
items rise, a user the model never saw is personalised from their first event. Where the store
is found, first match wins:

1. ``online_url`` / ``online_namespace`` of the MLflow ``model_config`` at load time
   (``mlflow.pyfunc.load_model(uri, model_config={"online_url": "redis://...", ...})``, or the
   ``MLFLOW_PYFUNC_INFERENCE_CONFIG`` variable that MLflow merges the same way);
2. the environment variables ``PERSONALIZE_ONLINE_URL`` / ``PERSONALIZE_ONLINE_NAMESPACE`` of the
   serving process;
3. ``export.online.url`` / ``export.online.namespace``, recorded at export
   (``export_online_url`` / ``export_online_namespace`` in the model config).

The namespace is chosen the same way, on its own (default ``personalize``). No URL anywhere:
no store, every row ``fresh: false``.

The store never fails a request: when it cannot be reached, errors, or does not answer within
``online_timeout_seconds`` (default 0.05 s, one budget per round trip: the client's socket
timeout, with the client's retries turned off), the rows come from the exported state alone with
``fresh: false``. After such a failure the store is left alone for :data:`RETRY_AFTER_SECONDS`
(requests meanwhile answer from the export without waiting), then the next request tries again;
the first success turns ``fresh`` back on. The log says when the store fails and when it is back
(the error's type only: never a user ID or a request).

**Answer cache.** A fresh answer of one request row is stored in Redis under
``{ns}:cache:{model}:{user key}:{version}:{request}``: ``model`` is the exported state's hash
(``model_key``; a new export never reads an older one's answers), ``user key`` an HMAC-SHA256 of
the user ID under the serving secret (:func:`recsys_scoring.online.user_cache_key`: the ID as
sent, raw or pseudonym, never reaches Redis or its append-only file), ``version`` the user's event
count read in the same round trip (the user's next event raises it, so their older entries are
never read again), ``request`` a SHA-256 prefix of the row's effective k, ``exclude_items``
(as given) and attributes. The stored rows leave out the user ID (a hit puts the request's back).
A hit returns the stored rows (a second round trip, ``MGET``); the misses are computed and
written back (a third, pipelined ``SET ... EX``). Entries expire after
``online_cache_ttl_seconds`` (default 300 s): Redis deletes them by TTL, so an entry of an
outdated version lives at most that long, and an entry of the current version is recomputed at
most once per TTL. Answers that are not fresh are not cached.

The serving secret comes from the serving environment only (``PERSONALIZE_CACHE_SECRET``, hex or
text of at least 16 bytes, or the key file ``PERSONALIZE_CACHE_SECRET_FILE`` names, readable by
its owner only: :func:`recsys_scoring.online.cache_secret`), never from the model's artifacts or
config. Without one the cache is off (one warning at load): answers are computed for every
request, still folding in the online state. ``personalize subject forget`` deletes a user's
cached answers with the same secret (without it, every cached answer of the namespace).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from typing import Any

import mlflow
import pydantic
import recsys_scoring
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from recsys_scoring.online import OnlineSettings, OnlineStore, cache_secret

_ID_TYPES = {"int": int, "str": str}
ATTRIBUTES = ("age", "gender", "occupation", "zip_code")
RETRY_AFTER_SECONDS = 1.0  # after a store failure, requests answer from the export this long
URL_VARIABLE = "PERSONALIZE_ONLINE_URL"
NAMESPACE_VARIABLE = "PERSONALIZE_ONLINE_NAMESPACE"
_log = logging.getLogger("recsys_pyfunc")
_config = mlflow.models.ModelConfig(development_config={"user_id_type": "int", "item_id_type": "int"})
UserId = _ID_TYPES[_config.get("user_id_type")]
ItemId = _ID_TYPES[_config.get("item_id_type")]


class RecommendationRequest(pydantic.BaseModel):
    """One request row."""

    model_config = pydantic.ConfigDict(extra="forbid")

    user_id: UserId
    k: int | None = None
    exclude_items: list[ItemId] | None = None
    history: list[ItemId] | None = None
    age: float | None = None
    gender: str | None = None
    occupation: str | None = None
    zip_code: str | None = None

    @pydantic.field_validator(
        "k", "exclude_items", "history", "age", "gender", "occupation", "zip_code", mode="before"
    )
    @classmethod
    def _missing_is_none(cls, value: Any) -> Any:
        """A DataFrame turns a missing value into NaN (and k into a float column)."""
        if isinstance(value, float):
            if math.isnan(value):
                return None
            if value.is_integer():
                return int(value)
        return value

    @pydantic.field_validator("zip_code", mode="before")
    @classmethod
    def _zip_as_text(cls, value: Any) -> Any:
        """A zip code given as a number (a numeric DataFrame column) is its digits."""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(int(value))
        return value


class Recommendation(pydantic.BaseModel):
    """One recommended item; ``personalised`` is false where the popularity fallback answered."""

    user_id: UserId
    item_id: ItemId
    rank: int
    score: float
    personalised: bool
    segment: int | None = None
    fresh: bool = False
    consent: bool = True


def online_source(model_config: dict[str, Any] | None, environ: dict[str, str] | None = None):
    """(URL or None, namespace) of the online store by the precedence of the module doc."""
    config = model_config or {}
    environ = os.environ if environ is None else environ

    def first(*values: Any) -> Any:
        return next((v for v in values if v not in (None, "")), None)

    url = first(config.get("online_url"), environ.get(URL_VARIABLE), config.get("export_online_url"))
    namespace = first(
        config.get("online_namespace"),
        environ.get(NAMESPACE_VARIABLE),
        config.get("export_online_namespace"),
        "personalize",
    )
    return url, str(namespace)


class OnlineLink:
    """The served model's connection to the online store: opens it lazily, turns a failure into
    a pause of :data:`RETRY_AFTER_SECONDS` and logs each failure and recovery once."""

    def __init__(self, settings: OnlineSettings, retry_after: float = RETRY_AFTER_SECONDS):
        self.settings = settings
        self.retry_after = retry_after
        self.store: OnlineStore | None = None
        self.paused_until = 0.0
        self.failing = False

    def open(self) -> OnlineStore | None:
        """The store, or None while paused after a failure (or when it cannot be opened)."""
        if time.monotonic() < self.paused_until:
            return None
        if self.store is None:
            try:
                store = OnlineStore(self.settings)
                retry = store.client.get_retry()
                if retry is not None:  # one try per round trip: the timeout is the request's budget
                    retry.update_retries(0)
                    store.client.set_retry(retry)
            except Exception as exc:  # no client library, a malformed URL: answer from the export
                self.failed(exc, "open")
                return None
            self.store = store
        return self.store

    def failed(self, exc: BaseException, what: str) -> None:
        self.paused_until = time.monotonic() + self.retry_after
        if not self.failing:
            _log.warning(
                "online store %s failed (%s); answering from the exported state, retrying in %.1f s",
                what,
                type(exc).__name__,
                self.retry_after,
            )
        self.failing = True

    def succeeded(self) -> None:
        if self.failing:
            _log.warning("online store reachable again; answers fold in recent events")
        self.failing = False


def request_hash(
    k: int,
    exclude_items: list[Any] | None,
    attributes: dict[str, Any] | None,
    history: list[Any] | None = None,
) -> str:
    """The cache key part of a request row: SHA-256 (16 hex digits) of its effective k, excluded
    items (as given), attributes and the history it sends."""
    row = {"k": int(k), "x": exclude_items or [], "a": attributes or {}}
    if history:
        row["h"] = list(history)
    text = json.dumps(row, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def with_history(
    recent: list[list[tuple[Any, str | None]] | None] | None,
    histories: list[list[Any] | None],
    event: str | None,
) -> list[list[tuple[Any, str | None]] | None] | None:
    """Each row's events to fold in: the ``history`` its request sends (each item as ``event``,
    the model's heaviest relevant type) followed by its recent events from the online store."""
    if not any(histories):
        return recent
    recent = recent or [None] * len(histories)
    return [
        [(item, event) for item in (h or [])] + list(r or []) or None
        for h, r in zip(histories, recent, strict=True)
    ]


def split_rows(rows: list[Recommendation], users: list[Any]) -> list[list[Recommendation]]:
    """The scorer's rows (request order, ranks 1, 2, ... within a request row) cut into one list
    per request row of ``users``."""
    out, position = [], 0
    for user in users:
        start, rank = position, 0
        while position < len(rows) and rows[position].user_id == user and rows[position].rank > rank:
            rank = rows[position].rank
            position += 1
        out.append(rows[start:position])
    return out


def _model_key(config: dict[str, Any], state: str) -> str:
    """The exported state's hash (model config ``model_key``), else a hash of the state's files."""
    if config.get("model_key"):
        return str(config["model_key"])[:16]
    digest = hashlib.sha256()
    for root, _, files in sorted(os.walk(state)):
        for name in sorted(files):
            path = os.path.join(root, name)
            digest.update(os.path.relpath(path, state).encode())
            with open(path, "rb") as f:
                digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()[:16]


class TopKRecommender(PythonModel):
    """Top-K recommendations from the state shipped with the model, with the request users'
    recent events folded in when an online store is configured (module doc)."""

    def load_context(self, context) -> None:
        self.scorer = recsys_scoring.TopKScorer.load(context.artifacts["state"])
        config = dict(getattr(context, "model_config", None) or {})
        url, namespace = online_source(config)
        self.model_key = _model_key(config, context.artifacts["state"])
        self.online: OnlineLink | None = None
        self.warned_events = False
        if url is not None:
            settings = OnlineSettings(url=url, namespace=namespace)
            timeout, ttl = config.get("online_timeout_seconds"), config.get("online_cache_ttl_seconds")
            settings.timeout_seconds = float(timeout or settings.timeout_seconds)
            settings.cache_ttl_seconds = int(ttl or settings.cache_ttl_seconds)
            try:
                settings.cache_secret = cache_secret()
            except ValueError as exc:  # a bad secret turns the cache off, never the answers
                _log.warning("answer cache off: %s", exc)
            else:
                if settings.cache_secret is None:
                    _log.warning(
                        "answer cache off: no serving secret (set PERSONALIZE_CACHE_SECRET, or "
                        "PERSONALIZE_CACHE_SECRET_FILE to a key file of mode 0600); answers are "
                        "computed for every request"
                    )
            self.online = OnlineLink(settings)

    def predict(
        self,
        context,
        model_input: list[RecommendationRequest],
        params: dict[str, Any] | None = None,
    ) -> list[Recommendation]:
        default_k = (params or {}).get("k")
        users = [row.user_id for row in model_input]
        excludes = [row.exclude_items for row in model_input]
        histories = [row.history for row in model_input]
        event = self.scorer.events.history_event
        attributes = [
            {name: getattr(row, name) for name in ATTRIBUTES if getattr(row, name) is not None} or None
            for row in model_input
        ]
        try:  # a malformed request is the caller's error, whatever the store says
            _, ks, _ = self.scorer.check_request(
                users, [row.k if row.k is not None else default_k for row in model_input], excludes
            )
        except recsys_scoring.RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        store = self.online.open() if self.online is not None else None
        if store is None:
            return self._answer(
                users, ks, excludes, attributes, with_history(None, histories, event), fresh=False
            )
        consent: list[dict[str, bool]] = []
        caching = store.settings.cache_secret is not None
        try:
            recent, versions, consent = store.recent_and_consent(users)
            keys = [
                store.cache_key(self.model_key, u, v, request_hash(k, x, a, h)) if caching else ""
                for u, v, k, x, a, h in zip(users, versions, ks.tolist(), excludes, attributes, histories)
            ]
            recent = with_history(recent, histories, event)
            hits = store.cached(keys) if caching else [None] * len(users)
        except Exception as exc:  # unreachable, late or erroring store: answer from the export
            self.online.failed(exc, "read")
            return self._answer(
                users, ks, excludes, attributes, with_history(None, histories, event), fresh=False
            )
        self.online.succeeded()
        missing = [i for i, hit in enumerate(hits) if hit is None]
        answers: dict[int, list[Recommendation]] = {
            i: [Recommendation.model_construct(user_id=users[i], **r) for r in json.loads(hit)]
            for i, hit in enumerate(hits)
            if hit is not None
        }
        if missing:
            try:
                rows = self._answer(
                    [users[i] for i in missing],
                    ks[missing],
                    [excludes[i] for i in missing],
                    [attributes[i] for i in missing],
                    [recent[i] for i in missing],
                    fresh=True,
                    consent=[consent[i] for i in missing],
                )
            except ValueError:  # an event the model cannot weigh (a type it was not trained with)
                if not self.warned_events:
                    _log.warning(
                        "an online event has a type the model was not trained with; such "
                        "requests answer from the exported state (fresh false)"
                    )
                    self.warned_events = True
                plain = with_history(None, histories, event)
                return self._answer(users, ks, excludes, attributes, plain, fresh=False, consent=consent)
            per_row = split_rows(rows, [users[i] for i in missing])
            answers.update(zip(missing, per_row))
            if caching and all(per_row):  # a row left empty by its exclusions: an ambiguous split
                entries = {
                    keys[i]: json.dumps([r.model_dump(mode="json", exclude={"user_id"}) for r in g])
                    for i, g in zip(missing, per_row)
                }
                try:
                    store.cache(entries)
                except Exception as exc:  # the answer is fresh; only its caching failed
                    self.online.failed(exc, "cache write")
        return [r for i in range(len(users)) for r in answers[i]]

    def _answer(
        self, users, ks, excludes, attributes, recent, fresh: bool, consent=None
    ) -> list[Recommendation]:
        """Rows from the scorer (with ``recent`` folded in and the online ``consent`` records
        applied when given), in request order."""
        try:
            columns, allowed = self.scorer.answer_columns(
                users,
                k=list(ks.tolist()),
                exclude_items=excludes,
                attributes=attributes if any(attributes) else None,
                recent=recent,
                consent=consent,
            )
        except recsys_scoring.RequestError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        segments = [s if s >= 0 else None for s in columns[5].tolist()] if len(columns) > 5 else None
        segments = segments or [None] * len(columns[0])
        return [
            Recommendation.model_construct(
                user_id=user,
                item_id=item,
                rank=rank,
                score=score,
                personalised=personal,
                segment=segment,
                fresh=fresh,
                consent=ok,
            )
            for user, item, rank, score, personal, segment, ok in zip(
                *(c.tolist() for c in columns[:5]), segments, allowed.tolist()
            )
        ]


mlflow.models.set_model(TopKRecommender())
