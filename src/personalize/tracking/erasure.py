"""Finding and erasing one person's rows in MLflow: run artifacts, registered model versions and
their logged models (the MLflow side of ``personalize subject access`` / ``forget``).

(One module: runs, versions and logged models are matched and rewritten by the same value
matching and file rewriting below, which access and forget must apply identically.)

A person is found by their **tokens**: the raw user ID and, with pseudonymisation on, its
pseudonym. A value *holds* a token when it equals it, or when a text value (a JSON record, a raw
input line, a Markdown row, a message) split at separators (whitespace, ``, ; | : " ' = ( ) [ ] { }``)
has a piece equal to it; in a table with a ``user_id`` column, that column is compared exactly and
the text columns are split, other numeric columns are not compared (an item with the number of a
numeric user ID is not that user).

Which run artifacts are read: every artifact declared per-user (:mod:`personalize.tracking.
artifacts`) or declared by no module is read and rewritten by its format; one declared free of
per-user data is not (a numeric ID's number in an aggregate table is not the person), unless its
bytes hold one of the person's longer IDs (:data:`MIN_BYTES_TOKEN` characters or more: a
pseudonym, a distinctive string ID), in which case the declaration was wrong: it is rewritten all
the same and named (:attr:`FileErasure.declared_free`).

Everything goes through MLflow's client and artifact repository API (download, re-log to the same
path, ``delete_artifacts``), so it works on a local store and against a tracking server alike.
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from personalize.core import columns as C
from personalize.tracking import artifacts
from personalize.tracking import curve as _curve  # noqa: F401 - imported for their artifact declarations
from personalize.tracking import replay as _replay  # noqa: F401
from personalize.tracking import runs as _runs  # noqa: F401
from personalize.tracking import segments as _segments  # noqa: F401
from personalize.tracking import tuning as _tuning  # noqa: F401
from personalize.tracking.store import KIND_TAG, _client, tracking_uri

ERASURE_TAG = "privacy.erasure"
NOTE_TAG = "privacy.erasure.note"
NOTE = (
    "per-user artifacts were rewritten without erased users; aggregate metrics computed before the "
    "erasure remain as logged"
)
TABLE_SUFFIXES = {".parquet", ".csv"}
TEXT_SUFFIXES = {".md", ".txt", ".yaml", ".yml", ".jsonl", ".json", ".log", ".html"}
_SPLIT = re.compile(r"[\s,;|:\"'=()\[\]{}]+")


# -------------------------------------------------------------------------------- matching


def text_holds(text: str, tokens: Iterable[str]) -> bool:
    """True when ``text`` is one of ``tokens`` or has a separator-delimited piece that is (module doc)."""
    tokens = set(tokens)
    if text in tokens:
        return True
    if not any(t in text for t in tokens):
        return False
    return bool(tokens.intersection(_SPLIT.split(text)))


def frame_mask(frame: pd.DataFrame, tokens: Iterable[str]) -> pd.Series:
    """Rows of ``frame`` (index levels included) holding one of ``tokens`` (module doc)."""
    tokens = set(tokens)
    flat = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    mask = pd.Series(False, index=range(len(flat)))
    has_user = C.USER in flat.columns
    for col in flat.columns:
        values = flat[col]
        if col == C.USER:
            mask |= values.map(_as_text).isin(tokens).to_numpy()
        elif values.dtype == object or pd.api.types.is_string_dtype(values):
            mask |= values.map(lambda v: isinstance(v, str) and text_holds(v, tokens)).to_numpy()
        elif (
            not has_user and pd.api.types.is_integer_dtype(values) and not pd.api.types.is_bool_dtype(values)
        ):
            mask |= values.map(_as_text).isin(tokens).to_numpy()
    return pd.Series(mask.to_numpy(), index=frame.index)


def _as_text(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def prune_json(value: Any, tokens: set[str]) -> tuple[Any, int]:
    """``value`` without the list elements and mapping entries holding a token (key or value);
    returns (pruned value, entries removed)."""
    if isinstance(value, dict):
        out, removed = {}, 0
        for k, v in value.items():
            if text_holds(str(k), tokens) or (isinstance(v, str | int) and text_holds(_as_text(v), tokens)):
                removed += 1
                continue
            out[k], n = prune_json(v, tokens)
            removed += n
        return out, removed
    if isinstance(value, list):
        out_list, removed = [], 0
        for v in value:
            if isinstance(v, str | int) and not isinstance(v, bool) and text_holds(_as_text(v), tokens):
                removed += 1
                continue
            if isinstance(v, dict | list) and _json_holds(v, tokens) and _is_record(v):
                removed += 1
                continue
            pruned, n = prune_json(v, tokens)
            out_list.append(pruned)
            removed += n
        return out_list, removed
    return value, 0


def _is_record(value: Any) -> bool:
    """A flat dict or list (one record of a person), as opposed to a nested document."""
    items = value.values() if isinstance(value, dict) else value
    return all(not isinstance(v, dict | list) for v in items)


def _json_holds(value: Any, tokens: set[str]) -> bool:
    return text_holds(json.dumps(value, default=str), tokens)


@dataclass
class FileErasure:
    """One file seen: the rows (or lines, or JSON entries) holding the person."""

    path: str
    removed: int = 0
    rows: list[dict[str, Any]] = field(default_factory=list)  # what was found (for access)
    unrewritable: bool = False  # the bytes hold a token but the format cannot be rewritten
    declared_free: bool = False  # declared free of per-user data, yet it held the person


def inspect_file(path: Path, tokens: set[str], rewrite: bool, label: str | None = None) -> FileErasure | None:
    """Find the person in one file (Parquet and CSV by rows, JSON by entries, other text by lines,
    anything else by its bytes); with ``rewrite``, write it back without them (Parquet keeps its
    schema metadata). None when the file does not hold them."""
    label = label or str(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        frame = table.to_pandas()
        mask = frame_mask(frame, tokens)
        if not mask.any():
            return None
        found = FileErasure(label, int(mask.sum()), _records(frame.loc[mask]))
        if rewrite:
            pq.write_table(table.filter(pa.array(~mask.to_numpy())), path)
        return found
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError):
            return _inspect_lines(path, tokens, rewrite, label)
        mask = frame_mask(frame, tokens)
        if not mask.any():
            return None
        found = FileErasure(label, int(mask.sum()), _records(frame.loc[mask]))
        if rewrite:
            frame.loc[~mask].to_csv(path, index=False)
        return found
    if suffix == ".json":
        text = _read_text(path)
        if text is None or not any(t in text for t in tokens):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return _inspect_lines(path, tokens, rewrite, label)
        pruned, removed = prune_json(value, tokens)
        if _json_holds(pruned, tokens):
            return FileErasure(label, removed, [], unrewritable=True)
        found = FileErasure(label, removed, [{"json": value}])
        if rewrite:
            path.write_text(json.dumps(pruned, indent=2, default=str))
        return found
    if suffix in TEXT_SUFFIXES or _read_text(path) is not None:
        return _inspect_lines(path, tokens, rewrite, label)
    return FileErasure(label, unrewritable=True) if _bytes_hold(path, tokens) else None


def _inspect_lines(path: Path, tokens: set[str], rewrite: bool, label: str) -> FileErasure | None:
    text = _read_text(path)
    if text is None:
        return FileErasure(label, unrewritable=True) if _bytes_hold(path, tokens) else None
    lines = text.splitlines(keepends=True)
    hit = [line for line in lines if text_holds(line.rstrip("\n"), tokens)]
    if not hit:
        return None
    found = FileErasure(label, len(hit), [{"line": line.rstrip("\n")} for line in hit])
    if rewrite:
        path.write_text("".join(line for line in lines if not text_holds(line.rstrip("\n"), tokens)))
    return found


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, ValueError):
        return None


ENCODINGS = ("utf-8", "utf-16-le", "utf-32-le")  # NumPy stores strings as UTF-32


MIN_BYTES_TOKEN = 8  # shorter IDs (e.g. MovieLens' 1..943) occur by chance in any binary file


def _bytes_hold(path: Path, tokens: set[str]) -> bool:
    """The file's bytes hold a token of at least :data:`MIN_BYTES_TOKEN` characters in UTF-8,
    UTF-16 or UTF-32 (a binary file cannot be decoded into values; pseudonyms are 34 characters)."""
    data = path.read_bytes()
    return any(t.encode(enc) in data for t in tokens if len(t) >= MIN_BYTES_TOKEN for enc in ENCODINGS)


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    flat = frame.reset_index() if not isinstance(frame.index, pd.RangeIndex) else frame
    return json.loads(flat.to_json(orient="records", date_format="iso", default_handler=str))


# ------------------------------------------------------------------------------------ runs


@dataclass
class RunFinding:
    """A run whose artifacts hold the person, and what each file held."""

    run_id: str
    run_name: str
    experiment: str
    kind: str
    files: list[FileErasure]
    params_or_tags: list[str] = field(default_factory=list)  # keys whose values hold a token

    def to_dict(self, rows: bool = False) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "run_name": self.run_name,
            "experiment": self.experiment,
            "kind": self.kind,
            "artifacts": {
                f.path: ({"rows_removed": f.removed} if not rows else {"rows": f.rows})
                | ({"unrewritable": True} if f.unrewritable else {})
                | ({"declared_free_of_per_user_data": True} if f.declared_free else {})
                for f in self.files
            },
            **({"params_or_tags": self.params_or_tags} if self.params_or_tags else {}),
        }


def _all_runs(client) -> Iterator[tuple[Any, str]]:
    from mlflow.entities import ViewType

    experiments = client.search_experiments(view_type=ViewType.ALL)
    names = {e.experiment_id: e.name for e in experiments}
    ids = list(names)
    for start in range(0, len(ids), 100):
        token = None
        while True:
            page = client.search_runs(
                ids[start : start + 100], run_view_type=ViewType.ALL, max_results=1000, page_token=token
            )
            for run in page:
                yield run, names.get(run.info.experiment_id, run.info.experiment_id)
            token = page.token
            if not token:
                break


def run_findings(
    tokens: Iterable[str], uri: str | None = None, *, rewrite: bool = False, entry: str | None = None
) -> list[RunFinding]:
    """Every run whose artifacts (or params / tags) hold the person. With ``rewrite``, each such
    artifact is downloaded, rewritten without them and logged again to the same path of the same
    run, and the run is tagged ``privacy.erasure=<entry>`` (appended to earlier erasures) and
    ``privacy.erasure.note`` (aggregate metrics computed earlier remain)."""
    tokens = set(tokens)
    client = _client(uri or tracking_uri())
    out = []
    for run, experiment in _all_runs(client):
        run_id = run.info.run_id
        fields = {**{f"param:{k}": v for k, v in run.data.params.items()}}
        fields |= {f"tag:{k}": v for k, v in run.data.tags.items() if k not in (ERASURE_TAG, NOTE_TAG)}
        held = sorted(k for k, v in fields.items() if text_holds(str(v), tokens))
        files = []
        with tempfile.TemporaryDirectory() as tmp:
            if client.list_artifacts(run_id):
                root = Path(client.download_artifacts(run_id, "", tmp))
                for local in sorted(p for p in root.rglob("*") if p.is_file()):
                    rel = local.relative_to(root).as_posix()
                    declared = artifacts.declaration(rel)
                    wrongly_free = False
                    if declared is not None and not declared.per_user:
                        if not _bytes_hold(local, tokens):
                            continue
                        wrongly_free = True
                    found = inspect_file(local, tokens, rewrite, rel)
                    if found is None:
                        if not (wrongly_free or _bytes_hold(local, tokens)):  # wrongly free: known to hold
                            continue
                        # a longer ID inside a value no separator delimits (``u_1f.../2``): found
                        # by its bytes only, so it cannot be rewritten by rows or lines
                        found = FileErasure(rel, unrewritable=True)
                    found.declared_free = wrongly_free
                    files.append(found)
                    if rewrite and not found.unrewritable:
                        folder = str(Path(rel).parent) if "/" in rel else None
                        client.log_artifact(run_id, str(local), folder)
                        found.unrewritable = _bytes_hold(local, tokens)  # a copy the rewrite missed
        if not files and not held:
            continue
        finding = RunFinding(
            run_id, run.info.run_name or "", experiment, run.data.tags.get(KIND_TAG, ""), files, held
        )
        if rewrite and files:
            previous = run.data.tags.get(ERASURE_TAG)
            client.set_tag(run_id, ERASURE_TAG, f"{previous},{entry}" if previous else str(entry))
            client.set_tag(run_id, NOTE_TAG, NOTE)
        out.append(finding)
    return out


# ------------------------------------------------------------------------ model registry


@dataclass
class VersionFinding:
    """A registered model version whose logged model's files hold the person."""

    name: str
    version: str
    aliases: list[str]
    run_id: str
    model_id: str
    tags: dict[str, str]
    files: list[str]
    manifest_info: dict[str, Any] = field(default_factory=dict)  # the state's provenance

    def to_dict(self) -> dict[str, Any]:
        return {
            "registered_model": self.name,
            "version": self.version,
            "aliases": self.aliases,
            "export_run_id": self.run_id,
            "model_id": self.model_id,
            "model": self.tags.get("promotion.model", ""),
            "model_type": self.tags.get("promotion.model_type", ""),
            "files": self.files,
        }


def _logged_model_files(client, model_id: str, tokens: set[str], tmp: Path) -> tuple[list[str], dict]:
    """(files of a logged model holding a token, the state manifest's ``info``)."""
    import mlflow

    logged = client.get_logged_model(model_id)
    local = Path(
        mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(tmp))
    )
    files, info = [], {}
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        rel = path.relative_to(local).as_posix()
        if path.name == "manifest.json" and "state" in rel.split("/"):
            info = json.loads(path.read_text()).get("info", {}) or {}
        if inspect_file(path, tokens, rewrite=False, label=rel) is not None:
            files.append(rel)
    return files, info


def version_findings(tokens: Iterable[str], uri: str | None = None) -> list[VersionFinding]:
    """Every registered model version whose logged model (exported state: ``users.parquet``,
    seen items, the input example...) holds the person."""
    tokens = set(tokens)
    client = _client(uri or tracking_uri())
    out = []
    for model in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for v in client.search_model_versions(f"name = '{model.name}'"):
            model_id = getattr(v, "model_id", None) or str(v.source).removeprefix("models:/")
            with tempfile.TemporaryDirectory() as tmp:
                files, info = _logged_model_files(client, model_id, tokens, Path(tmp))
            if files:
                out.append(
                    VersionFinding(
                        model.name,
                        str(v.version),
                        sorted(aliases.get(str(v.version), [])),
                        v.run_id or "",
                        model_id,
                        dict(v.tags or {}),
                        files,
                        info,
                    )
                )
    return sorted(out, key=lambda f: (f.name, int(f.version)))


def logged_model_findings(tokens: Iterable[str], uri: str | None = None) -> list[str]:
    """IDs of every logged model (registered or not, in any experiment) whose files hold the person."""
    from mlflow.entities import ViewType

    tokens = set(tokens)
    client = _client(uri or tracking_uri())
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    out = []
    if not ids:
        return out
    token = None
    while True:
        page = client.search_logged_models(experiment_ids=ids, max_results=100, page_token=token)
        for logged in page:
            with tempfile.TemporaryDirectory() as tmp:
                files, _ = _logged_model_files(client, logged.model_id, tokens, Path(tmp))
            if files:
                out.append(logged.model_id)
        token = page.token
        if not token:
            break
    return out


def delete_version(name: str, version: str, model_id: str, uri: str | None = None) -> None:
    """Delete a registered model version and its logged model, artifacts included (through the
    artifact repository of the model's location, so a tracking server's store is emptied too)."""
    client = _client(uri or tracking_uri())
    client.delete_model_version(name, version)
    delete_logged_model(model_id, uri)


def delete_logged_model(model_id: str, uri: str | None = None) -> None:
    """Delete a logged model's artifacts and mark it deleted."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    client = _client(uri or tracking_uri())
    logged = client.get_logged_model(model_id)
    get_artifact_repository(logged.artifact_location).delete_artifacts()
    with contextlib.suppress(MlflowException):  # already deleted
        client.delete_logged_model(model_id)


def compact_store(uri: str | None = None) -> bool:
    """A SQLite store rewritten (``VACUUM``) so that rows deleted from it do not linger in its free
    pages; True when done (other stores: False, their database is the server's)."""
    import sqlite3

    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return False
    with sqlite3.connect(uri[len("sqlite:///") :]) as db:
        db.execute("VACUUM")
    return True
