"""Assembling a run's records: one Measured per model file, one Variant per chain of ours, and the
summary around them (comparisons with the reference models, the headline claims)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tinyopt.ml.metrics import HIGHER_IS_BETTER, better
from tinyopt.params import DeviceProfile, Params
from tinyopt.records.run import (
    Baseline,
    Comparison,
    EdgeFigures,
    Headline,
    Measured,
    Pick,
    Record,
    ReferenceFigures,
    Skipped,
    Summary,
    Variant,
    Winner,
)
from tinyopt.records.steps import (
    ConvertRecord,
    DatasetRecord,
    DeviceRecord,
    EdgeRecord,
    EvalRecord,
    NotRun,
    PreparedRecord,
    TrainedModel,
)
from tinyopt.run import plan
from tinyopt.run.device_fit import fits_all
from tinyopt.run.snapshot import freeze


def measured(
    name: str,
    tflite: str,
    evaluation: EvalRecord,
    edge: EdgeRecord,
    latency: dict,
    devices: dict[str, DeviceProfile],
    on_device: DeviceRecord | NotRun,
) -> Measured:
    """Every figure of one model file: its evaluation, its edge benchmark, its host latency, what the emulated
    devices measured (or why they measured nothing), and its device fit."""
    ran = on_device if isinstance(on_device, DeviceRecord) else None
    figures, not_run = (ran.figures, ran.not_run) if ran else ({}, {})
    verdicts = fits_all(edge, devices, figures, not_run)
    note = on_device.reason if ran is None else "; ".join(f"{k}: {v}" for k, v in not_run.items()) or None
    return Measured(
        name=name,
        tflite=tflite,
        metric=evaluation.metric,
        score=evaluation.score,
        val_score=evaluation.val_score,
        latency_us_p50=latency["latency_us_p50"],
        latency_us_p99=latency["latency_us_p99"],
        device=figures,
        device_note=note,
        c_library=ran.library if ran else None,
        fits={profile: verdict["fits"] for profile, verdict in verdicts.items()},
        fit_reasons={profile: verdict["reason"] for profile, verdict in verdicts.items()},
        **{field: getattr(edge, field) for field in EdgeFigures.model_fields},
    )


def variant(chain: list[str], node: TrainedModel, converted: ConvertRecord, figures: Measured) -> Variant:
    """A variant of ours: its figures, and the chain and Keras model (`node`) it came from."""
    return Variant(
        **dict(figures),
        chain=["train", *chain],
        model=node.model_path,
        c_source=converted.c_source,
        keras_score=node.keras_score,
        train_seconds=node.train_seconds,
        sparsity=node.sparsity,
        unique_weights=node.unique_weights,
        notes=node.notes,
        parent_variant=plan.parent_variant(chain),
    )


def comparisons(variants: list[Variant], references: list[Measured], counterparts: dict[str, str]) -> list[Comparison]:
    """Each reference model beside its counterpart among our variants: ours / theirs."""
    ours = {v.name: v for v in variants}
    rows = []
    for reference in references:
        mine = ours.get(counterparts.get(reference.name, ""))
        if mine is None:
            continue
        rows.append(
            Comparison(
                reference=reference.name,
                ours=mine.name,
                size_ratio=mine.raw_bytes / reference.raw_bytes,
                gzip_ratio=mine.gzip_bytes / reference.gzip_bytes,
                score_diff=round(mine.score - reference.score, 6),
                latency_ratio=round(mine.latency_us_p50 / reference.latency_us_p50, 3),
            )
        )
    return rows


def _figures(record: Measured, kind: type[Record]) -> dict[str, Any]:
    """The figures of `record` that a smaller record of kind `kind` repeats."""
    return {name: getattr(record, name) for name in kind.model_fields if hasattr(record, name)}


def headline(variants: list[Measured], references: list[Measured]) -> list[Headline]:
    """Against the reference's best deployable model (most accurate that TFLM runs) and its smallest
    deployable payload: every variant of ours that TFLM runs with int8 input and output and beats it,
    on test accuracy at no more bytes, and on gzip bytes at no less test accuracy.

    All qualifying variants are listed rather than one chosen, so the comparison selects nothing on
    the test set. (The reference models' validation accuracy is no yardstick: they were trained on
    all the training images, our validation split included.)"""
    deployable = [r for r in references if r.tflm_runs]
    ours = [v for v in variants if v.tflm_runs and v.input_dtype == "int8" and v.output_dtype == "int8"]
    if not deployable:
        return []
    metric = deployable[0].metric
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    best = max(deployable, key=lambda r: (sign * r.score, -r.raw_bytes))
    smallest = min(deployable, key=lambda r: (r.gzip_bytes, -sign * r.score))
    fastest = min(deployable, key=lambda r: r.latency_us_p50)
    rows = []
    for reference, claim, beats in (
        (
            best,
            f"better {metric} at no more bytes",
            lambda v, r: better(metric, v.score, r.score) and v.raw_bytes <= r.raw_bytes,
        ),
        (
            smallest,
            f"smaller gzip payload at no worse {metric}",
            lambda v, r: v.gzip_bytes < r.gzip_bytes and not better(metric, r.score, v.score),
        ),
    ):
        winners = sorted((v for v in ours if beats(v, reference)), key=lambda v: v.name)
        rows.append(
            Headline(
                reference=reference.name,
                claim=claim,
                metric=metric,
                reference_figures=ReferenceFigures(**_figures(reference, ReferenceFigures)),
                ours=[
                    Winner(
                        **_figures(v, Winner),
                        latency_ratio_to_fastest_reference=round(v.latency_us_p50 / fastest.latency_us_p50, 3),
                    )
                    for v in winners
                ],
                fastest_reference=fastest.name,
            )
        )
    return rows


def summarize(
    *,
    run_id: str,
    params: Params,
    dataset: DatasetRecord,
    prepared: PreparedRecord,
    baseline: TrainedModel,
    variants: list[Variant],
    references: list[Measured],
    reference_note: str | None,
    skipped: list[Skipped],
    picks: dict[str, Pick],
    mlflow_run_id: str,
    mlflow_tracking_uri: str,
    commit: str | None,
    variant_stage_seconds: float,
) -> Summary:
    """reports/<run-id>/summary.json: the run's lineage, every record, the picks and the comparisons; the files
    it names are the run's own, frozen under artifacts/runs/<run-id>/ with their sha256 (tinyopt.run.snapshot)."""
    base = next(v for v in variants if v.name == "base-float32")
    summary = Summary(
        run_id=run_id,
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        mlflow_run_id=mlflow_run_id,
        mlflow_tracking_uri=mlflow_tracking_uri,
        mlflow_experiment=params.tracking.experiment,
        git_commit=commit,
        params_hash=params.digest(),
        dataset={
            "name": dataset.name,
            "version": dataset.version,
            "num_train": prepared.num_train,
            "num_val": prepared.num_val,
            "num_test": prepared.num_test,
        },
        baseline=Baseline(**dict(base), epochs_run=baseline.epochs_run),
        variants=variants,
        skipped=skipped,
        picks=picks,
        reference=references,
        reference_note=reference_note,
        comparisons=comparisons(variants, references, params.reference.counterparts),
        headline=headline(variants, references),
        devices={name: profile.model_dump() for name, profile in params.devices.items()},
        timings={"variant_stage_seconds": variant_stage_seconds, "runner": params.runner.model_dump()},
    )
    return freeze(summary)
