"""Personalization Lab: recommenders compared under one evaluation protocol.

The package is laid out by stage::

    data/        ingestion, validation, MovieLens-100K loader
    evaluation/  splits, metrics, evaluator, statistics, leaderboards
    models/      one module per model (baselines, collaborative, content, hybrid, peers)
    tracking/    everything that talks to MLflow
    recipe.py    run_experiment(config): load -> validate -> split -> fit -> evaluate -> log
"""

__version__ = "0.1.0"
