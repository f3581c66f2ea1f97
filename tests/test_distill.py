"""Knowledge distillation: its loss, its teacher, and a student that learns from it, for the three kinds
of task (classification, regression, anomaly)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.convert import convert_model
from tasks.distill import DISTILL
from tasks.fine_tune import fine_tune
from tasks.train import train_baseline
from tests.conftest import needs_fashion, prepare_fashion_slice
from tinyopt.core.errors import UserError
from tinyopt.datasets.prepared import load_prepared
from tinyopt.ml.distillation import distillation_loss, with_teacher
from tinyopt.ml.models import load_model
from tinyopt.params import ConversionParams, DistillParams, ModelParams, TaskParams, TrainParams, check_chain

TRAIN = TrainParams(epochs=2, batch_size=32)
SEED = 7


def test_loss_is_the_labels_loss_at_label_weight_1_and_the_kl_at_0():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    student, teacher = rng.normal(0, 2, (16, 5)).astype(np.float32), rng.normal(0, 2, (16, 5)).astype(np.float32)
    labels = rng.integers(0, 5, 16)
    targets = with_teacher(labels, teacher)
    labels_only = distillation_loss("classes", 1, 4.0, 1.0, from_logits=True)(targets, student)
    expected = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, student)
    assert float(labels_only) == pytest.approx(float(expected), rel=1e-5)

    def kl(p_logits, q_logits, t):
        p, q = tf.nn.softmax(p_logits / t), tf.nn.softmax(q_logits / t)
        return float(tf.reduce_mean(tf.reduce_sum(p * (tf.math.log(p) - tf.math.log(q)), axis=-1))) * t * t

    teacher_only = distillation_loss("classes", 1, 4.0, 0.0, from_logits=True)
    assert float(teacher_only(targets, student)) == pytest.approx(kl(teacher, student, 4.0), rel=1e-4)
    assert float(teacher_only(with_teacher(labels, student), student)) == pytest.approx(0.0, abs=1e-6)
    # A softmax output is taken back to logits: the same loss as the logits it came from.
    from_probs = distillation_loss("classes", 1, 4.0, 0.5, from_logits=False)(targets, tf.nn.softmax(student))
    from_logits = distillation_loss("classes", 1, 4.0, 0.5, from_logits=True)(targets, student)
    assert float(from_probs) == pytest.approx(float(from_logits), rel=1e-4)


def test_loss_for_one_sigmoid_output_and_for_values():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (32, 1)).astype(np.float32)
    labels = (rng.random(32) > 0.5).astype(np.float32)
    binary = distillation_loss("binary", 1, 2.0, 0.0, from_logits=True)
    assert float(binary(with_teacher(labels, logits), logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(binary(with_teacher(labels, -logits), logits)) > 0.1

    values, teacher = rng.normal(0, 1, (32, 2)).astype(np.float32), rng.normal(0, 1, (32, 2)).astype(np.float32)
    mixed = distillation_loss("values", 2, 1.0, 0.25, from_logits=True)(with_teacher(values, teacher), values)
    assert float(mixed) == pytest.approx(0.75 * float(np.mean((teacher - values) ** 2)), rel=1e-5)


def test_distill_comes_first_or_right_after_separable():
    for chain in (
        ["distill", "int8"],
        ["separable", "distill", "int8"],
        ["distill", "prune", "sp_cluster", "pcqat", "int8"],
    ):
        check_chain(chain)
    for chain in (["prune", "distill", "int8"], ["distill", "separable", "int8"]):
        with pytest.raises(ValueError, match="distill fine-tunes every weight|separable"):
            check_chain(chain)


def _prepared(tmp: Path, x: np.ndarray, y: np.ndarray) -> Path:
    n = len(x)
    cut = {"train": slice(0, n * 6 // 10), "val": slice(n * 6 // 10, n * 8 // 10), "test": slice(n * 8 // 10, n)}
    arrays = {f"{axis}_{name}": data[part] for name, part in cut.items() for axis, data in (("x", x), ("y", y))}
    np.savez(tmp / "prepared.npz", input_scale=np.float32(1.0), **arrays)
    return tmp / "prepared.npz"


def _dense_model(tmp: Path, inputs: int, outputs: int, activation: str | None) -> Path:
    import tensorflow as tf

    from tinyopt.ml.training import set_seeds

    set_seeds(SEED)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer((inputs,)),
            tf.keras.layers.Dense(4, activation="relu"),
            tf.keras.layers.Dense(outputs, activation=activation),
        ]
    )
    model.save(tmp / "model.keras")
    return tmp / "model.keras"


def _distance_to_teacher(model_path: str | Path, teacher_path: Path, x: np.ndarray) -> float:
    model, teacher = load_model(model_path), load_model(teacher_path)
    return float(np.mean((model.predict(x, verbose=0) - teacher.predict(x, verbose=0)) ** 2))


@pytest.mark.parametrize("kind", ["regression", "anomaly"])
def test_a_student_moves_towards_its_teacher(kind, tmp_path):
    """With the labels' weight 0 the student learns only from the teacher: it ends closer to it than the
    untrained parent it started from. The teacher is the model widened 4x and trained here."""
    rng = np.random.default_rng(SEED)
    x = rng.normal(0, 1, (1000, 6)).astype(np.float32)
    signal = x[:, 0] * x[:, 1] + np.sin(2 * x[:, 2])
    y = signal.astype(np.float32) if kind == "regression" else (signal > 0.8).astype(np.int64)
    prepared = _prepared(tmp_path, x, y)
    parent = _dense_model(tmp_path, 6, 1, None if kind == "regression" else "sigmoid")
    task = TaskParams(kind=kind)
    settings = DistillParams(teacher_epochs=20, fine_tune_epochs=15, learning_rate=1e-2, label_weight=0.0)
    record = fine_tune(DISTILL, parent, prepared, settings, TRAIN, task, SEED, tmp_path / "student")

    teacher = tmp_path / "student" / "teacher.keras"
    assert str(teacher) in record.outputs and load_model(teacher).count_params() > load_model(parent).count_params()
    assert record.num_params == load_model(parent).count_params()  # the student keeps the model's shape
    assert "4x wider teacher trained here" in record.notes and f"validation {task.score_metric}" in record.notes
    x_val = load_prepared(prepared)["x_val"]
    before, after = (
        _distance_to_teacher(parent, teacher, x_val),
        _distance_to_teacher(record.model_path, teacher, x_val),
    )
    assert after < 0.5 * before, (before, after)


def test_a_teacher_with_other_outputs_or_no_file_is_one_line(tmp_path):
    rng = np.random.default_rng(SEED)
    x, y = rng.normal(0, 1, (200, 6)).astype(np.float32), rng.integers(0, 3, 200)
    prepared = _prepared(tmp_path, x, y)
    parent = _dense_model(tmp_path, 6, 3, None)
    (tmp_path / "other").mkdir()
    other = _dense_model(tmp_path / "other", 6, 4, None)
    with pytest.raises(UserError, match=r"its outputs \(4,\) differ from the model's \(3,\)"):
        fine_tune(DISTILL, parent, prepared, DistillParams(teacher=str(other)), TRAIN, TaskParams(), SEED, tmp_path)
    with pytest.raises(UserError, match="does not exist; give a trained Keras model"):
        missing = DistillParams(teacher=str(tmp_path / "nope.keras"))
        fine_tune(DISTILL, parent, prepared, missing, TRAIN, TaskParams(), SEED, tmp_path)


@needs_fashion
def test_the_paper_cnn_distilled_from_its_wider_copy_converts_to_int8(tmp_path):
    prepared = prepare_fashion_slice(tmp_path, 1500, 300, seed=SEED)
    base = train_baseline(prepared, ModelParams(), TrainParams(epochs=2), TaskParams(), SEED, tmp_path / "base")
    settings = DistillParams(teacher_epochs=3, fine_tune_epochs=2, learning_rate=1e-3)
    record = fine_tune(
        DISTILL, Path(base.model_path), prepared, settings, TrainParams(epochs=2), TaskParams(), SEED, tmp_path / "d"
    )
    teacher = load_model(tmp_path / "d" / "teacher.keras")
    conv = [layer for layer in teacher.layers if type(layer).__name__ == "Conv2D"]
    assert [layer.filters for layer in conv] == [48]  # the paper CNN's 12 filters, 4x
    assert record.num_params == base.num_params and 0.0 < record.val_score <= 1.0
    converted = convert_model(Path(record.model_path), "int8", tmp_path / "model.tflite", prepared, ConversionParams())
    assert converted.input_dtype == "int8" and Path(converted.tflite_path).stat().st_size < 30_000


def test_an_anomaly_model_with_several_outputs_is_skipped_with_the_reason(tmp_path):
    from tinyopt.core.errors import NotApplicable

    rng = np.random.default_rng(SEED)
    x, y = rng.normal(0, 1, (200, 6)).astype(np.float32), rng.integers(0, 2, 200)
    prepared = _prepared(tmp_path, x, y)
    parent = _dense_model(tmp_path, 6, 2, "softmax")
    with pytest.raises(NotApplicable, match="distill reads an anomaly score from one output; this model has 2"):
        fine_tune(DISTILL, parent, prepared, DistillParams(), TRAIN, TaskParams(kind="anomaly"), SEED, tmp_path / "s")
