"""Evaluate step: accuracy of a converted .tflite file, computed by running the file itself with
LiteRT, on the held-out test split (reported) and on the validation split (used to pick models)."""

from __future__ import annotations

from pathlib import Path

from tinyopt import litert
from tinyopt.steps import StepRecord, step_task


class EvalRecord(StepRecord):
    tflite_path: str
    accuracy: float
    val_accuracy: float
    num_test: int


def evaluate_tflite(tflite_path: Path, prepared: Path) -> EvalRecord:
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    return EvalRecord(
        tflite_path=str(tflite_path),
        accuracy=round(litert.accuracy(tflite_path, data["x_test"], data["y_test"]), 6),
        val_accuracy=round(litert.accuracy(tflite_path, data["x_val"], data["y_val"]), 6),
        num_test=len(data["y_test"]),
    )


evaluate_task = step_task(evaluate_tflite)
