"""Run a notebook with papermill and read back what it recorded (a cell tagged 'summary' that
prints one JSON object), and the checks every executed notebook must pass: no error, nothing on
stderr, no warning in any output, and a "What we found" section that quotes the summary's numbers."""

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
    out_dir.mkdir(parents=True, exist_ok=True)
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


def outputs(nb: nbformat.NotebookNode):
    for cell in nb.cells:
        yield from cell.get("outputs", [])


def assert_quiet(nb: nbformat.NotebookNode) -> None:
    """No error, no stderr stream, no warning text in any output of the executed notebook."""
    for out in outputs(nb):
        assert out.get("output_type") != "error", f"{out.get('ename')}: {out.get('evalue')}"
        if out.get("output_type") == "stream":
            assert out.get("name") != "stderr", f"stderr output: {out.get('text', '')[:500]}"
            text = out.get("text", "")
        else:
            text = " ".join(str(v) for k, v in out.get("data", {}).items() if k.startswith("text/"))
        assert "Warning:" not in text and "WARNING" not in text, f"a warning in the output: {text[:500]}"


def findings_text(nb: nbformat.NotebookNode) -> str:
    """The markdown the "What we found" cell displayed."""
    texts = [o["data"]["text/markdown"] for o in outputs(nb) if "text/markdown" in o.get("data", {})]
    found = [t for t in texts if t.startswith("### What we found")]
    assert found, "the notebook shows no 'What we found' section"
    return found[-1]


def assert_findings_quote(nb: nbformat.NotebookNode, summary: dict, keys: list[str]) -> None:
    """Each number of ``summary[key]`` appears in the findings as the notebook printed it."""
    text = findings_text(nb)
    for key in keys:
        value = summary[key]
        values = value.values() if isinstance(value, dict) else [value]
        for v in values:
            if isinstance(v, bool) or v is None:
                continue
            shown = f"{v:.4f}" if isinstance(v, float) else str(v)
            percent = f"{v:.0%}" if isinstance(v, float) and 0 <= v <= 1 else None
            assert shown in text or (percent and percent in text), f"findings do not quote {key} = {v}"


def images(nb: nbformat.NotebookNode) -> int:
    return sum(1 for o in outputs(nb) if "image/png" in o.get("data", {}))
