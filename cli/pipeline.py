"""The pipeline's commands: `tinyopt run` runs the whole optimize flow; fetch, prepare, train, convert,
evaluate and bench run one step each (dvc.yaml's stages call them, so DVC and Prefect run the very same
step functions)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.group import (
    configure_prefect,
    main,
    params_option,
    quiet_library_warnings,
    quiet_user_errors_in_prefect_logs,
    reach_mlflow,
)
from tinyopt.core import layout
from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.records.run import Measured, Summary

if TYPE_CHECKING:
    from tinyopt.params import Params


def prepared_option(help: str = "the prepared data (tinyopt prepare's output)"):
    return click.option(
        "--prepared", default=str(layout.PREPARED), show_default=True, type=click.Path(dir_okay=False), help=help
    )


def input_options(command):
    """--model and --data: the user's own model and data in place of params.yaml's."""
    command = click.option(
        "--data",
        "data_path",
        default=None,
        type=click.Path(),
        help="your data: a .npz (x_train, y_train, x_test, y_test), or a directory of IDX files or of images per class",
    )(command)
    return click.option(
        "--model",
        "model_path",
        default=None,
        type=click.Path(),
        help="your trained Keras model (.keras, .h5, SavedModel)",
    )(command)


@main.command()
@params_option
@input_options
def run(params_path: str, model_path: str | None, data_path: str | None) -> None:
    """Run the whole pipeline as the Prefect flow `optimize`."""
    runner = start_flow_machinery(params_path, model_path, data_path)
    from flows.optimize import optimize
    from tinyopt.params import load_params

    warn_if_devices_unreachable(load_params(params_path))

    summary = optimize.with_options(task_runner=runner)(params_path=params_path, model=model_path, data=data_path)
    click.echo("\n" + variants_table(summary))
    for skip in summary.skipped:
        click.echo(f"skipped {skip.name}: {skip.reason}")
    click.echo("")
    for objective, pick in summary.picks.items():
        click.echo(f"pick {objective}: {pick.variant or 'none'} ({pick.why})")
    click.echo(
        f"\nrun {summary.run_id}: {len(summary.variants)} variants\n"
        f"report: {layout.REPORTS / summary.run_id / 'report.md'} (summary.json beside it)\n"
        f"MLflow: {summary.mlflow_tracking_uri} "
        f"(experiment '{summary.mlflow_experiment}', run {summary.mlflow_run_id})"
    )


def start_flow_machinery(params_path: str, model_path: str | None, data_path: str | None):
    """Everything a flow command does before its flow: check every place a run writes and the inputs
    (one-line errors, nothing written), reach MLflow, start Prefect's API; returns params' task runner."""
    from tinyopt.core import console
    from tinyopt.orchestration import prefect_home

    # Before anything imports Prefect (it reads its settings once, and creates its home) and before any
    # work: every place the run writes can be written.
    prefect_home.set_defaults()
    layout.require_writable(_run_writes())
    configure_prefect()
    from tinyopt.params import load_params, with_inputs
    from tinyopt.run.preflight import check_inputs

    # Bad params, data or model fail here, in seconds, before any machinery starts or anything is written.
    _warn(check_inputs(with_inputs(load_params(params_path), model_path, data_path)))
    reach_mlflow(bound_retries=False)
    console.filter_native_stderr()
    console.quiet_tensorflow_warnings()
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # not its 'Creating initial MLflow database tables'
    prefect_home.start_api()
    from flows.optimize import task_runner

    quiet_user_errors_in_prefect_logs()
    console.quiet_prefect_task_finished()
    quiet_library_warnings()
    return task_runner(load_params(params_path).runner)


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(f"tinyopt: warning: {warning}", err=True)


def warn_if_devices_unreachable(params: Params) -> None:
    """One line before any work when benchmark.devices asks for device figures this machine cannot make
    (each model's record keeps the reason; the tables leave it out rather than repeat it per model)."""
    from tinyopt.mcu.firmware import toolchain_missing

    missing = params.benchmark.devices and toolchain_missing()
    if missing:
        _warn([f"no device figures: {missing}"])


def _run_writes() -> list[Path]:
    """The directories a run writes (checked before it starts)."""
    from tinyopt.orchestration import tracking

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


def variants_table(summary: Summary) -> str:
    """A compact table of every variant and reference model, and why a model has no device figures: what
    `tinyopt run` shows when it ends."""
    metric = summary.variants[0].metric if summary.variants else "score"
    measured = [p for p in summary.devices if any(p in v.device for v in summary.variants)]
    profile = measured[0] if measured else None
    rows = [("model", "bytes", "gzip", metric, "p50 us", "in/out", "TFLM arena", f"instr {profile or '(device)'}")]
    models = [*summary.variants, *summary.named_references()]
    for v in models:
        rows.append(
            (
                v.name,
                f"{v.raw_bytes:,}",
                f"{v.gzip_bytes:,}",
                f"{v.score:.4f}",
                f"{v.latency_us_p50:.1f}",
                f"{v.input_dtype}/{v.output_dtype}",
                f"{v.arena_bytes:,}" if v.arena_bytes else "no",
                f"{v.device[profile].instructions:,.0f}" if profile in v.device else "-",
            )
        )
    gaps = why_no_device_figures(models)
    return aligned(rows) + (f"\n\n{gaps}" if gaps else "")


def why_no_device_figures(models: list[Measured]) -> str:
    """The lines under a table for the models without device figures on some profile ('' if none)."""
    from tinyopt.run.report import device_gaps

    gaps = device_gaps(models)
    return "\n".join(["why no device figures:", *(f"  {gap}" for gap in gaps)]) if gaps else ""


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
    from tasks.data import prepare_dataset
    from tinyopt.datasets.checks import check_data
    from tinyopt.datasets.sources import load_raw
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
@prepared_option()
@click.option("--out-dir", default=str(layout.BASELINE_DIR), show_default=True, type=click.Path(file_okay=False))
def train(params_path: str, prepared: str, out_dir: str) -> None:
    """Train the baseline model and save it as OUT_DIR/model.keras."""
    from tasks.train import train_baseline
    from tinyopt.datasets.prepared import load_prepared
    from tinyopt.params import load_params
    from tinyopt.run.preflight import check_prepared

    params = load_params(params_path)
    if params.model.path:
        check_prepared(params, load_prepared(prepared))  # a model file that crashes its loader fails here, in one line
    record = train_baseline(Path(prepared), params.model, params.train, params.task, params.seed, Path(out_dir))
    click.echo(f"{record.model_path}: {record.epochs_run} epochs, Keras test {record.metric} {record.keras_score:.4f}")


@main.command()
@click.argument("token")
@click.option("--parent", required=True, type=click.Path(exists=True), help="the model to apply it to")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False))
@prepared_option()
@params_option
def technique(token: str, parent: str, out_dir: str, prepared: str, params_path: str) -> None:
    """Apply the technique TOKEN (prune, cluster, qat...: a plan token) to a model, as the flow does."""
    from tasks.techniques import STEPS, technique_call
    from tinyopt.orchestration.steps import SkippedRecord
    from tinyopt.params import load_params

    if token not in STEPS:
        raise UserError(f"unknown technique '{token}'; techniques: {', '.join(STEPS)}")
    step, arguments = technique_call(token, Path(parent), Path(prepared), load_params(params_path), Path(out_dir))
    record = step.task.fn(**arguments)  # as the flow runs it: a SkippedRecord when it does not apply
    if isinstance(record, SkippedRecord):
        raise UserError(f"{token} does not apply to {parent}: {record.reason}")
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
@prepared_option("training data to calibrate integer conversions on")
@params_option
def convert(model_path: str, conversion: str, out: str, prepared: str, params_path: str) -> None:
    """Convert a Keras model file to .tflite (and a C array beside it), with params.yaml's conversion
    settings."""
    from tasks.convert import convert_model
    from tinyopt.params import NEEDS_CALIBRATION, load_params

    params = load_params(params_path)
    calibration = Path(prepared) if conversion in NEEDS_CALIBRATION else None
    record = convert_model(Path(model_path), conversion, Path(out), calibration, params.conversion, params.seed)
    click.echo(f"{record.tflite_path}: {record.raw_bytes:,} bytes ({record.gzip_bytes:,} gzip)")


@main.command()
@click.option("--tflite", "tflite_path", required=True, type=click.Path(dir_okay=False))
@prepared_option()
@click.option("--out", default=None, type=click.Path(dir_okay=False), help="also write the figures as JSON here")
@params_option
def evaluate(tflite_path: str, prepared: str, out: str | None, params_path: str) -> None:
    """The task's metric for a .tflite file on the held-out test split, by running the file itself."""
    from tasks.evaluate import evaluate_tflite
    from tinyopt.core.files import write_json
    from tinyopt.params import load_params

    record = evaluate_tflite(Path(tflite_path), Path(prepared), load_params(params_path).task.score_metric)
    if out:
        write_json(out, record.model_dump(exclude={"outputs"}))
    click.echo(f"{record.tflite_path}: {record.metric} {record.score:.4f} on {record.num_test} test examples")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path())
@click.option(
    "--summary",
    "summary_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="also every variant's .tflite of this run (reports/<run-id>/summary.json), each checked against its sha256",
)
@prepared_option("the prepared data (its test split scores the models)")
@click.option("--json", "json_out", default=None, type=click.Path(dir_okay=False), help="also write the records here")
@click.option(
    "--inputs",
    "inputs",
    default=None,
    metavar="random[:N]",
    help="measure on N generated inputs of each model's own input shape and type (default 16, seeded by params.yaml's "
    "seed) instead of the prepared data: device figures and runtime agreement, no score",
)
@params_option
def bench(
    paths: tuple[str, ...],
    summary_path: str | None,
    prepared: str,
    json_out: str | None,
    inputs: str | None,
    params_path: str,
) -> None:
    """Benchmark .tflite files (or directories of them), or a run's variants (--summary), in the pipeline's
    own harness.

    A file that cannot be measured (not a model, two inputs, a shape the data does not have...) gets a line
    saying why, and the others are measured all the same. Exit status 0 when at least one file was measured,
    2 when none was (nothing is written then; one file: its reason is the error), or when a file of the run's
    is not the one it recorded. With --inputs random[:N], each model runs on generated inputs of its own
    shape: no labels, so no score ("-"), but every other figure."""
    from tinyopt.core.files import write_json
    from tinyopt.params import load_params
    from tinyopt.run.report import device_rows, model_rows
    from tinyopt.runtimes.random_inputs import parse_inputs

    if not paths and not summary_path:
        raise UserError("give .tflite files or directories, or --summary reports/<run-id>/summary.json")
    random_count = parse_inputs(inputs) if inputs is not None else None
    params = load_params(params_path)
    files = summary_files(Path(summary_path)) if summary_path else []
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
    warn_if_devices_unreachable(params)
    quiet_library_warnings()
    stems = [f.stem for f in files]
    named = {(f.stem if stems.count(f.stem) == 1 else str(f)): f for f in files}  # a stem twice: its path
    measured, not_measured = measure_each(named, Path(prepared), params, random_count)
    if not measured and len(named) == 1:
        name, reason = next(iter(not_measured.items()))
        raise UserError(f"{name}: {reason}")
    if not measured:
        for name, reason in not_measured.items():
            click.echo(f"not measured {name}: {reason}")
        raise UserError(f"none of the {len(named)} files could be measured (each one's reason above)")
    click.echo(aligned(model_rows(list(measured.values()))))
    profiles = [p for p in params.benchmark.devices if any(p in m.device for m in measured.values())]
    if profiles:
        click.echo("\n" + aligned(device_rows(list(measured.values()), profiles)))
    gaps = why_no_device_figures(list(measured.values()))
    if gaps:
        click.echo("\n" + gaps)
    if random_count is not None:
        click.echo(
            f"\nno scores: measured on {random_count} random inputs of each model's own shape (seed {params.seed}), "
            "which have no labels"
        )
    for name, reason in not_measured.items():
        click.echo(f"not measured {name}: {reason}")
    if json_out:
        write_json(json_out, [record.model_dump(mode="json") for record in measured.values()])


def summary_files(path: Path) -> list[Path]:
    """The .tflite file of each variant of a run, each the one the run recorded (else one line why not)."""
    from tinyopt.records.run import load_summary
    from tinyopt.run.snapshot import verified

    summary = load_summary(path)
    return [verified(summary, variant.tflite) for variant in summary.variants]


def measure_each(
    named: dict[str, Path], prepared: Path, params, random_count: int | None = None
) -> tuple[dict, dict[str, str]]:
    """Each file measured on its own, so that one bad file costs only its own figures: name -> Measured, and
    name -> why it could not be measured. Steps run one after another here, so each host latency is still
    timed with nothing else running. With `random_count`, each file is measured on that many random inputs of
    its own shape (written as a prepared-like .npz without labels) instead of `prepared`."""
    import tempfile

    from flows.measure import measure
    from tinyopt.orchestration.steps import run_now
    from tinyopt.runtimes.random_inputs import write_random_inputs

    measured, not_measured = {}, {}
    for name, path in named.items():
        try:
            with tempfile.TemporaryDirectory(prefix="tinyopt-random-") as scratch:
                data = (
                    prepared
                    if random_count is None
                    else write_random_inputs(path, random_count, params.seed, Path(scratch) / "random.npz")
                )
                measured |= measure({name: path}, {}, data, params, run_now)[0]
        except (UserError, NotApplicable) as exc:
            not_measured[name] = _without_path(str(exc), path)
        except Exception as exc:  # not a known bad input, yet it ends this file's measurement only
            first_line = (str(exc).strip().splitlines() or [""])[0]
            not_measured[name] = f"{type(exc).__name__}: {_without_path(first_line, path)}"
    return measured, not_measured


def _without_path(message: str, path: Path) -> str:
    """A step's message without its leading 'PATH: ' (the note names the file)."""
    return message.removeprefix(f"{path}: ")
