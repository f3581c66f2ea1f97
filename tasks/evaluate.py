"""Evaluate step: accuracy of a converted .tflite file, computed by running the file itself on the
held-out test split."""

from __future__ import annotations

from pathlib import Path

from tinyopt import litert
from tinyopt.steps import StepRecord, step_task


class EvalRecord(StepRecord):
    tflite_path: str
    accuracy: float
    num_test: int


def evaluate_tflite(tflite_path: Path, prepared: Path) -> EvalRecord:
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    return EvalRecord(
        tflite_path=str(tflite_path),
        accuracy=round(litert.accuracy(tflite_path, data["x_test"], data["y_test"]), 6),
        num_test=len(data["y_test"]),
    )


evaluate_task = step_task(evaluate_tflite)
