"""Bring your own model and data: the sequence is generic, not Fashion-MNIST-only.

Each test builds a small model and dataset, trains the model briefly, and runs the whole pipeline on
it through the CLI (`tinyopt run --model M --data D`), then checks that every technique either applied
or was skipped with a reason, and that the converted models score like the Keras model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import make_project, run_cli
from tests.sensor_helpers import sensor_regressor

pytestmark = pytest.mark.slow

PLAN = [
    ["float32"],
    ["float16"],
    ["dynamic_range"],
    ["int8_fallback"],
    ["int8"],
    ["int16x8"],
    ["prune", "int8"],
    ["cluster", "int8"],
    ["qat", "int8"],
    ["separable", "int8"],
    ["graph", "float32"],
]
QUICK = {"prune": {"fine_tune_epochs": 1}, "cluster": {"fine_tune_epochs": 1}, "qat": {"fine_tune_epochs": 1}}


@pytest.fixture(autouse=True)
def _seeded():
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)  # the models the tests train are reproducible too


def run_pipeline(root: Path, model: Path, data: Path, task: dict, plan=PLAN) -> dict:
    make_project(
        root,
        task=task,
        plan=plan,
        techniques=QUICK,
        conversion={"calibration_samples": 64},
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20},
    )
    result = run_cli(["run", "--model", str(model), "--data", str(data)], cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
    base = next(v for v in summary["variants"] if v["name"] == "base-float32")
    print(f"\n{model.name} on {data.name}: Keras {base['metric']} {base['keras_score']:.4f}")  # shown with -rP
    for v in summary["variants"]:
        print(
            f"  {v['name']:20s} {v['score']:.4f} ({v['score'] - base['keras_score']:+.4f}) {v['raw_bytes']:>8,} bytes"
        )
    for s in summary["skipped"]:
        print(f"  skipped {s['name']}: {s['reason']}")
    return summary


def by_name(summary: dict) -> dict:
    return {v["name"]: v for v in summary["variants"]}


def skipped(summary: dict) -> dict:
    return {s["name"]: s["reason"] for s in summary["skipped"]}


def test_mlp_on_tabular_data_with_one_hot_labels(tmp_path):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 8))
    labels = rng.integers(0, 3, 1200)
    x = (centres[labels] + rng.normal(0, 1.0, (1200, 8))).astype(np.float32)
    one_hot = np.eye(3, dtype=np.float32)[labels]
    np.savez(tmp_path / "tabular.npz", x_train=x[:1000], y_train=one_hot[:1000], x_test=x[1000:], y_test=one_hot[1000:])
    inputs = tf.keras.Input((8,))
    hidden = tf.keras.layers.Dense(32, activation="relu")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(hidden))  # functional, softmax
    model.compile("adam", "categorical_crossentropy")
    model.fit(x[:1000], one_hot[:1000], epochs=15, verbose=0)
    model.save(tmp_path / "mlp.h5")

    summary = run_pipeline(
        tmp_path / "project", tmp_path / "mlp.h5", tmp_path / "tabular.npz", {"kind": "classification"}
    )
    variants, skips = by_name(summary), skipped(summary)
    base = variants["base-float32"]
    assert base["metric"] == "accuracy" and base["score"] == pytest.approx(base["keras_score"], abs=1e-6)
    assert base["score"] > 0.8
    for name in ("base-int8", "prune-int8", "cluster-int8", "qat-int8", "base-int16x8"):
        assert variants[name]["score"] >= base["score"] - 0.05, name
    assert variants["prune-int8"]["sparsity"] == pytest.approx(0.7, abs=0.02)
    assert "no Conv2D layer" in skips["separable"]
    assert skips["graph"].startswith("nothing to fold: no BatchNormalization or separate activation")


def test_1d_conv_on_sensor_windows_with_a_regression_target(tmp_path):

    model, data = sensor_regressor(tmp_path)
    summary = run_pipeline(tmp_path / "project", model, data, {"kind": "regression"})
    variants, skips = by_name(summary), skipped(summary)
    base = variants["base-float32"]
    assert base["metric"] == "mae" and "accuracy" not in base and base["mae"] == base["score"]
    assert base["score"] == pytest.approx(base["keras_score"], rel=1e-4)
    assert base["score"] < 0.3  # amplitudes span 0.5 to 2.0
    for name, variant in variants.items():  # lower is better for MAE
        if name.startswith("base-") or name.startswith("cluster-"):
            assert variant["score"] <= base["score"] + 0.02, name
    # Pruning 70% of a 128-weight model costs a lot of MAE: reported, not hidden.
    assert variants["prune-int8"]["sparsity"] == pytest.approx(0.7, abs=0.05)
    # QAT of a Conv1D model (in its Conv2D form: tinyopt.ml.conv1d) is a full-integer variant like the others.
    qat = variants["qat-int8"]
    assert (qat["input_dtype"], qat["output_dtype"]) == ("int8", "int8") and qat["tflm_runs"]
    assert qat["score"] <= base["score"] + 0.05
    assert "no Conv2D layer" in skips["separable"]
    assert set(variants) | set(skips) >= {"base-int8", "prune-int8", "cluster-int8", "separable", "graph-float32"}
    assert summary["picks"]["most-accurate"]["why"].startswith("lowest validation mae")


def write_images(root: Path, per_class: int = 60) -> None:
    """Three classes of 16x16 grayscale PNGs: a bright top half, a bright left half, or a bright centre."""
    from PIL import Image

    rng = np.random.default_rng(2)
    for label, name in enumerate(("top", "left", "centre")):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 90, (16, 16))
            if label == 0:
                image[:8] += 140
            elif label == 1:
                image[:, :8] += 140
            else:
                image[4:12, 4:12] += 140
            Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


def test_cnn_with_batch_norm_on_a_directory_of_images(tmp_path):
    import tensorflow as tf

    from tinyopt.datasets.images import load_images

    write_images(tmp_path / "images")
    x_train, y_train, _, _ = load_images(tmp_path / "images")
    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            layers.InputLayer((16, 16)),
            layers.Reshape((16, 16, 1)),
            layers.Conv2D(8, 3, use_bias=False),
            layers.BatchNormalization(),
            layers.Activation("relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train / 255.0, y_train, epochs=10, verbose=0)
    model.save(tmp_path / "cnn.keras")

    summary = run_pipeline(
        tmp_path / "project", tmp_path / "cnn.keras", tmp_path / "images", {"kind": "classification"}
    )
    variants, skips = by_name(summary), skipped(summary)
    base = variants["base-float32"]
    assert summary["dataset"]["name"] == "images" and summary["dataset"]["num_test"] == 36
    assert base["score"] == pytest.approx(base["keras_score"], abs=1e-6) and base["score"] > 0.9
    for name in ("base-int8", "prune-int8", "cluster-int8", "qat-int8", "separable-int8", "graph-float32"):
        assert name in variants, skips
        assert variants[name]["score"] >= base["score"] - 0.1, name
    assert "folded batch_normalization" in variants["graph-float32"]["notes"]
    assert variants["graph-float32"]["score"] == pytest.approx(base["score"], abs=0.03)
    assert variants["base-int8"]["tflm_runs"] and variants["base-int8"]["input_dtype"] == "int8"


def write_five_feature_data(path):
    """Two classes of 5 features: enough for the checks that run before any training."""
    np.savez(
        path,
        x_train=np.zeros((50, 5), np.float32),
        y_train=np.arange(50) % 2,
        x_test=np.zeros((10, 5), np.float32),
        y_test=np.arange(10) % 2,
    )


def test_a_model_that_does_not_fit_the_data_is_one_line(tmp_path):
    import tensorflow as tf

    write_five_feature_data(tmp_path / "d.npz")
    tf.keras.Sequential([tf.keras.layers.InputLayer((7,)), tf.keras.layers.Dense(2)]).save(tmp_path / "m.keras")
    make_project(tmp_path / "p", reference={"dir": None})
    result = run_cli(
        ["run", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz")], cwd=tmp_path / "p"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tinyopt: error: the model takes inputs of shape (7,), the data has (5,)" in result.stderr
    bad = run_cli(["run", "--model", str(tmp_path / "nope.keras")], cwd=tmp_path / "p")
    assert bad.returncode == 2 and "nope.keras: no such model file" in bad.stderr


def test_a_keras_3_model_is_refused_with_the_fix(tmp_path):
    import keras  # Keras 3, as a user of TensorFlow >= 2.16 gets by default

    write_five_feature_data(tmp_path / "d.npz")
    keras.Sequential([keras.layers.Input((5,)), keras.layers.Dense(2)]).save(tmp_path / "k3.keras")
    make_project(tmp_path / "p", reference={"dir": None})
    result = run_cli(
        ["run", "--model", str(tmp_path / "k3.keras"), "--data", str(tmp_path / "d.npz")], cwd=tmp_path / "p"
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "saved by Keras 3, and tfmot optimizes Keras 2 (tf-keras) models only" in result.stderr
