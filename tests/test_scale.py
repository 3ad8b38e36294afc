"""Scale guards: ingestion keeps the values as read only for rows it quarantines while reading
(the rest come back by a second read when a later check quarantines them) and decides
duplicates and conflicts from hashes as the full comparison would; EASE refuses catalogues its
dense solve cannot hold, the evaluator's memory is bounded by its block of users (not by the
number of users), and the 1M-event synthetic experiment runs end to end (slow tier)."""

from __future__ import annotations

import functools
import importlib
import json
import tracemalloc

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from personalize.config.data import DataConfig
from personalize.config.evaluation import EvaluationConfig
from personalize.core import columns as C
from personalize.core.errors import ConfigError, DataError
from personalize.data.matrix import IdIndex, InteractionData
from personalize.data.readers import ROW
from personalize.evaluation.evaluator import Evaluator, make_target
from personalize.models.collaborative import ease as E
from personalize.models.registry import create_model

ING = importlib.import_module("personalize.data.ingest")  # the module (the package exports the function)

# ------------------------------------------------------------------------------ ingestion

EVENTS = (
    "user_id,item_id,rating,timestamp\n"
    "7,m1,4,1600000000\n"  # row 1
    "u2,m2,3,1600000001\n"  # row 2
    "007,m1,4,1600000000\n"  # row 3: the same as row 1 once IDs are canonical (late: duplicate)
    "u3,m2,3,yesterday\n"  # row 4: quarantined by its chunk (timestamp)
    "u4,m1,4,1600000002\n"  # row 5: conflicts with row 6 (late)
    "u4,m1,5,1600000002\n"  # row 6
    "u5,m3,4,1600000003\n"  # row 7
    "u6,m1,4,1600000004\n"  # row 8
)


def _ingest_in_chunks(tmp_path, monkeypatch, text: str, chunk_rows: int = 2):
    path = tmp_path / "events.csv"
    path.write_text(text)
    monkeypatch.setattr(ING, "read_table", functools.partial(ING.read_table, chunk_rows=chunk_rows))
    tables, reread = [], []
    read_events, read_rows = ING._read_events, ING._read_rows
    monkeypatch.setattr(ING, "_read_events", lambda *a: tables.append(read_events(*a)) or tables[-1])
    monkeypatch.setattr(ING, "_read_rows", lambda t, rows: reread.append(rows.tolist()) or read_rows(t, rows))
    config = DataConfig(
        source="files", interactions={"path": str(path)}, conflicts="quarantine", write_processed=False
    )
    return ING.ingest(config), tables, reread


def test_ingestion_keeps_values_as_read_only_for_rows_its_chunks_quarantine(tmp_path, monkeypatch):
    dataset, tables, reread = _ingest_in_chunks(tmp_path, monkeypatch, EVENTS)
    (table,) = tables
    assert table.raw[ROW].tolist() == [4]  # one row quarantined while reading; nothing else kept
    assert reread == [[3, 5, 6]]  # the rows later checks quarantined, read again by number
    q = dataset.quarantine.set_index(C.Q_ROW)
    assert q.loc[3, C.Q_REASON] == "exact duplicate"
    assert json.loads(q.loc[3, C.Q_VALUES])[C.USER] == "007"  # as read, not as parsed ('7')
    assert q.loc[4, C.Q_REASON].startswith("timestamp")
    assert json.loads(q.loc[4, C.Q_VALUES])[C.TIMESTAMP] == "yesterday"
    assert [json.loads(q.loc[r, C.Q_VALUES])["rating"] for r in (5, 6)] == ["4", "5"]
    assert set(q[C.Q_REASON].loc[[5, 6]]) == {"conflicting duplicate"}
    assert len(dataset.interactions) == 4  # rows 1, 2, 7, 8: every row accepted or quarantined
    assert dataset.report.ids.merged_spellings["user"] == [["007", "7"]]  # collected per chunk


def test_ingestion_results_do_not_depend_on_the_chunk_size(tmp_path, monkeypatch):
    one, _, _ = _ingest_in_chunks(tmp_path, monkeypatch, EVENTS, chunk_rows=1_000)
    monkeypatch.undo()
    two, _, _ = _ingest_in_chunks(tmp_path, monkeypatch, EVENTS, chunk_rows=3)
    assert one.fingerprint == two.fingerprint
    pd.testing.assert_frame_equal(one.quarantine, two.quarantine)


def test_a_file_changed_between_the_two_reads_is_an_error(tmp_path, monkeypatch):
    path = tmp_path / "events.csv"
    read_rows = ING._read_rows

    def truncated(table, rows):  # the file loses its last rows before the second read
        path.write_text(EVENTS.split("u4,")[0])
        return read_rows(table, rows)

    monkeypatch.setattr(ING, "_read_rows", truncated)
    path.write_text(EVENTS)
    config = DataConfig(
        source="files", interactions={"path": str(path)}, conflicts="quarantine", write_processed=False
    )
    with pytest.raises(DataError, match=r"events\.csv changed while it was ingested: rows \[5, 6\]"):
        ING.ingest(config)


def test_duplicate_and_conflict_checks_match_the_full_comparison():
    """The hash prefilter finds every row that shares its values with another, whatever the
    column types (text, datetimes, floats with NaN and -0.0, lists), and the sort keys give
    pandas' stable multi-column order."""
    rng = np.random.default_rng(3)
    n = 20_000
    frame = pd.DataFrame(
        {
            C.USER: pd.Series(rng.integers(0, 40, n)).astype(str).astype("string"),
            C.ITEM: rng.integers(0, 40, n),
            C.TIMESTAMP: pd.to_datetime(rng.integers(0, 5, n), unit="s", utc=True),
            "rating": np.where(rng.random(n) < 0.3, np.nan, rng.choice([-0.0, 0.0, 1.0], n)),
            "genres": [["a", "b"] if v else ["a"] for v in rng.random(n) < 0.5],
        }
    )
    columns = list(frame.columns)
    full = ING._canonical(frame).duplicated(keep=False).to_numpy()
    found = ING._repeated(frame, np.arange(n), columns)
    assert full.any() and (found >= full).all()  # a superset of the rows with equal values
    half = np.arange(0, n, 2)
    assert (
        ING._repeated(frame, half, columns)
        >= ING._canonical(frame.iloc[half]).duplicated(keep=False).to_numpy()
    ).all()
    order = columns[:4]
    expected = frame.sort_values(order, kind="stable").index.to_numpy()
    np.testing.assert_array_equal(np.lexsort(ING._sort_keys(frame, order)[::-1]), expected)


# ------------------------------------------------------------------------------ EASE


def _data(n_users: int, n_items: int) -> InteractionData:
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(1, n_users + 1), 3)
    frame = pd.DataFrame(
        {
            C.USER: users,
            C.ITEM: rng.integers(1, n_items + 1, size=len(users)),
            C.TIMESTAMP: pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(len(users)), "s"),
        }
    )
    items = pd.DataFrame({C.ITEM: np.arange(1, n_items + 1)})
    index = IdIndex.build(pd.DataFrame({C.USER: np.arange(1, n_users + 1)}), items, frame)
    return InteractionData.build(frame, index, pd.DataFrame({C.USER: []}), items)


def test_ease_solve_estimate_is_dense_copies_of_the_square():
    assert E.solve_bytes(1_000) == E.DENSE_COPIES * 1_000 * 1_000 * 8
    assert E.solve_bytes(20_000) == 4 * 20_000**2 * 8  # 12.8 GB: the 10M synthetic catalogue


def test_ease_refuses_a_catalogue_over_the_configured_limit():
    data = _data(50, 300)  # 4 x 300^2 x 8 = 2.9 MB
    model = create_model("ease", {"memory_limit_mb": 2}, 0)
    with pytest.raises(ConfigError) as err:
        model.fit(data)
    text = str(err.value)
    assert "300 items" in text  # the catalogue size
    assert "about 2.7 MiB" in text and "limit of 2.0 MiB" in text  # the estimate and the limit
    assert "params.memory_limit_mb" in text  # where the limit came from
    assert not hasattr(model, "weights_")  # refused before the solve
    fitted = create_model("ease", {"memory_limit_mb": 3}, 0).fit(data)  # 2.9 MB fits 3 MiB
    assert fitted.weights_.shape == (300, 300)


def test_ease_refuses_against_available_memory(monkeypatch):
    monkeypatch.setattr(E, "available_bytes", lambda: 64 * 2**20)  # 64 MiB free
    with pytest.raises(ConfigError, match=r"20,000 items needs about 11\.9 GiB.*memory available now"):
        E.check_memory(20_000)
    with pytest.raises(ConfigError, match=r"fits at most 1,448 items"):  # sqrt(64 MiB / 32 B)
        E.check_memory(20_000)
    E.check_memory(1_400)  # 62.7 MB: fits
    E.check_memory(20_000, limit_mb=13_000)  # an explicit limit overrides the available memory


# ------------------------------------------------------------------------------ evaluator


class _Scores:
    """A scorer of (users x items) float32 scores, distinct per user and item."""

    def __init__(self, n_items: int):
        self.items = (np.arange(n_items, dtype=np.float32) * 7919 % n_items) / n_items

    def score(self, users: np.ndarray) -> np.ndarray:
        return (self.items[None, :] + (users[:, None] % 97).astype(np.float32) * 1e-3).astype(np.float32)


def _target(n_users: int, n_items: int):
    ids = np.arange(1, n_users + 1)
    test = pd.DataFrame({C.USER: ids, C.ITEM: ids % n_items + 1})
    seen = pd.DataFrame({C.USER: ids, C.ITEM: (ids * 3) % n_items + 1})
    index = IdIndex.build(pd.DataFrame({C.USER: ids}), pd.DataFrame({C.ITEM: np.arange(1, n_items + 1)}))
    return make_target("test", test, seen, index)


def _rank_peak(n_users: int, n_items: int, budget_mb: int) -> tuple[int, np.ndarray]:
    target = _target(n_users, n_items)
    evaluator = Evaluator(EvaluationConfig(memory_budget_mb=budget_mb))
    tracemalloc.start()
    items, _, _ = evaluator.rank(_Scores(n_items), target)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, items


def test_evaluator_memory_grows_with_the_block_not_with_the_users():
    n_items, k = 5_000, max(EvaluationConfig().ks)
    out_bytes = lambda n: n * k * (8 + 4)  # noqa: E731 - the top-k lists: items int64 + scores float32
    few, items_few = _rank_peak(5_000, n_items, 8)
    many, items_many = _rank_peak(20_000, n_items, 8)
    wide, _ = _rank_peak(20_000, n_items, 32)
    full = 20_000 * n_items * 4  # the whole score matrix: 400 MB
    # 4x the users: the peak grows by the larger top-k lists only, not by 4x the blocks
    assert many - out_bytes(20_000) < 1.3 * (few - out_bytes(5_000))
    # 4x the block budget: the peak grows with it
    assert wide - out_bytes(20_000) > 2.5 * (many - out_bytes(20_000))
    # bounded by the budget (plus the lists), far below the full matrix
    assert many - out_bytes(20_000) < 2 * 8 * 2**20
    assert many < full / 20
    # every user ranked against the whole catalogue, seen item excluded
    assert items_many.shape == (20_000, k) and (items_many >= 0).all()
    np.testing.assert_array_equal(items_many[:5_000], items_few)  # blocks do not change results
    target = _target(20_000, n_items)
    seen = sp.csr_matrix(target.seen)
    assert not seen[np.arange(20_000)[:, None], items_many].toarray().any()


# ------------------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_synthetic_1m_runs_end_to_end():
    from personalize.core.paths import experiments_dir
    from personalize.recipe import run_experiment

    result = run_experiment(experiments_dir() / "synthetic_1m.yaml", progress=False, echo=None)
    board = result.leaderboard.set_index("model")
    assert sorted(board.index) == ["als", "itemknn", "popularity"]
    assert len(result.dataset.interactions) > 990_000  # 1M events less the planted duplicates
    ndcg = board["ndcg@10"]
    assert ((ndcg > 0) & (ndcg < 1)).all()
    assert ndcg["als"] > ndcg["popularity"] and ndcg["itemknn"] > ndcg["popularity"]
    test_users = result.splits[0].test[C.USER].nunique()
    for outcome in result.outcomes:
        per_user = outcome.seeds[0].test.per_user
        assert len(per_user) == test_users  # every test user ranked
    assert result.parent_run_id is not None
