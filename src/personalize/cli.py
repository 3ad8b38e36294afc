"""Command line: ``personalize run experiments/ml100k.yaml`` and friends.

(One module: Typer builds the command tree from one app, its sub-apps and the options they
share (experiment file, tracking URI, Redis URL); each command is a thin wrapper that imports its
stage only when it runs.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from personalize.core.errors import PersonalizeError

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


TrackingUriOpt = Annotated[
    str | None,
    typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)."),
]
NoTrackOpt = Annotated[bool, typer.Option("--no-track", help="Run without logging to MLflow.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


@app.callback()
def main(
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Show MLflow's progress bars and INFO logs (quiet by default).")
    ] = False,
) -> None:
    """Personalization Lab: compare recommenders under one evaluation protocol, tracked in MLflow."""
    if verbose:
        os.environ["PERSONALIZE_VERBOSE"] = "1"


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@app.command()
def run(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT", help="Experiment YAML file (see experiments/).")
    ],
    overrides: OverrideOpt = None,
    tracking_uri: TrackingUriOpt = None,
    no_track: NoTrackOpt = False,
    quiet: QuietOpt = False,
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
def msr(
    experiment: Annotated[
        Path,
        typer.Argument(metavar="EXPERIMENT", help="The benchmark experiment (experiments/ml100k_msr.yaml)."),
    ],
    overrides: OverrideOpt = None,
    tracking_uri: TrackingUriOpt = None,
    no_track: NoTrackOpt = False,
) -> None:
    """Microsoft Recommenders' MovieLens benchmark: run the experiment, print NDCG@10 and MAP with
    intervals over split seeds beside the published best row, and log the table."""
    from personalize.reports.comparison import msr_report

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        msr_report(experiment, overrides, track=not no_track, echo=typer.echo)
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def validate(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file.")],
    overrides: OverrideOpt = None,
) -> None:
    """Check an experiment file (unknown keys, bad values) and print it with defaults filled in."""
    from personalize.recipe import load_experiment

    try:
        typer.echo(load_experiment(experiment, overrides).to_yaml())
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def defaults() -> None:
    """Print every experiment key with its default and description, and every model's params."""
    from personalize.recipe import describe_defaults

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
    from personalize.data.ingest import ingest as run_ingest
    from personalize.recipe import load_experiment

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
def audit(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file whose data: and audit: to use.")],
    overrides: OverrideOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for audit.md, flagged rows and figures (default: build/audit/<data>)."),
    ] = None,
) -> None:
    """Ingest the data and run the hygiene audit: print the summary, write the report, the flagged
    rows (Parquet) and the figures; exit code 1 when a check with severity fail trips."""
    from personalize.core.paths import project_root
    from personalize.data.hygiene import audit_dataset
    from personalize.data.ingest import ingest as run_ingest
    from personalize.recipe import load_experiment

    try:
        config = load_experiment(experiment, overrides)
        dataset = run_ingest(config.data)
    except PersonalizeError as exc:
        _fail(exc)
    result = audit_dataset(dataset, config.audit)
    folder = out or project_root() / "build" / "audit" / dataset.name
    paths = result.write(folder)
    typer.echo(f"Data hygiene audit of {dataset.name}: {result.verdict()} ({result.seconds:.2f} s)")
    typer.echo(result.summary().to_markdown(index=False))
    typer.echo(f"report:       {paths['report']}")
    typer.echo(f"flagged rows: {paths['rows']}")
    if result.failed:
        raise typer.Exit(code=1)


@app.command()
def resolve(
    experiment: Annotated[Path, typer.Argument(help="Experiment YAML file whose data: block to resolve.")],
    out: Annotated[
        Path | None,
        typer.Option(help="Item merge table to write (default: data/resolution/<experiment>-items.csv)."),
    ] = None,
    users: Annotated[
        bool, typer.Option("--users", help="Also resolve near-duplicate users (<experiment>-users.csv).")
    ] = False,
    overrides: OverrideOpt = None,
) -> None:
    """Find items recorded under several IDs (entity resolution) and write the merge table to review."""
    from personalize.core.paths import data_dir, project_root
    from personalize.data.ingest import ingest as run_ingest
    from personalize.data.resolution import (
        DEFAULT_USER_FIELDS,
        describe_merge_table,
        resolve_items,
        resolve_users,
        write_merge_table,
    )
    from personalize.recipe import load_experiment

    try:
        config = load_experiment(experiment, overrides)
        data = config.data.model_copy(update={"merge_duplicate_items": False, "write_processed": False})
        dataset = run_ingest(data)
        table = resolve_items(dataset.items)
        path = write_merge_table(table, out or data_dir() / "resolution" / f"{config.name}-items.csv")
        typer.echo(f"items ({dataset.name}): {describe_merge_table(table)}")
        root, full = project_root(), path.resolve()
        shown = full.relative_to(root) if full.is_relative_to(root) else full
        typer.echo(f"written to:  {path}\nreview its decision column, then use it in the experiment file:")
        typer.echo(f"  data:\n    merge_duplicate_items: {shown}\n(`true` uses the computed table as it is)")
        if users:
            fields = [f for f in DEFAULT_USER_FIELDS if f in dataset.users.columns]
            if not fields:
                typer.echo(f"users: no field to compare (known fields: {', '.join(DEFAULT_USER_FIELDS)})")
                return
            table = resolve_users(dataset.users, fields)
            user_path = write_merge_table(table, path.with_name(f"{config.name}-users.csv"))
            typer.echo(f"users (compared on {', '.join(fields)}): " + describe_merge_table(table))
            typer.echo(f"written to:  {user_path}")
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def segment(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT", help="Experiment YAML with a segments: block.")
    ],
    overrides: OverrideOpt = None,
    tracking_uri: TrackingUriOpt = None,
    no_track: NoTrackOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Segment users (profiles, k chosen, stability, descriptions, strategies, the classifier),
    then break the experiment's models down by segment."""
    from personalize.recipe.segments import run_segmentation

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        run_segmentation(experiment, overrides, track=not no_track, progress=not quiet)
    except PersonalizeError as exc:
        _fail(exc)


@app.command()
def replay(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT", help="Experiment YAML (its models; a replay: block).")
    ],
    overrides: OverrideOpt = None,
    tracking_uri: TrackingUriOpt = None,
    no_track: NoTrackOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Prequential replay: fit before a global cut, replay later events in order (recommend, then
    learn), compare update strategies (static, online popularity, fold-in, periodic retrain)."""
    from personalize.recipe.replay import run_replay

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    try:
        run_replay(experiment, overrides, track=not no_track, progress=not quiet)
    except PersonalizeError as exc:
        _fail(exc)


@app.command("sample-events")
def sample_events(
    out: Annotated[
        Path, typer.Argument(help="Folder to write customers, products, purchases and views CSVs to.")
    ] = Path("data/raw/ml100k-events"),
    users: Annotated[
        int | None, typer.Option(help="A seeded sample of this many users (default: all).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the views and of the sample.")] = 0,
) -> None:
    """Write the multi-source sample made from MovieLens-100K (experiments/ml100k_events.yaml reads it)."""
    from personalize.core.paths import project_root
    from personalize.data.samples import write_events_sample

    try:
        folder = out if out.is_absolute() else project_root() / out
        sample = write_events_sample(folder, users=users, seed=seed)
    except PersonalizeError as exc:
        _fail(exc)
    for name, path in sample.files.items():
        typer.echo(f"{name:10s} {path}")
    typer.echo("planted: " + ", ".join(f"{k} {v}" for k, v in sample.planted.items()))
    typer.echo("next:    personalize run experiments/ml100k_events.yaml")


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder to write the log to (must not exist yet).")],
    interactions: Annotated[int, typer.Option(help="Events to generate.")] = 100_000,
    users: Annotated[int | None, typer.Option(help="Users (default: interactions / 100).")] = None,
    items: Annotated[int | None, typer.Option(help="Items (default: interactions / 500).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of every draw.")] = 0,
    format: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    clusters: Annotated[int, typer.Option(help="Latent taste clusters.")] = 20,
    duplicate_share: Annotated[float, typer.Option(help="Exact duplicate rows, share of events.")] = 0.001,
    malformed_share: Annotated[float, typer.Option(help="Malformed lines, share of events (csv).")] = 0.0,
) -> None:
    """Write a synthetic interaction log (users, items, one file per event type, the generating
    parameters and generator.json) that an experiment reads as files (data.source: files)."""
    import yaml
    from pydantic import ValidationError

    from personalize.config.model import format_errors
    from personalize.config.synthetic import SyntheticConfig
    from personalize.core.errors import ConfigError
    from personalize.data.synthetic import generate as write_log

    try:
        try:
            config = SyntheticConfig(
                interactions=interactions,
                users=users,
                items=items,
                seed=seed,
                format=format,
                clusters=clusters,
                duplicate_share=duplicate_share,
                malformed_share=malformed_share,
            )
        except ValidationError as exc:
            raise ConfigError(f"generate: {format_errors(exc)}") from None
        log = write_log(config, out)
    except PersonalizeError as exc:
        _fail(exc)
    for name, path in log.files.items():
        typer.echo(f"{name:10s} {path}")
    typer.echo("planted: " + ", ".join(f"{k} {v}" for k, v in log.meta["totals"].items()))
    data = log.data_config()
    block = {"source": "files", "name": data.name, "rating_range": list(data.rating_range or [])}
    block.update(
        data.model_dump(mode="json", include={"users", "items", "interactions"}, exclude_defaults=True)
    )
    typer.echo("read it with this data: block (and events: weights as you like):")
    typer.echo(yaml.safe_dump({"data": block}, sort_keys=False).rstrip())


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
) -> None:
    """Open the MLflow UI on this project's store (runs table: #/experiments/<id>/runs)."""
    from personalize.tracking.store import is_server, tracking_uri

    uri = tracking_uri()
    if is_server(uri):  # a tracking server is its own UI
        typer.echo(f"The tracking server {uri} serves the MLflow UI: open {uri}")
        return
    typer.echo(f"MLflow UI on {uri} at http://{host}:{port}  (Ctrl-C to stop)")
    mlflow = Path(sys.executable).with_name("mlflow")
    os.execv(
        str(mlflow),
        [str(mlflow), "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)],
    )


@app.command()
def server(
    backend: Annotated[
        str,
        typer.Option(
            help="Backend store: postgres:embedded (database 'mlflow' of the private PostgreSQL in "
            "data/postgres/, shared with tuning), postgres:embedded:PATH, postgresql://user@host/db "
            "(a real server) or sqlite:///path.db."
        ),
    ] = "postgres:embedded",
    artifacts: Annotated[
        str | None,
        typer.Option(
            help="Where served artifacts live: a folder or an object-store URI (s3://...). "
            "Default: mlruns/served-artifacts/."
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: other hosts).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free one).")] = 5000,
    workers: Annotated[int, typer.Option(help="Server worker processes.")] = 2,
    allowed_hosts: Annotated[
        str | None,
        typer.Option(help="Host headers accepted besides localhost, comma-separated (with --host 0.0.0.0)."),
    ] = None,
) -> None:
    """Run a shared MLflow tracking server (PostgreSQL backend, served artifacts) until Ctrl-C;
    clients log to it with tracking.uri: http://HOST:PORT (or --tracking-uri)."""
    import signal

    from personalize.tracking.server import TrackingServer

    def interrupted(signum, frame):  # SIGTERM stops it like Ctrl-C: the server and PostgreSQL too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    srv = TrackingServer(backend, artifacts, host, port, workers, allowed_hosts)
    try:
        srv.start()
    except (PersonalizeError, RuntimeError) as exc:
        _fail(exc)
    typer.echo(f"MLflow tracking server at {srv.url}  (UI and API; Ctrl-C to stop)")
    typer.echo(f"  backend store: {srv.backend_display()}")
    typer.echo(f"  artifacts:     {srv.artifacts} (served over HTTP)")
    typer.echo(f"  clients:       tracking: {{uri: {srv.url}}}  or  --tracking-uri {srv.url}")
    try:
        srv.wait()
    except KeyboardInterrupt:
        typer.echo("stopping")
    finally:
        srv.stop()


@app.command()
def tune(
    experiment: Annotated[
        Path,
        typer.Argument(metavar="EXPERIMENT", help="Experiment YAML with search: spaces beside its models."),
    ],
    overrides: OverrideOpt = None,
    trials: Annotated[
        int | None, typer.Option(help="Trials per model (the equal budget; overrides tuning.trials).")
    ] = None,
    timeout_minutes: Annotated[
        float | None,
        typer.Option(help="Wall-time budget per model study (not reproducible; tuning.timeout_minutes)."),
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="Optuna storage: sqlite:///path.db, journal:path.log (several processes), "
            "postgres:embedded (a private PostgreSQL server started here, data in data/postgres/; "
            "several processes), postgresql://user@host/db (a real server: many machines), "
            "or memory (tuning.storage)."
        ),
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Tune only this model label (repeatable).")
    ] = None,
    worker: Annotated[
        bool,
        typer.Option("--worker", help="Only run trials (join the studies; no final comparison)."),
    ] = False,
    tracking_uri: TrackingUriOpt = None,
    no_track: NoTrackOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Tune every model with the same budget (Optuna, validation metric), resumable and shareable
    by several workers, then refit the best params and compare the models on test."""
    from personalize.tuning.session import tune as run_tuning

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    extra = list(overrides or [])
    if trials is not None:
        extra.append(f"tuning.trials={trials}")
    if timeout_minutes is not None:
        extra.append(f"tuning.timeout_minutes={timeout_minutes}")
    if storage is not None:
        extra.append(f"tuning.storage={storage}")
    try:
        result = run_tuning(
            experiment, extra, models=model, search_only=worker, track=not no_track, progress=not quiet
        )
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo("\nBest params (paste under models: in an experiment file):")
    typer.echo(result.best_params_yaml())
    if result.ui_command:
        from personalize.tracking.store import run_url

        typer.echo(f"MLflow UI:  {result.ui_command}")
        session_url = run_url(result.experiment_id, result.session_run_id, uri=result.tracking_uri)
        typer.echo(f"Session:    {session_url}")


@app.command()
def leaderboard(
    experiment: Annotated[
        list[str] | None,
        typer.Option("--experiment", "-e", help="MLflow experiment name (repeatable; default: all)."),
    ] = None,
    metric: Annotated[str, typer.Option(help="Metric to rank by, e.g. ndcg@10 or map@10.")] = "ndcg@10",
    part: Annotated[str, typer.Option(help="test or valid.")] = "test",
    top: Annotated[int, typer.Option(help="Rows to show (0: all).")] = 20,
    csv: Annotated[Path | None, typer.Option(help="Also write the full table to this CSV file.")] = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Rank every finished model run across experiments of the store (from mlflow.search_runs)."""
    from personalize.tracking.search import cross_leaderboard, format_cross_leaderboard

    try:
        table = cross_leaderboard(experiment, metric, part, tracking_uri)
    except PersonalizeError as exc:
        _fail(exc)
    if csv is not None:
        table.to_csv(csv, index=False)
    if table.empty:
        typer.echo(f"no finished model runs with {part} {metric} in the store")
        return
    typer.echo(format_cross_leaderboard(table.head(top) if top else table, metric).to_markdown(index=False))
    typer.echo("\nRows from different splits, modes or data (columns split, mode, data) are not comparable.")


@app.command()
def export(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN_ID]", help="Parent run of an experiment or a tuning session (see the MLflow UI)."
        ),
    ] = None,
    experiment: Annotated[
        str | None,
        typer.Option(
            "--experiment", "-e", help="Instead of RUN_ID: the latest finished run of this experiment."
        ),
    ] = None,
    registered_model: Annotated[
        str | None,
        typer.Option(help="Model Registry name (default: the run's export block, else <data>-recommender)."),
    ] = None,
    alias: Annotated[
        str | None, typer.Option(help="Alias to move to the new version (default: champion).")
    ] = None,
    metric: Annotated[
        str | None, typer.Option(help="Validation metric that picks the champion, e.g. ndcg@10.")
    ] = None,
    no_promote: Annotated[
        bool, typer.Option("--no-promote", help="Register the new version without moving the alias.")
    ] = False,
    tracking_uri: TrackingUriOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Export a run's champion (best validation metric among exportable models): refit it on all the
    data, log it as a self-contained MLflow model, register it and move the champion alias to it."""
    from personalize.serving.export import export_run
    from personalize.tracking.records import latest_parent_run

    if tracking_uri:
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri
    if (run_id is None) == (experiment is None):
        _fail(PersonalizeError("give either RUN_ID or --experiment NAME"))
    overrides = {
        key: value
        for key, value in {"registered_model": registered_model, "alias": alias, "metric": metric}.items()
        if value is not None
    }
    if no_promote:
        overrides["promote"] = False
    try:
        run_id = run_id or latest_parent_run(experiment)
        export_run(run_id, overrides=overrides, progress=not quiet, echo=typer.echo)
    except PersonalizeError as exc:
        _fail(exc)


stream_app = typer.Typer(
    no_args_is_help=True,
    help="The event stream (Redis Streams): publish events, run workers that apply them to the online "
    "state, run the embedded Redis.",
)
app.add_typer(stream_app, name="stream")
StreamExpOpt = Annotated[
    Path | None,
    typer.Option("--experiment", "-e", help="Experiment YAML whose online: (and data: rules) to use."),
]
RedisUrlOpt = Annotated[
    str | None,
    typer.Option(help="Redis URL (default: online.redis_url, else what `personalize stream server` wrote)."),
]


def _stream_setup(experiment: Path | None, redis_url: str | None):
    """(store, online config, data config) for the stream commands."""
    from personalize.config.data import DataConfig
    from personalize.config.experiment import read_experiment
    from personalize.config.online import OnlineConfig
    from personalize.online.stream import open_store, resolve_url

    config = read_experiment(experiment) if experiment else None
    online = config.online if config else OnlineConfig()
    data = config.data if config else DataConfig()
    return open_store(online, resolve_url(online, redis_url)), online, data


@stream_app.command("publish")
def stream_publish(
    file: Annotated[Path, typer.Argument(help="CSV/Parquet: user_id,item_id,event,timestamp[,event_id].")],
    rate: Annotated[float | None, typer.Option(help="Events per second (default: no pacing).")] = None,
    experiment: StreamExpOpt = None,
    redis_url: RedisUrlOpt = None,
    quiet: QuietOpt = False,
) -> None:
    """Add a file's events to the stream (an event without event_id gets one from its fields)."""
    from personalize.online.stream import describe, publish

    try:
        store, online, _ = _stream_setup(experiment, redis_url)
        result = publish(store, file, rate=rate, config=online, progress=not quiet)
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo("\n".join(describe(result)))


@stream_app.command("consume")
def stream_consume(
    experiment: StreamExpOpt = None,
    name: Annotated[str | None, typer.Option(help="Consumer name (default: <host>-<pid>).")] = None,
    redis_url: RedisUrlOpt = None,
    stop_after: Annotated[int | None, typer.Option(help="Stop after this many entries.")] = None,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle",
            help="Stop when drained: nothing new and nothing pending in the group (entries another "
            "worker holds are waited for, and claimed once idle online.claim_idle_ms).",
        ),
    ] = False,
    deadline: Annotated[
        float | None,
        typer.Option(
            help="Stop after this many seconds at the latest; with --until-idle, a run not drained by "
            "then reports what is left pending (count, consumers) and exits 1."
        ),
    ] = None,
    quiet: QuietOpt = False,
) -> None:
    """Run a worker: apply the stream's events to the online state (Ctrl-C stops it)."""
    from personalize.online.stream import consume, describe

    try:
        store, online, data = _stream_setup(experiment, redis_url)
        result = consume(
            store,
            name,
            online,
            data,
            stop_after=stop_after,
            until_idle=until_idle,
            progress=not quiet,
            deadline_seconds=deadline,
        )
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo("\n".join(describe(result)))
    if until_idle and result.stopped == "deadline":
        raise typer.Exit(1)


@stream_app.command("server")
def stream_server(
    folder: Annotated[Path | None, typer.Option(help="Data folder (default: data/online/redis).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: a free one).")] = None,
) -> None:
    """Run the embedded Redis until Ctrl-C; prints its URL and writes it to data/online/redis.url."""
    from personalize.online.stream import serve

    try:
        serve(folder, port, echo=typer.echo)
    except (PersonalizeError, RuntimeError) as exc:
        _fail(exc)


privacy_app = typer.Typer(
    no_args_is_help=True,
    help="Records of the processing of personal data: the record of processing and the notice to end users.",
)
app.add_typer(privacy_app, name="privacy")


@privacy_app.command("record")
def privacy_record(
    experiment: Annotated[
        Path, typer.Argument(metavar="EXPERIMENT", help="Experiment YAML file (see experiments/).")
    ],
    out: Annotated[
        Path | None, typer.Option(help="Folder for record.md and notice.md (default: privacy/<name>/).")
    ] = None,
    overrides: OverrideOpt = None,
) -> None:
    """Write the record of processing (data categories, purposes, legal basis, retention, keys by
    name, where copies live and how each is erased) and the plain-language notice, from the config."""
    from personalize.privacy.record import write_experiment_records

    try:
        record, notice = write_experiment_records(experiment, out, overrides)
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo(f"Record of processing: {record}\nNotice to end users: {notice}")


@privacy_app.command("curve")
def privacy_curve(
    experiment: Annotated[
        str, typer.Option(help="MLflow experiment holding the curve (the privacy_curve file's name).")
    ] = "ml100k_privacy",
    figure: Annotated[Path | None, typer.Option(help="Also save the curve's figure (PNG) here.")] = None,
    results: Annotated[
        Path | None,
        typer.Option(
            help="Also write the curve's result files here: <experiment>_curve.csv (every column), "
            "_curve.md (the tables the README shows) and _curve.png."
        ),
    ] = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Print the newest logged privacy-utility curve (`personalize run experiments/ml100k_privacy.yaml`
    logs it) as a Markdown table, and optionally save its figure; nothing is recomputed."""
    from personalize.privacy.dp import curve_figure, curve_tables, curve_view, dp_findings, load_curve

    try:
        record, _ = load_curve(experiment, tracking_uri, run_tiny_if_missing=False)
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo(f"{record.experiment}: run {record.run_id}, {record.started:%Y-%m-%d %H:%M} UTC")
    typer.echo(curve_view(record).to_markdown(index=False))
    if figure is not None:
        figure.parent.mkdir(parents=True, exist_ok=True)
        curve_figure(record).savefig(figure)
        typer.echo(f"Figure: {figure}")
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        stem = results / f"{record.experiment}_curve"
        record.table.to_csv(stem.with_suffix(".csv"), index=False)
        findings = dp_findings(record, tiny=False).markdown()
        stem.with_suffix(".md").write_text(
            f"Run {record.run_id}, {record.started:%Y-%m-%d}.\n\n{curve_tables(record)}\n{findings}\n"
        )
        curve_figure(record).savefig(stem.with_suffix(".png"))
        typer.echo(f"Results: {stem}.csv, .md, .png")


subject_app = typer.Typer(
    no_args_is_help=True,
    help="Data-subject rights: what the lab holds about a user (access), and erasing them (forget).",
)
app.add_typer(subject_app, name="subject")
SubjectExpOpt = Annotated[
    Path | None,
    typer.Option(
        "--experiment",
        "-e",
        help="Experiment YAML whose data: (privacy), online: and tracking: settings to use.",
    ),
]
SubjectUserArg = Annotated[
    str, typer.Argument(metavar="USER", help="The user's raw ID (as in the raw files).")
]


def _subject_setup(user: str, experiment: Path | None, tracking_uri: str | None):
    """(subject, data config, online config, tracking URI) for the subject commands."""
    from personalize.config.data import DataConfig
    from personalize.config.online import OnlineConfig
    from personalize.privacy.subject import identify
    from personalize.recipe import load_experiment

    config = load_experiment(experiment) if experiment else None
    data = config.data if config else DataConfig()
    online = config.online if config else OnlineConfig()
    uri = tracking_uri or (config.tracking.uri if config and config.tracking.uri else None)
    if uri:
        os.environ["MLFLOW_TRACKING_URI"] = uri
    return identify(user, data), data, online, uri


@subject_app.command("access")
def subject_access(
    user: SubjectUserArg,
    experiment: SubjectExpOpt = None,
    out: Annotated[
        Path | None, typer.Option(help="JSON file to write (default: subject-access-<time>.json here).")
    ] = None,
    redis_url: RedisUrlOpt = None,
    tracking_uri: TrackingUriOpt = None,
) -> None:
    """Write everything the lab holds about USER (events, profile, consent history, segment, online
    state, the runs and registered models that used their data) as one JSON file."""
    from personalize.privacy.subject import access, write_access

    try:
        subject, data, online, uri = _subject_setup(user, experiment, tracking_uri)
        path = write_access(access(subject, data, online=online, redis_url=redis_url, uri=uri), out)
    except PersonalizeError as exc:
        _fail(exc)
    typer.echo(f"Wrote {path}")


@subject_app.command("forget")
def subject_forget(
    user: SubjectUserArg,
    experiment: SubjectExpOpt = None,
    redis_url: RedisUrlOpt = None,
    tracking_uri: TrackingUriOpt = None,
    suppress_unknown: Annotated[
        bool,
        typer.Option(
            "--suppress-unknown",
            help="Add USER to the suppression list even when the lab has never seen it (without this, "
            "an unknown ID is an error and nothing is added: a typo would otherwise erase no one).",
        ),
    ] = False,
) -> None:
    """Erase USER: suppress them in every later ingestion, remove them from derived data, the online
    state and streams, re-export the champion without them, rewrite past runs' per-user artifacts,
    and record it in the erasure log (raw files stay as they are). An ID found nowhere exits 2 with
    nothing done, unless --suppress-unknown."""
    from personalize.privacy.erasure import forget

    try:
        subject, data, online, uri = _subject_setup(user, experiment, tracking_uri)
        result = forget(
            subject,
            data,
            online=online,
            redis_url=redis_url,
            uri=uri,
            suppress_unknown=suppress_unknown,
            echo=typer.echo,
        )
    except PersonalizeError as exc:
        _fail(exc)
    if result.left:
        typer.secho(
            "warning: some copies could not be erased (listed above)",
            fg=typer.colors.YELLOW,
            err=True,
        )
        raise typer.Exit(code=1)


if __name__ == "__main__":  # pragma: no cover
    app()
