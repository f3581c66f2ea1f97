"""Track step: one MLflow child run per model file under the run's parent run, with its lineage, its
chain's params, every figure as a metric and its files as artifacts; then the parent run's own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from tinyopt.orchestration import tracking
from tinyopt.orchestration.live import LiveRuns
from tinyopt.orchestration.steps import step
from tinyopt.params import Params
from tinyopt.records.run import Measured, Pick, Summary, Variant
from tinyopt.run import plan

METRICS = (
    "score",
    "val_score",
    "raw_bytes",
    "gzip_bytes",
    "latency_us_p50",
    "latency_us_p99",
    "params",
    "macs",
    "arena_bytes",
    "tflm_top1_agreement",
    "tflm_max_abs_diff",
    "keras_score",
    "sparsity",
    "train_seconds",
)
DEVICE_FIGURES = (
    "flash_bytes",
    "model_flash_bytes",
    "ram_bytes",
    "instructions",
    "score",
    "bit_exact",
    "bit_exact_share",
    "latency_ms_estimate",
)


def lineage_tags(run_id: str, commit: str | None, dataset: Any, params: Params) -> dict[str, str]:
    """The tags every MLflow run of a pipeline run carries: where its models came from."""
    return {
        "tinyopt.run_id": run_id,
        "git_commit": commit,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "params_hash": params.digest(),
    }


@step(retries=3, cache=False)
def log_model(
    parent_run_id: str,
    experiment: str,
    name: str,
    tags: dict,
    params: dict,
    metrics: dict,
    artifacts: list[Path],
    directories: dict[str, Path] | None = None,
    run_id: str | None = None,
    model_files: list[Path] | None = None,
) -> tuple[str, str | None]:
    """One model file's figures and files on its MLflow child run (`run_id`, opened while the flow ran, or a
    new one), which then ends FINISHED; `model_files` (and `directories`) also become an MLflow logged model
    of that run, holding the figures. Returns (run id, logged model id or None). Retried: a tracking server
    may blip."""
    with tracking.tracked_run(experiment, name, tags, parent_run_id, run_id=run_id) as run_id:
        model_id = None
        if model_files:
            with tempfile.TemporaryDirectory(prefix="tinyopt-logged-model-") as staged:
                for path in model_files:
                    shutil.copy2(path, Path(staged) / path.name)
                for sub, directory in (directories or {}).items():
                    shutil.copytree(directory, Path(staged) / sub)
                model_tags = {key: tags[key] for key in ("variant", "chain", "tinyopt.run_id") if key in tags}
                model_id = tracking.log_logged_model(run_id, experiment, name, Path(staged), model_tags)
        tracking.log_run_data(
            run_id,
            params=params,
            metrics=metrics,
            artifacts=artifacts,
            directories={} if model_id else directories or {},  # a logged model holds them already
            model_id=model_id,
        )
    return run_id, model_id


def metrics_of(record: Measured) -> dict[str, float]:
    """Every numeric figure of a record, as MLflow metrics."""
    metrics = {key: float(getattr(record, key)) for key in METRICS if getattr(record, key, None) is not None}
    metrics[record.metric] = float(record.score)  # also under its own name: accuracy, mae or auc
    metrics["tflm_runs"] = float(record.tflm_runs)
    metrics.update({f"fits.{profile}": float(ok) for profile, ok in record.fits.items()})
    metrics.update({f"unique_weights.{layer}": float(n) for layer, n in getattr(record, "unique_weights", {}).items()})
    for profile, figures in record.device.items():  # measured on the profile's emulated core
        for key in DEVICE_FIGURES:
            value = getattr(figures, key)
            if value is not None:
                metrics[f"device.{profile}.{key}"] = float(value)
    return metrics


def c_library(record: Measured) -> dict[str, Path]:
    """The generated C library, logged under c_library/."""
    return {"c_library": Path(record.c_library)} if record.c_library else {}


def variant_tags(variant: Variant, lineage: dict, picks: dict[str, Pick]) -> dict[str, str]:
    tags = {
        **lineage,
        "variant": variant.name,
        "chain": " > ".join(variant.chain),
        "parent_variant": variant.parent_variant,
        "input_dtype": variant.input_dtype,
        "tflm_runs": str(variant.tflm_runs).lower(),
        "kind": "variant",
        **{f"pick.{objective}": "true" for objective, pick in picks.items() if pick.variant == variant.name},
    }
    if variant.notes:
        tags["notes"] = variant.notes[: tracking.TAG_LIMIT]
    if variant.tflm_error:
        tags["tflm_error"] = variant.tflm_error[: tracking.TAG_LIMIT]
    return tags


def model_files(variant: Variant) -> list[Path]:
    """What the variant's logged model holds: the .tflite file and its C array (its C library beside them)."""
    c_source = Path(variant.c_source)
    return [Path(variant.tflite), c_source, c_source.with_suffix(".h")]


def log_models(
    live: LiveRuns,
    lineage: dict,
    variants: list[Variant],
    references: list[Measured],
    picks: dict[str, Pick],
    params: Params,
    run: Any,
) -> tuple[list[Variant], list[Measured]]:
    """Every record's remaining figures and files on its child run, which ends then (in parallel, through
    `run`); a variant's files as its logged model; the records with their run and model ids."""
    experiment, parent_run_id = params.tracking.experiment, live.parent_run_id
    futures = []
    for variant in variants:
        run_id = live.start([variant.chain[1:]])[0]  # opened by its model's step; a new one only if not
        futures.append(
            run(
                log_model,
                f"log {variant.name} to MLflow",
                parent_run_id=parent_run_id,
                experiment=experiment,
                name=variant.name,
                tags=variant_tags(variant, lineage, picks),
                params=plan.chain_params(variant.chain[1:], params),
                metrics=live.unlogged(run_id, metrics_of(variant)),
                artifacts=[Path(variant.model)] if variant.name == "base-float32" else [],
                directories=c_library(variant),
                run_id=run_id,
                model_files=model_files(variant),
            )
        )
    futures += [
        run(
            log_model,
            f"log ref:{reference.name} to MLflow",
            parent_run_id=parent_run_id,
            experiment=experiment,
            name=f"reference {reference.name}",
            tags={
                **lineage,
                "variant": f"ref:{reference.name}",
                "kind": "reference",
                "tflm_runs": str(reference.tflm_runs).lower(),
                "source": reference.tflite,
            },
            params={"reference_file": reference.tflite},
            metrics=metrics_of(reference),
            artifacts=[],
            directories=c_library(reference),
        )
        for reference in references
    ]
    logged = []
    for record, future in zip([*variants, *references], futures, strict=True):
        run_id, model_id = future.result()
        logged.append(record.model_copy(update={"mlflow_run_id": run_id, "mlflow_model_id": model_id}))
    return logged[: len(variants)], logged[len(variants) :]


def close_run(
    parent_run_id: str, params: Params, summary: Summary, files: list[Path], wall_seconds: float | None = None
) -> None:
    """The parent run's own figures (the baseline's score, each pick's figures, the run's wall time), the
    report files, a tag per pick and the skips."""
    metrics: dict[str, float | None] = {f"baseline_{summary.baseline.metric}": summary.baseline.score}
    metrics["wall_seconds"] = wall_seconds
    by_name = {variant.name: variant for variant in summary.variants}
    for objective, pick in summary.picks.items():
        picked = by_name.get(pick.variant or "")
        if picked is not None:
            figures = {"score": picked.score, "raw_bytes": picked.raw_bytes, "gzip_bytes": picked.gzip_bytes}
            figures |= {f"{profile}.instructions": f.instructions for profile, f in picked.device.items()}
            metrics |= {f"pick.{objective}.{key}": value for key, value in figures.items()}
    tracking.log_run_data(
        parent_run_id,
        params={"variants": len(summary.variants), "skipped": len(summary.skipped)},
        metrics=metrics,
        artifacts=files,
    )
    for objective, pick in summary.picks.items():
        tracking.client().set_tag(parent_run_id, f"pick.{objective}", pick.variant or "none")
    if summary.skipped:
        skips = "; ".join(f"{skip.name}: {skip.reason}" for skip in summary.skipped)
        tracking.client().set_tag(parent_run_id, "skipped", skips[: tracking.TAG_LIMIT])
