"""Command line: ``personalize run experiments/ml100k.yaml`` and friends."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from personalize.errors import PersonalizeError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Personalization Lab: compare recommenders under one evaluation protocol, tracked in MLflow.",
)

OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "-s",
        help="Override a key of the experiment file, KEY=VALUE with VALUE in YAML "
        "(repeatable), e.g. --set split.name=global_temporal --set 'seeds=[0,1,2]'.",
    ),
]


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT", help="Experiment YAML file (see experiments/).")
    ],
    overrides: OverrideOpt = None,
    tracking_uri: Annotated[
        str | None,
        typer.Option(
            help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)."
        ),
    ] = None,
    no_track: Annotated[bool, typer.Option("--no-track", help="Run without logging to MLflow.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Ingest, split, fit every model, evaluate, log to MLflow and print the leaderboard."""
    from personalize.recipe import run_experiment

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        run_experiment(experiment, overrides, track=not no_track, progress=not quiet)
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def validate(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    overrides: OverrideOpt = None,
) -> None:
    """Check an experiment file (unknown keys, bad values) and print it with defaults filled in."""
    from personalize.config import load_experiment

    try:
        typer.echo(load_experiment(experiment, overrides).to_yaml())
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def defaults() -> None:
    """Print every experiment key with its default and description, and every model's params."""
    from personalize.config import describe_defaults

    typer.echo(describe_defaults())


@app.command()
def models() -> None:
    """List the registered model types."""
    from personalize.models.registry import available_models, get_model_class

    for name in available_models():
        cls = get_model_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()
        typer.echo(f"{name:20s} {cls.family:14s} {doc[0] if doc else ''}")


@app.command()
def ingest(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file whose data: block to ingest.")],
    overrides: OverrideOpt = None,
) -> None:
    """Ingest and validate the data only: print the report, write data/processed/."""
    from personalize.config import load_experiment
    from personalize.data.ingest import ingest as run_ingest

    try:
        config = load_experiment(experiment, overrides)
        dataset = run_ingest(config.data)
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo(dataset.report.summary().to_markdown(index=False))
    typer.echo(f"fingerprint: {dataset.fingerprint}")
    if dataset.processed_path:
        typer.echo(f"written to:  {dataset.processed_path}")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI on this project's store (runs table: #/experiments/<id>/runs)."""
    from personalize.tracking.store import tracking_uri

    uri = tracking_uri()
    typer.echo(f"MLflow UI on {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(
        str(mlflow),
        [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)],
    )


if __name__ == "__main__":  # pragma: no cover
    app()
