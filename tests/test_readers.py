"""The text reader reads blocks of lines: whatever the block size, every record, malformed record,
line number and raw line comes out the same (blocks cut through multi-line records, stray quotes
that never close, blank lines, ragged lines)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from personalize.config.data import InteractionSource
from personalize.core.errors import DataError
from personalize.data.readers import read_table

HEADER = "user_id,item_id,timestamp\n"
LINES = st.sampled_from(
    [
        "1,2,3\n",
        "4,5,6\n",
        "7,8\n",  # too few
        "1,2,3,4\n",  # too many
        "\n",  # blank: not a record
        '1,"a\nb",3\n',  # a quoted field across two lines
        '"x"y,1,2\n',  # a stray quote
        '1,"never closed,3\n',  # a quote that opens and never closes (swallows what follows)
        "9,\x00,1\n",  # a NUL byte
        "  5 ,6,7\r\n",
    ]
)


def _read(path: Path, chunk_rows: int):
    reader = read_table(InteractionSource(path=path), "interactions", chunk_rows=chunk_rows)
    try:
        frames = list(reader)
    except DataError as exc:  # e.g. only blank lines: a header but no rows
        return None, str(exc), -1
    table = pd.concat(frames, ignore_index=True) if frames else None
    bad = [(m.row, m.raw, m.reason, m.detail) for m in reader.malformed]
    return table, bad, reader.input_rows


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(LINES, min_size=1, max_size=25))
def test_block_size_does_not_change_what_is_read(lines):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "e.csv"
        path.write_text(HEADER + "".join(lines), newline="")
        whole, bad, n = _read(path, 250_000)
        if n == -1:
            assert all(_read(path, chunk)[1] == bad for chunk in (1, 2, 3, 7))
            return
        assert n == len(bad) + (0 if whole is None else len(whole))
        for chunk in (1, 2, 3, 7):
            table, other_bad, other_n = _read(path, chunk)
            assert (other_bad, other_n) == (bad, n)
            if whole is None:
                assert table is None
            else:
                pd.testing.assert_frame_equal(table, whole)
        for row, raw, _, _ in bad:  # the raw text is the record's lines, as written
            assert raw and raw in (HEADER + "".join(lines)), (row, raw)


def test_a_quote_that_never_closes_swallows_the_rest_as_one_malformed_record(tmp_path):
    path = tmp_path / "e.csv"
    path.write_text(HEADER + "1,2,3\n" + '4,"5,6\n' + "".join(f"{i},1,1\n" for i in range(50)))
    for chunk in (1, 4, 250_000):
        table, bad, n = _read(path, chunk)
        assert table["user_id"].tolist() == ["1"] and n == 2
        assert bad[0][0] == 2 and bad[0][1].startswith('4,"5,6\n0,1,1') and bad[0][1].endswith("49,1,1")
