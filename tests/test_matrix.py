"""The one ID <-> index mapping."""

from __future__ import annotations

import pandas as pd

from personalize.data.matrix import IdIndex


def test_lookup_casts_and_marks_unknown_ids():
    index = IdIndex(pd.Index([1, 2, 3]), pd.Index(["a", "b"]))
    assert index.user_index([3, "nobody", "2"]).tolist() == [2, -1, 1]  # mixed types
    assert index.user_index(["1"]).tolist() == [0]
    assert index.user_index([]).tolist() == []
    assert index.item_index(["b", 5, "zz"]).tolist() == [1, -1, -1]
