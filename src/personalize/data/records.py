"""The record of processing and the notice to end users, both generated from one experiment config.

(One module: both texts are written from the same reading of the config below: data categories,
purposes, keys and stores.)

Two Markdown texts, from the same :class:`~personalize.config.experiment.ExperimentConfig`:

- :func:`record_of_processing`: for the operator and an auditor. Controller, data categories,
  purposes, legal basis, retention, pseudonymisation (which environment variable or key file holds
  the key: names and paths only, never a value), the suppression list, consent handling, and every
  place a copy of personal data lives (processed data, the MLflow store, exported models, the online
  store) with the command that erases a person from it.
- :func:`privacy_notice`: for the people whose data it is, in plain words: what is collected, why,
  for how long, and how to ask for a copy, for erasure or to withdraw consent.

**Data categories** come from the configured data: the header of each configured file (the embedded
MovieLens-100K files for ``source: movielens-100k``), mapped to standard column names through the
table's ``columns:``; only the header line (or the Parquet schema) is read. A user attribute is
marked as a quasi-identifier when it is in ``data.privacy.quasi_identifiers``, and its coarsening
(``data.privacy.coarsen``) is stated.

**No secret in the text.** Keys appear by the name of their environment variable or key file. A URL
(tracking URI, Redis URL) is shown without its password: ``scheme://user:secret@host`` becomes
``scheme://user:***@host``.

Both texts are logged with every tracked experiment run as ``privacy/record.md`` and
``privacy/notice.md`` (:data:`RECORD_ARTIFACT`, :data:`NOTICE_ARTIFACT`); ``personalize privacy
record EXPERIMENT`` writes them to a folder.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from personalize.config.data import DataConfig, TableSource
from personalize.config.experiment import ExperimentConfig
from personalize.config.privacy import KeySource
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data.ingest import file_config
from personalize.data.movielens import NAME as ML100K
from personalize.data.readers import resolve_path

RECORD_ARTIFACT = "privacy/record.md"
NOTICE_ARTIFACT = "privacy/notice.md"
FORGET = "personalize subject forget USER --experiment EXPERIMENT"
ACCESS = "personalize subject access USER --experiment EXPERIMENT"

#: what a standard user attribute is, in words
_USER_ATTRIBUTES = {
    C.AGE: "age (years)",
    C.GENDER: "gender",
    C.OCCUPATION: "occupation",
    C.ZIP: "postal (zip) code",
    C.SEGMENT: "segment (a group of similar users)",
}
_PLAIN_ATTRIBUTES = {
    C.AGE: "your age",
    C.GENDER: "your gender",
    C.OCCUPATION: "your occupation",
    C.ZIP: "your postal code",
    C.SEGMENT: "the group of similar users you belong to",
}
_ITEM_ATTRIBUTES = {C.TITLE: "title", C.YEAR: "year", C.GENRES: "genres"}


@dataclass(frozen=True)
class Category:
    """One data category: the table it lives in, the standard column, what it is, and notes
    (quasi-identifier, coarsening, pseudonymisation)."""

    table: str
    column: str
    description: str
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Store:
    """One place copies of personal data live: where, what it holds, how a person is erased."""

    name: str
    location: str
    holds: list[str] = field(default_factory=list)
    erasure: str = ""


# ---------------------------------------------------------------------------- helpers


def redact_url(url: str) -> str:
    """``url`` without its password (``scheme://user:***@host/...``); a URL without one unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparseable URL, not shown)"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def describe_key(source: KeySource) -> str:
    """Where a key comes from, by name: the environment variable, then the key file (never a value)."""
    text = f"environment variable `{source.env}`"
    if source.file is not None:
        text += f", else the key file `{source.file}`"
    return text


def dataset_name(data: DataConfig) -> str:
    """The dataset's name as ingestion sets it: ``data.name``, else ``ml-100k`` or the stem of the
    first interactions file."""
    if data.name:
        return data.name
    if data.source == "movielens-100k":
        return ML100K
    return file_config(data).sources[0].path.stem if data.source == "synthetic" else data.sources[0].path.stem


def file_columns(source: TableSource, role: str) -> list[str]:
    """Standard names of the columns of ``source``'s header (``columns:`` mapped back to standard
    names, RecBole ``name:type`` headers without the type). Reads the header line or the Parquet
    schema only; DataError for a missing or unreadable file."""
    path = resolve_path(source.path)
    if not path.is_file():
        raise DataError(f"{role} file not found: {path} (the record of processing reads its header)")
    fmt = source.resolved_format()
    try:
        if fmt == "parquet":
            import pyarrow.parquet as pq

            names = list(pq.read_schema(path).names)
        else:
            sep = source.separator or {"csv": ",", "tsv": "\t", "recbole": "\t"}[fmt]
            encoding = (
                "utf-8-sig" if source.encoding.lower().replace("_", "-") == "utf-8" else source.encoding
            )
            with path.open(encoding=encoding, newline="") as handle:
                quoting = csv.QUOTE_NONE if fmt == "recbole" else csv.QUOTE_MINIMAL
                names = next(csv.reader(handle, delimiter=sep, quoting=quoting), [])
    except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise DataError(f"{role} file {path}: cannot read its header ({exc})") from None
    if not names:
        raise DataError(f"{role} file {path} is empty: no header to describe")
    if fmt == "recbole":
        names = [n.split(":", 1)[0] for n in names]
    standard = {file_col: std for std, file_col in source.columns.items()}
    return [standard.get(n.strip(), n.strip()) for n in names]


# ---------------------------------------------------------------------------- categories


def data_categories(data: DataConfig) -> list[Category]:
    """Every data category the configured data holds (module doc): user ID and user attributes,
    each interactions source's columns and event types, item data, and the consent table."""
    privacy = data.privacy
    files = file_config(data)
    user_id_note = (
        ("replaced at ingestion by a keyed pseudonym",)
        if privacy.pseudonymise
        else ("stored as it appears in the input (pseudonymisation off)",)
    )
    out = [Category("all tables", C.USER, "user identifier", user_id_note)]
    if files.users is not None:
        for col in file_columns(files.users, "users"):
            if col == C.USER:
                continue
            out.append(
                Category("users", col, _USER_ATTRIBUTES.get(col, f"attribute `{col}`"), _qi(col, data))
            )
    for source in files.sources:
        cols = file_columns(source, "interactions")
        table = f"interactions ({source.label})"
        for col in cols:
            if col == C.USER:
                continue
            out.append(Category(table, col, _interaction_column(col, files)))
        out.append(Category(table, "(events)", event_types(source, cols, data)))
    if files.items is not None:
        cols = [c for c in file_columns(files.items, "items") if c != C.ITEM]
        named = ", ".join(_ITEM_ATTRIBUTES.get(c, c) for c in cols) or "IDs only"
        out.append(Category("items", "(catalogue)", f"item data: {named} (describes items, not people)"))
    if privacy.consent is not None:
        out.append(
            Category(
                "consent",
                "user_id, purpose, granted, timestamp",
                f"consent records per purpose (from `{privacy.consent}`)",
            )
        )
    return out


def _qi(col: str, data: DataConfig) -> tuple[str, ...]:
    privacy = data.privacy
    if col not in privacy.quasi_identifiers:
        return ()
    notes = ["quasi-identifier"]
    if col in privacy.coarsen.drop:
        notes.append("dropped at ingestion (not stored)")
    elif col == C.AGE and privacy.coarsen.age_band_years:
        notes.append(f"coarsened to {privacy.coarsen.age_band_years}-year bands")
    elif col == C.ZIP and privacy.coarsen.zip_digits is not None:
        digits = privacy.coarsen.zip_digits
        notes.append(
            "removed (zip_digits 0)" if digits == 0 else f"coarsened to its first {digits} characters"
        )
    if privacy.k_target:
        notes.append(f"target k = {privacy.k_target}")
    return tuple(notes)


def _interaction_column(col: str, data: DataConfig) -> str:
    if col == C.ITEM:
        return "item the user interacted with"
    if col == C.TIMESTAMP:
        return "time of the interaction"
    if col == C.RATING:
        scale = f" ({data.rating_range[0]:g}-{data.rating_range[1]:g})" if data.rating_range else ""
        return f"rating{scale}"
    if col == C.WEIGHT:
        return "interaction weight"
    if col == C.EVENT:
        return "event type"
    return f"attribute `{col}` (kept as supplied)"


def event_types(source, cols: list[str], data: DataConfig) -> str:
    """The event types of one interactions source, in words."""
    if source.event is not None:
        return f"events of type `{source.event}`"
    if C.EVENT in cols:
        listed = ", ".join(f"`{e}`" for e in data.events) or "as the file names them"
        return f"events, types from the file's event column ({listed})"
    if C.RATING in cols:
        return "ratings with timestamps"
    return "interactions with timestamps"


# ---------------------------------------------------------------------------- stores


def tracking_location(config: ExperimentConfig) -> str:
    """The configured tracking URI (password removed), or the rule that picks one."""
    if config.tracking.uri:
        return f"`{redact_url(config.tracking.uri)}`"
    return "`MLFLOW_TRACKING_URI` when set, else `sqlite:///mlruns/mlflow.db` (artifacts under `mlruns/`)"


def online_location(config: ExperimentConfig) -> str:
    """The configured Redis (password removed), or the embedded default."""
    where = (
        f"`{redact_url(config.online.redis_url)}`"
        if config.online.redis_url
        else "the embedded Redis of `personalize stream server` (data under `data/online/redis/`, its "
        "URL in `data/online/redis.url`)"
    )
    if config.export.online.enabled and config.export.online.url:
        where += f"; the served model reads `{redact_url(config.export.online.url)}`"
    return where + f", key prefix `{config.online.namespace}:`"


def stores(config: ExperimentConfig) -> list[Store]:
    """Every place copies of personal data live for this experiment, with the erasure of a person."""
    data = config.data
    name = dataset_name(data)
    processed = [
        "`interactions.parquet`, `users.parquet`, `items.parquet`: the validated tables",
        "`quarantine.parquet`: rejected rows with their parsed values and raw input lines",
        "`report.json`: counts only",
    ]
    if data.privacy.consent is not None:
        processed.append("`consent.parquet`: the latest consent record per user and purpose")
    processed.append("`profiles/`: per-user profile tables of `personalize segment`")
    if not data.write_processed:
        processed.append("(runs of this experiment do not write here: `write_processed: false`)")
    ns = config.online.namespace
    tracked = [
        f"experiment `{config.tracking.experiment or config.name}`",
        "parent run: `config.yaml`, `data/quarantine.parquet` (raw lines of rejected rows), "
        "`data/audit_flags.parquet` (flagged rows)"
        + (
            ", the split `split/**/{train,valid,test}.parquet` (every interaction)"
            if config.tracking.log_split
            else ""
        ),
        "model runs: "
        + (
            "`recommendations.parquet` (each test user's top-K), "
            if config.tracking.log_recommendations
            else ""
        )
        + "`per_user_metrics.parquet`, `per_user_metrics_valid.parquet`",
        "segmentation runs: `segments/labels.parquet`, `segments/profiles.parquet` (per user)",
        "params and metrics: aggregates over users (no user IDs)",
    ]
    export = config.export
    model = export.model_name(name)
    exported = [
        f"registered model `{model}` (alias `{export.alias}`), "
        + ("exported at the end of each run" if export.enabled else "exported by `personalize export`"),
        "the serving state: each known user's seen items, user factors of factor models",
    ]
    if export.segments:
        exported.append("each known user's segment")
    return [
        Store(
            "Processed data",
            f"`data/processed/{name}/`",
            processed,
            f"`{FORGET}` deletes the user's rows from every table, the quarantine and the profiles, and "
            "adds them to the suppression list so every later ingestion drops them",
        ),
        Store(
            "MLflow tracking store",
            tracking_location(config),
            tracked,
            f"`{FORGET}` rewrites the per-user artifacts of past runs without the user (through MLflow's "
            "artifact API) and tags those runs with the erasure; aggregate metrics computed earlier remain",
        ),
        Store(
            "Exported models",
            f"the MLflow Model Registry of the tracking store, `{model}`",
            exported,
            f"`{FORGET}` re-exports the champion without the user (refitted on the remaining data) and "
            "deletes the older versions holding them",
        ),
        Store(
            "Online store",
            online_location(config),
            [
                f"streams `{ns}:events` (incoming events) and `{ns}:dead` (dead letters)",
                f"per-user state `{ns}:user:<user>` (the newest {config.online.max_recent} events) and "
                f"`{ns}:version:<user>`",
                f"applied event IDs (kept {config.online.id_ttl_seconds} s), cached answers keyed by an "
                f"HMAC of the user ID under the serving secret (kept {config.online.cache_ttl_seconds} s)",
            ],
            f"`{FORGET}` deletes the user's state and cached answers and their entries in both streams",
        ),
    ]


# ---------------------------------------------------------------------------- the texts


def record_of_processing(config: ExperimentConfig) -> str:
    """The record of processing of ``config`` as Markdown (module doc)."""
    data = config.data
    privacy = data.privacy
    rec = privacy.record
    name = dataset_name(data)
    lines = [
        f"# Record of processing: {config.name}",
        "",
        f"Generated from the experiment config `{config.name}` (data `{name}`).",
        "",
        f"- **Controller:** {rec.controller}",
        f"- **Contact for data-subject requests:** {rec.contact}",
        f"- **Legal basis:** {rec.legal_basis}",
        f"- **Retention:** {rec.retention_days} days for processed data and run artifacts",
        "",
        "## Purposes",
        "",
        *[f"- `{purpose}`: {what}" for purpose, what in rec.purposes.items()],
        "",
        "## Data categories",
        "",
        "| Table | Column | What it is | Notes |",
        "|---|---|---|---|",
        *[
            f"| {c.table} | `{c.column}` | {c.description} | {'; '.join(c.notes)} |"
            for c in data_categories(data)
        ],
    ]
    if data.source == "movielens-100k":
        lines += ["", "MovieLens-100K is a public research dataset (GroupLens)."]
    lines += ["", "## Pseudonymisation", ""]
    if privacy.pseudonymise:
        lines += [
            "On: user IDs are replaced at ingestion, before anything is written, by "
            "`u_` + HMAC-SHA256(key, ID) (128 bits). No raw user ID reaches processed data, MLflow, "
            "exported models or the online store; callers of the served model pseudonymise with the key.",
            f"- Key: {describe_key(privacy.key)}. The key is never logged, written or shipped with a model.",
        ]
    else:
        lines += ["Off: user IDs are stored as they appear in the input."]
    lines += [
        "",
        "## Suppression list",
        "",
        f"- File: `{privacy.suppression}` (users who asked to be forgotten; every ingestion drops their "
        "rows before anything is written, quarantine included).",
        "- Entries: HMAC-SHA256 under a key of their own, holding neither the ID nor its pseudonym.",
        f"- Key: {describe_key(privacy.suppression_key)}.",
        "",
        "## Consent",
        "",
    ]
    if privacy.consent is not None:
        lines += [
            f"- Consent table: `{privacy.consent}` (user, purpose, granted, timestamp; the latest record per "
            "user and purpose wins).",
            "- Without `training` consent a user's interactions are left out of training (counted as "
            "`no consent` in the ingestion report).",
            "- Without `personalisation` consent a user gets the non-personalised answer from the exported "
            "model and the online path, flagged in the response. A withdrawal applies at once on the online "
            "path and at the next export for the exported model.",
        ]
    else:
        lines += ["- No consent table configured: every purpose counts as granted for every user."]
        if "consent" in rec.legal_basis.lower():
            lines += [
                "- **Check:** the legal basis names consent but no consent table is configured "
                "(`data.privacy.consent`)."
            ]
    lines += [
        "",
        "## Where copies live",
        "",
        f"Access: `{ACCESS}` writes everything held about a user as one JSON file. Erasure: `{FORGET}` "
        "reaches every store below; raw input files stay as they are and are kept out by the "
        "suppression list.",
    ]
    for store in stores(config):
        lines += ["", f"### {store.name}", "", f"- **Where:** {store.location}"]
        lines += [f"- {h}" for h in store.holds]
        lines += [f"- **Erasure:** {store.erasure}"]
    return "\n".join(lines) + "\n"


def privacy_notice(config: ExperimentConfig) -> str:
    """The plain-language notice for end users (module doc), from the same config as the record."""
    data = config.data
    privacy = data.privacy
    rec = privacy.record
    cats = data_categories(data)
    attributes = [
        _PLAIN_ATTRIBUTES.get(c.column, "your " + c.column.replace("_", " "))
        for c in cats
        if c.table == "users" and "dropped at ingestion (not stored)" not in c.notes
    ]
    interactions = sorted({c.column for c in cats if c.table.startswith("interactions")})
    did = ["which items you looked at, rated or chose"]
    if C.RATING in interactions:
        did = ["the ratings you gave to items"]
    if C.EVENT in interactions:
        did.append("what kind of action it was (for example a view or a purchase)")
    did.append("when each of these happened")
    collected = [*did, *attributes]
    if privacy.consent is not None:
        collected.append("the choices you made about how your data may be used")
    lines = [
        "# How we use your data",
        "",
        f"{rec.controller[:1].upper() + rec.controller[1:]} uses information about you to recommend "
        "items you may like.",
        "",
        "## What we collect",
        "",
        *[f"- {what}" for what in collected],
    ]
    if privacy.pseudonymise:
        lines += [
            "",
            "Before we store anything, we replace your user name or number with a code. "
            "The key to that code is kept separately and never stored with your data.",
        ]
    lines += [
        "",
        "## Why",
        "",
        *[f"- {what[0].upper() + what[1:]}." for what in rec.purposes.values()],
        "",
        f"We rely on: {rec.legal_basis}.",
        "",
        "## How long",
        "",
        f"We keep your data for {rec.retention_days} days, unless you ask us to delete it sooner.",
        "",
        "## Your rights",
        "",
        "- **See your data:** ask us, and we send you everything we hold about you in one file.",
        "- **Have your data deleted:** ask us, and we delete it from every copy we keep, including past "
        "results and the recommendation service, and make sure it is not loaded again. Totals we "
        "calculated earlier over many people stay as they are.",
        "- **Withdraw your consent:** you can say no to each use separately, at any time. If you withdraw "
        "consent to personal recommendations, you get the same recommendations as everyone else; if "
        "you withdraw consent to model training, your data is left out the next time we train.",
        "",
        "## How to ask",
        "",
        f"Contact: {rec.contact}. Tell us your user name or number so we can find your data.",
    ]
    return "\n".join(lines) + "\n"


def write_records(config: ExperimentConfig, folder: Path) -> tuple[Path, Path]:
    """Write ``record.md`` and ``notice.md`` to ``folder`` (created); returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = folder / Path(RECORD_ARTIFACT).name
    notice = folder / Path(NOTICE_ARTIFACT).name
    record.write_text(record_of_processing(config))
    notice.write_text(privacy_notice(config))
    return record, notice
