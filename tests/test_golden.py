"""The main job's numbers stay what they were: every test metric of every model of
``experiments/ml100k.yaml``, the split's row counts and the data fingerprint, against values
committed in ``tests/golden/ml100k_main.json``. A change that moves a number fails here; one that
means to (say why in its commit) rewrites the file with

    PERSONALIZE_UPDATE_GOLDEN=1 make test PYTEST_ARGS=tests/test_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from personalize.recipe import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parents[1]
PATH = ROOT / "tests" / "golden" / "ml100k_main.json"
GOLDEN = json.loads(PATH.read_text())


@pytest.fixture(scope="module")
def main_job():
    config = load_experiment(ROOT / "experiments" / "ml100k.yaml", ["data.write_processed=false"])
    result = run_experiment(config, track=False, progress=False, echo=None)
    if os.environ.get("PERSONALIZE_UPDATE_GOLDEN") == "1":
        GOLDEN.update(
            fingerprint=result.dataset.fingerprint,
            split={str(s): split.summary() for s, split in result.splits.items()},
            models={
                o.label: {
                    "seeds": [s.seed for s in o.seeds],
                    "best_epochs": [s.best_epoch for s in o.seeds],
                    "test": o.summary("test"),
                }
                for o in result.outcomes
            },
        )
        PATH.write_text(json.dumps(GOLDEN, indent=1) + "\n")
    return result


def test_data_and_split_are_unchanged(main_job):
    assert main_job.dataset.fingerprint == GOLDEN["fingerprint"]
    assert {str(s): split.summary() for s, split in main_job.splits.items()} == GOLDEN["split"]


def test_every_test_metric_of_every_model_is_unchanged(main_job):
    assert [o.label for o in main_job.outcomes] == list(GOLDEN["models"])
    for outcome in main_job.outcomes:
        want = GOLDEN["models"][outcome.label]
        assert [s.seed for s in outcome.seeds] == want["seeds"]
        assert [s.best_epoch for s in outcome.seeds] == want["best_epochs"], outcome.label
        got = outcome.summary("test")
        assert set(got) == set(want["test"])
        for name, value in want["test"].items():
            assert got[name] == pytest.approx(value, rel=1e-7, abs=1e-9), (outcome.label, name)
