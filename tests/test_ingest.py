"""Ingestion: every row accepted or quarantined with a reason; clear errors for bad files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

from personalize.config.data import InteractionSource, TimestampConfig
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


# -------------------------------------------------------------- regressions (property tests)


def _events(tmp_path: Path, name: str, text: str, **source) -> InteractionSource:
    return InteractionSource(path=_write(tmp_path / name, text), **source)


def _reasons(d) -> dict[int, str]:
    return dict(zip(d.quarantine[C.Q_ROW], d.quarantine[C.Q_REASON]))


def test_parquet_timestamps_outside_the_window_or_a_dst_change_are_quarantined(tmp_path):
    import datetime as dt

    naive = [
        dt.datetime(2021, 1, 1, 12),  # ok
        dt.datetime(2021, 3, 28, 2, 30),  # skipped in Paris
        dt.datetime(2021, 10, 31, 2, 30),  # repeated in Paris
        dt.datetime(2600, 1, 1),  # beyond nanoseconds
        dt.datetime(1, 1, 1),
    ]
    pd.DataFrame({"user_id": [1, 2, 3, 4, 5], "item_id": 1, "timestamp": naive}).to_parquet(
        tmp_path / "x.parquet"
    )
    config = DataConfig(
        source="files",
        interactions=TableSource(path=tmp_path / "x.parquet"),
        timestamp=TimestampConfig(assume_timezone="Europe/Paris"),
        write_processed=False,
    )
    d = ingest(config)
    assert d.interactions[C.TIMESTAMP].tolist() == [pd.Timestamp("2021-01-01T11:00:00Z")]
    assert _reasons(d) == {
        2: "timestamp: unparseable",
        3: "timestamp: unparseable",
        4: "timestamp: in the future",
        5: "timestamp: before 1970-01-01",
    }


def test_iso_timestamps_beyond_nanoseconds_do_not_wrap_around(tmp_path):
    # 2600-01-01 read at nanosecond resolution overflowed into 2015-06-13 and was accepted
    text = "user_id,item_id,timestamp\n1,1,2600-01-01T00:00:00Z\n2,1,1500-01-01T00:00:00+00:00\n3,1,2020-01-01T00:00:00Z\n"
    source = _events(tmp_path, "e.csv", text)
    d = ingest(DataConfig(source="files", interactions=source, write_processed=False))
    assert d.interactions[C.USER].tolist() == [3]
    assert _reasons(d) == {1: "timestamp: in the future", 2: "timestamp: before 1970-01-01"}
    late = ingest(
        DataConfig(
            source="files",
            interactions=source,
            timestamp=TimestampConfig(reject_future=False),
            write_processed=False,
        )
    )
    assert _reasons(late)[1] == "timestamp: out of range"


def test_integer_epochs_are_read_exactly(tmp_path):
    # through a float64, both nanosecond times became ...123456768 and one was an 'exact duplicate'
    text = "user_id,item_id,timestamp\n1,1,1600000000123456789\n1,1,1600000000123456790\n"
    d = ingest(
        DataConfig(
            source="files",
            interactions=_events(tmp_path, "e.csv", text),
            timestamp=TimestampConfig(epoch_unit="ns"),
            write_processed=False,
        )
    )
    assert [t.value for t in d.interactions[C.TIMESTAMP]] == [1600000000123456789, 1600000000123456790]


def test_one_event_in_two_sources_is_kept_once(tmp_path):
    web = _events(
        tmp_path, "web.csv", "user_id,item_id,timestamp\n1,1,1600000000\n1,2,1600000000\n", event="view"
    )
    app = _events(tmp_path, "app.csv", "user_id,item_id,timestamp\n1,2,1600000000\n", event="view")
    d = ingest(DataConfig(source="files", interactions=[web, app], write_processed=False))
    assert len(d.interactions) == 2 and not d.interactions.duplicated().any()
    assert d.report.tables["interactions.app"].quarantined == 1
    assert d.quarantine["detail"].tolist() == [f"exact duplicate of row 2 of {tmp_path / 'web.csv'}"]


@pytest.mark.parametrize("rule, kept", [("quarantine", [2]), ("keep_highest", [1, 2])])
def test_conflicts_compare_weights_too(tmp_path, rule, kept):
    # the rating alone was compared: rows 1 and 2 (same rating, other weight) were both kept
    text = "user_id,item_id,timestamp,rating,weight\n1,1,1600000000,3,1\n1,1,1600000000,3,2\n2,1,1600000000,4,1\n"
    d = ingest(
        DataConfig(
            source="files",
            interactions=_events(tmp_path, "e.csv", text),
            conflicts=rule,
            write_processed=False,
        )
    )
    assert d.interactions[C.USER].tolist() == kept
    if rule == "keep_highest":
        assert d.interactions[C.WEIGHT].tolist() == [2.0, 1.0]
    assert set(_reasons(d).values()) == {"conflicting duplicate"}


def test_duplicate_columns_are_an_error_even_when_every_record_is_malformed(tmp_path):
    good = _events(tmp_path, "good.csv", "user_id,item_id,timestamp\n1,1,1600000000\n")
    bad = _events(tmp_path, "bad.csv", 'user_id,item_id,timestamp,user_id\n"1,1\n')
    with pytest.raises(DataError, match=r"bad.csv: duplicate column names \['user_id'\]"):
        ingest(DataConfig(source="files", interactions=[good, bad], write_processed=False))


def test_a_utf8_byte_order_mark_is_not_part_of_the_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffuser_id,item_id,timestamp\n1,2,1600000000\n".encode())
    d = ingest(DataConfig(source="files", interactions=TableSource(path=path), write_processed=False))
    assert d.interactions[C.USER].tolist() == [1]


def test_only_ascii_digits_make_integer_ids(tmp_path):
    text = "user_id,item_id,timestamp\n12,1,1600000000\n\uff11\uff12,1,1600000001\n"
    d = ingest(
        DataConfig(source="files", interactions=_events(tmp_path, "e.csv", text), write_processed=False)
    )
    assert d.interactions[C.USER].dtype == "string"  # '１２' is text, not a second spelling of 12
    assert sorted(d.interactions[C.USER]) == ["12", "\uff11\uff12"]


def test_a_source_without_event_type_beside_typed_sources_is_an_error(tmp_path):
    typed = _events(tmp_path, "views.csv", "user_id,item_id,timestamp\n1,2,1600000000\n", event="view")
    plain = _events(tmp_path, "plain.csv", "user_id,item_id,timestamp\n1,3,1600000000\n")
    with pytest.raises(DataError, match=r"plain.csv: no event type, while other sources have one"):
        ingest(DataConfig(source="files", interactions=[typed, plain], write_processed=False))
