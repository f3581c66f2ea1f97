"""The `optimize` flow: fetch and prepare the data, train the baseline, run every chain of the plan
(shared prefixes trained once, independent branches in parallel), convert and evaluate each variant,
track everything in MLflow, and write reports/<run-id>/summary.json."""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path
from typing import Any, Optional

from prefect import flow, get_run_logger, task
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import plan as planning
from tasks.cluster import cluster_task
from tasks.convert import convert_task
from tasks.data import fetch_task, prepare_task
from tasks.evaluate import evaluate_task
from tasks.graph import graph_task
from tasks.prune import prune_2_4_task, prune_task
from tasks.qat import qat_task
from tasks.separable import separable_task
from tasks.train import ModelRecord, train_task
from tinyopt import layout, tracking
from tinyopt.files import write_json
from tinyopt.lineage import git_commit
from tinyopt.params import QAT_STEPS, Params, load_params
from tinyopt.steps import SkippedRecord


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


def submit_technique(step: str, parent: ModelRecord, prepared: Path, params: Params, out_dir: Path):
    """Start the technique `step` on the parent model; returns its Prefect future."""
    common = dict(parent=Path(parent.model_path), prepared=prepared, out_dir=out_dir)
    techniques, trained = params.techniques, dict(train=params.train, seed=params.seed)
    if step == "prune":
        return prune_task.submit(settings=techniques.prune, **trained, **common)
    if step == "prune_2_4":
        return prune_2_4_task.submit(settings=techniques.prune_2_4, **trained, **common)
    if step in ("cluster", "sp_cluster"):
        return cluster_task.submit(settings=techniques.cluster, preserve_sparsity=step == "sp_cluster", **trained, **common)
    if step in QAT_STEPS:
        return qat_task.submit(step=step, settings=techniques.qat, **trained, **common)
    if step == "separable":
        return separable_task.submit(settings=techniques.separable, **trained, **common)
    if step == "graph":
        return graph_task.submit(settings=techniques.graph, **common)
    raise AssertionError(f"no task for technique {step}")  # params validation makes this unreachable


def write_summary(summary: dict, run_id: str, reports: Path = layout.REPORTS) -> Path:
    path = write_json(reports / run_id / "summary.json", summary)
    latest = reports / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, latest / ".summary.json.tmp")
    (latest / ".summary.json.tmp").replace(latest / "summary.json")
    return path


@flow(name="optimize", task_runner=ThreadPoolTaskRunner(max_workers=4))
def optimize(params_path: str = "params.yaml", run_id: Optional[str] = None) -> dict:
    """Run the pipeline end to end and return its summary (also written to reports/<run-id>/)."""
    logger = get_run_logger()
    params = load_params(params_path)
    run_id = run_id or new_run_id()
    commit = git_commit()

    dataset = fetch_task(params=params.data, out_root=layout.DATA_ROOT)
    prepared = prepare_task(
        raw_dir=Path(dataset.directory), params=params.data, seed=params.seed, out=layout.PREPARED
    )
    prepared_path = Path(prepared.path)
    logger.info("data: %s %s, %d train / %d val / %d test", prepared.dataset, prepared.dataset_version,
                prepared.num_train, prepared.num_val, prepared.num_test)  # fmt: skip
    baseline = train_task(
        prepared=prepared_path, model_params=params.model, train_params=params.train, seed=params.seed,
        out_dir=planning.model_dir(()),
    )  # fmt: skip

    chains = planning.chains(params)
    models: dict[planning.Prefix, ModelRecord] = {(): baseline}
    skipped: dict[str, tuple[list[str], str]] = {}  # model or variant name -> (chain, reason)
    conversions: dict[str, tuple[list[str], Any]] = {}  # variant name -> (chain, conversion future)
    evaluations: dict[str, Any] = {}  # variant name -> evaluation future

    def submit_conversions(prefix: planning.Prefix) -> None:
        """Convert every chain that ends right after this model (in parallel)."""
        for chain in chains:
            if tuple(chain[:-1]) == prefix:
                conversions[planning.variant_name(chain)] = (chain, convert_task.submit(
                    model_path=Path(models[prefix].model_path), conversion=chain[-1],
                    out_path=planning.variant_tflite(chain), prepared=prepared_path,
                    calibration_samples=params.conversion.calibration_samples, seed=params.seed,
                ))  # fmt: skip

    def submit_evaluations(block: bool) -> None:
        """Evaluate each finished conversion (all of them, waiting, when `block`)."""
        waiting = [f for name, (_, f) in conversions.items() if name not in evaluations and name not in skipped]
        finished = as_completed(waiting) if block else [f for f in waiting if f.state.is_final()]
        for future in finished:
            name = next(n for n, (_, f) in conversions.items() if f is future)
            record = future.result()
            if isinstance(record, SkippedRecord):
                skipped[name] = (conversions[name][0], record.reason)
                logger.warning("skipped %s: %s", name, record.reason)
            else:
                evaluations[name] = evaluate_task.submit(tflite_path=Path(record.tflite_path), prepared=prepared_path)

    submit_conversions(())
    prefixes = planning.technique_prefixes(chains)
    for depth in range(1, max((len(p) for p in prefixes), default=0) + 1):
        level = {}
        for prefix in (p for p in prefixes if len(p) == depth):
            if prefix[:-1] not in models:  # its parent was skipped: so is it, for the same reason
                skipped[planning.model_name(prefix)] = (list(prefix), skipped[planning.model_name(prefix[:-1])][1])
                continue
            level[prefix] = submit_technique(prefix[-1], models[prefix[:-1]], prepared_path, params,
                                             planning.model_dir(prefix))  # fmt: skip
        for prefix, future in level.items():
            record = future.result()
            if isinstance(record, SkippedRecord):
                skipped[planning.model_name(prefix)] = (list(prefix), record.reason)
                logger.warning("skipped %s: %s", planning.model_name(prefix), record.reason)
            else:
                models[prefix] = record
                submit_conversions(prefix)
            submit_evaluations(block=False)
    submit_evaluations(block=True)

    lineage = {
        "tinyopt.run_id": run_id,
        "git_commit": commit,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "params_hash": params.digest(),
    }
    parent_run_id = tracking.start_run(params.tracking.experiment, f"pipeline {run_id}", lineage)
    try:
        variants, log_futures = [], []
        for chain in chains:  # in the plan's order
            name = planning.variant_name(chain)
            if name not in evaluations:
                continue
            converted, evaluation = conversions[name][1].result(), evaluations[name].result()
            node = models[tuple(chain[:-1])]
            variant = {
                "name": name,
                "chain": ["train", *chain],
                "model": node.model_path,
                "tflite": converted.tflite_path,
                "c_source": converted.c_source,
                "raw_bytes": converted.raw_bytes,
                "gzip_bytes": converted.gzip_bytes,
                "accuracy": evaluation.accuracy,
                "keras_accuracy": node.keras_test_accuracy,
                "input_dtype": converted.input_dtype,
                "output_dtype": converted.output_dtype,
                "sparsity": node.sparsity,
                "unique_weights": node.unique_weights,
                "params": node.num_params,
                "notes": node.notes,
                "parent_variant": planning.parent_variant(chain),
            }
            variants.append(variant)
            metrics = {
                "accuracy": evaluation.accuracy, "keras_accuracy": node.keras_test_accuracy,
                "val_accuracy": node.val_accuracy, "raw_bytes": converted.raw_bytes,
                "gzip_bytes": converted.gzip_bytes, "sparsity": node.sparsity, "num_params": node.num_params,
                "train_seconds": node.train_seconds,
                **{f"unique_weights.{layer}": count for layer, count in node.unique_weights.items()},
            }  # fmt: skip
            tags = {**lineage, "variant": name, "chain": " > ".join(variant["chain"]),
                    "parent_variant": variant["parent_variant"], "input_dtype": converted.input_dtype}  # fmt: skip
            if node.notes:
                tags["notes"] = node.notes[:5000]
            artifacts = [Path(converted.tflite_path), Path(converted.c_source), Path(converted.c_header)]
            if name == "base-float32":
                artifacts.append(Path(node.model_path))
            log_futures.append(log_variant.submit(
                parent_run_id, params.tracking.experiment, name, tags=tags,
                params=planning.chain_params(chain, params), metrics=metrics, artifacts=artifacts,
            ))  # fmt: skip
        for variant, future in zip(variants, log_futures):
            variant["mlflow_run_id"] = future.result()

        base = next(v for v in variants if v["name"] == "base-float32")
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
            "baseline": {**base, "val_accuracy": baseline.val_accuracy, "train_seconds": baseline.train_seconds,
                         "epochs_run": baseline.epochs_run},  # fmt: skip
            "variants": variants,
            "skipped": [
                {"name": name, "chain": ["train", *chain], "reason": reason} for name, (chain, reason) in skipped.items()
            ],
        }
        summary_path = write_summary(summary, run_id)
        tracking.log_run_data(
            parent_run_id,
            params={"params_hash": params.digest(), "variants": len(variants), "skipped": len(skipped)},
            metrics={"baseline_accuracy": base["accuracy"]},
            artifacts=[summary_path],
        )
        if skipped:
            tracking.client().set_tag(parent_run_id, "skipped", "; ".join(
                f"{name}: {reason}" for name, (_, reason) in skipped.items())[:5000])  # fmt: skip
    except BaseException:
        tracking.end_run(parent_run_id, "FAILED")
        raise
    tracking.end_run(parent_run_id)
    logger.info("summary: %s", summary_path)
    return summary
