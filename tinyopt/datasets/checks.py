"""What the data must be: the four arrays' shapes and values (checked on loading, whatever the source),
and everything about the data that can fail a run (the labels for the task and the split)."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.datasets.labels import check_labels
from tinyopt.datasets.split import check_split
from tinyopt.params import DataParams, TaskParams

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _kind_of(array: np.ndarray) -> str:
    return {"U": "text", "S": "bytes", "O": "Python object", "c": "complex", "M": "date", "m": "time"}.get(
        array.dtype.kind, str(array.dtype)
    )


def check_arrays(arrays: tuple[np.ndarray, ...], source: str) -> None:
    """What every task needs of x_train, y_train, x_test, y_test: one entry per example, numbers only
    (finite ones), as many labels as inputs, and test examples shaped like the training ones."""
    named = dict(zip(NPZ_KEYS, arrays, strict=False))
    for key, array in named.items():
        if array.ndim == 0:
            raise UserError(f"{source}: {key} is a single value (a 0-d array); it needs one entry per example")
        if len(array) == 0:
            raise UserError(f"{source}: {key} is empty; it needs at least one example")
        if array.dtype.kind not in "biuf":
            raise UserError(
                f"{source}: {key} holds {_kind_of(array)} values; it must hold numbers "
                "(class labels as integers 0..K-1)"
            )
    for x in ("x_train", "x_test"):
        if named[x].ndim < 2:
            raise UserError(
                f"{source}: {x} has shape {named[x].shape}: one number per example; reshape it to "
                f"({len(named[x])}, 1) for a single feature"
            )
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(named[x]) != len(named[y]):
            raise UserError(f"{source}: {x} has {len(named[x])} examples and {y} {len(named[y])}; they must match")
    for a, b in (("x_train", "x_test"), ("y_train", "y_test")):
        if named[a].shape[1:] != named[b].shape[1:]:
            raise UserError(
                f"{source}: each {a} entry has shape {named[a].shape[1:]}, each {b} entry "
                f"{named[b].shape[1:]}; train and test must be shaped alike"
            )
    for key, array in named.items():
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                raise UserError(
                    f"{source}: {key} has NaN or infinite values in {int(bad.sum())} examples (the first "
                    f"at index {int(np.flatnonzero(bad)[0])}); clean or drop them"
                )


def check_data(
    arrays: tuple[np.ndarray, ...], params: DataParams, seed: int, task: TaskParams, source: str
) -> tuple[dict | None, list[str]]:
    """Everything about the data that can fail a run, checked before one starts: the labels for the
    task and the split. Returns check_labels' answer and the warnings to show."""
    check_split(None, len(arrays[0]), params, seed, task, source)  # enough examples at all, before their labels
    if params.test_limit:  # the test examples the run will score on
        arrays = (*arrays[:2], arrays[2][: params.test_limit], arrays[3][: params.test_limit])
    labels = check_labels(arrays, task, source)
    return labels, check_split(labels, len(arrays[0]), params, seed, task, source)
