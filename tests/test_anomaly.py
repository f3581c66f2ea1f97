"""Anomaly detection by reconstruction: an autoencoder trained on normal examples only, scored by the mean
squared error between each input and its output (the evaluator, the device firmware and the generated C
agree), and the techniques applied to the autoencoder itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.convert import convert_model
from tasks.distill import DISTILL
from tasks.evaluate import evaluate_tflite
from tasks.fine_tune import fine_tune
from tasks.prune import PRUNE
from tasks.train import train_baseline
from tests.test_mcu import needs_arm
from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.datasets.labels import check_labels
from tinyopt.datasets.prepared import load_prepared
from tinyopt.ml.metrics import reconstruction_error, score
from tinyopt.ml.models import describe
from tinyopt.ml.training import fit_data
from tinyopt.params import DistillParams, ModelParams, PruneParams, TaskParams, TrainParams
from tinyopt.run.preflight import check_model_fits

TASK = TaskParams(kind="anomaly")
FEATURES = 64
TRAIN = TrainParams(epochs=20, batch_size=32, learning_rate=3e-3, early_stopping_patience=0)


def examples(rng, count: int, anomalies: float) -> tuple[np.ndarray, np.ndarray]:
    """Normal examples lie near a 3-dimensional subspace (smooth waves, small noise); anomalies add a
    random direction off it of the same size."""
    t = np.linspace(0, 1, FEATURES)
    basis = np.stack([np.sin(2 * np.pi * t), np.cos(2 * np.pi * t), np.sin(6 * np.pi * t)])
    x = rng.normal(0, 1, (count, 3)) @ basis + rng.normal(0, 0.05, (count, FEATURES))
    y = (rng.random(count) < anomalies).astype(np.int64)
    off = rng.normal(0, 1, (count, FEATURES))
    x[y == 1] += 0.6 * off[y == 1]
    return x.astype(np.float32), y


def autoencoder():
    """Dense > BN > ReLU down to a bottleneck of 4 and back up to the input, as MLPerf Tiny's AD model."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs = x = tf.keras.Input((FEATURES,))
    for units in (32, 4, 32):
        x = layers.ReLU()(layers.BatchNormalization()(layers.Dense(units)(x)))
    return tf.keras.Model(inputs, layers.Dense(FEATURES)(x))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    arrays = {}
    for split, count in (("train", 800), ("val", 200), ("test", 300)):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = examples(rng, count, 0.1 if split == "train" else 0.3)
    path = tmp_path_factory.mktemp("ae-data") / "prepared.npz"
    np.savez(path, input_scale=np.float64(1.0), **arrays)
    return path


@pytest.fixture(scope="module")
def baseline(prepared, tmp_path_factory):
    """The autoencoder trained by the train step (the user's untrained model, fine-tuned from scratch)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    directory = tmp_path_factory.mktemp("ae-model")
    autoencoder().save(directory / "given.keras")
    model = ModelParams(path=str(directory / "given.keras"), fine_tune_epochs=TRAIN.epochs)
    return train_baseline(prepared, model, TRAIN, TASK, 0, directory / "baseline")


def test_the_score_is_the_reconstruction_error_and_training_sees_normal_examples_only(prepared, baseline):
    data = load_prepared(prepared)
    fitted = fit_data(TASK, data, autoencoder())
    assert len(fitted["x_train"]) == int((data["y_train"] == 0).sum()) < len(data["x_train"])
    assert fitted["y_train"] is fitted["x_train"] and fitted["y_val"] is fitted["x_val"]
    assert fit_data(TaskParams(), data, autoencoder()) is data  # a classifier's data is left alone
    x, outputs = data["x_val"][:3], data["x_val"][:3] + 0.5
    assert np.allclose(reconstruction_error(x, outputs), 0.25)
    assert score("auc", np.array([0, 1, 0]), x + np.array([[0.1], [0.3], [0.2]], dtype=np.float32), x) == 1.0
    # Trained on normals, the model reconstructs them far better than the anomalies: a high AUC.
    assert baseline.metric == "auc" and baseline.val_score > 0.9 and baseline.keras_score > 0.9, baseline
    assert set(baseline.history) == {"loss", "val_loss"}


def test_the_int8_autoencoder_keeps_its_score(prepared, baseline, tmp_path):
    converted = convert_model(Path(baseline.model_path), "int8", tmp_path / "int8.tflite", prepared)
    record = evaluate_tflite(Path(converted.tflite_path), prepared, "auc")
    assert record.score > 0.9 and abs(record.score - baseline.keras_score) < 0.03, (record, baseline)


@needs_arm
def test_the_device_computes_the_error_with_the_generated_c(prepared, baseline, tmp_path):
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.firmware import build_firmware, run_firmware
    from tinyopt.mcu.host import tflm_interpreter
    from tinyopt.mcu.on_device import measure_library
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.runtimes.quantized_io import dequantize_output, quantize_input

    converted = convert_model(Path(baseline.model_path), "int8", tmp_path / "int8.tflite", prepared)
    blob = Path(converted.tflite_path).read_bytes()
    generated = generate(blob, "ae")
    assert generated.reconstructs and "float ae_reconstruction_error(" in generated.header
    data = load_prepared(prepared)
    x, y = data["x_test"][:40], data["y_test"][:40]
    profile = DEFAULT_DEVICES["nano33ble"]
    interpreter = tflm_interpreter(blob)
    inputs = quantize_input(x, interpreter.get_input_details(0))
    run = run_firmware(build_firmware(generated, profile, tmp_path / "fw"), inputs, generated.op_kinds, "int8")
    # The firmware's errors are the C function's: the same as the error of its outputs, computed here.
    real_in = dequantize_output(inputs.reshape(len(x), -1), interpreter.get_input_details(0))
    real_out = dequantize_output(run.outputs, interpreter.get_output_details(0))
    assert run.errors is not None and run.errors.shape == (len(x),)
    assert np.allclose(run.errors, reconstruction_error(real_in, real_out), rtol=1e-4)
    report = measure_library(generated, blob, {"nano33ble": profile}, x, y, "auc")["nano33ble"]
    assert report.bit_exact and report.score == round(score("auc", y, run.errors), 6) and report.score > 0.85


def test_pruning_applies_to_the_autoencoder_and_distill_says_why_it_does_not(prepared, baseline, tmp_path):
    settings = PruneParams(target_sparsity=0.5, initial_sparsity=0.2, fine_tune_epochs=2)
    pruned = fine_tune(PRUNE, Path(baseline.model_path), prepared, settings, TRAIN, TASK, 0, tmp_path / "prune")
    assert pruned.sparsity > 0.4 and pruned.val_score > baseline.val_score - 0.05, (pruned, baseline)
    with pytest.raises(NotApplicable, match="reconstruction model's target is its own input"):
        fine_tune(DISTILL, Path(baseline.model_path), prepared, DistillParams(), TRAIN, TASK, 0, tmp_path / "d")


def test_qat_folds_the_autoencoder_s_dense_batch_norms_and_its_int8_keeps_the_score(prepared, baseline, tmp_path):
    """tfmot folds batch norm only after Conv2D: left after a fake-quantized Dense, the int8 reconstruction was
    noise (AUC 0.73 where the QAT model scored 0.98)."""
    from tasks.qat import QAT
    from tinyopt.params import QatParams

    qat = fine_tune(QAT, Path(baseline.model_path), prepared, QatParams(fine_tune_epochs=2), TRAIN, TASK, 0, tmp_path)
    assert "folded batch_normalization" in qat.notes and "into dense" in qat.notes, qat.notes
    converted = convert_model(Path(qat.model_path), "int8", tmp_path / "qat-int8.tflite", prepared)
    record = evaluate_tflite(Path(converted.tflite_path), prepared, "auc")
    assert record.score > 0.9 and abs(record.score - qat.keras_score) < 0.03, (record, qat)


def test_preflight_takes_a_model_that_reconstructs_its_input_and_says_what_else_fits(prepared):
    import tensorflow as tf

    data = load_prepared(prepared)
    arrays = (data["x_train"], data["y_train"], data["x_test"], data["y_test"])
    labels = check_labels(arrays, TASK, "ae.npz")
    check_model_fits(describe(autoencoder()), arrays, labels, TASK, "ae.keras")
    five = tf.keras.Sequential([tf.keras.Input((FEATURES,)), tf.keras.layers.Dense(5)])
    with pytest.raises(UserError, match="5 outputs.*or reconstructs its 64 inputs"):
        check_model_fits(describe(five), arrays, labels, TASK, "five.keras")
    normal_only = (data["x_train"], np.zeros_like(data["y_train"]), data["x_test"], data["y_test"])
    with pytest.raises(UserError, match="give some labelled anomalies"):
        check_labels(normal_only, TASK, "ae.npz")
