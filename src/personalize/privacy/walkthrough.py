"""The privacy walkthrough of notebook 07 on MovieLens-100K: why a plain hash is no pseudonym,
k-anonymity before and after coarsening, a generated consent table and what it changes in the
served model, and an erasure confirmed by a scan of every store.

Everything here runs in temporary places: the consent and erasure steps use a temporary data
folder (``PERSONALIZE_DATA_DIR``), a private tracking store, an embedded Redis server and keys
generated for the run; the environment is restored afterwards and nothing of the project's own
``data/``, ``mlruns/`` or online store is touched.

(One module: the notebook's studies share the temporary environment set up and restored here,
and :func:`privacy_findings` reads all their numbers.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from personalize.config.data import DataConfig
from personalize.config.privacy import CoarsenConfig
from personalize.config.serving import ExportConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.core.findings import Findings
from personalize.data.consent import GRANTED, PERSONALISATION, PURPOSE, TRAINING, without
from personalize.data.ingest import Dataset, ingest, load_movielens_100k
from personalize.data.privacy import Pseudonymiser, canonical
from personalize.data.quasi import SIZE, coarsen, k_anonymity
from personalize.privacy.erasure import Erasure, forget
from personalize.privacy.subject import Subject, identify
from personalize.processes.redis import EmbeddedRedis
from personalize.recipe import load_experiment, run_experiment
from personalize.scoring import TopKScorer
from personalize.scoring.online import OnlineSettings, OnlineStore, cache_secret
from personalize.serving import Candidate
from personalize.serving.state import all_data, refit_on_all_data, write_state
from personalize.tracking.store import artifact_root, quiet_mlflow

SMALL_GROUP = 5  # "a small group" in the k table: fewer users than this share the quasi-identifiers
QUASI_IDENTIFIERS = ["age", "gender", "occupation", "zip_code"]  # MovieLens-100K's user attributes
#: the coarsenings notebook 07 compares (label -> ``data.privacy.coarsen`` settings; None: as ingested)
COARSENINGS: dict[str, dict | None] = {
    "as ingested": None,
    "zip: 3 digits": {"zip_digits": 3},
    "age: 10-year bands, zip: 1 digit": {"age_band_years": 10, "zip_digits": 1},
    "age: 10-year bands, no zip": {"age_band_years": 10, "zip_digits": 0},
    "age: 20-year bands, gender only": {"age_band_years": 20, "zip_digits": 0, "drop": ["occupation"]},
}


@contextlib.contextmanager
def environment(**values: str | None) -> Iterator[None]:
    """Set (or, with None, unset) environment variables for the block; restore them afterwards."""
    before = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ----------------------------------------------------------------------------- pseudonyms


def enumeration(ids, key: bytes | None = None, candidates: int = 100_000) -> pd.DataFrame:
    """How many of ``ids`` an attacker without a key recovers by enumeration.

    The attacker hashes every candidate ID ``1..candidates`` with SHA-256 and looks each stored
    value up in that table. Two ways of storing the IDs are attacked the same way:

    - **SHA-256 of the ID** (no key): ``sha256(canonical ID)``; every ID within the candidates is
      recovered;
    - **HMAC-SHA256 pseudonym** (:class:`~personalize.data.privacy.Pseudonymiser` under ``key``,
      128 random bits when None): without the key no stored value is in the table.

    One row per scheme: ``ids``, ``candidates`` tried, ``recovered`` (IDs whose value matched a
    candidate and gave back the right ID), ``seconds`` (wall time of building the table and the
    lookups, one core)."""
    ids = [canonical(i) for i in ids]
    key = key if key is not None else secrets.token_bytes(32)
    stored = {
        "SHA-256 of the ID (no key)": [hashlib.sha256(i.encode()).hexdigest() for i in ids],
        "HMAC-SHA256 pseudonym (key unknown to the attacker)": Pseudonymiser(key).many(ids),
    }
    rows = []
    for scheme, values in stored.items():
        start = time.perf_counter()
        table = {hashlib.sha256(str(c).encode()).hexdigest(): str(c) for c in range(1, candidates + 1)}
        # a pseudonym is "u_" + 32 hex of the HMAC: the attacker also tries the truncated form
        table.update({"u_" + h[:32]: c for h, c in list(table.items())})
        found = [table.get(v) for v in values]
        seconds = time.perf_counter() - start
        recovered = sum(1 for f, i in zip(found, ids) if f == i)
        rows.append(
            {
                "stored as": scheme,
                "ids": len(ids),
                "candidates tried": candidates,
                "recovered": recovered,
                "seconds": round(seconds, 3),
            }
        )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- k-anonymity


def k_table(
    users: pd.DataFrame,
    quasi_identifiers: list[str],
    coarsenings: Mapping[str, CoarsenConfig | dict | None],
    small: int = SMALL_GROUP,
) -> pd.DataFrame:
    """k-anonymity (:func:`personalize.data.quasi.k_anonymity`) of ``users`` per coarsening
    (label -> :class:`CoarsenConfig` or its dict; None: as is). One row per coarsening: the
    quasi-identifiers left, ``k`` (smallest group, users), ``groups``, ``unique users`` (in a
    group of one) and the users in groups smaller than ``small`` (count and share of users)."""
    rows = []
    for label, config in coarsenings.items():
        if config is None:
            table = users
        else:
            table = coarsen(users, config if isinstance(config, CoarsenConfig) else CoarsenConfig(**config))
        k, groups = k_anonymity(table, quasi_identifiers)
        below = int(groups.loc[groups[SIZE] < small, SIZE].sum())
        rows.append(
            {
                "coarsening": label,
                "quasi-identifiers": ", ".join(c for c in quasi_identifiers if c in table.columns),
                "k": k,
                "groups": len(groups),
                "unique users": int((groups[SIZE] == 1).sum()),
                f"users in groups < {small}": below,
                f"share in groups < {small}": round(below / len(table), 4) if len(table) else 0.0,
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- consent


def consent_table(
    users,
    seed: int = 0,
    shares: Mapping[str, float] | None = None,
    start: str = "2024-01-01T00:00:00Z",
) -> pd.DataFrame:
    """A generated consent history for ``users`` (the consent file's columns: user_id, purpose,
    granted as ``yes``/``no``, timestamp as ISO 8601 UTC).

    Every user grants ``training`` and ``personalisation`` at a random time in the 30 days after
    ``start``. Then, on disjoint random user groups (``shares``: fraction of users per group):

    - ``training``: no training consent in the end (half never granted it: their only training
      record is a refusal; the other half granted it and withdrew it 30 to 90 days later);
    - ``personalisation``: training granted, no personalisation consent in the end (as above);
    - ``regranted``: withdrew personalisation, then granted it again later (the latest record,
      a grant, wins).

    Defaults: 10% / a further 10% / 5%."""
    shares = dict(shares or {"training": 0.10, "personalisation": 0.10, "regranted": 0.05})
    unknown = set(shares) - {"training", "personalisation", "regranted"}
    if unknown:
        raise ValueError(f"consent_table: unknown share(s) {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    ids = np.array(sorted(pd.unique(np.asarray(users))), dtype=object)
    order = rng.permutation(len(ids))
    groups: dict[str, set] = {}
    at = 0
    for name in ("training", "personalisation", "regranted"):
        n = round(shares.get(name, 0.0) * len(ids))
        groups[name] = set(ids[order[at : at + n]])
        at += n
    t0 = pd.Timestamp(start)
    day = pd.Timedelta(days=1)
    rows = []
    for user in ids:
        first = t0 + rng.uniform(0, 30) * day
        later = first + rng.uniform(30, 90) * day
        for purpose in (TRAINING, PERSONALISATION):
            refused = user in groups.get(purpose, set())
            never = refused and rng.random() < 0.5
            rows.append((user, purpose, "no" if never else "yes", first))
            if refused and not never:
                rows.append((user, purpose, "no", later))
        if user in groups["regranted"]:
            rows.append((user, PERSONALISATION, "no", later))
            rows.append((user, PERSONALISATION, "yes", later + rng.uniform(1, 30) * day))
    out = pd.DataFrame(rows, columns=[C.USER, PURPOSE, GRANTED, C.TIMESTAMP])
    out[C.TIMESTAMP] = pd.to_datetime(out[C.TIMESTAMP], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    return out.sort_values([C.TIMESTAMP, C.USER, PURPOSE], kind="stable").reset_index(drop=True)


def consent_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per purpose: records, users, users whose latest record is a grant / a refusal, users who
    ever withdrew (a refusal after a grant)."""
    frame = table.assign(_t=pd.to_datetime(table[C.TIMESTAMP], utc=True), _row=np.arange(len(table)))
    frame = frame.sort_values([C.USER, PURPOSE, "_t", "_row"], kind="stable")
    last = frame.drop_duplicates([C.USER, PURPOSE], keep="last")
    rows = []
    for purpose, part in frame.groupby(PURPOSE, sort=True):
        latest = last[last[PURPOSE] == purpose]
        granted = latest[GRANTED].str.lower().eq("yes")
        withdrew = part.groupby(C.USER)[GRANTED].agg(lambda g: "yes" in list(g) and list(g)[-1] == "no")
        rows.append(
            {
                PURPOSE: purpose,
                "records": len(part),
                "users": part[C.USER].nunique(),
                "granted (latest)": int(granted.sum()),
                "not granted (latest)": int((~granted).sum()),
                "withdrew after a grant": int(withdrew.sum()),
            }
        )
    return pd.DataFrame(rows)


@dataclass
class ConsentEffect:
    """What the consent table changed: ``counts`` (ingestion and the served state) and
    ``answers`` (one row per model and user shown)."""

    counts: pd.DataFrame
    answers: pd.DataFrame
    numbers: dict[str, Any]


def consent_effect(
    table: pd.DataFrame,
    sample_users: int | None = None,
    k: int = 5,
    models: Mapping[str, dict] | None = None,
) -> ConsentEffect:
    """Ingest MovieLens-100K (``sample_users``: a seeded user sample; None: all) with the consent
    ``table`` (written as a CSV in a temporary data folder), fit each model (name -> params;
    default popularity and EASE with l2 = 250) on all the data, export its served state with the
    consent table into that folder and answer three users through :class:`TopKScorer`: one who
    consents to everything, one without personalisation consent (answered as an unknown user:
    the overall popularity, ``personalised`` and ``consent`` false) and one without training
    consent (left out of training, so unknown to the model)."""
    models = dict(models or {"popularity": {}, "ease": {"l2": 250.0}})
    with tempfile.TemporaryDirectory(prefix="personalize-consent-") as tmp:
        folder = Path(tmp)
        path = folder / "consent.csv"
        table.to_csv(path, index=False)
        with environment(PERSONALIZE_DATA_DIR=str(folder / "data")):
            dataset = ingest(
                DataConfig(write_processed=False, sample_users=sample_users, privacy={"consent": str(path)})
            )
            report = dataset.report.tables
            consent = dataset.consent
            trained = pd.Series(dataset.interactions[C.USER].unique())
            withheld = without(consent, PERSONALISATION, trained)
            listed = pd.Series(consent[C.USER].unique())
            if sample_users is not None:  # a user of the sample (the table may cover every user)
                sampled = load_movielens_100k(write_processed=False, sample_users=sample_users).users
                listed = listed[listed.isin(sampled[C.USER])]
            no_training = listed[without(consent, TRAINING, listed)]
            if withheld.all() or not withheld.any() or no_training.empty:
                raise DataError(
                    "consent_effect: the consent table needs trained users with and without personalisation "
                    "consent and a user without training consent"
                )
            granted_both, no_personal = trained[~withheld].tolist(), trained[withheld].tolist()
            shown = {
                "consents to both": granted_both[0],
                "no personalisation consent": no_personal[0],
                "no training consent": no_training.iloc[0],
            }
            rows = []
            for name, params in models.items():
                model = refit_on_all_data(Candidate(name, name, dict(params), 0.0), all_data(dataset))
                state = write_state(model, folder / f"state-{name}", ExportConfig(), consent=consent)
                scorer = TopKScorer.load(state)
                unknown = scorer.recommend([_unknown_id(dataset)], k=k)[C.ITEM].tolist()
                answer = scorer.recommend(list(shown.values()), k=k)
                for who, user in shown.items():
                    part = answer[answer[C.USER] == user]
                    items = part[C.ITEM].tolist()
                    rows.append(
                        {
                            "model": name,
                            "user": who,
                            "user_id": user,
                            "personalised": bool(part["personalised"].all()),
                            "consent": bool(part["consent"].all()),
                            "same as an unknown user": items == unknown,
                            f"top {k}": items,
                        }
                    )
                in_state = len(scorer.no_personalisation) if scorer.no_personalisation is not None else 0
    users_in = int(report["users"].no_consent) + len(dataset.users) if "users" in report else None
    counts = pd.DataFrame(
        [
            {"what": "users in the sample", "count": users_in},
            {"what": "users left out of training (no training consent)", "count": report["users"].no_consent},
            {"what": "interactions left out (no consent)", "count": report["interactions"].no_consent},
            {"what": "users trained on", "count": len(trained)},
            {
                "what": "trained users without personalisation consent (in the served state)",
                "count": in_state,
            },
        ]
    )
    answers = pd.DataFrame(rows)
    numbers = {
        "consent_users": users_in,
        "no_training_users": int(report["users"].no_consent),
        "no_consent_interactions": int(report["interactions"].no_consent),
        "no_personalisation_users": in_state,
        "withheld_same_as_unknown": bool(
            answers.loc[answers["user"] == "no personalisation consent", "same as an unknown user"].all()
        ),
        "consenting_personalised": bool(
            answers.loc[answers["user"] == "consents to both", "personalised"].all()
        ),
    }
    return ConsentEffect(counts, answers, numbers)


def _unknown_id(dataset: Dataset) -> Any:
    ids = dataset.interactions[C.USER]
    if pd.api.types.is_integer_dtype(ids.dtype):
        return int(ids.max()) + 10**6
    return "unknown-user"


# ------------------------------------------------------------------------------- erasure


def distinctive_raw_files(dataset: Dataset, folder: Path, prefix: str = "ml-user-") -> dict[str, Path]:
    """Write ``dataset``'s interactions and users as raw CSV files under ``folder`` with every user
    ID spelt ``<prefix><ID as 4 digits>`` (``42`` -> ``ml-user-0042``): the same data, with IDs
    that a text scan can find without mistaking item IDs, ratings or ages for a user."""
    folder.mkdir(parents=True, exist_ok=True)
    spell = lambda s: s.map(lambda u: f"{prefix}{int(u):04d}")  # noqa: E731
    inter = dataset.interactions[[C.USER, C.ITEM, C.RATING, C.TIMESTAMP]].copy()
    inter[C.USER] = spell(inter[C.USER])
    inter[C.TIMESTAMP] = pd.to_datetime(inter[C.TIMESTAMP], utc=True).map(lambda t: int(t.timestamp()))
    users = dataset.users[[c for c in (C.USER, C.AGE, C.GENDER, C.OCCUPATION, C.ZIP) if c in dataset.users]]
    users = users.assign(**{C.USER: spell(users[C.USER])})
    paths = {"interactions": folder / "ratings.csv", "users": folder / "users.csv"}
    inter.to_csv(paths["interactions"], index=False)
    users.to_csv(paths["users"], index=False)
    return paths


def decoded(path: Path) -> str:
    """A file's contents as text: Parquet decoded (values, index and schema metadata), any other
    file as its bytes (Latin-1, so every byte maps to a character)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = {
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (table.schema.metadata or {}).items()
        }
        return table.to_pandas().reset_index().to_csv() + json.dumps(meta)
    return path.read_bytes().decode("latin-1")


def scan(tokens: set[str], data: Path, uri: str, store: OnlineStore | None) -> pd.DataFrame:
    """Every place a token (a raw ID or pseudonym) is found as text, independently of how erasure
    matches rows: each file of the data folder (``data``, raw inputs outside it) and of the
    tracking store's artifact folder (run artifacts and logged models, so every registered model
    version's files; decoded by :func:`decoded`), the bytes of a SQLite tracking database, and
    every Redis key's name and value (streams entry by entry). One row per hit: ``store``,
    ``where``, ``token`` (``raw ID`` or ``pseudonym``)."""
    kind = {t: ("pseudonym" if t.startswith("u_") else "raw ID") for t in tokens}
    hits = []
    roots = {"data folder": Path(data), "MLflow artifacts and models": artifact_root(uri)}
    for name, root in roots.items():
        for path in sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []:
            text = decoded(path)
            hits += [(name, str(path.relative_to(root)), kind[t]) for t in tokens if t in text]
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        raw = db.read_bytes() if db.exists() else b""
        hits += [("MLflow database", db.name, kind[t]) for t in tokens if t.encode() in raw]
    if store is not None:
        r = store.client
        for key in r.scan_iter("*"):
            what = r.type(key)
            if what == "stream":
                values = [json.dumps(f) for _, f in r.xrange(key)]
            elif what == "list":
                values = r.lrange(key, 0, -1)
            elif what == "string":
                values = [r.get(key)]
            elif what == "hash":
                values = [json.dumps(r.hgetall(key))]
            elif what == "set":
                values = list(r.smembers(key))
            else:
                values = [str(what)]
            hits += [
                ("Redis", key, kind[t]) for t in tokens if t in key or any(t in (v or "") for v in values)
            ]
    return pd.DataFrame(hits, columns=["store", "where", "token"])


@dataclass
class ErasureWalkthrough:
    """What :func:`erasure` did and found: ``table`` (per store: copies found before, removed by
    ``forget``, found after), the ``erasure`` record and the scans before and after."""

    table: pd.DataFrame
    erasure: Erasure
    before: pd.DataFrame
    after: pd.DataFrame
    numbers: dict[str, Any]


def _experiment(raw: dict[str, Path], redis_url: str, name: str) -> dict:
    return {
        "name": "privacy_walkthrough",
        "seeds": [0],
        "data": {
            "source": "files",
            "name": name,
            "interactions": {"path": str(raw["interactions"])},
            "users": {"path": str(raw["users"])},
            "rating_range": [1, 5],
            "privacy": {"pseudonymise": True},
        },
        "models": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 250}}],
        "export": {"enabled": True, "registered_model": "privacy-walkthrough"},
        "online": {"redis_url": redis_url, "namespace": "walk"},
    }


def erasure(sample_users: int = 60, seed: int = 0) -> ErasureWalkthrough:
    """Forget one person and confirm it with a scan of every store, all in a temporary workspace
    (module doc; keys generated for the run, the environment restored afterwards).

    1. A seeded sample of ``sample_users`` MovieLens-100K users is written as raw files with
       distinctive user IDs (:func:`distinctive_raw_files`) outside the scanned data folder (raw
       inputs are immutable and hold the ID by definition).
    2. A pseudonymised experiment (popularity and EASE, one seed) runs with export, tracked in a
       private SQLite store; the chosen user (drawn with ``seed``) gets two events and a cached
       consent record in the online state, two entries in the event stream and a dead letter
       holding their raw ID.
    3. :func:`personalize.privacy.erasure.forget` erases them; :func:`scan` runs before and after.
    """
    quiet_mlflow()
    sample = load_movielens_100k(write_processed=False, sample_users=sample_users)
    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory(prefix="personalize-erasure-") as tmp:
        root = Path(tmp)
        raw = distinctive_raw_files(sample, root / "raw")
        data = root / "data"
        uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        server = EmbeddedRedis(root / "redis").start()
        try:
            with environment(
                PERSONALIZE_DATA_DIR=str(data),
                MLFLOW_TRACKING_URI=uri,
                PERSONALIZE_PSEUDONYM_KEY=secrets.token_hex(32),
                PERSONALIZE_SUPPRESSION_KEY=secrets.token_hex(32),
                PERSONALIZE_CACHE_SECRET=secrets.token_hex(32),
            ):
                config = load_experiment(data=_experiment(raw, server.url, "ml100k-sample"))
                users = sorted(pd.read_csv(raw["users"])[C.USER])
                target, other = (users[i] for i in rng.choice(len(users), size=2, replace=False))
                subject = identify(target, config.data)
                result = run_experiment(config, progress=False, echo=None)
                store = OnlineStore(
                    OnlineSettings(
                        url=server.url, namespace="walk", timeout_seconds=5.0, cache_secret=cache_secret()
                    )
                )
                cached = _online_copies(store, subject, identify(other, config.data), result)
                before = scan(subject.tokens, data, uri, store)
                done = forget(
                    subject, config.data, online=config.online, redis_url=server.url, uri=uri, echo=None
                )
                after = scan(subject.tokens, data, uri, store)
                again = ingest(config.data.model_copy(update={"write_processed": False}))
                held = set(again.interactions[C.USER].astype(str)) | set(again.users[C.USER].astype(str))
                cached_erased = not store.client.exists(cached)
                others_kept = bool(
                    store.client.lrange(store.user_key(identify(other, config.data).stored_id), 0, -1)
                )
        finally:
            server.stop()
    table = _erasure_table(before, after, done)
    numbers = {
        "erasure_sample_users": sample_users,
        "erasure_found_before": len(before),
        "erasure_found_after": len(after),
        "erasure_rows_removed": int(done.data.get("rows_removed", 0)),
        "erasure_runs_rewritten": int(done.runs.get("runs", 0)),
        "erasure_model_action": done.models[0]["action"] if done.models else "none",
        "erasure_left": len(done.left),
        "erasure_reingested_holds_user": bool(held & subject.tokens),
        "erasure_other_user_kept": others_kept,
        "erasure_cached_answer_deleted": cached_erased,
    }
    return ErasureWalkthrough(table, done, before, after, numbers)


def _online_copies(store: OnlineStore, subject: Subject, other: Subject, result) -> str:
    """The person's online state: two events applied and streamed, a consent record, a cached
    answer (keyed, as the served model keys it, by an HMAC of the ID under the serving secret:
    neither the ID nor the pseudonym is in Redis for it), a dead letter with the raw ID; one event
    and one dead letter of another person (which must stay). Returns the cached answer's key."""
    for who, eid in ((subject, "e-1"), (subject, "e-2"), (other, "e-3")):
        event = {"user_id": who.stored_id, "item_id": "50", "event": "view", "timestamp": 5, "event_id": eid}
        store.apply(event)
        store.client.xadd(store.stream, {**event, "timestamp": "5"})
    for who in (subject, other):
        store.client.xadd(
            store.dead, {"raw.user_id": who.user_id, "raw.item_id": "??", "reason": "unknown item"}
        )
    store.set_consent(subject.stored_id, PERSONALISATION, True)
    state = result.extras["export"].state_hash
    key = store.cache_key(state, subject.stored_id, 2, "k3")
    store.client.set(key, json.dumps([{"item_id": 50, "rank": 1, "score": 1.0, "personalised": True}]))
    return key


def _erasure_table(before: pd.DataFrame, after: pd.DataFrame, done: Erasure) -> pd.DataFrame:
    removed = {
        "data folder": f"{done.data.get('rows_removed', 0)} rows in {len(done.data.get('files', {}))} files",
        "MLflow artifacts and models": (
            f"{done.runs.get('rows_removed', 0)} rows in {done.runs.get('artifacts', 0)} artifacts of "
            f"{done.runs.get('runs', 0)} runs; "
            + "; ".join(
                f"{m['registered_model']}: {m['action']}, versions deleted {', '.join(m['deleted_versions'])}"
                for m in done.models
            )
        ),
        "MLflow database": f"store compacted: {done.runs.get('store_compacted')}",
        "Redis": (
            f"{done.online.get('keys_deleted', 0)} keys, "
            f"{sum(done.online.get('stream_entries_deleted', {}).values())} stream entries"
        ),
    }
    rows = []
    for name, what in removed.items():
        b, a = before[before["store"] == name], after[after["store"] == name]
        rows.append(
            {
                "store": name,
                "copies found before (raw ID / pseudonym)": (
                    f"{(b['token'] == 'raw ID').sum()} / {(b['token'] == 'pseudonym').sum()}"
                ),
                "removed by forget": what,
                "found after": len(a),
            }
        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------ findings


def privacy_findings(
    enumerated: pd.DataFrame,
    k: pd.DataFrame,
    effect: ConsentEffect,
    erased: ErasureWalkthrough,
    small: int = SMALL_GROUP,
) -> Findings:
    """Notebook 07's privacy section: the enumeration attack, k before and after coarsening,
    what consent changed, and the erasure scan."""
    f = Findings("What we found")
    plain, keyed = enumerated.iloc[0], enumerated.iloc[1]
    f.add(
        f"A plain SHA-256 of the user IDs is no pseudonym: enumerating {int(plain['candidates tried']):,} "
        f"candidate IDs recovered {int(plain['recovered'])} of {int(plain['ids'])} users in "
        f"{plain['seconds']:.3f} s; the same attack on the HMAC-SHA256 pseudonyms recovered "
        f"{int(keyed['recovered'])}.",
        hash_ids=int(plain["ids"]),
        hash_recovered=int(plain["recovered"]),
        hmac_recovered=int(keyed["recovered"]),
    )
    first, last = k.iloc[0], k.iloc[-1]
    below = f"users in groups < {small}"
    f.add(
        f"Over {first['quasi-identifiers']}, MovieLens-100K's users are {int(first['k'])}-anonymous: "
        f"{int(first['unique users'])} users are unique and {int(first[below])} users are in groups "
        f"smaller than {small}. Coarsened as `{last['coarsening']}` ({last['quasi-identifiers']}), k is "
        f"{int(last['k'])} and {int(last[below])} users remain in groups smaller than {small} "
        "(k of each coarsening in the table, in order: " + ", ".join(str(int(v)) for v in k["k"]) + ").",
        k_before=int(first["k"]),
        unique_before=int(first["unique users"]),
        small_users_before=int(first[below]),
        k_after=int(last["k"]),
        small_users_after=int(last[below]),
    )
    n = effect.numbers
    f.add(
        f"With the generated consent table, {n['no_training_users']} of {n['consent_users']} users had no "
        f"training consent: their {n['no_consent_interactions']} interactions were left out at ingestion "
        f"(counted as no consent, not quarantine). {n['no_personalisation_users']} trained users have no "
        "personalisation consent; the served model answers them "
        + (
            "with exactly the list of an unknown user"
            if n["withheld_same_as_unknown"]
            else "non-personalised"
        )
        + ", flagged `consent` false, while a consenting user gets a personalised list.",
        **{k_: v for k_, v in n.items() if not isinstance(v, bool)},
    )
    e = erased.numbers
    f.add(
        f"Erasure on a pseudonymised run of {e['erasure_sample_users']} users with export and online state: "
        f"a scan of every store found the person's raw ID or pseudonym in {e['erasure_found_before']} places "
        f"(files, database, Redis keys) before `forget` and in {e['erasure_found_after']} after; forget "
        f"removed {e['erasure_rows_removed']} rows of derived data, "
        f"rewrote {e['erasure_runs_rewritten']} runs' artifacts and the champion was "
        f"{e['erasure_model_action']}. The next ingestion of the raw files "
        + ("still holds them." if e["erasure_reingested_holds_user"] else "suppresses them.")
        + " The served model's cached answer, keyed by an HMAC of the ID under the serving secret (so "
        + "no scan of Redis can find it by the ID), was "
        + ("deleted." if e["erasure_cached_answer_deleted"] else "left behind.")
        + " Aggregate metrics logged before the erasure remain as logged.",
        erasure_cached_answer_deleted=e["erasure_cached_answer_deleted"],
        erasure_found_before=e["erasure_found_before"],
        erasure_found_after=e["erasure_found_after"],
        erasure_rows_removed=e["erasure_rows_removed"],
        erasure_runs_rewritten=e["erasure_runs_rewritten"],
    )
    return f
