"""Data-subject rights: ``personalize subject access`` reports everything held about a user, and
``personalize subject forget`` erases them from every store (derived data, Redis state and streams,
MLflow runs and registered models), which a scan of every store then confirms."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import yaml
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core import columns as C
from personalize.data.ingest import ingest
from personalize.data.privacy import Pseudonymiser
from personalize.privacy.subject import identify
from personalize.recipe import load_experiment, run_experiment
from personalize.scoring.online import OnlineSettings, OnlineStore
from personalize.tracking.erasure import frame_mask, inspect_file, prune_json, text_holds

TARGET = "cust-8f3a-000123"
OTHER = "cust-77c1-000456"
PSEUDONYM_KEY = "5e" * 32
SUPPRESSION_KEY = "a7" * 32
NS = "shopns"
MODEL_NAME = "shop-recommender"


# ----------------------------------------------------------------------------- matching


def test_matching_is_by_whole_value_or_separated_piece():
    tokens = {TARGET}
    assert text_holds(TARGET, tokens)
    assert text_holds(f'{{"customer": "{TARGET}", "sku": "9"}}', tokens)
    assert text_holds(f"{TARGET}\t12\t5\t881250949", tokens)
    assert not text_holds(TARGET + "7", tokens) and not text_holds("x" + TARGET, tokens)
    frame = pd.DataFrame({C.USER: [1, 12, 21], C.ITEM: [12, 1, 3], "raw": ["", "", "12,4"]})
    # a numeric user ID: the user column exactly, text split; not the item column
    assert frame_mask(frame, {"12"}).tolist() == [False, True, True]
    pruned, removed = prune_json({"users": [{"user_id": "12", "n": 3}, {"user_id": "4"}], "12": 1}, {"12"})
    assert pruned == {"users": [{"user_id": "4"}]} and removed == 2


# ------------------------------------------------------------------------ the scenario


def _raw_files(folder: Path) -> dict[str, Path]:
    """Interactions and users of 40 customers with distinctive string IDs over 30 items, plus
    a malformed line and an invalid row of the target (quarantined)."""
    rng = np.random.default_rng(7)
    users = [f"cust-{rng.integers(16**4):04x}-{i:06d}" for i in range(40)] + [TARGET, OTHER]
    rows = []
    t0 = 1_600_000_000
    for n, user in enumerate(users):
        items = rng.choice(30, size=12, replace=False)
        for j, item in enumerate(items):
            rows.append((user, f"sku-{item:03d}", int(rng.integers(1, 6)), t0 + n * 1000 + j * 60))
    folder.mkdir(parents=True)
    lines = ["user_id,item_id,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in rows]
    lines.append(f"{TARGET},sku-001,7,{t0}")  # rating out of range: quarantined with its values
    lines.append(f"{TARGET},sku-002,3,{t0},extra,fields")  # malformed: quarantined as a raw line
    (folder / "events.csv").write_text("\n".join(lines) + "\n")
    ages = rng.integers(18, 70, size=len(users))
    (folder / "users.csv").write_text(
        "user_id,age,gender\n"
        + "\n".join(f"{u},{a},{'MF'[k % 2]}" for k, (u, a) in enumerate(zip(users, ages)))
    )
    return {"interactions": folder / "events.csv", "users": folder / "users.csv"}


def _experiment(raw: dict[str, Path], redis_url: str) -> dict:
    return {
        "name": "shop_privacy",
        "seeds": [0],
        "data": {
            "source": "files",
            "name": "shop",
            "interactions": {"path": str(raw["interactions"])},
            "users": {"path": str(raw["users"])},
            "rating_range": [1, 5],
            "privacy": {"pseudonymise": True},
        },
        "models": [{"type": "popularity"}, {"type": "ease", "params": {"l2": 50}}],
        "export": {"enabled": True, "registered_model": MODEL_NAME},
        "online": {"redis_url": redis_url, "namespace": NS},
    }


def _decoded(path: Path) -> str:
    """A file's contents as text: Parquet decoded (values, index and schema metadata), else bytes."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        meta = {
            k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (table.schema.metadata or {}).items()
        }
        return table.to_pandas().reset_index().to_csv() + json.dumps(meta)
    return path.read_bytes().decode("latin-1")


def _scan(data_dir: Path, db: Path, artifacts: Path, store: OnlineStore, tokens: set[str]) -> list[str]:
    """Every place a token is still found: data folder files, the MLflow database, every artifact
    (runs and logged models), every registered model version's files, every Redis key and entry."""
    found = []
    for root in (data_dir, artifacts):
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            text = _decoded(path)
            found += [f"{path}: {t}" for t in tokens if t in text]
    db_bytes = db.read_bytes()
    found += [f"{db}: {t}" for t in tokens if t.encode() in db_bytes]
    client = mlflow.MlflowClient()
    for model in client.search_registered_models():
        for v in client.search_model_versions(f"name = '{model.name}'"):
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=v.source, dst_path=str(db.parent / "dl"))
            )
            for path in (p for p in local.rglob("*") if p.is_file()):
                found += [
                    f"{model.name} v{v.version} {path.name}: {t}" for t in tokens if t in _decoded(path)
                ]
            shutil.rmtree(db.parent / "dl")
    r = store.client
    for key in r.scan_iter("*"):
        kind = r.type(key)
        if kind == "stream":
            values = [json.dumps(f) for _, f in r.xrange(key)]
        elif kind == "list":
            values = r.lrange(key, 0, -1)
        elif kind == "string":
            values = [r.get(key)]
        elif kind == "hash":
            values = [json.dumps(r.hgetall(key))]
        else:
            values = [str(kind)]
        found += [f"redis {key}: {t}" for t in tokens if t in key or any(t in (v or "") for v in values)]
    return found


def _answer(user: str) -> list[dict]:
    model = mlflow.pyfunc.load_model(f"models:/{MODEL_NAME}@champion")
    return [r.model_dump() for r in model.predict([{"user_id": user, "k": 3}])]


def test_access_then_forget_erases_the_user_from_every_store(
    tmp_path, tracking_store, redis_server, monkeypatch
):
    t_start = time.perf_counter()
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(data_dir))
    raw = _raw_files(tmp_path / "raw")  # outside the scanned tree: raw inputs hold the ID by definition
    raw_bytes = {k: p.read_bytes() for k, p in raw.items()}
    spec = _experiment(raw, redis_server.url)
    exp_file = tmp_path / "shop.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    config = load_experiment(data=spec)
    subject = identify(TARGET, config.data)
    pseudonym = Pseudonymiser(bytes.fromhex(PSEUDONYM_KEY))(TARGET)
    assert subject.pseudonym == pseudonym and subject.tokens == {TARGET, pseudonym}
    other = Pseudonymiser(bytes.fromhex(PSEUDONYM_KEY))(OTHER)

    result = run_experiment(config, progress=False, echo=None)
    exported = result.extras["export"]
    users_stored = set(result.dataset.users[C.USER].astype(str))
    served_id = pseudonym if pseudonym in users_stored else TARGET  # what the stores key the user by
    assert _answer(served_id)[0][C.PERSONALISED]  # known before the erasure

    # the user's online state and stream entries (and another user's, which must stay)
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    for uid, eid in ((pseudonym, "e-1"), (pseudonym, "e-2"), (other, "e-3")):
        store.apply({"user_id": uid, "item_id": "sku-004", "event": "view", "timestamp": 5, "event_id": eid})
        store.client.xadd(
            store.stream,
            {"user_id": uid, "item_id": "sku-004", "event": "view", "timestamp": "5", "event_id": eid},
        )
    store.client.xadd(store.dead, {"raw.user_id": TARGET, "raw.item_id": "??", "reason": "unknown item"})
    store.client.xadd(store.dead, {"raw.user_id": OTHER, "raw.item_id": "??", "reason": "unknown item"})
    store.client.set(
        f"{NS}:cache:{exported.state_hash}:{pseudonym}:2:k3", json.dumps([{"user_id": pseudonym}])
    )
    store.client.set(f"{NS}:consent:{pseudonym}", json.dumps({"personalisation": True}))

    runner = CliRunner()
    # ---- access
    out = tmp_path / "access.json"
    res = runner.invoke(app, ["subject", "access", TARGET, "-e", str(exp_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["user_id"] == TARGET and report["pseudonym"] == pseudonym
    assert len(report["events"]) == 12 and {e[C.USER] for e in report["events"]} == {served_id}
    assert len(report["profile"]) == 1 and "age" in report["profile"][0]
    assert len(report["quarantine"]) == 2  # the invalid row and the malformed line
    assert report["online"]["read"] and len(report["online"]["keys"][f"{NS}:user:{pseudonym}"]) == 2
    assert f"{NS}:consent:{pseudonym}" in report["online"]["keys"]
    assert (
        len(report["online"]["streams"][store.stream]) == 2
        and len(report["online"]["streams"][store.dead]) == 1
    )
    kinds = {r["kind"] for r in report["runs"]}
    assert {"experiment", "model"} <= kinds, kinds
    split_rows = [
        row
        for r in report["runs"]
        for path, a in r["artifacts"].items()
        if path.startswith("split/")
        for row in a["rows"]
    ]
    assert len(split_rows) == 12  # train + valid + test of one seed
    assert [(m["registered_model"], m["version"]) for m in report["models"]] == [
        (MODEL_NAME, exported.version)
    ]
    assert report["suppressed"] is False
    # the exported state of another user does not name the target
    assert not any(OTHER in json.dumps(r) or other in json.dumps(r) for r in report["events"])

    # an artifact to put back later, to show the scan catches a single unrewritten copy
    artifacts = Path(tracking_store[len("sqlite:///") :]).parent / "artifacts"
    split_files = sorted(artifacts.rglob("split/*.parquet"))
    keep = next(p for p in split_files if any(t in _decoded(p) for t in subject.tokens))
    kept_copy = tmp_path / "kept.parquet"
    shutil.copy(keep, kept_copy)

    # ---- forget
    res = runner.invoke(app, ["subject", "forget", TARGET, "-e", str(exp_file)])
    assert res.exit_code == 0, res.output
    assert "refit and re-exported" in res.output

    db = Path(tracking_store[len("sqlite:///") :])
    left = _scan(data_dir, db, artifacts, store, subject.tokens)
    assert left == [], left
    # the Redis server's own append-only file is rewritten without them too
    deadline = time.monotonic() + 20
    while store.client.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.2)  # appendfsync everysec
    on_disk = b"".join(p.read_bytes() for p in redis_server.folder.rglob("*.aof"))
    assert on_disk and not [t for t in subject.tokens if t.encode() in on_disk]
    # others are untouched
    assert store.client.lrange(store.user_key(other), 0, -1) and len(store.client.xrange(store.dead)) == 1
    assert len(store.client.xrange(store.stream)) == 1
    interactions = pd.read_parquet(data_dir / "processed" / "shop" / "interactions.parquet")
    assert interactions[C.USER].nunique() == 41
    # the raw inputs are untouched
    assert {k: p.read_bytes() for k, p in raw.items()} == raw_bytes

    # the erasure log: keyed by the suppression digest, counts per store
    log = [json.loads(line) for line in (data_dir / "privacy" / "erasure_log.jsonl").read_text().splitlines()]
    assert len(log) == 1 and len(log[0]["subject"]) == 64
    entry = log[0]
    assert entry["data"]["rows_removed"] >= 12 + 1 + 2
    assert entry["online"]["keys_deleted"] >= 5  # user, version, cache, consent, applied markers
    assert entry["online"]["stream_entries_deleted"] == {store.stream: 2, store.dead: 1}
    assert entry["models"][0]["action"] == "refit and re-exported"
    assert entry["models"][0]["deleted_versions"] == [exported.version]
    assert entry["runs"]["runs"] >= 2 and entry["runs"]["rows_removed"] >= 12
    client = mlflow.MlflowClient()
    tagged = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], f"tags.`privacy.erasure` = '{entry['entry']}'"
    )
    assert len(tagged) == entry["runs"]["runs"]
    assert all("aggregate metrics" in r.data.tags["privacy.erasure.note"] for r in tagged)
    assert all(r.data.metrics for r in tagged if r.data.tags.get("personalize.kind") == "model")

    # the served model treats them as unknown; another user is still known
    assert not any(r[C.PERSONALISED] for r in _answer(served_id))
    assert _answer(other if other in users_stored else OTHER)[0][C.PERSONALISED]

    # the next ingestion of the raw files suppresses the user
    again = ingest(config.data.model_copy(update={"write_processed": False}))
    held = set(again.interactions[C.USER].astype(str)) | set(again.users[C.USER].astype(str))
    assert not held & subject.tokens
    assert not any(t in again.quarantine.to_csv() for t in subject.tokens)

    # leave one artifact unrewritten: the scan finds it
    shutil.copy(kept_copy, keep)
    left = _scan(data_dir, db, artifacts, store, subject.tokens)
    assert left and all(str(keep) in item for item in left), left
    print(f"scenario took {time.perf_counter() - t_start:.1f} s")


def test_forget_needs_the_suppression_key_and_access_reads_no_store_without_one(
    tmp_path, monkeypatch, tracking_store
):
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("PERSONALIZE_SUPPRESSION_KEY", raising=False)
    monkeypatch.delenv("PERSONALIZE_PSEUDONYM_KEY", raising=False)
    exp = tmp_path / "e.yaml"
    exp.write_text(
        yaml.safe_dump(
            {"name": "x", "models": [{"type": "popularity"}], "data": {"privacy": {"pseudonymise": True}}}
        )
    )
    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(exp)])
    assert res.exit_code == 2 and "PERSONALIZE_PSEUDONYM_KEY" in res.output
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(exp)])
    assert res.exit_code == 2 and "PERSONALIZE_SUPPRESSION_KEY" in res.output
    out = tmp_path / "a.json"
    res = CliRunner().invoke(app, ["subject", "access", TARGET, "-e", str(exp), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["events"] == [] and report["runs"] == [] and report["online"]["read"] is False


def test_a_binary_file_holding_the_id_is_reported_not_silently_kept(tmp_path):
    path = tmp_path / "blob.npy"
    np.save(path, np.array([TARGET]))
    found = inspect_file(path, {TARGET}, rewrite=True)
    assert found is not None and found.unrewritable


def test_forget_reaches_profiles_and_segment_labels(tmp_path, tracking_store, redis_server, monkeypatch):
    """A segmentation run writes the profile table to data/processed and logs segment labels and
    profiles as artifacts: access reports the user's segment, forget removes every copy."""
    from personalize.recipe.segments import run_segmentation

    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(data_dir))
    raw = _raw_files(tmp_path / "raw")
    raw["items"] = tmp_path / "raw" / "items.csv"
    genres = ["Action", "Comedy", "Drama"]
    raw["items"].write_text(
        "item_id,title,genres\n"
        + "\n".join(f"sku-{i:03d},Item {i},{genres[i % 3]}|{['Kids', 'Noir'][i % 2]}" for i in range(30))
    )
    spec = _experiment(raw, redis_server.url)
    spec["data"]["items"] = {"path": str(raw["items"])}
    spec["models"] = [{"type": "popularity"}]
    spec["export"] = {"enabled": False}
    spec["segments"] = {
        "clustering": {
            "k": 2,
            "ks": [2],
            "choose_from": [2, 2],
            "seeds": [0, 1],
            "bootstrap": 2,
            "n_init": 1,
        },
        "profile": {"embedding": False},
        "autoencoder": {"enabled": False},
        "classifier": {"first_n": [2], "max_iter": 10},
    }
    exp_file = tmp_path / "shop.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    config = load_experiment(data=spec)
    subject = identify(TARGET, config.data)
    seg = run_segmentation(config, track=True, progress=False, echo=None)
    assert seg.profile_path is not None and any(t in _decoded(seg.profile_path) for t in subject.tokens)

    out = tmp_path / "access.json"
    res = CliRunner().invoke(app, ["subject", "access", TARGET, "-e", str(exp_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert len(report["profiles"]) == 1
    labels = [s for s in report["segments"] if s["file"].startswith("segments/labels")]
    assert len(labels) == 1 and "segment" in labels[0]

    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(exp_file)])
    assert res.exit_code == 0, res.output
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    db = Path(tracking_store[len("sqlite:///") :])
    assert _scan(data_dir, db, db.parent / "artifacts", store, subject.tokens) == []
    assert len(pd.read_parquet(seg.profile_path)) == 41


def test_rebuilding_a_stream_leaves_no_deleted_bytes_and_keeps_the_group(redis_server):
    import redis

    from personalize.privacy.erasure import rebuild_stream

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    ids = [client.xadd("s", {"user_id": f"person-{i:04d}", "n": "x" * 20}) for i in range(40)]
    client.xgroup_create("s", "g", id="0")
    client.xreadgroup("g", "w1", {"s": ">"}, count=30)  # 30 delivered
    client.xack("s", "g", *ids[:10], *ids[12:30])  # 10 and 11 stay pending
    client.xdel("s", ids[5], ids[11])
    rebuild_stream(client, "s")
    assert [sid for sid, _ in client.xrange("s")] == [i for i in ids if i not in (ids[5], ids[11])]
    dump = redis.Redis.from_url(redis_server.url).dump("s")
    assert b"person-0005" not in dump and b"person-0011" not in dump
    pending = [p["message_id"] for p in client.xpending_range("s", "g", "-", "+", 100)]
    assert pending == [ids[10]]  # the pending entry that still exists, and nothing else
    assert client.xinfo_groups("s")[0]["last-delivered-id"] == ids[29]
    fresh = client.xreadgroup("g", "w2", {"s": ">"}, count=100)
    assert [sid for sid, _ in fresh[0][1]] == ids[30:]  # undelivered entries still come, once


def test_rebuilding_a_stream_whose_every_entry_was_erased(redis_server):
    import redis

    from personalize.privacy.erasure import rebuild_stream

    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    only = client.xadd("dead", {"user_id": "person-0001", "reason": "x"})
    client.xdel("dead", only)
    rebuild_stream(client, "dead")  # no entry, no group: the stream goes
    assert not client.exists("dead")
    grouped = client.xadd("events", {"user_id": "person-0001"})
    client.xgroup_create("events", "g", id="$")
    client.xdel("events", grouped)
    rebuild_stream(client, "events")  # no entry left, but the group stays
    assert client.xinfo_groups("events")[0]["name"] == "g" and client.xlen("events") == 0


# ------------------------------------------------------------- consent history, unknown IDs


def test_access_shows_every_consent_record_per_purpose(tmp_path, tracking_store, redis_server, monkeypatch):
    """The consent table's records of the user (all of them, oldest first, the one in force
    marked), their consent events still in the stream and the online store's record."""

    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(tmp_path / "data"))
    raw = _raw_files(tmp_path / "raw")
    consent = tmp_path / "raw" / "consent.csv"
    consent.write_text(
        "user_id,purpose,granted,timestamp\n"
        f"{TARGET},training,true,2021-01-01T00:00:00+00:00\n"
        f"{TARGET},personalisation,true,2021-01-01T00:00:00+00:00\n"
        f"{OTHER},personalisation,false,2021-02-01T00:00:00+00:00\n"
        f"{TARGET},personalisation,false,2021-03-01T00:00:00+00:00\n"
        f" {TARGET},personalisation,yes,2021-02-01T00:00:00+00:00\n"  # another spelling, older
    )
    spec = _experiment(raw, redis_server.url)
    spec["data"]["privacy"]["consent"] = str(consent)
    exp_file = tmp_path / "shop.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    subject = identify(TARGET, load_experiment(data=spec).data)
    store = OnlineStore(OnlineSettings(url=redis_server.url, namespace=NS, timeout_seconds=2.0))
    store.set_consent(subject.pseudonym, "personalisation", True, "2021-04-01T00:00:00+00:00")
    store.client.xadd(
        store.stream,
        {
            "user_id": subject.pseudonym,
            "event": "consent",
            "purpose": "personalisation",
            "granted": "true",
            "timestamp": "2021-04-01T00:00:00+00:00",
        },
    )

    out = tmp_path / "access.json"
    res = CliRunner().invoke(app, ["subject", "access", TARGET, "-e", str(exp_file), "--out", str(out)])
    assert res.exit_code == 0, res.output
    history = json.loads(out.read_text())["consent"]
    assert sorted(history) == ["personalisation", "training"]
    table = [r for r in history["personalisation"] if r["source"].startswith("consent table")]
    assert [(r["granted"], r["timestamp"][:10], r["in_force"]) for r in table] == [
        (True, "2021-01-01", False),
        (True, "2021-02-01", False),
        (False, "2021-03-01", True),
    ]
    assert [r["source"].rsplit("row ", 1)[1] for r in table] == ["2", "5", "4"]
    online = [r for r in history["personalisation"] if not r["source"].startswith("consent table")]
    assert {r["source"].split()[0] for r in online} == {"event", "online"}
    assert all(r["timestamp"].startswith("2021-04-01") for r in online)
    assert [(r["granted"], r["in_force"]) for r in history["training"]] == [(True, True)]
    assert OTHER not in json.dumps(history)


def test_forget_of_an_id_never_seen_says_so_and_adds_nothing_unless_asked(
    tmp_path, tracking_store, monkeypatch
):
    monkeypatch.setenv("PERSONALIZE_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("PERSONALIZE_SUPPRESSION_KEY", SUPPRESSION_KEY)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("PERSONALIZE_DATA_DIR", str(data_dir))
    raw = _raw_files(tmp_path / "raw")
    spec = _experiment(raw, "redis://127.0.0.1:9/0")
    spec.pop("online")  # no online store
    exp_file = tmp_path / "shop.yaml"
    exp_file.write_text(yaml.safe_dump(spec))
    listed = data_dir / "privacy" / "suppression.json"
    typo = TARGET.replace("000123", "000132")  # a typo of a real ID

    res = CliRunner().invoke(app, ["subject", "forget", typo, "-e", str(exp_file)])
    assert res.exit_code == 2
    assert "never seen" in res.output and typo in res.output and "--suppress-unknown" in res.output
    assert not listed.exists() and not (data_dir / "privacy" / "erasure_log.jsonl").exists()

    res = CliRunner().invoke(app, ["subject", "forget", typo, "-e", str(exp_file), "--suppress-unknown"])
    assert res.exit_code == 0, res.output
    assert "warning" in res.output and "never seen" in res.output
    assert len(json.loads(listed.read_text())["entries"]) == 1
    log = [json.loads(x) for x in (data_dir / "privacy" / "erasure_log.jsonl").read_text().splitlines()]
    assert log[-1]["suppression"]["first_seen_in"] == "nowhere"

    # an ID in the raw inputs only (no run has used it yet) has been seen: no flag needed
    res = CliRunner().invoke(app, ["subject", "forget", TARGET, "-e", str(exp_file)])
    assert res.exit_code == 0, res.output
    assert len(json.loads(listed.read_text())["entries"]) == 2
    log = [json.loads(x) for x in (data_dir / "privacy" / "erasure_log.jsonl").read_text().splitlines()]
    assert log[-1]["suppression"]["first_seen_in"].startswith("raw interactions file")
    assert TARGET not in json.dumps(log)


def test_an_id_held_only_by_a_malformed_raw_line_has_been_seen(tmp_path):
    from personalize.config.data import DataConfig
    from personalize.privacy.subject import Subject, raw_inputs_holding

    events = tmp_path / "events.csv"
    events.write_text(
        "user_id,item_id,rating,timestamp\ncust-1,sku-001,3,1600000000\n"
        ' "007",sku-002,3,1600000000,extra,fields\n'  # malformed; its user field spelled another way
    )
    config = DataConfig.model_validate(
        {"source": "files", "interactions": {"path": str(events)}, "rating_range": [1, 5]}
    )
    assert raw_inputs_holding(Subject("7", None), config).endswith("(a malformed line)")
    assert raw_inputs_holding(Subject("cust-1", None), config) == f"raw interactions file {events}"
    assert raw_inputs_holding(Subject("cust-2", None), config) is None
