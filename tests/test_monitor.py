"""Early stopping: patience counts evaluations without improvement; a warm-up delays stopping."""

from __future__ import annotations

import pandas as pd

from personalize.evaluation.monitor import ValidationMonitor


class Scripted(ValidationMonitor):
    """A monitor whose validation metric follows a script (one value per evaluation)."""

    def __init__(self, values, **kwargs):
        super().__init__(target=None, **kwargs)
        self.values = list(values)

    def evaluate(self, model):
        return self.values.pop(0)


def _stop_epoch(monitor, epochs=100):
    for epoch in range(1, epochs + 1):
        report = monitor(None, epoch, loss=1.0 / epoch)
        if report.stop:
            return epoch
    return None


# a plateau (what SGD-trained BPR does for its first ~15 epochs), then learning
PLATEAU = [0.12, 0.13] + [0.12] * 14 + [0.14 + 0.01 * i for i in range(10)] + [0.10] * 20


def test_patience_counts_evaluations_without_improvement():
    monitor = Scripted(PLATEAU, patience=10)
    assert _stop_epoch(monitor) == 12  # best at epoch 2, ten evaluations without improvement
    assert monitor.best_epoch == 2 and monitor.best_value == 0.13


def test_warm_up_lets_a_slow_starter_reach_its_best():
    monitor = Scripted(PLATEAU, patience=10, min_epochs=20)
    assert _stop_epoch(monitor) == 36  # best at epoch 26, then ten more
    assert monitor.best_epoch == 26 and monitor.best_value == PLATEAU[25]
    history = pd.DataFrame(monitor.history)
    assert history["epoch"].tolist() == list(range(1, 37))
    assert {"train_loss", "valid_ndcg_at_10"} <= set(history.columns)


def test_without_patience_it_never_stops():
    assert _stop_epoch(Scripted(PLATEAU, patience=None), epochs=len(PLATEAU)) is None
