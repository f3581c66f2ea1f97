"""Bad models through `run --model` and `train` (params.yaml's model.path), with data they could
fit: outputs that do not match the classes or targets, two inputs, the wrong input shape, and .h5 /
.keras files or folders that are truncated, noise, text or missing.

Each case must exit 2 with one `tinyopt: error: ...` line and write nothing (see
tests/bad_input_helpers.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_helpers import N_TEST, N_TRAIN, RNG, Case, check_bad_input, npz, set_params, tabular

# --- models: built once per module (small tf-keras models, saved as a user would) ---------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("models")
    layers = tf.keras.layers

    def dense(inputs: int, outputs: int, name: str, activation: str = "softmax") -> None:
        layers_ = [layers.InputLayer((inputs,)), layers.Dense(outputs, activation=activation)]
        tf.keras.Sequential(layers_).save(root / name)

    dense(8, 3, "mlp3.keras")
    dense(8, 5, "mlp5.keras")
    dense(8, 1, "binary.keras", activation="sigmoid")
    dense(7, 3, "takes7.keras")
    dense(8, 2, "regress2.keras", activation="linear")
    dense(8, 3, "mlp3.h5")
    first, second = tf.keras.Input((8,)), tf.keras.Input((8,))
    joined = layers.Dense(3)(layers.Concatenate()([first, second]))
    tf.keras.Model([first, second], joined).save(root / "two_inputs.keras")
    blob = (root / "mlp3.h5").read_bytes()
    (root / "truncated.h5").write_bytes(blob[: len(blob) // 3])  # a download cut short
    (root / "garbage.h5").write_bytes(blob[:8] + os.urandom(4096))  # the HDF5 signature, then noise
    (root / "text.keras").write_text("this is not a model\n")
    (root / "not_a_savedmodel").mkdir()
    (root / "not_a_savedmodel" / "README.txt").write_text("weights elsewhere\n")
    return root


def run_model(model: str, arrays: dict | None = None, **sections) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, models: Path) -> list[str]:
        set_params(root, **sections)
        return ["run", "--model", str(models / model), "--data", str(npz(root, arrays or tabular()))]

    return build


def train_with(model: str) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, models: Path) -> list[str]:
        arrays = tabular()
        np.savez(
            root / "prepared.npz",
            x_train=arrays["x_train"][:50],
            y_train=arrays["y_train"][:50],
            x_val=arrays["x_train"][50:],
            y_val=arrays["y_train"][50:],
            x_test=arrays["x_test"],
            y_test=arrays["y_test"],
            input_scale=np.float64(1.0),
        )
        set_params(root, model={"path": str(models / model)})
        return ["train", "--prepared", str(root / "prepared.npz"), "--out-dir", str(root / "project" / "baseline")]

    return build


def model(id: str, expect: str, name: str, arrays: dict | None = None, **sections) -> Case:
    return Case(id, run_model(name, arrays, **sections), expect, needs_models=True)


ONE_HOT4 = np.eye(4, dtype=np.float32)[np.arange(N_TRAIN) % 4]

CASES = [
    # Models (--model), with data they could fit.
    model("output-width-vs-classes", "the model has 5 outputs and the data 3 classes (labels 0..2)", "mlp5.keras"),
    model(
        "labels-beyond-the-outputs",
        "the model has 3 outputs and the data 8 classes (labels 0..7)",
        "mlp3.keras",
        tabular(y_train=np.arange(N_TRAIN) % 8, y_test=np.arange(N_TEST) % 8),
    ),
    model(
        "one-hot-wider-than-the-model",
        "the model has 3 outputs and the data one-hot labels with 4 columns",
        "mlp3.keras",
        tabular(y_train=ONE_HOT4, y_test=np.eye(4)[np.arange(N_TEST) % 4]),
    ),
    model("binary-model-three-classes", "the model has 1 output (a binary classifier)", "binary.keras"),
    model("two-inputs", "the model has 2 inputs; tinyopt handles models with one input", "two_inputs.keras"),
    model("input-shape", "the model takes inputs of shape (7,), the data has (8,)", "takes7.keras"),
    model(
        "regression-width",
        "the model has 2 outputs and the data 1 regression target",
        "regress2.keras",
        tabular(y_train=RNG.random(N_TRAIN), y_test=RNG.random(N_TEST)),
        task={"kind": "regression"},
    ),
    model("truncated-h5", "truncated.h5: ", "truncated.h5"),
    model("garbage-h5", "garbage.h5: ", "garbage.h5"),
    model("text-file-named-.keras", "text.keras: not a loadable Keras model", "text.keras"),
    model("directory-not-a-savedmodel", "not_a_savedmodel: not a loadable Keras model", "not_a_savedmodel"),
    model("model-missing", "nope.keras: no such model file", "nope.keras"),
    # Through `train`.
    Case("train-corrupt-model", train_with("truncated.h5"), "truncated.h5: ", needs_models=True),
    Case(
        "train-width-mismatch",
        train_with("mlp5.keras"),
        "the model has 5 outputs and the data 3 classes",
        needs_models=True,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    check_bad_input(case, tmp_path, request)
