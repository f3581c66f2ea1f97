"""The `optimize` flow: fetch and prepare the data, train the baseline, convert and evaluate it,
track everything in MLflow, and write reports/<run-id>/summary.json."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Optional

from prefect import flow, get_run_logger, task

from tasks.convert import convert_task
from tasks.data import fetch_task, prepare_task
from tasks.evaluate import evaluate_task
from tasks.train import train_task
from tinyopt import layout, tracking
from tinyopt.files import write_json
from tinyopt.lineage import git_commit
from tinyopt.params import load_params
from tinyopt.steps import run_step


def new_run_id() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


@task(name="log-variant", retries=3, retry_delay_seconds=[2, 10, 30])
def log_variant(parent_run_id: str, experiment: str, name: str, tags: dict, params: dict, metrics: dict,
                artifacts: list[Path]) -> str:  # fmt: skip
    """One MLflow child run for one model variant (retried: a tracking server may blip)."""
    run_id = tracking.start_run(experiment, name, tags, parent_run_id=parent_run_id)
    tracking.log_run_data(run_id, params=params, metrics=metrics, artifacts=artifacts)
    tracking.end_run(run_id)
    return run_id


def write_summary(summary: dict, run_id: str, reports: Path = layout.REPORTS) -> Path:
    path = write_json(reports / run_id / "summary.json", summary)
    latest = reports / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, latest / ".summary.json.tmp")
    (latest / ".summary.json.tmp").replace(latest / "summary.json")
    return path


@flow(name="optimize")
def optimize(params_path: str = "params.yaml", run_id: Optional[str] = None) -> dict:
    """Run the pipeline end to end and return its summary (also written to reports/<run-id>/)."""
    logger = get_run_logger()
    params = load_params(params_path)
    run_id = run_id or new_run_id()
    commit = git_commit()

    dataset = run_step(fetch_task, params=params.data, out_root=layout.DATA_ROOT)
    prepared = run_step(
        prepare_task, raw_dir=Path(dataset.directory), params=params.data, seed=params.seed, out=layout.PREPARED
    )
    logger.info("data: %s %s, %d train / %d val / %d test", prepared.dataset, prepared.dataset_version,
                prepared.num_train, prepared.num_val, prepared.num_test)  # fmt: skip
    trained = run_step(
        train_task, prepared=Path(prepared.path), model_params=params.model, train_params=params.train,
        seed=params.seed, out_dir=layout.BASELINE_DIR,
    )  # fmt: skip
    converted = run_step(
        convert_task, model_path=Path(trained.model_path), conversion="float32",
        out_path=layout.BASELINE_DIR / "model.tflite",
    )  # fmt: skip
    evaluation = run_step(evaluate_task, tflite_path=Path(converted.tflite_path), prepared=Path(prepared.path))

    lineage = {
        "tinyopt.run_id": run_id,
        "git_commit": commit,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "params_hash": params.digest(),
    }
    parent_run_id = tracking.start_run(params.tracking.experiment, f"pipeline {run_id}", lineage)
    try:
        baseline_chain = ["train", "float32"]
        baseline_run_id = log_variant(
            parent_run_id, params.tracking.experiment, "baseline",
            tags={**lineage, "variant": "baseline", "chain": " > ".join(baseline_chain), "parent_variant": "none"},
            params={"seed": params.seed, **_flat("model", params.model.model_dump()),
                    **_flat("train", params.train.model_dump()), **_flat("data", params.data.model_dump()),
                    "conversion": "float32"},
            metrics={"accuracy": evaluation.accuracy, "keras_accuracy": trained.keras_test_accuracy,
                     "val_accuracy": trained.val_accuracy, "raw_bytes": converted.raw_bytes,
                     "gzip_bytes": converted.gzip_bytes, "train_seconds": trained.train_seconds,
                     "epochs_run": trained.epochs_run, "num_params": trained.num_params},
            artifacts=[Path(trained.model_path), Path(converted.tflite_path)],
        )  # fmt: skip
        baseline = {
            "name": "baseline",
            "chain": baseline_chain,
            "model": trained.model_path,
            "tflite": converted.tflite_path,
            "raw_bytes": converted.raw_bytes,
            "gzip_bytes": converted.gzip_bytes,
            "accuracy": evaluation.accuracy,
            "keras_accuracy": trained.keras_test_accuracy,
            "val_accuracy": trained.val_accuracy,
            "train_seconds": trained.train_seconds,
            "epochs_run": trained.epochs_run,
            "params": trained.num_params,
            "mlflow_run_id": baseline_run_id,
        }
        summary = {
            "run_id": run_id,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "mlflow_run_id": parent_run_id,
            "mlflow_tracking_uri": tracking.tracking_uri(),
            "mlflow_experiment": params.tracking.experiment,
            "git_commit": commit,
            "params_hash": params.digest(),
            "dataset": {
                "name": dataset.name,
                "version": dataset.version,
                "num_train": prepared.num_train,
                "num_val": prepared.num_val,
                "num_test": prepared.num_test,
            },
            "baseline": baseline,
            "variants": [baseline],
        }
        summary_path = write_summary(summary, run_id)
        tracking.log_run_data(parent_run_id, params={"params_hash": params.digest()},
                              metrics={"baseline_accuracy": evaluation.accuracy}, artifacts=[summary_path])  # fmt: skip
    except BaseException:
        tracking.end_run(parent_run_id, "FAILED")
        raise
    tracking.end_run(parent_run_id)
    logger.info("summary: %s", summary_path)
    return summary


def _flat(prefix: str, values: dict) -> dict:
    return {f"{prefix}.{key}": value for key, value in values.items()}
