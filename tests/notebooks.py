"""Run a notebook with papermill and read back what it recorded (a cell tagged 'summary' that
prints one JSON object)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat

ROOT = Path(__file__).parents[1]
NOTEBOOKS = ROOT / "notebooks"


def run_notebook(
    name: str, parameters: dict, out_dir: Path, timeout: int = 900
) -> tuple[dict, nbformat.NotebookNode]:
    """Execute ``notebooks/<name>`` with ``parameters``; return its summary and the executed notebook."""
    import papermill as pm

    os.environ["HF_HUB_OFFLINE"] = "1"
    out = out_dir / name
    pm.execute_notebook(
        str(NOTEBOOKS / name),
        str(out),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(ROOT),
        progress_bar=False,
        execution_timeout=timeout,
    )
    nb = nbformat.read(out, as_version=4)
    for cell in nb.cells:
        if "summary" in cell.get("metadata", {}).get("tags", []):
            text = "".join(
                o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream"
            )
            return json.loads(text.strip().splitlines()[-1]), nb
    raise AssertionError(f"{name} has no cell tagged 'summary'")
