"""Entity resolution: blocking, the per-pair rule, groups, the reviewed CSV, applying merges."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from personalize.cli import app
from personalize.core import columns as C
from personalize.core.errors import DataError
from personalize.data import DataConfig, TableSource, ingest
from personalize.data.ingest import IngestReport
from personalize.data.resolution import (
    KEEP_APART,
    MERGE,
    FieldSpec,
    apply_item_merges,
    canonical_map,
    read_merge_table,
    resolve_items,
    resolve_users,
    title_key,
    write_merge_table,
)

ROOT = Path(__file__).parents[1]


def _items(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            C.ITEM: pd.array([r[0] for r in rows], dtype="int64"),
            C.TITLE: pd.array([r[1] for r in rows], dtype="string"),
            C.YEAR: [float(r[2]) if r[2] is not None else np.nan for r in rows],
            C.GENRES: [list(r[3]) for r in rows],
        }
    )


HAND_MADE = [
    (1, "Body Snatchers", 1993, ["Horror", "Sci-Fi"]),
    (2, "Body Snatchers", 1993, ["Horror"]),  # same film: merge
    (3, "Cape Fear", 1962, ["Film-Noir", "Thriller"]),
    (4, "Cape Fear", 1991, ["Thriller"]),  # remake: keep apart
    (5, "Ice Storm, The", 1997, ["Drama"]),
    (6, "The Ice Storm (1997)", 1997, ["Drama"]),  # same key after normalising: merge
    (7, "Twelve Monkeys", 1995, ["Drama", "Sci-Fi"]),
    (8, "Twelve Monkys", 1995, ["Sci-Fi"]),  # typo, same year, overlapping genres: merge
    (9, "Home Alone", 1990, ["Comedy"]),
    (10, "Home Alone 2", 1990, ["Comedy"]),  # a sequel number: keep apart
    (11, "Twister", 1996, ["Action"]),
    (12, "Twisted", 1996, ["Drama"]),  # similar, same year, no genre in common: keep apart
    (13, "Toy Story", 1995, ["Animation"]),  # unrelated: no pair
    (14, "Crash", 1996, ["Drama"]),
    (15, "Crash", 1996, ["Documentary"]),  # same title and year, disjoint genres: keep apart
    (16, "Heat", None, ["Action"]),
    (17, "Heat", 1995, ["Action"]),  # a year missing: keep apart
]


def _decision(table: pd.DataFrame, a: int, b: int) -> str:
    row = table[(table["id"] == a) & (table["other_id"] == b)]
    assert len(row) == 1, f"pair {a}, {b} is not a candidate"
    return row["decision"].iloc[0]


def test_title_key_normalises():
    assert title_key("Ice Storm, The (1997)") == "the ice storm"
    assert title_key("Shall We Dance?") == "shall we dance"
    assert title_key("Café Society, A") == "a cafe society"
    assert title_key("Things to Do in Denver when You're Dead") == "things to do in denver when you re dead"
    assert title_key(pd.NA) == ""


def test_rule_on_hand_made_items():
    table = resolve_items(_items(HAND_MADE))
    expected = {
        (1, 2): MERGE,
        (3, 4): KEEP_APART,
        (5, 6): MERGE,
        (7, 8): MERGE,
        (9, 10): KEEP_APART,
        (11, 12): KEEP_APART,
        (14, 15): KEEP_APART,
        (16, 17): KEEP_APART,
    }
    for (a, b), decision in expected.items():
        assert _decision(table, a, b) == decision, table.set_index(["id", "other_id"]).loc[(a, b), "rule"]
    assert 13 not in set(table["id"]) | set(table["other_id"])
    assert set(zip(table["id"], table["other_id"])) == set(expected)
    rules = table.set_index(["id", "other_id"])["rule"]
    assert "remake" in rules[(3, 4)] and "sequel" in rules[(9, 10)] and "check by hand" in rules[(14, 15)]
    assert "year is missing" in rules[(16, 17)]
    merged = table[table["decision"] == MERGE]
    assert merged["canonical_id"].tolist() == [1, 5, 7]
    assert table.loc[table["decision"] == KEEP_APART, "canonical_id"].isna().all()
    row = table.set_index(["id", "other_id"]).loc[(7, 8)]
    assert row["title_score"] >= 90 and row["genre_overlap"] == pytest.approx(0.5)
    assert list(table.columns[:4]) == ["kind", "id", "other_id", "canonical_id"]
    assert list(table.columns[-2:]) == ["rule", "decision"]


def test_table_ignores_row_order():
    items = _items(HAND_MADE)
    table = resolve_items(items)
    for seed in range(3):
        shuffled = items.sample(frac=1, random_state=seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(resolve_items(shuffled), table)


def test_group_joining_a_kept_apart_pair_is_not_merged():
    """A-B and B-C merge (genres overlap), A-C is kept apart (no genre in common): the group
    would contradict itself, so none of it merges, and the table says why."""
    items = _items(
        [
            (1, "Foo Bar", 2000, ["Drama"]),
            (2, "Foo Bar", 2000, ["Drama", "Comedy"]),
            (3, "Foo Bar", 2000, ["Comedy"]),
        ]
    )
    table = resolve_items(items)
    assert (table["decision"] == KEEP_APART).all()
    assert table["rule"].str.contains("not merged: the group would also join 1 and 3").sum() == 2
    assert canonical_map(table) == {}


def test_real_movielens_duplicates(ml100k):
    items = ml100k.items
    table = resolve_items(items)
    duplicated = items.loc[items[C.TITLE].duplicated(keep=False)]
    assert duplicated[C.TITLE].nunique() == 22
    for title, ids in duplicated.groupby(C.TITLE)[C.ITEM]:
        pairs = table[table["id"].isin(ids) & table["other_id"].isin(ids)]
        n = len(ids)
        assert len(pairs) == n * (n - 1) // 2, title
        assert (pairs["title"] == title).all() and (pairs["title_score"] == 100).all()
    assert _decision(table, 573, 670) == MERGE  # Body Snatchers (1993) twice
    assert _decision(table, 218, 673) == KEEP_APART  # Cape Fear 1991 / 1962
    assert _decision(table, 878, 1003) == MERGE  # That Darn Cat! (1997) twice ...
    assert _decision(table, 878, 1444) == KEEP_APART  # ... and the 1965 film
    same_title = table[table["title"] == table["other_title"]]
    assert (same_title["decision"] == MERGE).sum() == 18
    merged = same_title[same_title["decision"] == MERGE]
    assert (merged["year"] == merged["other_year"]).all()
    assert (table.loc[table["title"] != table["other_title"], "decision"] == KEEP_APART).all()


def test_committed_table_matches_the_rule(ml100k):
    """data/resolution/ml100k-items.csv is `personalize resolve`'s output for the current rule."""
    committed = read_merge_table(ROOT / "data" / "resolution" / "ml100k-items.csv", ml100k.items)
    table = resolve_items(ml100k.items)
    cols = ["id", "other_id", "canonical_id", "decision"]
    pd.testing.assert_frame_equal(committed[cols], table[cols])


def test_csv_round_trip_and_an_edited_decision(tmp_path):
    items = _items(HAND_MADE)
    table = resolve_items(items)
    path = write_merge_table(table, tmp_path / "review" / "items.csv")
    back = read_merge_table(path, items)
    cols = ["id", "other_id", "canonical_id", "decision"]
    pd.testing.assert_frame_equal(back[cols], table[cols])
    assert canonical_map(back) == {2: 1, 6: 5, 8: 7}

    edited = pd.read_csv(path, dtype=str, keep_default_na=False)
    cape = (edited["id"] == "3") & (edited["other_id"] == "4")
    edited.loc[cape, "decision"] = MERGE  # a reviewer decides the two are one item after all
    twelve = (edited["id"] == "7") & (edited["other_id"] == "8")
    edited.loc[twelve, "decision"] = KEEP_APART  # ... and the typo is another film (stale canonical_id)
    edited.to_csv(path, index=False)
    assert canonical_map(read_merge_table(path, items)) == {2: 1, 4: 3, 6: 5}

    inter = pd.DataFrame(
        {C.USER: [1, 1, 2], C.ITEM: [3, 4, 8], C.TIMESTAMP: pd.to_datetime([1, 2, 3], unit="s", utc=True)}
    )
    report = IngestReport()
    out, kept = apply_item_merges(inter, items, path, report)
    assert out[C.ITEM].tolist() == [3, 3, 8]
    assert 4 not in set(kept[C.ITEM]) and 8 in set(kept[C.ITEM])
    assert report.merges["source"] == str(path)


def _bad(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "reviewed.csv"
    path.write_text(text)
    return path


HEADER = "kind,id,other_id,canonical_id,title,decision\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kind,id,other_id,decision\nitem,1,2,merge\n", "missing column(s) canonical_id"),
        (
            HEADER + "item,1,2,1,x,merge\nitem,3,4,,x,merged\n",
            "row 2, field decision: 'merged' is not one of",
        ),
        (HEADER + "item,1,99,1,x,merge\n", "row 1, field other_id: '99' is not an item ID of the catalogue"),
        (HEADER + "item,1,2,1,x,merge\nitem,a,4,,x,keep_apart\n", "row 2, field id: 'a' is not an item ID"),
        (
            HEADER + "item,1,2,1,x,merge\nitem,2,5,5,x,merge\n",
            "row 2, field canonical_id: 2 is mapped to two",
        ),
        (HEADER + "item,1,2,3,x,merge\n", "row 1, field canonical_id: 3 is not in the merged group [1, 2]"),
        (HEADER + "item,1,2,,x,merge\nitem,2,5,,x,merge\nitem,1,5,,x,keep_apart\n", "row 3, field decision"),
        (HEADER + "item,1,2,,x,merge\nitem,2,1,,x,keep_apart\n", "row 2, field id: the pair 1, 2 is already"),
        (HEADER + "item,2,2,,x,merge\n", "row 1, field other_id: the pair joins 2 with itself"),
        (HEADER + "user,1,2,,x,merge\n", "row 1, field kind: 'user' is not 'item'"),
        (HEADER + "item,,2,,x,merge\n", "row 1, field id: missing"),
        ("", "the file is empty"),
    ],
    ids=[
        "missing-column",
        "unknown-decision",
        "id-not-in-catalogue",
        "id-not-an-integer",
        "two-canonical-ids",
        "canonical-outside-group",
        "kept-apart-but-joined",
        "pair-listed-twice",
        "pair-of-one-id",
        "wrong-kind",
        "missing-id",
        "empty-file",
    ],
)
def test_malformed_merge_tables_name_file_row_and_field(tmp_path, text, expected):
    path = _bad(tmp_path, text)
    with pytest.raises(DataError) as err:
        read_merge_table(path, _items(HAND_MADE))
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_missing_merge_table_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_merge_table(tmp_path / "nope.csv", _items(HAND_MADE))


def test_apply_item_merges_accounting():
    items = _items(HAND_MADE)
    ts = pd.to_datetime([10, 20, 30, 40, 50, 60, 70], unit="s", utc=True)
    inter = pd.DataFrame(
        {
            C.USER: pd.array([1, 1, 2, 3, 3, 4, 5], dtype="int64"),
            C.ITEM: pd.array([2, 1, 2, 6, 13, 8, 3], dtype="int64"),
            C.RATING: [5.0, 4.0, 3.0, 2.0, 1.0, 4.0, 5.0],
            C.TIMESTAMP: ts,
        }
    )
    report = IngestReport()
    out, kept = apply_item_merges(inter, items, True, report)
    assert len(out) == len(inter)  # rows never disappear
    assert out[C.ITEM].dtype == inter[C.ITEM].dtype
    assert out[C.ITEM].tolist() == [1, 1, 1, 5, 13, 7, 3]
    assert out[C.RATING].tolist() == inter[C.RATING].tolist()  # user 1 keeps both rows of the group
    assert out.equals(out.sort_values(C.TOTAL_ORDER, kind="stable").reset_index(drop=True))
    assert sorted(set(items[C.ITEM]) - set(kept[C.ITEM])) == [2, 6, 8]
    assert kept.set_index(C.ITEM).loc[1, C.GENRES] == ["Horror", "Sci-Fi"]
    assert kept.set_index(C.ITEM).loc[7, C.GENRES] == ["Drama", "Sci-Fi"]
    assert kept.set_index(C.ITEM).loc[1, C.TITLE] == "Body Snatchers"
    merges = report.merges
    assert merges["source"] == "computed"
    assert merges["groups_merged"] == 3 and merges["groups"] == [[1, 2], [5, 6], [7, 8]]
    assert merges["items_removed"] == [2, 6, 8]
    assert merges["interaction_rows_remapped"] == 4
    assert merges["users_with_two_ids_of_one_group"] == 1  # user 1: items 1 and 2
    assert merges["pairs_merged"] + merges["pairs_kept_apart"] == merges["candidate_pairs"] == 8
    json.dumps(merges)


def test_relative_merge_table_path_is_read_from_the_project_root(tmp_path, monkeypatch):
    items = _items(HAND_MADE)
    write_merge_table(resolve_items(items), tmp_path / "tables" / "items.csv")
    monkeypatch.setenv("PERSONALIZE_HOME", str(tmp_path))
    inter = pd.DataFrame({C.USER: [1], C.ITEM: [2], C.TIMESTAMP: pd.to_datetime([1], unit="s", utc=True)})
    report = IngestReport()
    out, _ = apply_item_merges(inter, items, Path("tables/items.csv"), report)
    assert out[C.ITEM].tolist() == [1]
    assert report.merges["source"] == str(tmp_path.resolve() / "tables" / "items.csv")


CRM = pd.DataFrame(
    {
        "customer": ["c1", "c2", "c3", "c4", "c5", "c6"],
        "name": ["John Smith", "Jon Smith", "John Smith", "Mary Jones", "Mary  Jones", "Zoë Brown"],
        "email": ["john@x.com", "JOHN@x.com ", "other@y.com", "mary@z.com", None, "zoe@b.org"],
        C.ZIP: ["02139", "02139", "90210", "10001", "10001", "02139"],
        C.AGE: [34, 35, 60, 28, 28, 34],
        C.GENDER: ["M", "M", "M", "F", "F", "F"],
    }
)


def test_users_resolver_on_a_crm_table():
    fields = ["name", "email", C.ZIP, FieldSpec(C.AGE, "number", tolerance=1), C.GENDER]
    table = resolve_users(CRM, fields, id_column="customer")
    assert (table["kind"] == "user").all()
    pairs = dict(zip(zip(table["id"], table["other_id"]), table["decision"]))
    assert pairs == {
        ("c1", "c2"): MERGE,
        ("c1", "c3"): KEEP_APART,
        ("c2", "c3"): KEEP_APART,
        ("c4", "c5"): MERGE,
    }
    rules = table.set_index(["id", "other_id"])["rule"]
    assert "disagree on email, zip_code, age" in rules[("c1", "c3")]
    assert table.set_index(["id", "other_id"]).loc[("c1", "c2"), "age_diff"] == 1
    assert canonical_map(table) == {"c2": "c1", "c5": "c4"}
    assert {"name", "other_name", "name_score", "email_score", "age_diff"} <= set(table.columns)
    shuffled = CRM.sample(frac=1, random_state=1)
    pd.testing.assert_frame_equal(resolve_users(shuffled, fields, id_column="customer"), table)


def test_users_without_an_identifying_field_are_never_merged():
    table = resolve_users(CRM.drop(columns=["name", "email"]), [C.ZIP, C.AGE, C.GENDER], id_column="customer")
    assert len(table) > 0 and (table["decision"] == KEEP_APART).all()
    assert table["rule"].str.contains("no identifying field agrees").any()
    with pytest.raises(DataError, match="no column 'phone'"):
        resolve_users(CRM, ["phone"], id_column="customer")
    with pytest.raises(DataError, match="field 'name' is compared as a number"):
        resolve_users(CRM, [FieldSpec("name", "number"), "email"], id_column="customer")


def _files(tmp_path: Path) -> DataConfig:
    (tmp_path / "events.csv").write_text(
        "user_id,item_id,rating,timestamp\n"
        "1,10,4,1600000000\n"
        "1,11,5,1600000100\n"
        "2,11,3,1600000200\n"
        "2,12,2,1600000300\n"
        "3,13,5,1600000400\n"
    )
    (tmp_path / "items.csv").write_text(
        "item_id,title,year,genres\n"
        "10,Chasing Amy,1997,Drama|Romance\n"
        "11,Chasing Amy,1997,Romance\n"
        "12,Sabrina,1954,Comedy\n"
        "13,Sabrina,1995,Comedy\n"
    )
    return DataConfig(
        source="files",
        name="tiny",
        interactions=TableSource(path=tmp_path / "events.csv"),
        items=TableSource(path=tmp_path / "items.csv"),
        write_processed=False,
    )


def test_ingest_merges_duplicate_items(tmp_path):
    config = _files(tmp_path)
    plain = ingest(config)
    merged = ingest(config.model_copy(update={"merge_duplicate_items": True}))
    assert plain.report.merges == {}
    assert len(merged.interactions) == len(plain.interactions) == 5
    assert merged.interactions[C.ITEM].tolist() == [10, 10, 10, 12, 13]
    assert merged.items[C.ITEM].tolist() == [10, 12, 13]
    assert merged.items.set_index(C.ITEM).loc[10, C.GENRES] == ["Drama", "Romance"]
    assert merged.report.merges["items_removed"] == [11]
    assert merged.report.merges["users_with_two_ids_of_one_group"] == 1
    assert merged.fingerprint != plain.fingerprint

    reviewed = resolve_items(plain.items)
    reviewed["decision"] = MERGE  # a reviewer merges the Sabrinas too
    path = write_merge_table(reviewed, tmp_path / "reviewed.csv")
    again = ingest(config.model_copy(update={"merge_duplicate_items": path}))
    assert again.items[C.ITEM].tolist() == [10, 12]
    assert again.report.merges["source"] == str(path)


runner = CliRunner()


def test_cli_resolve_writes_the_table(tmp_path):
    out = tmp_path / "tables" / "items.csv"
    result = runner.invoke(
        app, ["resolve", str(ROOT / "experiments" / "ml100k.yaml"), "--out", str(out), "--users"]
    )
    assert result.exit_code == 0, result.output
    assert "38 candidate pairs: 18 merge, 20 keep_apart" in result.output
    assert "573 <- 670  (Body Snatchers)" in result.output
    assert f"merge_duplicate_items: {out}" in result.output
    table = pd.read_csv(out)
    assert len(table) == 38 and set(table["decision"]) == {MERGE, KEEP_APART}
    users = pd.read_csv(tmp_path / "tables" / "ml100k-users.csv")
    assert (users["decision"] == KEEP_APART).all()  # no name or e-mail: attributes alone never merge


def test_cli_resolve_reports_errors(tmp_path):
    result = runner.invoke(app, ["resolve", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2
    assert "error:" in result.output
