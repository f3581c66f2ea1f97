"""A tiny training run, its conversion to .tflite and its evaluation by the converted file itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.convert import convert_model
from tasks.evaluate import evaluate_tflite
from tasks.train import train_baseline
from tests.conftest import needs_fashion, prepare_fashion_slice, run_cli
from tinyopt.core.errors import UserError
from tinyopt.datasets.prepared import load_prepared
from tinyopt.ml.models import load_model as load_keras_model
from tinyopt.params import ModelParams, TaskParams, TrainParams
from tinyopt.runtimes import litert

pytestmark = needs_fashion
TINY = TrainParams(epochs=2, batch_size=32)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_fashion_slice(tmp_path_factory.mktemp("data"), 1500, 500, seed=5)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory):
    return train_baseline(
        prepared, ModelParams(), TINY, TaskParams(), seed=11, out_dir=tmp_path_factory.mktemp("baseline")
    )


def test_training_writes_the_paper_cnn_and_learns(trained):
    model = load_keras_model(trained.model_path)
    assert [type(layer).__name__ for layer in model.layers] == ["Reshape", "Conv2D", "MaxPooling2D", "Flatten", "Dense"]
    assert trained.num_params == 20410  # the paper's 20,410 parameters
    assert trained.epochs_run == 2
    assert trained.metric == "accuracy" and trained.keras_score > 0.5  # ten classes: chance is 0.1
    assert trained.intact()


def test_same_seed_gives_the_same_model(prepared, trained, tmp_path):
    again = train_baseline(prepared, ModelParams(), TINY, TaskParams(), seed=11, out_dir=tmp_path)
    first, second = load_keras_model(trained.model_path), load_keras_model(again.model_path)
    for a, b in zip(first.get_weights(), second.get_weights(), strict=False):
        np.testing.assert_array_equal(a, b)


def test_float32_tflite_matches_keras_on_the_test_set(prepared, trained, tmp_path):
    converted = convert_model(Path(trained.model_path), "float32", tmp_path / "model.tflite")
    assert converted.raw_bytes == (tmp_path / "model.tflite").stat().st_size
    assert 0 < converted.gzip_bytes < converted.raw_bytes
    evaluation = evaluate_tflite(tmp_path / "model.tflite", prepared)
    assert evaluation.num_test == 500
    assert evaluation.score == pytest.approx(trained.keras_score, abs=0.004)
    x = load_prepared(prepared)["x_test"][:64]
    keras_logits = load_keras_model(trained.model_path).predict(x, verbose=0)
    np.testing.assert_allclose(litert.predict(tmp_path / "model.tflite", x), keras_logits, atol=1e-4)


def test_broken_model_and_tflite_files_give_one_clear_line(tmp_path):
    broken = tmp_path / "model.keras"
    broken.write_bytes(b"definitely not a zip archive")
    with pytest.raises(UserError, match=r"model.keras: not a loadable Keras model"):
        convert_model(broken, "float32", tmp_path / "out.tflite")
    assert not (tmp_path / "out.tflite").exists()
    (tmp_path / "bad.tflite").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match=r"bad.tflite: not a loadable .tflite model"):
        litert.load_interpreter(tmp_path / "bad.tflite")
    result = run_cli(["convert", "--model", str(broken), "--out", str(tmp_path / "out.tflite")], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("tinyopt: error: ")
    assert len([line for line in result.stderr.splitlines() if line.startswith("tinyopt:")]) == 1


def test_batches_per_call_train_the_same_model_as_one_per_call(prepared):
    """STEPS_PER_EXECUTION only saves Python's per-batch overhead: the same updates, the same weights."""
    from tasks.train import build_paper_cnn
    from tinyopt.ml.training import STEPS_PER_EXECUTION, compile_for_task, set_seeds, train_epochs

    data = load_prepared(prepared)
    weights = []
    for per_call in (1, STEPS_PER_EXECUTION):
        set_seeds(3)
        model = build_paper_cnn(data["x_train"].shape[1:], 10, ModelParams())
        compile_for_task(model, TaskParams(), 1e-3, steps_per_execution=per_call)
        train_epochs(model, data, epochs=2, batch_size=32)
        weights.append(model.get_weights())
    assert STEPS_PER_EXECUTION > 1
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
