"""Bad data through the real CLI: arrays in an .npz given to `run --data` (NaN, labels that are not
class indices, shapes that disagree, too few examples, a task the data does not fit), .npz files that
are empty, corrupt, truncated or missing, and the same value checks through `prepare`.

Each case must exit 2 with one `tinyopt: error: ...` line and write nothing (see
tests/bad_input_helpers.py). This module also checks the size of the whole catalogue of cases, over
every tests/test_bad_*.py module.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_helpers import (
    N_TEST,
    N_TRAIN,
    RNG,
    Case,
    check_bad_input,
    good,
    images,
    npz,
    run_data,
    set_params,
    tabular,
    with_nan,
)
from tests.conftest import SMALL
from tinyopt.datasets.split import split_indices
from tinyopt.params import DataParams


def class_in_validation_only(root: Path) -> list[str]:
    """Class 2 has one training example, and the seeded split puts it in the validation split."""
    _, val_idx = split_indices(N_TRAIN, DataParams(**SMALL["data"]), SMALL["seed"])
    labels = np.arange(N_TRAIN) % 2
    labels[val_idx[0]] = 2
    return run_data(root, good(y_train=labels))


def prepare_raw(arrays: dict) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        raw = root / "raw"
        raw.mkdir()
        npz(raw, arrays)
        set_params(root, data={"dataset": "npz", "path": str(root / "data.npz")})
        return ["prepare", "--raw", str(raw), "--out", str(root / "project" / "prepared.npz")]

    return build


def data(id: str, arrays: dict, expect: str, **sections) -> Case:
    return Case(id, lambda root: run_data(root, arrays, **sections), expect)


CASES = [
    # The data's values and shapes (a .npz through --data).
    data("nan-in-x_train", good(x_train=with_nan(images(N_TRAIN))), "x_train has NaN or infinite values in 1 examples"),
    data("inf-in-x_test", good(x_test=with_nan(images(N_TEST), np.inf)), "x_test has NaN or infinite values"),
    data(
        "nan-in-regression-target",
        good(y_train=with_nan(np.ones(N_TRAIN))),
        "y_train has NaN or infinite values",
        task={"kind": "regression"},
    ),
    data(
        "float-labels", good(y_train=(np.arange(N_TRAIN) % 3) / 2), "y_train holds non-integer labels (0.5 at index 1)"
    ),
    data("negative-labels", good(y_test=np.arange(N_TEST) % 3 - 1), "y_test holds negative labels (-1 at index 0)"),
    data("string-labels", good(y_train=np.array(["cat", "dog", "owl"] * 20)), "y_train holds text values"),
    data(
        "string-regression-targets",
        good(y_train=np.array(["1.5"] * N_TRAIN)),
        "y_train holds text values",
        task={"kind": "regression"},
    ),
    data(
        "object-array",
        good(y_train=np.array([1, "two", None] * 20, dtype=object)),
        "not a readable .npz file (Object arrays cannot be loaded when allow_pickle=False)",
    ),
    data("empty-arrays", good(x_train=np.zeros((0, 6, 6), np.uint8), y_train=np.zeros(0, int)), "x_train is empty"),
    data("0-d-array", good(x_test=np.float32(3.0)), "x_test is a single value (a 0-d array)"),
    data("1-d-inputs", good(x_train=np.zeros(N_TRAIN), x_test=np.zeros(N_TEST)), "x_train has shape (60,): one number"),
    data(
        "train-test-shapes-differ",
        good(x_test=images(N_TEST, side=7)),
        "each x_train entry has shape (6, 6), each x_test entry (7, 7)",
    ),
    data("x-y-length-mismatch", good(y_train=np.arange(N_TRAIN - 1) % 3), "x_train has 60 examples and y_train 59"),
    data("missing-key", {k: v for k, v in good().items() if k != "y_test"}, "the .npz lacks y_test"),
    data(
        "one-hot-widths-differ",
        good(y_train=np.eye(3)[np.arange(N_TRAIN) % 3], y_test=np.eye(4)[np.arange(N_TEST) % 4]),
        "each y_train entry has shape (3,), each y_test entry (4,)",
    ),
    data(
        "2-d-labels-not-one-hot",
        good(y_train=RNG.random((N_TRAIN, 3)), y_test=RNG.random((N_TEST, 3))),
        "has shape (60, 3) but is not one-hot",
    ),
    data("a-single-class", good(y_train=np.zeros(N_TRAIN, int)), "y_train holds a single class (0)"),
    data(
        "a-stray-label-250",
        good(y_train=np.where(np.arange(N_TRAIN) == 5, 250, np.arange(N_TRAIN) % 3)),
        "labels must be 0..K-1 with training examples of every class: 0, 1, 2 and 250 found; "
        "classes 3..249 have no example (number the classes 0..3)",
    ),
    data(
        "a-class-only-in-y_test",
        good(y_train=np.arange(N_TRAIN) % 2),
        "0, 1, 2 found; class 2 is only in y_test (give it training examples)",
    ),
    data(
        "an-unused-one-hot-column",
        good(y_train=np.eye(4)[np.arange(N_TRAIN) % 3], y_test=np.eye(4)[np.arange(N_TEST) % 3]),
        "0, 1, 2 found; class 3 has no example (number the classes 0..2)",
    ),
    Case("class-only-in-validation", class_in_validation_only, "class 2 has 1 training examples and none is left"),
    data("too-few-to-split", good(x_train=images(1), y_train=np.array([0])), "leave none to train on"),
    data("anomaly-labels-not-0-1", good(), "y_train holds labels other than 0 and 1 ([2])", task={"kind": "anomaly"}),
    data(
        "anomaly-test-one-label",
        good(y_train=np.arange(N_TRAIN) % 2, y_test=np.zeros(N_TEST, int)),
        "y_test holds only label 0; AUC needs",
        task={"kind": "anomaly"},
    ),
    data(
        "regression-without-a-model",
        good(y_train=np.ones(N_TRAIN), y_test=np.ones(N_TEST)),
        "the built-in paper-cnn is a classifier",
        task={"kind": "regression"},
    ),
    data("tabular-data-for-the-paper-cnn", tabular(), "the built-in paper-cnn takes images"),
    Case(
        "zero-byte-npz",
        lambda root: (root / "d.npz").touch() or ["run", "--data", str(root / "d.npz")],
        "d.npz: not a readable .npz file",
    ),
    Case(
        "garbage-npz",
        lambda root: (root / "d.npz").write_bytes(os.urandom(300)) and ["run", "--data", str(root / "d.npz")],
        "d.npz: not a readable .npz file",
    ),
    Case(
        "truncated-npz",
        lambda root: (
            (root / "d.npz").write_bytes(npz(root, good()).read_bytes()[:2000])
            and ["run", "--data", str(root / "d.npz")]
        ),
        "d.npz: not a readable .npz file",
    ),
    Case(
        "a-.npy-not-an-.npz",
        lambda root: np.save(root / "d.npy", images(5)) or ["run", "--data", str(root / "d.npy")],
        "a single .npy array, not an .npz archive",
    ),
    Case(
        "data-path-missing",
        lambda root: ["run", "--data", str(root / "nowhere.npz")],
        "nowhere.npz: no such file or directory",
    ),
    # The same checks through `prepare`.
    Case("prepare-nan", prepare_raw(good(x_test=with_nan(images(N_TEST)))), "x_test has NaN or infinite values"),
    Case("prepare-float-labels", prepare_raw(good(y_test=np.full(N_TEST, 0.25))), "y_test holds non-integer labels"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    check_bad_input(case, tmp_path, request)


def test_there_are_at_least_forty_cases():
    """Over the whole catalogue: every tests/test_bad_*.py module's cases, each id once."""
    from tests import test_bad_data_folders, test_bad_mlflow_inputs, test_bad_models, test_bad_params

    every = [
        *CASES,
        *test_bad_data_folders.CASES,
        *test_bad_params.CASES,
        *test_bad_models.CASES,
        *test_bad_mlflow_inputs.CASES,
    ]
    assert len(every) >= 40 and len({case.id for case in every}) == len(every)
