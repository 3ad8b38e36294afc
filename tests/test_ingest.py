"""Ingestion: every row accepted or quarantined with a reason; clear errors for bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from personalize.config.data import TimestampConfig
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data import DataConfig, TableSource, ingest


def test_movielens_is_read_whole(ml100k):
    rep = ml100k.report.tables
    assert (
        rep["interactions"].input_rows,
        rep["interactions"].accepted,
        rep["interactions"].quarantined,
    ) == (100000, 100000, 0)
    assert (rep["users"].accepted, rep["items"].accepted) == (943, 1682)
    assert rep["items"].nulled == {"year: not a number": 1}  # item 1412's broken year field
    assert ml100k.interactions[C.TIMESTAMP].dt.tz is not None
    assert str(ml100k.interactions[C.TIMESTAMP].dt.tz) == "UTC"
    toy = ml100k.items.set_index(C.ITEM).loc[1]
    assert toy[C.TITLE] == "Toy Story" and toy[C.YEAR] == 1995
    assert toy[C.GENRES] == ["Animation", "Children's", "Comedy"]
    unknown = ml100k.items.set_index(C.ITEM).loc[267]
    assert pd.isna(unknown[C.TITLE]) and pd.isna(unknown[C.YEAR]) and unknown[C.GENRES] == []
    assert ml100k.interactions[C.USER].dtype == "int64"
    assert len(ml100k.fingerprint) == 64


def test_fingerprint_is_stable_and_content_sensitive(ml100k, ml100k_small):
    from personalize.data.ingest import fingerprint_tables

    again = fingerprint_tables(ml100k.interactions, ml100k.users, ml100k.items)
    assert again == ml100k.fingerprint
    assert ml100k_small.fingerprint != ml100k.fingerprint


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def own_data(tmp_path):
    inter = _write(
        tmp_path / "events.csv",
        "userId,movieId,stars,when\n"
        "u1,m1,4,1600000000\n"  # row 1 ok (epoch seconds)
        "u1,m2,5,2020-09-13T12:26:40+00:00\n"  # row 2 ok (ISO with offset)
        ",m1,3,1600000000\n"  # row 3 missing user
        "u2,m1,3,yesterday\n"  # row 4 unparseable timestamp
        "u2,m2,3,2020-09-13 12:26:40\n"  # row 5 no UTC offset
        "u2,m1,9,1600000000\n"  # row 6 rating out of range
        "u1,m1,4,1600000000\n"  # row 7 exact duplicate of row 1
        "u2,m9,4,1600000000\n"  # row 8 item not in items table
        "u3,m1,4,4102444800\n"  # row 9 in the future (2100)
        "u2,m2,lots,1600000100\n"  # row 10 rating not a number
        "u2,m2,2,2020-09-13T14:26:40+02:00\n",  # row 11 ok (same instant as row 2, other user)
    )
    items = _write(tmp_path / "items.csv", "movieId,name,genre_list\nm1,Alpha,Drama|Comedy\nm2,Beta,\n")
    users = _write(tmp_path / "users.csv", "userId,age\nu1,31\nu2,abc\nu3,40\nu1,32\n")
    config = DataConfig(
        source="files",
        name="own",
        interactions=TableSource(
            path=inter,
            columns={C.USER: "userId", C.ITEM: "movieId", C.RATING: "stars", C.TIMESTAMP: "when"},
        ),
        items=TableSource(path=items, columns={C.ITEM: "movieId", C.TITLE: "name", C.GENRES: "genre_list"}),
        users=TableSource(path=users, columns={C.USER: "userId"}),
        rating_range=(1, 5),
    )
    return config, inter


def test_own_tables_every_row_accounted_for(own_data):
    config, inter = own_data
    before = hashlib.sha256(inter.read_bytes()).hexdigest()
    d = ingest(config)
    assert hashlib.sha256(inter.read_bytes()).hexdigest() == before  # raw input untouched
    for rep in d.report.tables.values():
        assert rep.accepted + rep.quarantined == rep.input_rows
    q = d.quarantine.set_index([C.Q_TABLE, C.Q_ROW])
    reason = lambda table, row: q.loc[(table, row), C.Q_REASON]  # noqa: E731
    assert reason("interactions", 3) == "user_id: missing"
    assert reason("interactions", 4) == "timestamp: unparseable"
    assert reason("interactions", 5) == "timestamp: no UTC offset"
    assert reason("interactions", 6) == "rating: outside [1, 5]"
    assert q.loc[("interactions", 6), "detail"] == "rating 9.0 is outside [1, 5]"
    assert reason("interactions", 7) == "exact duplicate"
    assert q.loc[("interactions", 7), "detail"] == "exact duplicate of row 1"
    assert reason("interactions", 8) == "item_id: not in items table"
    assert reason("interactions", 9) == "timestamp: in the future"
    assert reason("interactions", 10) == "rating: not a number"
    assert reason("users", 4) == "user_id: defined twice"
    assert json.loads(q.loc[("interactions", 4), C.Q_VALUES])["timestamp"] == "yesterday"
    assert len(d.interactions) == 3
    assert d.report.tables["users"].nulled == {"age: not a number": 1}
    # ISO offsets normalised to UTC: rows 2 and 11 are the same instant
    ts = d.interactions.set_index(C.USER)[C.TIMESTAMP]
    assert ts.loc["u2"] == pd.Timestamp("2020-09-13T12:26:40Z")
    assert d.interactions[C.USER].dtype == "string"
    assert d.items.set_index(C.ITEM).loc["m2", C.GENRES] == []
    out = d.processed_path
    assert out is not None and (out / "quarantine.parquet").exists()
    assert len(pd.read_parquet(out / "quarantine.parquet")) == len(d.quarantine)
    assert json.loads((out / "report.json").read_text())["fingerprint"] == d.fingerprint


def test_naive_timestamps_with_assumed_zone(own_data):
    config, _ = own_data
    d = ingest(config.model_copy(update={"timestamp": TimestampConfig(assume_timezone="Europe/Paris")}))
    assert "timestamp: no UTC offset" not in set(d.quarantine[C.Q_REASON])
    row5 = d.interactions[
        (d.interactions[C.USER] == "u2")
        & (d.interactions[C.TIMESTAMP] == pd.Timestamp("2020-09-13T10:26:40Z"))
    ]
    assert len(row5) == 1  # 12:26:40 in Paris (UTC+2 in September)


def test_parquet_input(tmp_path):
    frame = pd.DataFrame(
        {
            "u": [1, 2, 2],
            "i": [10, 10, 11],
            "t": pd.to_datetime(
                ["2021-01-01T00:00:00+05:00", "2021-01-02", "2021-01-03"],
                utc=True,
                format="ISO8601",
            ),
        }
    )
    frame.to_parquet(tmp_path / "x.parquet")
    d = ingest(
        DataConfig(
            source="files",
            interactions=TableSource(
                path=tmp_path / "x.parquet", columns={C.USER: "u", C.ITEM: "i", C.TIMESTAMP: "t"}
            ),
            write_processed=False,
        )
    )
    assert len(d.interactions) == 3 and d.interactions[C.USER].dtype == "int64"
    assert d.interactions[C.TIMESTAMP].min() == pd.Timestamp("2020-12-31T19:00:00Z")
    assert len(d.items) == 2  # catalogue from interactions when no items table


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "is empty"),
        ("user_id,item_id,timestamp\n", "has a header but no rows"),
        ("user_id,item,timestamp\n1,2,3\n", "required column 'item_id' is missing"),
    ],
)
def test_bad_files_give_clear_errors(tmp_path, content, message):
    path = _write(tmp_path / "bad.csv", content)
    with pytest.raises(DataError, match=message) as err:
        ingest(DataConfig(source="files", interactions=TableSource(path=path), write_processed=False))
    assert str(path) in str(err.value)


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ingest(DataConfig(source="files", interactions=TableSource(path=tmp_path / "nope.csv")))
    garbage = tmp_path / "x.parquet"
    garbage.write_bytes(b"\x00\x01 not parquet")
    with pytest.raises(DataError, match="cannot be read as parquet"):
        ingest(DataConfig(source="files", interactions=TableSource(path=garbage)))
    path = _write(tmp_path / "ok.csv", "a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match=r"column 'userId' \(mapped to 'user_id'\) not found"):
        ingest(DataConfig(source="files", interactions=TableSource(path=path, columns={C.USER: "userId"})))


def test_nothing_valid_is_an_error(tmp_path):
    path = _write(tmp_path / "bad.csv", "user_id,item_id,timestamp\n1,2,never\n")
    with pytest.raises(DataError, match="no row passed validation"):
        ingest(DataConfig(source="files", interactions=TableSource(path=path), write_processed=False))
