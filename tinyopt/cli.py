"""The front door: `tinyopt run` runs the whole pipeline; the other commands run one step each
(dvc.yaml's stages call them, so DVC and Prefect run the very same step functions)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import click

from tinyopt import layout
from tinyopt.errors import NotApplicable, UserError


def _configure_prefect() -> None:
    from tinyopt import prefect_home

    prefect_home.configure()


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; a user's mistake needs only its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], UserError):
            record.exc_info = None
            record.exc_text = None
        return True


def _quiet_library_warnings() -> None:
    # TensorFlow, tf-keras and tfmot warn about their own internals (legacy formats, deprecations);
    # none of it is actionable for a tinyopt user.
    import warnings

    for module in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras"):
        warnings.filterwarnings("ignore", module=module)


def _quiet_user_errors_in_prefect_logs() -> None:
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    for handler in logging.getLogger("prefect").handlers:
        handler.addFilter(_NoTracebackForUserErrors())


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (UserError, NotApplicable) as exc:
            click.echo(f"tinyopt: error: {exc}", err=True)
            sys.exit(2)


params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the params file (the one place for knobs)",
)


@click.group(cls=_Cli)
@click.version_option(package_name="tinyopt")
def main() -> None:
    """tinyopt: train, optimize and benchmark neural networks for microcontrollers."""


@main.command()
@params_option
@click.option(
    "--model", "model_path", default=None, type=click.Path(), help="your trained Keras model (.keras, .h5, SavedModel)"
)
@click.option(
    "--data",
    "data_path",
    default=None,
    type=click.Path(),
    help="your data: a .npz (x_train, y_train, x_test, y_test), or a directory of IDX files or of images per class",
)
def run(params_path: str, model_path: str | None, data_path: str | None) -> None:
    """Run the whole pipeline as the Prefect flow `optimize`."""
    from tinyopt import console, prefect_home, tracking

    # Before anything imports Prefect (it reads its settings once, and creates its home) and before any
    # work: every place the run writes can be written.
    prefect_home.set_defaults()
    layout.require_writable(_run_writes())
    _configure_prefect()
    from tasks.preflight import check_inputs
    from tinyopt.params import load_params, with_inputs

    # Bad params, data or model fail here, in seconds, before any machinery starts or anything is written.
    _warn(check_inputs(with_inputs(load_params(params_path), model_path, data_path)))
    tracking.check_reachable()
    console.filter_native_stderr()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not its 'Creating initial MLflow database tables'
    prefect_home.start_api()
    from flows.optimize import optimize, task_runner

    _quiet_user_errors_in_prefect_logs()
    console.quiet_prefect_task_finished()
    _quiet_library_warnings()
    runner = task_runner(load_params(params_path).runner)
    summary = optimize.with_options(task_runner=runner)(params_path=params_path, model=model_path, data=data_path)
    click.echo("\n" + variants_table(summary))
    for skip in summary.get("skipped", []):
        click.echo(f"skipped {skip['name']}: {skip['reason']}")
    if summary.get("reference_note"):
        click.echo(summary["reference_note"])
    click.echo("")
    for objective, pick in summary["picks"].items():
        click.echo(f"pick {objective}: {pick['variant'] or 'none'} ({pick['why']})")
    click.echo(
        f"\nrun {summary['run_id']}: {len(summary['variants'])} variants\n"
        f"report: {layout.REPORTS / summary['run_id'] / 'report.md'} (summary.json beside it)\n"
        f"MLflow: {summary['mlflow_tracking_uri']} "
        f"(experiment '{summary['mlflow_experiment']}', run {summary['mlflow_run_id']})"
    )


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"tinyopt: warning: {warning}", err=True)


def _run_writes() -> list[Path]:
    """The directories a run writes (checked before it starts)."""
    from tinyopt import tracking

    places = [
        layout.DATA_ROOT,
        layout.ARTIFACTS,
        layout.REPORTS,
        Path(os.environ["PREFECT_HOME"]),
        Path(os.environ["PREFECT_RESULTS_LOCAL_STORAGE_PATH"]),
    ]
    if tracking.tracking_uri().startswith("sqlite:"):
        places += [layout.MLFLOW_DB.parent, layout.MLFLOW_ARTIFACTS]
    return places


def variants_table(summary: dict) -> str:
    """A compact table of every variant and reference model: what `tinyopt run` shows when it ends."""
    metric = summary["variants"][0]["metric"] if summary["variants"] else "score"
    rows = [("model", "bytes", "gzip", metric, "p50 us", "in/out", "TFLM arena")]
    for v in [*summary["variants"], *({**r, "name": f"ref:{r['name']}"} for r in summary.get("reference", []))]:
        arena = f"{v['arena_bytes']:,}" if v.get("arena_bytes") else "no"
        rows.append(
            (
                v["name"],
                f"{v['raw_bytes']:,}",
                f"{v['gzip_bytes']:,}",
                f"{v['score']:.4f}",
                f"{v['latency_us_p50']:.1f}",
                f"{v['input_dtype']}/{v['output_dtype']}",
                arena,
            )
        )
    return aligned(rows)


def aligned(rows) -> str:
    """Rows of strings as columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=False))
        )
        for row in rows
    )


@main.command()
@params_option
@click.option("--out", "out_root", default=str(layout.DATA_ROOT), show_default=True, type=click.Path(file_okay=False))
def fetch(params_path: str, out_root: str) -> None:
    """Fetch the dataset's raw files into DATA_ROOT/<dataset>/ and verify them."""
    from tasks.data import fetch_dataset
    from tinyopt.params import load_params

    record = fetch_dataset(load_params(params_path).data, Path(out_root))
    click.echo(f"{record.directory}: {record.name}, version {record.version}")


@main.command()
@params_option
@click.option("--raw", "raw_dir", default=None, type=click.Path(file_okay=False), help="default: data/<dataset>")
@click.option("--out", default=str(layout.PREPARED), show_default=True, type=click.Path(dir_okay=False))
def prepare(params_path: str, raw_dir: str | None, out: str) -> None:
    """Split the raw data into train / validation / test (fixed seed)."""
    from tasks.data import check_data, load_raw, prepare_dataset
    from tinyopt.params import load_params

    params = load_params(params_path)
    raw = Path(raw_dir) if raw_dir else layout.DATA_ROOT / params.data.dataset
    _warn(
        check_data(load_raw(params.data.dataset, raw, params.data), params.data, params.seed, params.task, str(raw))[1]
    )
    record = prepare_dataset(raw, params.data, params.seed, Path(out))
    click.echo(f"{record.path}: {record.num_train} train / {record.num_val} val / {record.num_test} test")


@main.command()
@params_option
@click.option("--prepared", default=str(layout.PREPARED), show_default=True, type=click.Path(dir_okay=False))
@click.option("--out-dir", default=str(layout.BASELINE_DIR), show_default=True, type=click.Path(file_okay=False))
def train(params_path: str, prepared: str, out_dir: str) -> None:
    """Train the baseline model and save it as OUT_DIR/model.keras."""
    from tasks.data import load_prepared
    from tasks.preflight import check_prepared
    from tasks.train import train_baseline
    from tinyopt.params import load_params

    params = load_params(params_path)
    if params.model.path:
        check_prepared(params, load_prepared(prepared))  # a model file that crashes its loader fails here, in one line
    record = train_baseline(Path(prepared), params.model, params.train, params.task, params.seed, Path(out_dir))
    click.echo(f"{record.model_path}: {record.epochs_run} epochs, Keras test {record.metric} {record.keras_score:.4f}")


@main.command()
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--conversion",
    default="float32",
    show_default=True,
    help="float32, float16, dynamic_range, int8_fallback, int8 or int16x8",
)
@click.option("--out", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--prepared",
    default=str(layout.PREPARED),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="training data to calibrate integer conversions on",
)
@params_option
def convert(model_path: str, conversion: str, out: str, prepared: str, params_path: str) -> None:
    """Convert a Keras model file to .tflite (and a C array beside it), with params.yaml's conversion
    settings."""
    from tasks.convert import NEEDS_CALIBRATION, convert_model
    from tinyopt.params import load_params

    params = load_params(params_path)
    calibration = Path(prepared) if conversion in NEEDS_CALIBRATION else None
    record = convert_model(Path(model_path), conversion, Path(out), calibration, params.conversion, params.seed)
    click.echo(f"{record.tflite_path}: {record.raw_bytes:,} bytes ({record.gzip_bytes:,} gzip)")


@main.command()
@click.option("--tflite", "tflite_path", required=True, type=click.Path(dir_okay=False))
@click.option("--prepared", default=str(layout.PREPARED), show_default=True, type=click.Path(dir_okay=False))
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="also write the figures as JSON here")
@params_option
def evaluate(tflite_path: str, prepared: str, out: str | None, params_path: str) -> None:
    """The task's metric for a .tflite file on the held-out test split, by running the file itself."""
    from tasks.evaluate import evaluate_tflite
    from tinyopt.files import write_json
    from tinyopt.params import load_params

    record = evaluate_tflite(Path(tflite_path), Path(prepared), load_params(params_path).task.score_metric)
    if out:
        write_json(out, record.model_dump(exclude={"outputs"}))
    click.echo(f"{record.tflite_path}: {record.metric} {record.score:.4f} on {record.num_test} test examples")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option(
    "--prepared",
    default=str(layout.PREPARED),
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the prepared data (its test split scores the models)",
)
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the records here")
@params_option
def bench(paths: tuple[str, ...], prepared: str, json_out: str | None, params_path: str) -> None:
    """Benchmark .tflite files (or directories of them) in the pipeline's own harness."""
    from flows.summary import model_record
    from tasks.benchmark import benchmark_tflite, measure_latency
    from tasks.data import load_prepared
    from tasks.evaluate import evaluate_tflite
    from tinyopt.files import write_json
    from tinyopt.params import load_params

    params = load_params(params_path)
    files = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files += sorted(path.glob("*.tflite"))
        elif path.is_file():
            files.append(path)
        else:
            raise UserError(f"{path}: no such file or directory")
    if not files:
        raise UserError(f"no .tflite files in {', '.join(paths)}")
    _quiet_library_warnings()
    sample = load_prepared(prepared)["x_test"][0]
    edges = {str(f): benchmark_tflite(f, Path(prepared)) for f in files}
    evaluations = {str(f): evaluate_tflite(f, Path(prepared), params.task.score_metric) for f in files}
    latencies = measure_latency(files, sample, params.benchmark.latency_warmup, params.benchmark.latency_repeats)
    records = [
        model_record(f.stem, str(f), None, evaluations[str(f)], edges[str(f)], latencies[str(f)], params) for f in files
    ]
    from tasks.report import model_rows

    click.echo(aligned(model_rows(records)))
    if json_out:
        write_json(json_out, records)


@main.command()
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="a directory outside the project"
)
@click.option("--force", is_flag=True, help="replace an existing key pair (devices then need the new signing.pub)")
@params_option
def keygen(out_dir: str, force: bool, params_path: str) -> None:
    """Make an Ed25519 key pair for signing manifests (keep signing.key out of the repository)."""
    from tinyopt import signing

    project = signing.project_of(Path(params_path))
    if signing.inside_project(Path(out_dir), project):
        raise UserError(
            f"{out_dir}: inside the project or a git working tree; keys must live outside both (e.g. ~/.tinyopt-keys)"
        )
    private, public = signing.generate_keys(Path(out_dir).expanduser(), force)
    click.echo(
        f"private key: {private} (export TINYOPT_SIGNING_KEY_FILE={private})\npublic key: {public} (give it to devices)"
    )


@main.command()
@click.option("--variant", default=None, help="a variant of the run (default: the pick of --objective)")
@click.option("--objective", default="best-on-nano33ble", show_default=True, help="whose pick to register")
@click.option("--profile", default=None, help="the target device profile (default: the objective's, else nano33ble)")
@click.option("--name", "model_name", default=None, help="registered model name (default: <dataset>-<profile>)")
@click.option("--summary", "summary_path", default=str(layout.REPORTS / "latest" / "summary.json"), show_default=True)
@params_option
def register(
    variant: str | None,
    objective: str,
    profile: str | None,
    model_name: str | None,
    summary_path: str,
    params_path: str,
) -> None:
    """Register a picked variant in MLflow's model registry (alias: candidate)."""
    from tasks.registry import load_summary, register_variant
    from tinyopt.params import check_name, load_params

    if model_name:
        check_name("model", model_name)
    params = load_params(params_path)
    summary = load_summary(Path(summary_path))
    if variant is None:
        pick = summary["picks"].get(objective)
        if not pick or not pick["variant"]:
            raise UserError(f"objective '{objective}' picked nothing in run {summary['run_id']}; pass --variant")
        variant = pick["variant"]
        profile = profile or (params.objectives[objective].profile if objective in params.objectives else None)
    done = register_variant(summary, variant, profile or "nano33ble", model_name)
    click.echo(f"registered {done['variant']} as {done['model']} version {done['version']} (alias {done['alias']})")


@main.command()
@click.argument("model")
@click.option("--version", required=True, type=int)
@click.option("--channel", required=True)
@click.option("--force", is_flag=True, help="publish even if the channel's gate refuses (needs --reason)")
@click.option("--reason", default=None, help="why the gate is overridden (recorded in the manifest and registry)")
@params_option
def promote(model: str, version: int, channel: str, force: bool, reason: str | None, params_path: str) -> None:
    """Publish a registered model version to a fleet channel (signed manifest on S3); promoting what a
    channel serves again re-signs it when needed (near expiry, tampered with)."""
    from tinyopt.params import check_name, load_params

    check_name("model", model)
    if force and not reason:
        raise UserError("--force needs --reason: the override is recorded")
    load_params(params_path)  # a bad params file is one line before Prefect starts
    _configure_prefect()
    from flows.promote import promote as promote_flow

    _quiet_user_errors_in_prefect_logs()
    done = promote_flow(model, version, channel, params_path, reason if force else None)
    click.echo(
        f"{channel}: {done['status']} {model} v{version} (sha256 {done['sha256'][:12]}, sequence {done['sequence']})"
    )


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


@main.command()
@click.option("--channel", required=True, help="the channel this device is on (a manifest for another is rejected)")
@click.option(
    "--manifest",
    "manifest_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="check this manifest file (with --model) instead of downloading the channel's from S3",
)
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False))
@click.option("--public-key", "public_key", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--into", default="fleet-download", show_default=True, help="where a download keeps the model, manifest and state"
)
@click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="the device's last accepted sequence (default: INTO/state.json, or state.json beside --model)",
)
@params_option
def verify(
    channel: str,
    manifest_path: str | None,
    model_path: str | None,
    public_key: str,
    into: str,
    state_path: str | None,
    params_path: str,
) -> None:
    """Check a manifest and its model the way a device does: signature, channel, expiry, sequence
    (no downgrade), size and sha256; then record the sequence in the state file."""
    from tasks import promote as promotion
    from tinyopt import signing
    from tinyopt.params import check_name, load_params

    check_name("channel", channel)
    if bool(manifest_path) != bool(model_path):
        raise UserError("give both --manifest and --model (files), or neither (download the channel from S3)")
    key = signing.load_public_key(Path(public_key))
    if manifest_path:
        state = Path(state_path) if state_path else Path(model_path).parent / "state.json"
        published, model = _read_file(manifest_path, "manifest"), _read_file(model_path, "model")
        manifest = promotion.verify(published, model, key, channel, state)
    else:
        if state_path and Path(state_path) != Path(into) / "state.json":
            raise UserError("a download keeps its state in INTO/state.json; pass --into instead of --state")
        manifest = promotion.download_and_verify(channel, load_params(params_path), key, Path(into))
    click.echo(
        f"verified: {manifest['model_name']} v{manifest['version']} sha256 {manifest['sha256'][:12]} on "
        f"{channel}, sequence {manifest['sequence']}, expires {manifest['expires']}, "
        "signature good"
    )


@main.command()
@click.argument("channel")
@params_option
def rollback(channel: str, params_path: str) -> None:
    """Publish a new manifest that serves what the channel served before its current model."""
    from tasks.promote import rollback as roll_back
    from tinyopt.params import load_params

    done = roll_back(channel, load_params(params_path), Path(params_path).resolve().parent)
    click.echo(
        f"{channel}: back to {done['model_name']} v{done['version']} (sha256 {done['sha256'][:12]}, "
        f"sequence {done['sequence']})"
    )


@main.command()
@click.option(
    "--public-key",
    "public_key",
    default=None,
    type=click.Path(dir_okay=False),
    help="also check each channel's manifest with it (signature, schema, expiry)",
)
@params_option
def status(public_key: str | None, params_path: str) -> None:
    """What each fleet channel serves now."""
    from tasks.promote import status as channel_status
    from tinyopt import signing
    from tinyopt.params import load_params

    key = signing.load_public_key(Path(public_key)) if public_key else None
    for row in channel_status(load_params(params_path), key):
        shown = row["manifest"]
        if not row["published"]:
            serves = "nothing"
        elif shown is None or "model_name" not in shown:
            serves = "an unreadable manifest (promote again to re-sign it)"
        else:
            serves = (
                f"{shown['model_name']} v{shown['version']} ({shown.get('metric')} {shown.get('score')}, "
                f"sha256 {str(shown.get('sha256'))[:12]}, sequence {shown.get('sequence')}, "
                f"expires {shown.get('expires')})"
            )
        unchecked = " [not verified: pass --public-key]" if row["published"] else ""
        check = f" [{row['check']}]" if row["check"] else unchecked
        click.echo(f"{row['channel']}: {serves}{check}; {row['history']} manifests published")


def _prefect_server() -> str:
    """The Prefect server's API URL; one line when none is configured or it does not answer
    (deployments and schedules live on a server, not on the ephemeral API `tinyopt run` uses)."""
    from prefect.settings import get_current_settings

    from tinyopt.health import require_healthy

    api = get_current_settings().api.url
    if not api:
        raise UserError(
            "deployments need a Prefect server: start one (`prefect server start`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    require_healthy(api, "Prefect server", "start it, or fix PREFECT_API_URL")
    return api


@main.command()
@params_option
def serve(params_path: str) -> None:
    """Serve the `reoptimize` deployments (nightly per schedule.cron, and on demand) from this
    process: it creates them on the Prefect server and runs their flow runs, until stopped."""
    from tinyopt import tracking
    from tinyopt.params import load_params

    load_params(params_path)
    tracking.check_reachable()
    api = _prefect_server()
    _configure_prefect()
    from prefect import serve as prefect_serve

    from flows.reoptimize import deployments

    made = deployments(params_path)
    click.echo(f"serving {', '.join('reoptimize/' + d.name for d in made)} on {api} (Ctrl-C stops)")
    prefect_serve(*made, print_starting_message=False)


@main.command()
@click.option("--pool", required=True, help="a Prefect work pool (created as a process pool if missing)")
@params_option
def deploy(pool: str, params_path: str) -> None:
    """Create the `reoptimize` deployments on a work pool; `prefect worker start --pool POOL` runs them."""
    from tinyopt.params import load_params

    load_params(params_path)
    api = _prefect_server()
    from prefect import deploy as prefect_deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.reoptimize import deployments

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    made = deployments(params_path, for_worker=True)
    prefect_deploy(*made, work_pool_name=pool, build=False, push=False, print_next_steps_message=False)
    click.echo(f"deployed {', '.join('reoptimize/' + d.name for d in made)} to pool {pool} on {api}")


@main.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@params_option
def ui(port: int, host: str, params_path: str) -> None:
    """Start the MLflow UI on the project's tracking store, and print where its runs are."""
    from tinyopt import tracking
    from tinyopt.params import TrackingParams, load_params

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise UserError(f"MLFLOW_TRACKING_URI points at a server already ({tracking.shown(uri)}): open it in a browser")
    experiment = (
        load_params(params_path).tracking.experiment if Path(params_path).is_file() else TrackingParams().experiment
    )
    # An offline tool: no usage data leaves the machine, from the server or from the UI it serves (its
    # UI telemetry follows the server's setting).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        layout.MLFLOW_ARTIFACTS.resolve().as_uri(),
        "--host",
        host,
        "--port",
        str(port),
    ]
    runs = ui_runs_url(f"http://{host}:{port}", experiment)
    click.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it); the runs of experiment '{experiment}':\n{runs}")
    raise SystemExit(subprocess.call(command, env=env))


def ui_runs_url(base: str, experiment: str) -> str:
    """Where a person sees the pipeline's runs: the experiment's runs table in MLflow 3's model-training
    view (its home page and an experiment's plain URL open the GenAI view: traces, no runs). The
    experiment is made now if no run has made it yet, as a run would, so the URL holds from the start."""
    from tinyopt import tracking

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    return f"{base}/#/experiments/{tracking.experiment_id(experiment)}/runs?workflowType=machine_learning"


if __name__ == "__main__":
    main()
