"""Notebooks are reviewable (no outputs, no definitions, a parameters cell) and run end to end."""

from __future__ import annotations

import nbformat
import pytest

from notebooks import NOTEBOOKS, run_notebook

ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    assert path.name[:2].isdigit() and path.name[2] == "_", "notebooks are named NN_topic.ipynb"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert any("parameters" in c.metadata.get("tags", []) for c in code), "needs a cell tagged 'parameters'"
    for cell in code:
        assert not cell.get("outputs") and cell.get("execution_count") is None, (
            "commit notebooks without outputs"
        )
        for line in cell.source.splitlines():
            assert not line.lstrip().startswith(("def ", "class ")), "code belongs in the package"
    first_code = next(c for c in code if "parameters" not in c.metadata.get("tags", []))
    assert "from personalize" in first_code.source or "import personalize" in first_code.source


def test_data_audit_notebook(tmp_path):
    summary, nb = run_notebook("01_data_audit.ipynb", {"sample_users": 120}, tmp_path)
    assert summary["users"] == 120
    assert summary["items"] == 1682 and summary["quarantined"] == 0
    assert 0.4 < summary["head_share_top20"] < 0.9
    assert 0 < summary["global_temporal_cold"] <= summary["global_temporal_test_users"]
    images = sum(1 for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {}))
    assert images >= 5
