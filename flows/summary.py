"""Assembling the run's records: one dict per variant or reference model, with every figure the
summary, the report and MLflow show."""

from __future__ import annotations

from typing import Any

from flows import plan as planning
from tasks.fit import fits_all
from tinyopt.metrics import HIGHER_IS_BETTER, better
from tinyopt.params import Params

EDGE_FIELDS = (
    "params",
    "macs",
    "ops",
    "tflm_runs",
    "tflm_error",
    "arena_bytes",
    "arena_verified",
    "tflm_top1_agreement",
    "tflm_max_abs_diff",
)


def model_record(
    name: str, tflite: str, converted: Any, evaluation: Any, edge: Any, latency: dict, params: Params
) -> dict:
    """The fields shared by our variants and the reference models."""
    record = {
        "name": name,
        "tflite": tflite,
        "raw_bytes": edge.raw_bytes,
        "gzip_bytes": edge.gzip_bytes,
        "metric": evaluation.metric,
        "score": evaluation.score,
        "val_score": evaluation.val_score,
        evaluation.metric: evaluation.score,  # the task's metric under its own name too (accuracy, mae, auc)
        "latency_us_p50": latency["latency_us_p50"],
        "latency_us_p99": latency["latency_us_p99"],
        "input_dtype": edge.input_dtype,
        "output_dtype": edge.output_dtype,
        **{field: getattr(edge, field) for field in EDGE_FIELDS},
    }
    record["fits"] = {}
    record["fit_reasons"] = {}
    for profile, verdict in fits_all(record, params.devices).items():
        record["fits"][profile] = verdict["fits"]
        record["fit_reasons"][profile] = verdict["reason"]
    return record


def variant_record(
    chain: list[str], node: Any, converted: Any, evaluation: Any, edge: Any, latency: dict, params: Params
) -> dict:
    record = model_record(
        planning.variant_name(chain), converted.tflite_path, converted, evaluation, edge, latency, params
    )
    record.update(
        chain=["train", *chain],
        model=node.model_path,
        c_source=converted.c_source,
        keras_score=node.keras_score,
        train_seconds=node.train_seconds,
        sparsity=node.sparsity,
        unique_weights=node.unique_weights,
        notes=node.notes,
        parent_variant=planning.parent_variant(chain),
    )
    return record


def comparisons(variants: list[dict], references: list[dict], counterparts: dict[str, str]) -> list[dict]:
    """Each reference model beside its counterpart among our variants: ours / theirs."""
    ours = {v["name"]: v for v in variants}
    rows = []
    for reference in references:
        stem = reference["name"]
        mine: dict | None = ours.get(counterparts.get(stem, ""))
        if mine is None:
            continue
        rows.append(
            {
                "reference": stem,
                "ours": mine["name"],
                "size_ratio": mine["raw_bytes"] / reference["raw_bytes"],
                "gzip_ratio": mine["gzip_bytes"] / reference["gzip_bytes"],
                "score_diff": round(mine["score"] - reference["score"], 6),
                "latency_ratio": round(mine["latency_us_p50"] / reference["latency_us_p50"], 3),
            }
        )
    return rows


def metrics_of(record: dict) -> dict[str, float]:
    """Every numeric figure of a record, as MLflow metrics."""
    metrics = {
        key: float(record[key])
        for key in (
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
        if record.get(key) is not None
    }
    metrics[record["metric"]] = float(record["score"])  # also under its own name: accuracy, mae or auc
    metrics["tflm_runs"] = float(record["tflm_runs"])
    metrics.update({f"fits.{profile}": float(ok) for profile, ok in record["fits"].items()})
    metrics.update({f"unique_weights.{layer}": float(n) for layer, n in record.get("unique_weights", {}).items()})
    return metrics


def headline(variants: list[dict], references: list[dict]) -> list[dict]:
    """Against the reference's best deployable model (most accurate that TFLM runs) and its smallest
    deployable payload: every variant of ours that TFLM runs with int8 input and output and beats it,
    on test accuracy at no more bytes, and on gzip bytes at no less test accuracy.

    All qualifying variants are listed rather than one chosen, so the comparison selects nothing on
    the test set. (The reference models' validation accuracy is no yardstick: they were trained on
    all the training images, our validation split included.)"""
    deployable = [r for r in references if r["tflm_runs"]]
    ours = [v for v in variants if v["tflm_runs"] and v["input_dtype"] == "int8" and v["output_dtype"] == "int8"]
    if not deployable:
        return []
    metric = deployable[0]["metric"]
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    best = max(deployable, key=lambda r: (sign * r["score"], -r["raw_bytes"]))
    smallest = min(deployable, key=lambda r: (r["gzip_bytes"], -sign * r["score"]))
    rows = []
    for reference, claim, beats in (
        (
            best,
            f"better {metric} at no more bytes",
            lambda v, r: better(metric, v["score"], r["score"]) and v["raw_bytes"] <= r["raw_bytes"],
        ),
        (
            smallest,
            f"smaller gzip payload at no worse {metric}",
            lambda v, r: v["gzip_bytes"] < r["gzip_bytes"] and not better(metric, r["score"], v["score"]),
        ),
    ):
        winners = sorted((v for v in ours if beats(v, reference)), key=lambda v: v["name"])
        rows.append(
            {
                "reference": reference["name"],
                "claim": claim,
                "metric": metric,
                "reference_figures": {k: reference[k] for k in ("raw_bytes", "gzip_bytes", "score", "latency_us_p50")},
                "ours": [
                    {k: v[k] for k in ("name", "raw_bytes", "gzip_bytes", "score", "latency_us_p50", "arena_bytes")}
                    for v in winners
                ],
            }
        )
    fastest = min(deployable, key=lambda r: r["latency_us_p50"])
    for row in rows:
        row["fastest_reference"] = fastest["name"]
        for mine in row["ours"]:
            mine["latency_ratio_to_fastest_reference"] = round(mine["latency_us_p50"] / fastest["latency_us_p50"], 3)
    return rows
