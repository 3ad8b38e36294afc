"""Personalization Lab: recommenders compared under one evaluation protocol.

The package is laid out in layers, low to high (each imports only those below it; the
import-linter contract in pyproject.toml checks it)::

    scoring/     how a fitted model answers (shared by training, evaluation and serving)
    core/        column names, errors, paths, metric names, registries
    config/      typed configuration, plain data
    plotting/    the house style of every figure
    data/        ingestion, validation, the index, splits
    features/    item vectors, text embeddings, content profiles, vector index
    models/      one module per model behind one contract
    evaluation/  metrics, evaluator, statistics, leaderboards
    tracking/    everything that talks to MLflow
    serving/     the exported champion
    recipe/      load_experiment, run_experiment and its steps
    tuning/      Optuna studies with an equal budget
    reports/     notebook-facing tables and figures
    cli.py       the `personalize` command
"""

__version__ = "0.1.0"
