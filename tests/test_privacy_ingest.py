"""Personal data at ingestion: pseudonyms (and why a plain hash is not one), the suppression list,
raw-line redaction, no raw user ID in any output, and k-anonymity of MovieLens-100K's
demographics before and after coarsening."""

from __future__ import annotations

import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from personalize.config.data import DataConfig
from personalize.config.privacy import CoarsenConfig, KeySource
from personalize.core import columns as C
from personalize.core.errors import ConfigError
from personalize.data.ingest import REDACTED, ingest, write_processed
from personalize.data.privacy import Pseudonymiser, SuppressionList
from personalize.data.quasi import coarsen, k_anonymity

KEY = "5f1c9e0a7b3d2e4f6a8c0b1d3e5f7a9c2b4d6e8f0a1c3e5f7b9d1f3a5c7e9b0d"  # test key (hex, 32 bytes)
SUPPRESSION_KEY = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
PREFIX = "cust-8f3a-"  # every raw user ID of the fixture starts so; no pseudonym can ("u_" + hex)
QUASI = [C.AGE, C.GENDER, C.OCCUPATION, C.ZIP]


def raw_id(user: int) -> str:
    return f"{PREFIX}{user:06d}"


# ------------------------------------------------------------------ a plain hash is no pseudonym


def test_a_plain_sha256_of_movielens_user_ids_is_reversed_by_enumeration_but_hmac_pseudonyms_are_not(ml100k):
    ids = [str(u) for u in ml100k.users[C.USER].tolist()]
    assert len(ids) == 943
    hashed = {hashlib.sha256(u.encode()).hexdigest() for u in ids}
    pseudonyms = set(Pseudonymiser(bytes.fromhex(KEY)).many(ids))

    start = time.perf_counter()
    table = {hashlib.sha256(str(c).encode()).hexdigest(): str(c) for c in range(1, 100_001)}
    recovered = {table[h] for h in hashed if h in table}
    seconds = time.perf_counter() - start
    assert recovered == set(ids)  # every one of the 943 users, from their hashes alone
    assert seconds < 2.0, f"enumeration took {seconds:.3f} s"
    print(f"\n943/943 user IDs recovered from plain SHA-256 in {seconds * 1000:.0f} ms")

    # the same enumeration against the pseudonyms: without the key, no candidate matches (neither
    # hashed plainly nor with a guessed key)
    guesses = {"u_" + h[:32] for h in table}
    guesses |= set(Pseudonymiser(b"0" * 32).many(str(c) for c in range(1, 100_001)))
    assert not pseudonyms & guesses
    assert not pseudonyms & set(table)  # nor is a pseudonym any plain hash
    # with the key the mapping is deterministic: the same ID gives the same pseudonym
    assert Pseudonymiser(bytes.fromhex(KEY))("7") == Pseudonymiser(bytes.fromhex(KEY))(7)


# --------------------------------------------------------------------- the fixture (string IDs)


def write_fixture(root: Path, ml100k, n_users: int = 60) -> dict[str, Path]:
    """CSV files with distinctive string user IDs (from MovieLens-100K's first users), a users
    table whose ID column is not the first, and hand-made bad rows and malformed lines."""
    root.mkdir(parents=True, exist_ok=True)
    users = ml100k.users.head(n_users).copy()
    inter = ml100k.interactions[ml100k.interactions[C.USER].isin(users[C.USER])].copy()
    items = ml100k.items[ml100k.items[C.ITEM].isin(inter[C.ITEM])][[C.ITEM, C.TITLE]].copy()
    users[C.USER] = users[C.USER].map(raw_id)
    inter[C.USER] = inter[C.USER].map(raw_id)
    inter[C.TIMESTAMP] = inter[C.TIMESTAMP].astype("int64") // 10**9
    first, second = raw_id(1), raw_id(2)
    item = int(inter[C.ITEM].iloc[0])

    users_csv = io.StringIO()
    users[[C.AGE, C.USER, C.GENDER, C.OCCUPATION, C.ZIP]].astype({C.AGE: "Int64"}).to_csv(
        users_csv, index=False
    )
    users_text = users_csv.getvalue()
    users_text += f"55,{first},M,writer,99999\n"  # the same ID defined again, other attributes
    users_text += f"{raw_id(3)}\n"  # too few fields: the ID is not where user_id belongs
    users_text += f"40,{raw_id(4)},F,artist,12345,extra\n"  # too many fields, the ID in its place
    inter_csv = io.StringIO()
    inter[[C.USER, C.ITEM, C.RATING, C.TIMESTAMP]].to_csv(inter_csv, index=False)
    inter_text = inter_csv.getvalue()
    inter_text += f"{first},{item},4,881250949,oops\n"  # ragged, the user field in place
    inter_text += f'"{second},{item}",3,881250949\n'  # a quote: the user field cannot be located
    inter_text += f"{raw_id(999999)},{item},4,881250949\n"  # a user not in the users table
    inter_text += f"{first},{item},banana,881250949\n"  # unparseable rating
    inter_text += f"{first},{item},4\n"  # too few fields, the user field in place
    inter_text += f" {raw_id(5)},{item},2,881250951\n"  # user 5 written a second way (a space)
    paths = {
        "users": root / "users.csv",
        "interactions": root / "interactions.csv",
        "items": root / "items.csv",
    }
    paths["users"].write_text(users_text)
    paths["interactions"].write_text(inter_text)
    items.to_csv(paths["items"], index=False)
    return paths


def data_block(paths: dict[str, Path], **privacy) -> dict:
    return {
        "source": "files",
        "name": "customers",
        "interactions": {"path": str(paths["interactions"])},
        "users": {"path": str(paths["users"])},
        "items": {"path": str(paths["items"])},
        "write_processed": False,
        "privacy": {"pseudonymise": True, **privacy},
    }


def raw_ids(paths: dict[str, Path]) -> set[str]:
    """Every user ID written in the raw files (hand-made lines included)."""
    import re

    found: set[str] = set()
    for path in paths.values():
        found |= set(re.findall(rf"{PREFIX}\d{{6}}", path.read_text()))
    return found


def decoded(path: Path) -> str:
    """A file's content as text: Parquet through pandas (every value), NumPy archives through
    NumPy, anything else as its bytes (UTF-8, undecodable bytes replaced)."""
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
        return " ".join(map(str, frame.columns)) + "\n" + frame.astype(str).to_csv(index=False)
    if suffix in (".npz", ".npy"):
        loaded = np.load(path, allow_pickle=True)
        arrays = [loaded[k] for k in loaded.files] if suffix == ".npz" else [loaded]
        return "\n".join(" ".join(map(str, a.ravel().tolist())) for a in arrays)
    return path.read_bytes().decode("utf-8", errors="replace")


def leaks(folder: Path, needles: set[str]) -> list[str]:
    """``file: needle`` for every needle found in the decoded contents of the folder's files."""
    out = []
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for path in files:
        text = decoded(path)
        if path.suffix.lower() not in (".parquet", ".pq", ".npz", ".npy"):
            head = path.read_bytes()[:4]
            # compressed containers cannot be scanned as bytes: they must be a decoded kind
            assert head[:2] != b"\x1f\x8b" and head != b"PK\x03\x04", f"{path}: compressed, not scanned"
        out += [f"{path}: {n}" for n in needles if n in text]
    return out


def dataset_text(dataset) -> str:
    """Every value the Dataset holds, as text (tables, quarantine, the reports)."""
    parts = [
        t.astype(str).to_csv(index=False)
        for t in (dataset.interactions, dataset.users, dataset.items, dataset.quarantine)
    ]
    parts.append(json.dumps(dataset.report.to_dict(), default=str))
    parts.append(json.dumps(dataset.report.ids.to_dict(), default=str))
    parts.append(json.dumps(dataset.report.merges, default=str))
    parts.append(json.dumps(dataset.report.k_anonymity, default=str))
    parts.append(dataset.report.summary().to_markdown() + dataset.report.ids.summary().to_markdown())
    return "\n".join(parts)


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", KEY)
    monkeypatch.delenv("PERSONALIZE_SUPPRESSION_KEY", raising=False)


# ---------------------------------------------------------------------------- pseudonymisation


def test_pseudonymised_ingestion_leaves_no_raw_user_id_in_the_dataset_or_processed_files(
    tmp_path, ml100k, keyed, monkeypatch
):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    paths = write_fixture(tmp_path / "raw", ml100k)
    needles = raw_ids(paths) | {PREFIX}
    assert len(needles) == 60 + 1 + 1  # the 60 users, one unknown to the users table, the prefix
    dataset = ingest(DataConfig(**data_block(paths)))
    text = dataset_text(dataset)
    assert not [n for n in needles if n in text]

    pseudo = Pseudonymiser(bytes.fromhex(KEY))
    assert dataset.report.pseudonymised
    assert set(dataset.users[C.USER]) == {pseudo(raw_id(u)) for u in range(1, 61)}
    assert set(dataset.interactions[C.USER]) <= set(dataset.users[C.USER])
    q = dataset.quarantine
    # the quarantine keeps every bad row, with pseudonyms in its parsed values, details and raw lines
    assert len(q) == 8
    lines = [r for r in q["raw"] if r]
    assert len(lines) == 5  # the five malformed lines
    assert sum(r == REDACTED for r in lines) == 2  # the quoted line and the users line without its field
    assert any(r.startswith(pseudo(raw_id(1)) + ",") and r.endswith(",oops") for r in lines)
    assert any(r.startswith("40," + pseudo(raw_id(4)) + ",F,artist") for r in lines)
    assert any(pseudo(raw_id(999999)) in d for d in q["detail"])  # "user_id '<pseudonym>' is not in ..."
    assert any(pseudo(raw_id(1)) in d for d in q["detail"])  # "defined twice" names the pseudonym
    # the ID report names the user written two ways by pseudonym only
    assert dataset.report.ids.merged_spellings["user"] == [[pseudo(raw_id(5)), "1 other spelling(s)"]]
    values = [json.loads(v) for v in q[C.Q_VALUES] if v]
    assert values and all(v[C.USER].startswith("u_") for v in values)

    written = write_processed(dataset)
    assert (written.processed_path / "quarantine.parquet").exists()
    assert leaks(written.processed_path, needles) == []
    assert leaks(written.processed_path, {KEY, KEY.upper()}) == []


def test_a_raw_user_id_left_in_the_quarantine_is_found_by_the_scan(tmp_path, ml100k, keyed, monkeypatch):
    """The scan is not vacuous: one raw ID put back into one quarantine line is caught."""
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    paths = write_fixture(tmp_path / "raw", ml100k)
    needles = raw_ids(paths)
    dataset = ingest(DataConfig(**data_block(paths)))
    q = dataset.quarantine.copy()
    at = int(np.flatnonzero(q["raw"].str.endswith(",oops"))[0])
    q.loc[at, "raw"] = f"{raw_id(1)},1,4,881250949,oops"  # as if that line had not been pseudonymised
    broken = type(dataset)(**{**dataset.__dict__, "quarantine": q})
    written = write_processed(broken, root=tmp_path / "scan")
    assert leaks(written.processed_path, needles) == [
        f"{written.processed_path / 'quarantine.parquet'}: {raw_id(1)}"
    ]


def test_a_pseudonymised_run_leaves_no_raw_user_id_in_mlflow_or_the_exported_model(
    tmp_path, ml100k, keyed, monkeypatch, tracking_store
):
    from personalize.recipe import load_experiment, run_experiment

    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    paths = write_fixture(tmp_path / "raw", ml100k)
    needles = raw_ids(paths) | {PREFIX}
    block = {**data_block(paths), "write_processed": True}
    config = load_experiment(
        data={
            "name": "pseudonymised_run",
            "seeds": [0],
            "data": block,
            "models": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 100}}],
            "export": {"enabled": True, "registered_model": "pseudonymised-recommender"},
        }
    )
    result = run_experiment(config, track=True, progress=False, echo=None)
    assert result.extras.get("export") is not None
    store = tmp_path / "mlruns"
    db = store / "mlflow.db"
    assert not [n for n in needles if n.encode() in db.read_bytes()]
    artifacts = store / "artifacts"
    assert any(p.suffix == ".parquet" for p in artifacts.rglob("*"))  # splits, recommendations, ...
    assert any(p.name == "MLmodel" for p in artifacts.rglob("*"))  # the exported model's files
    assert leaks(artifacts, needles) == []
    # the scan reads where user IDs live: the pseudonyms are there (splits, the exported state)
    pseudonyms = {Pseudonymiser(bytes.fromhex(KEY))(u) for u in raw_ids(paths)}
    holding = {line.split(": ")[0] for line in leaks(artifacts, pseudonyms)}
    assert any("split" in f for f in holding) and any(f.endswith(".parquet") for f in holding)
    print(f"\n{len(holding)} artifact files hold pseudonyms, none a raw ID")
    assert leaks(tmp_path / "data", needles) == []  # data/processed and any other derived folder
    assert leaks(store, {KEY, KEY.upper()}) == [] and KEY.encode() not in db.read_bytes()


def test_pseudonymisation_without_a_key_is_a_clear_config_error(tmp_path, ml100k, monkeypatch):
    monkeypatch.delenv("PERSONALIZE_PSEUDONYM_KEY", raising=False)
    paths = write_fixture(tmp_path / "raw", ml100k, n_users=5)
    with pytest.raises(ConfigError, match="PERSONALIZE_PSEUDONYM_KEY"):
        ingest(DataConfig(**data_block(paths)))
    # a key file is the other way; its value never shows in an error
    key_file = tmp_path / "short.key"
    key_file.write_text("tooshort")
    block = data_block(paths, key={"env": "PERSONALIZE_PSEUDONYM_KEY", "file": str(key_file)})
    with pytest.raises(ConfigError, match="shorter than 16 bytes") as err:
        ingest(DataConfig(**block))
    assert "tooshort" not in str(err.value)
    # MovieLens-100K (public) needs no key: pseudonymisation is off by default
    assert not DataConfig().privacy.pseudonymise


# --------------------------------------------------------------------------------- suppression


def test_suppressed_users_appear_nowhere_and_are_counted(tmp_path, ml100k, keyed, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    paths = write_fixture(tmp_path / "raw", ml100k)
    listed = SuppressionList.load(
        Path("data/privacy/suppression.json"), KeySource(env="PERSONALIZE_SUPPRESSION_KEY")
    )
    listed.add(raw_id(1))  # user 1: events, a second definition, a ragged and a short line
    listed.add(raw_id(3))  # user 3: events and the users line where the ID is out of place
    entries = Path(tmp_path / "data" / "privacy" / "suppression.json").read_text()
    assert PREFIX not in entries  # the list holds keyed digests only

    dataset = ingest(DataConfig(**data_block(paths, pseudonymise=False)))
    ml_events = ml100k.interactions[C.USER].value_counts()
    gone = {raw_id(1), raw_id(3)}
    text = dataset_text(dataset)
    assert not [g for g in gone if g in text]
    assert raw_id(2) in text  # others stay (pseudonymisation is off in this run)
    reps = dataset.report.tables
    # users table: rows of users 1 and 3, the second definition of 1, the line holding 3
    assert reps["users"].suppressed == 4
    # interactions: their events plus user 1's ragged, unparseable-rating and short lines
    assert reps["interactions"].suppressed == int(ml_events[1] + ml_events[3]) + 3
    for rep in reps.values():
        assert rep.accepted + rep.quarantined + rep.suppressed == rep.input_rows
    summary = dataset.report.summary().set_index("table")
    assert summary.loc["interactions", "suppressed"] == reps["interactions"].suppressed
    assert "no_consent" in summary.columns and "k_anonymity" in summary.columns
    # and with pseudonyms on, neither the raw IDs nor their pseudonyms appear
    pseudo = Pseudonymiser(bytes.fromhex(KEY))
    hidden = ingest(DataConfig(**data_block(paths)))
    text = dataset_text(hidden)
    assert not [g for g in gone | {pseudo(g) for g in gone} if g in text]
    assert pseudo(raw_id(2)) in text


# ------------------------------------------------------------------------------ k-anonymity


def test_movielens_demographics_are_not_k_anonymous_until_coarsened(ml100k):
    users = ml100k.users
    k, groups = k_anonymity(users, QUASI)
    assert k == 1 and int(groups["users"].sum()) == 943
    assert int((groups["users"] == 1).sum()) == 929  # 929 of 943 users are unique on the four
    banded = coarsen(users, CoarsenConfig(age_band_years=10, zip_digits=1))
    assert sorted(banded[C.AGE].dropna().unique())[:3] == [0, 10, 20]
    assert banded[C.ZIP].str.len().max() == 1
    k10, g10 = k_anonymity(banded, QUASI)
    assert k10 == 1 and int((g10["users"] == 1).sum()) == 339  # still 339 unique users
    coarse = coarsen(users, CoarsenConfig(age_band_years=25, zip_digits=0, drop=[C.OCCUPATION]))
    assert list(coarse.columns) == [C.USER, C.AGE, C.GENDER]
    k25, g25 = k_anonymity(coarse, QUASI)
    assert (k25, len(g25)) == (34, 6)
    print(f"\nML-100K k over {QUASI}: {k}; 10-year bands + 1 zip digit: {k10}; 25-year bands, gender: {k25}")
    with pytest.raises(ConfigError, match="drop"):
        coarsen(users[[C.USER, C.GENDER]], CoarsenConfig(drop=[C.OCCUPATION]))


def test_ingestion_coarsens_the_users_table_and_reports_k(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    privacy = {"coarsen": {"age_band_years": 25, "zip_digits": 0, "drop": [C.OCCUPATION]}, "k_target": 5}
    dataset = ingest(DataConfig(write_processed=True, privacy=privacy))
    assert list(dataset.users.columns) == [C.USER, C.AGE, C.GENDER]
    k = dataset.report.k_anonymity
    assert (k["before"], k["after"], k["met"], k["users"]) == (1, 34, True, 943)
    assert k["quasi_identifiers"] == [C.AGE, C.GENDER]
    assert dataset.report.summary().set_index("table").loc["users", "k_anonymity"] == (
        "k 1 -> 34 over age, gender (target 5: met)"
    )
    written = pd.read_parquet(dataset.processed_path / "users.parquet")
    assert C.ZIP not in written.columns and set(written[C.AGE].dropna()) <= {0, 25, 50}
    report = json.loads((dataset.processed_path / "report.json").read_text())
    assert report["k_anonymity"]["after"] == 34 and report["pseudonymised"] is False
