"""Notebooks are reviewable and call the package: no outputs committed, no definitions, a
parameters cell, short cells without plotting or MLflow code of their own, a header that says
what they run and how long it takes, and a "What we found" section; notebook 01 runs quietly."""

from __future__ import annotations

import nbformat
import pytest

from notebooks import NOTEBOOKS, assert_findings_quote, assert_quiet, images, run_notebook

ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
MAX_LINES = 8  # a code cell calls the package; more lines than this belong in it
FORBIDDEN = ("import matplotlib", "plt.", "MlflowClient", "import mlflow")


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


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_cells_are_short_and_call_the_package(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        lines = [
            line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")
        ]
        assert len(lines) <= MAX_LINES, (
            f"a cell of {len(lines)} lines: move it into the package\n{cell.source}"
        )
        assert all(len(line) <= 110 for line in lines), f"a line over 110 characters:\n{cell.source}"
        for word in FORBIDDEN:
            assert word not in cell.source, f"{word!r} in a cell: figures and MLflow belong in the package"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_header_says_what_runs_and_how_long_and_it_ends_with_findings(path):
    nb = nbformat.read(path, as_version=4)
    header = nb.cells[0].source
    assert header.startswith("# ") and "**What it runs" in header and "on 2 cores" in header
    titles = [c.source.strip() for c in nb.cells if c.cell_type == "markdown"]
    assert titles[-1] == "## What we found", "the last section is the findings"


def test_data_audit_notebook(tmp_path):
    params = {"sample_users": 120, "events_sample": str(tmp_path / "events"), "events_users": 40}
    summary, nb = run_notebook("01_data_audit.ipynb", params, tmp_path)
    assert_quiet(nb)
    assert summary["users"] == 120 and summary["items"] == 1682 and summary["quarantined"] == 0
    assert 0.4 < summary["head_share_top20"] < 0.9
    assert summary["partial_months"] == ["1997-09", "1998-04"]
    assert 0 < summary["global_temporal_cold"] <= summary["global_temporal_cold_vs_train"]
    assert summary["global_temporal_cold_vs_train"] <= summary["global_temporal_test_users"]
    assert_findings_quote(
        nb,
        summary,
        [
            "interactions",
            "users",
            "items",
            "global_temporal_test_users",
            "global_temporal_cold",
            "head_share_top20",
            "audit_warnings",
            "sources_unknown_users",
            "sources_users_without_events",
            "sources_items_outside",
            "sources_reconciled",
        ],
    )
    assert summary["audit_failed"] == 0 and summary["audit_duplicate_titles"] == 36
    # the sample's planted facts: 50 anonymous visitors, 25 prospects, 5 retired SKUs, 40 padded IDs
    assert (summary["sources_unknown_users"], summary["sources_users_without_events"]) == (50, 25)
    assert (summary["sources_items_outside"], summary["sources_reconciled"]) == (5, 40)
    assert images(nb) >= 11
