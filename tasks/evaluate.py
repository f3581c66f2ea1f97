"""Evaluate step: the task's metric for a converted .tflite file, computed by running the file itself
with LiteRT, on the held-out test split (reported) and on the validation split (used to pick models); on
inputs without labels (bench --inputs random) it scores nothing."""

from __future__ import annotations

from pathlib import Path

from tinyopt.ml.metrics import score
from tinyopt.orchestration.steps import step
from tinyopt.records.steps import EvalRecord
from tinyopt.runtimes import litert
from tinyopt.runtimes.random_inputs import NO_LABELS


@step("evaluate")
def evaluate_tflite(tflite_path: Path, prepared: Path, metric: str = "accuracy") -> EvalRecord:
    from tinyopt.datasets.prepared import load_prepared

    data = load_prepared(prepared)
    if "y_test" not in data:  # random inputs (bench --inputs random): the model runs, nothing is scored
        return EvalRecord(
            tflite_path=str(tflite_path), metric=NO_LABELS, score=None, val_score=None, num_test=len(data["x_test"])
        )
    return EvalRecord(
        tflite_path=str(tflite_path),
        metric=metric,
        score=round(score(metric, data["y_test"], litert.predict(tflite_path, data["x_test"]), data["x_test"]), 6),
        val_score=round(score(metric, data["y_val"], litert.predict(tflite_path, data["x_val"]), data["x_val"]), 6),
        num_test=len(data["y_test"]),
    )
