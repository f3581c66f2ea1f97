"""Classification labels: class indices or one-hot rows, checked for the task, and one-hot made sparse."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.params import TaskParams


def class_labels(y: np.ndarray, key: str, source: str) -> tuple[np.ndarray, int | None]:
    """Classification labels as integer class indices, and the width of one-hot labels (None for
    indices). Integral floats (1.0) are taken as the indices they spell; anything else is an error."""
    width = None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise UserError(
                f"{source}: {key} has shape {y.shape} but is not one-hot (one 1 per row); give class "
                "indices, or set task.kind: regression for several targets"
            )
        y, width = np.argmax(y, axis=1), y.shape[1]
    elif y.ndim > 2:
        raise UserError(f"{source}: {key} has shape {y.shape}; classification labels are class indices or one-hot rows")
    if y.dtype.kind == "f":
        fractional = y != np.round(y)
        if fractional.any():
            first = int(np.flatnonzero(fractional)[0])
            raise UserError(
                f"{source}: {key} holds non-integer labels ({y[first]:g} at index {first}); "
                "classification needs class indices 0..K-1 (task.kind: regression for continuous targets)"
            )
    y = y.astype(np.int64)
    if (y < 0).any():
        first = int(np.flatnonzero(y < 0)[0])
        raise UserError(
            f"{source}: {key} holds negative labels ({y[first]} at index {first}); classes are numbered 0..K-1"
        )
    return y, width


def check_labels(arrays: tuple[np.ndarray, ...], task: TaskParams, source: str) -> dict | None:
    """The labels fit the task. For classification and anomaly: {'train': ..., 'test': ...} as class
    indices, 'classes' (how many) and 'one_hot' (width, or None); None for regression."""
    _, y_train, _, y_test = arrays
    if task.kind == "regression":
        return None
    train, width = class_labels(y_train, "y_train", source)
    test, test_width = class_labels(y_test, "y_test", source)
    if width != test_width:
        raise UserError(
            f"{source}: y_train is {_label_form(width)} and y_test {_label_form(test_width)}; give both alike"
        )
    if task.kind == "anomaly" and len(np.unique(train)) < 2:
        raise UserError(
            f"{source}: y_train holds only label {int(train[0])}; give some labelled anomalies (1) with the "
            "normal (0) training examples: the validation split needs both for AUC (a reconstruction model "
            "trains on the normal ones only)"
        )
    if len(np.unique(train)) < 2:
        raise UserError(
            f"{source}: y_train holds a single class ({int(train[0])}); a {task.kind} task needs at least two"
        )
    if task.kind == "anomaly":
        for key, y in (("y_train", train), ("y_test", test)):
            if not np.isin(y, (0, 1)).all():
                others = sorted(set(np.unique(y).tolist()) - {0, 1})[:5]
                raise UserError(
                    f"{source}: {key} holds labels other than 0 and 1 ({others}); an anomaly task "
                    "scores against 0 (normal) and 1 (anomaly)"
                )
        if len(np.unique(test)) < 2:
            raise UserError(
                f"{source}: y_test holds only label {int(test[0])}; AUC needs normal (0) and anomalous (1) "
                "test examples"
            )
    classes = width or int(max(train.max(), test.max())) + 1
    _check_every_class_trained(train, test, classes, source)
    return {"train": train, "test": test, "classes": classes, "one_hot": width}


def _check_every_class_trained(train: np.ndarray, test: np.ndarray, classes: int, source: str) -> None:
    """Classes are 0..K-1, each with training examples: a stray label (250 among 0..2) would otherwise
    make a 251-class model that never learns classes 3..249, and a class only in y_test is never learnt."""
    trained = set(np.unique(train).tolist())
    seen = trained | set(np.unique(test).tolist())
    unseen = [c for c in range(classes) if c not in seen]
    test_only = [c for c in range(classes) if c in seen and c not in trained]
    problems = []
    if unseen:
        problems.append(
            f"{_classes(unseen)} {'have' if len(unseen) > 1 else 'has'} no example "
            f"(number the classes 0..{len(seen) - 1})"
        )
    if test_only:
        problems.append(
            f"{_classes(test_only)} {'are' if len(test_only) > 1 else 'is'} only in y_test (give "
            f"{'them' if len(test_only) > 1 else 'it'} training examples)"
        )
    if problems:
        raise UserError(
            f"{source}: labels must be 0..K-1 with training examples of every class: "
            f"{_numbers(sorted(seen))} found; {'; '.join(problems)}"
        )


def _classes(numbers: list[int]) -> str:
    return f"class {numbers[0]}" if len(numbers) == 1 else f"classes {_numbers(numbers)}"


def _numbers(numbers: list[int]) -> str:
    """Sorted integers in runs: [0, 1, 2, 5, 6, 7, 8, 250] -> '0, 1, 2, 5..8 and 250'."""
    runs: list[list[int]] = []
    for n in numbers:
        if runs and n == runs[-1][-1] + 1:
            runs[-1].append(n)
        else:
            runs.append([n])
    parts = [f"{run[0]}..{run[-1]}" if len(run) > 3 else ", ".join(map(str, run)) for run in runs]
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def _label_form(width: int | None) -> str:
    return f"one-hot with {width} columns" if width else "class indices"


def sparse_if_one_hot(y: np.ndarray) -> np.ndarray:
    """One-hot labels become class indices; anything else is kept."""
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return np.argmax(y, axis=1)
    return y
