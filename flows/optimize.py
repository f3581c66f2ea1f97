"""The `optimize` flow: fetch and prepare the data, train the baseline, build every chain of the plan
(flows.variants), measure the variants and the reference models (flows.measure), pick, track them in
MLflow (tasks.track), and write reports/<run-id>/summary.json with its report."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from flows.devices import devices_off
from flows.measure import measure
from flows.variants import Built, build, step_count
from tasks.data import fetch_dataset, prepare_dataset
from tasks.track import close_run, lineage_tags, log_models
from tasks.train import train_baseline
from tinyopt.core import layout
from tinyopt.core.console import Progress
from tinyopt.core.files import write_json
from tinyopt.core.lineage import git_commit
from tinyopt.core.masking import shown
from tinyopt.orchestration import tracking
from tinyopt.orchestration.cache import compute_code_versions
from tinyopt.orchestration.live import LiveRuns
from tinyopt.orchestration.steps import Submitter
from tinyopt.params import Params, RunnerParams, load_params, with_inputs
from tinyopt.records.run import Summary
from tinyopt.run import plan
from tinyopt.run.references import find_references, reference_candidates
from tinyopt.run.report import publish_latest, write_report
from tinyopt.run.select import select
from tinyopt.run.summary import summarize, variant


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def task_runner(settings: RunnerParams):
    """The Prefect task runner params.yaml asks for."""
    if settings.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.workers)
    from prefect_dask import DaskTaskRunner

    if settings.address:
        return DaskTaskRunner(address=settings.address)
    # One thread per worker process: TensorFlow uses the cores itself.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1, "processes": True})


def reference_steps(params: Params) -> int:
    """A reference model's task runs: its evaluation, benchmark and MLflow log; its compile and device
    steps when the devices are on (a float one's are counted as skipped)."""
    return 3 + (2 if devices_off(params) is None else 0)


def planned_steps(params: Params, chains: list[list[str]]) -> int:
    """Every task run the run may make, known before it starts: the progress line's fixed total."""
    references = reference_candidates(params.reference, params.data.dataset)
    return step_count(chains, devices_off(params) is None) + references * reference_steps(params)


def data_stage(params: Params, run: Submitter, logger) -> tuple:
    """Fetch and prepare the data; find the reference models that can be measured on it."""
    name = params.data.dataset
    dataset = run.now(fetch_dataset, f"fetch {name}", params=params.data, out_root=layout.DATA_ROOT)
    prepared = run.now(
        prepare_dataset,
        f"prepare {name}",
        raw_dir=Path(dataset.directory),
        params=params.data,
        seed=params.seed,
        out=layout.PREPARED,
    )
    counts = (prepared.num_train, prepared.num_val, prepared.num_test)
    logger.info("data: %s %s, %d train / %d val / %d test", prepared.dataset, prepared.dataset_version, *counts)
    references, note = find_references(params.reference, dataset.name, prepared.input_shape)
    if note:
        logger.info(note)
    return dataset, prepared, {path.stem: path for path in references}, note


def train_stage(params: Params, prepared: Path, run: Submitter, curves_to: tuple[str, ...] = ()):
    """The baseline: the user's model (fine-tuned if asked) or tinyopt's own, trained on the train split;
    its per-epoch curves go live to the MLflow runs `curves_to`."""
    return run.now(
        train_baseline,
        "train baseline",
        prepared=prepared,
        model_params=params.model,
        train_params=params.train,
        task=params.task,
        seed=params.seed,
        out_dir=plan.model_dir(()),
        curves_to=curves_to,
    )


def report_stage(summary: Summary, params: Params, wall_seconds: float | None = None) -> Path:
    """summary.json, the report beside it and in reports/latest/, all logged to the parent MLflow run."""
    as_json = summary.model_dump(mode="json")
    summary_path = write_json(layout.REPORTS / summary.run_id / "summary.json", as_json)
    report_files = write_report(summary, summary_path.parent)
    publish_latest([summary_path, *report_files])
    close_run(summary.mlflow_run_id, params, summary, [summary_path, *report_files], wall_seconds)
    description = f"tinyopt run {summary.run_id}"
    create_markdown_artifact(markdown=report_files[0].read_text(), key="tinyopt-report", description=description)
    return summary_path


def measure_stage(built: Built, chains: list, references: dict, prepared: Path, params: Params, run: Submitter):
    """Every built variant's and reference model's figures: the variants as records, in the plan's order."""
    ours, theirs = measure(
        {name: Path(record.tflite_path) for name, record in built.converted.items()},
        references,
        prepared,
        params,
        run,
        evaluated=built.evaluated(),
        on_devices=built.on_devices,
    )
    variants = [
        variant(chain, built.models[tuple(chain[:-1])], built.converted[name], ours[name])
        for chain, name in built.made(chains)
    ]
    return variants, list(theirs.values())


@flow(name="optimize", task_runner=ThreadPoolTaskRunner(max_workers=4))
def optimize(
    params_path: str = "params.yaml", run_id: str | None = None, model: str | None = None, data: str | None = None
) -> Summary:
    """Run the pipeline end to end and return its summary (also written to reports/<run-id>/).
    `model` and `data` override params.yaml's model.path and data (see tinyopt.params.with_inputs).
    Its MLflow run opens now (RUNNING, with the params) and ends with it: FAILED, with the error, if it fails."""
    logger, started = get_run_logger(), time.monotonic()
    params = with_inputs(load_params(params_path), model, data)
    run_id, commit, chains = run_id or new_run_id(), git_commit(), plan.chains(params)
    compute_code_versions()
    run = Submitter(Progress(planned_steps(params, chains), logger.info, started))
    opened = {"tinyopt.run_id": run_id, "git_commit": commit, "params_hash": params.digest(), "kind": "pipeline"}
    with tracking.tracked_run(params.tracking.experiment, f"pipeline {run_id}", opened) as parent_run_id:
        tracking.log_run_data(parent_run_id, params=tracking.flat(params.model_dump(mode="json")))
        live = LiveRuns(params.tracking.experiment, parent_run_id, opened)
        try:
            summary, summary_path = run_pipeline(params, chains, run_id, commit, live, run, logger, started)
        except BaseException:
            live.end_all("FAILED")
            raise
    logger.info("summary: %s", summary_path)
    return summary


def run_pipeline(
    params: Params,
    chains: list,
    run_id: str,
    commit: str | None,
    live: LiveRuns,
    run: Submitter,
    logger,
    started: float,
) -> tuple[Summary, Path]:
    """The optimize flow's stages inside its MLflow run (`live.parent_run_id`): the summary and its path."""
    dataset, prepared, references, reference_note = data_stage(params, run, logger)
    unused = reference_candidates(params.reference, params.data.dataset) - len(references)
    run.progress.skip("reference models not found or not usable", unused * reference_steps(params))
    lineage = lineage_tags(run_id, commit, dataset, params)
    live.tags, live.dataset = lineage, dataset_input(dataset, prepared)
    for key in ("dataset", "dataset_version"):
        tracking.client().set_tag(live.parent_run_id, key, lineage[key])
    tracking.log_dataset(live.parent_run_id, live.dataset)
    prepared_path = Path(prepared.path)
    baseline = train_stage(params, prepared_path, run, curves_to=live.start([c for c in chains if len(c) == 1]))
    stage_started = time.perf_counter()  # the variant stage: techniques, conversions, evaluations
    built = build(params, chains, prepared_path, baseline, run, logger, live)
    variant_stage_seconds = round(time.perf_counter() - stage_started, 1)
    logger.info("variant stage: %.1f s on %s", variant_stage_seconds, params.runner.kind)

    variants, references = measure_stage(built, chains, references, prepared_path, params, run)
    base = next(v for v in variants if v.name == "base-float32")
    picks = select(variants, base.val_score, base.metric, params.objectives)
    variants, references = log_models(live, lineage, variants, references, picks, params, run)
    summary = summarize(
        run_id=run_id,
        params=params,
        dataset=dataset,
        prepared=prepared,
        baseline=baseline,
        variants=variants,
        references=references,
        reference_note=reference_note,
        skipped=built.skips(),
        picks=picks,
        mlflow_run_id=live.parent_run_id,
        mlflow_tracking_uri=shown(tracking.tracking_uri()),  # never a password in a report
        commit=commit,
        variant_stage_seconds=variant_stage_seconds,
    )
    return summary, report_stage(summary, params, wall_seconds=round(time.monotonic() - started, 1))


def dataset_input(dataset, prepared):
    """The run's data as an MLflow dataset input: its name, DVC md5, where it lies, its split sizes."""
    profile = {
        "num_train": prepared.num_train,
        "num_val": prepared.num_val,
        "num_test": prepared.num_test,
        "input_shape": prepared.input_shape,
        "num_classes": prepared.num_classes,
    }
    source = str(Path(dataset.directory).resolve())
    return tracking.dataset_input(dataset.name, dataset.version, source, profile)
