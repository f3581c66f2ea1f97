"""Assembling the run's records: one dict per variant or reference model, with every figure the
summary, the report and MLflow show."""

from __future__ import annotations

from typing import Any, Optional

from flows import plan as planning
from tasks.fit import fits_all
from tinyopt.params import Params

EDGE_FIELDS = ("params", "macs", "ops", "tflm_runs", "tflm_error", "arena_bytes", "arena_verified",
               "tflm_top1_agreement", "tflm_max_abs_diff")  # fmt: skip


def model_record(name: str, tflite: str, converted: Any, evaluation: Any, edge: Any, latency: dict,
                 params: Params) -> dict:  # fmt: skip
    """The fields shared by our variants and the reference models."""
    record = {
        "name": name,
        "tflite": tflite,
        "raw_bytes": edge.raw_bytes,
        "gzip_bytes": edge.gzip_bytes,
        "accuracy": evaluation.accuracy,
        "val_accuracy": evaluation.val_accuracy,
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


def variant_record(chain: list[str], node: Any, converted: Any, evaluation: Any, edge: Any, latency: dict,
                   params: Params) -> dict:  # fmt: skip
    record = model_record(planning.variant_name(chain), converted.tflite_path, converted, evaluation, edge, latency,
                          params)  # fmt: skip
    record.update(
        chain=["train", *chain],
        model=node.model_path,
        c_source=converted.c_source,
        keras_accuracy=node.keras_test_accuracy,
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
        mine: Optional[dict] = ours.get(counterparts.get(stem, ""))
        if mine is None:
            continue
        rows.append({
            "reference": stem,
            "ours": mine["name"],
            "size_ratio": mine["raw_bytes"] / reference["raw_bytes"],
            "gzip_ratio": mine["gzip_bytes"] / reference["gzip_bytes"],
            "accuracy_diff": round(mine["accuracy"] - reference["accuracy"], 6),
            "latency_ratio": round(mine["latency_us_p50"] / reference["latency_us_p50"], 3),
        })  # fmt: skip
    return rows


def metrics_of(record: dict) -> dict[str, float]:
    """Every numeric figure of a record, as MLflow metrics."""
    metrics = {key: float(record[key]) for key in (
        "accuracy", "val_accuracy", "raw_bytes", "gzip_bytes", "latency_us_p50", "latency_us_p99", "params", "macs",
        "arena_bytes", "tflm_top1_agreement", "tflm_max_abs_diff", "keras_accuracy", "sparsity", "train_seconds",
    ) if record.get(key) is not None}  # fmt: skip
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
    best = max(deployable, key=lambda r: (r["accuracy"], -r["raw_bytes"]))
    smallest = min(deployable, key=lambda r: (r["gzip_bytes"], -r["accuracy"]))
    rows = []
    for reference, claim, beats in (
        (best, "more accurate at no more bytes",
         lambda v, r: v["accuracy"] > r["accuracy"] and v["raw_bytes"] <= r["raw_bytes"]),
        (smallest, "smaller gzip payload at no less accuracy",
         lambda v, r: v["gzip_bytes"] < r["gzip_bytes"] and v["accuracy"] >= r["accuracy"]),
    ):  # fmt: skip
        winners = sorted((v for v in ours if beats(v, reference)), key=lambda v: v["name"])
        rows.append({
            "reference": reference["name"], "claim": claim,
            "reference_figures": {k: reference[k] for k in ("raw_bytes", "gzip_bytes", "accuracy", "latency_us_p50")},
            "ours": [{k: v[k] for k in ("name", "raw_bytes", "gzip_bytes", "accuracy", "latency_us_p50", "arena_bytes")}
                     for v in winners],
        })  # fmt: skip
    fastest = min(deployable, key=lambda r: r["latency_us_p50"])
    for row in rows:
        row["fastest_reference"] = fastest["name"]
        for mine in row["ours"]:
            mine["latency_ratio_to_fastest_reference"] = round(mine["latency_us_p50"] / fastest["latency_us_p50"], 3)
    return rows
