"""The task's metric, computed the same way for a Keras model and for a converted .tflite file."""

from __future__ import annotations

import numpy as np

HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "mae": False}


def reconstructs(x: np.ndarray | None, outputs: np.ndarray) -> bool:
    """Outputs of the inputs' shape (more than two values an example) are reconstructions of them."""
    if x is None:
        return False
    width = int(np.prod(np.shape(outputs)[1:]))
    return width > 2 and np.shape(outputs)[0] == np.shape(x)[0] and width == int(np.prod(np.shape(x)[1:]))


def reconstruction_error(x: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Each example's anomaly score: the mean squared error between the input and its reconstruction."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return np.mean((np.asarray(outputs, dtype=np.float64).reshape(x.shape) - x) ** 2, axis=1)


def score(metric: str, y_true: np.ndarray, y_pred: np.ndarray, x: np.ndarray | None = None) -> float:
    """accuracy: top-1 (argmax of the outputs; a single output is a logit, positive means class 1);
    mae: mean absolute error; auc: area under the ROC curve of a score against binary labels, the score
    being the last output, or the reconstruction error when the outputs reconstruct the inputs `x`."""
    if metric == "auc" and reconstructs(x, y_pred):
        y_pred = reconstruction_error(x, y_pred)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    y_true = np.asarray(y_true)
    if metric == "accuracy":
        predicted = (
            (y_pred.reshape(len(y_pred), -1)[:, 0] > 0).astype(int)
            if y_pred.reshape(len(y_pred), -1).shape[1] == 1
            else np.argmax(y_pred.reshape(len(y_pred), -1), axis=-1)
        )
        return float(np.mean(predicted == y_true.reshape(-1)))
    if metric == "mae":
        return float(np.mean(np.abs(y_pred.reshape(y_true.shape) - y_true)))
    if metric == "auc":
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(y_true.reshape(-1), y_pred.reshape(len(y_pred), -1)[:, -1]))
    raise ValueError(f"unknown metric {metric}")


def better(metric: str, a: float, b: float) -> bool:
    """True when score `a` is strictly better than `b`."""
    return a > b if HIGHER_IS_BETTER[metric] else a < b


def drop(metric: str, baseline: float, value: float) -> float:
    """How much worse `value` is than `baseline` (negative when better), in the metric's units."""
    return baseline - value if HIGHER_IS_BETTER[metric] else value - baseline
