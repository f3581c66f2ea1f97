"""QAT and its collaborative forms on a 1-D convolutional sensor classifier (Conv1D + BatchNorm), which
tfmot alone cannot quantize: each converts to a full-integer graph with the post-training one's kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.cluster import CLUSTER, SP_CLUSTER
from tasks.convert import convert_model
from tasks.evaluate import evaluate_tflite
from tasks.fine_tune import fine_tune
from tasks.graph import fold_layers
from tasks.prune import PRUNE
from tasks.qat import CQAT, PCQAT, PQAT, QAT
from tinyopt.ml.models import kernels, load_model
from tinyopt.params import ClusterParams, PruneParams, QatParams, TaskParams, TrainParams
from tinyopt.runtimes.litert import load_interpreter

TRAIN = TrainParams(epochs=1, batch_size=32)
TASK = TaskParams()
QAT_SETTINGS = QatParams(fine_tune_epochs=2, learning_rate=1e-3)
SEED = 5


def sensor_windows(count: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Windows of 3 channels; the class says which of channels 0 and 1 carry an offset (4 classes)."""
    x = rng.normal(0, 1, (count, 48, 3)).astype(np.float32)
    y = rng.integers(0, 4, count)
    x[:, :, 0] += 0.8 * (y % 2)[:, None]
    x[:, :, 1] += 0.8 * (y // 2)[:, None]
    return x, y


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    rng = np.random.default_rng(SEED)
    splits = {name: sensor_windows(count, rng) for name, count in (("train", 1200), ("val", 200), ("test", 400))}
    path = tmp_path_factory.mktemp("sensor") / "prepared.npz"
    arrays = {f"{axis}_{name}": data[i] for name, data in splits.items() for i, axis in enumerate("xy")}
    np.savez(path, input_scale=np.float32(1.0), **arrays)
    return path


def trained_sensor_model(layers_of, prepared: Path, directory: Path) -> Path:
    """The Sequential model of `layers_of(tf.keras.layers)` on (48, 3) windows, fitted 8 epochs, saved."""
    import tensorflow as tf

    from tinyopt.datasets.prepared import load_prepared
    from tinyopt.ml.training import set_seeds

    data = load_prepared(prepared)
    set_seeds(SEED)
    model = tf.keras.Sequential([tf.keras.layers.InputLayer((48, 3)), *layers_of(tf.keras.layers)])
    model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data["x_train"], data["y_train"], epochs=8, batch_size=32, verbose=0)
    model.save(directory / "model.keras")
    return directory / "model.keras"


@pytest.fixture(scope="module")
def base(prepared, tmp_path_factory) -> Path:
    # Named: Keras numbers unnamed layers per process, and the notes asserted below name these.
    return trained_sensor_model(
        lambda layers: [
            layers.Conv1D(8, 5, padding="same", name="conv1d"),
            layers.BatchNormalization(name="batch_normalization"),
            layers.ReLU(),
            layers.MaxPooling1D(2),
            layers.Conv1D(8, 3, activation="relu", name="conv1d_1"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(4),
        ],
        prepared,
        tmp_path_factory.mktemp("base"),
    )


def op_names(tflite: Path) -> list[str]:
    return [op["op_name"] for op in load_interpreter(tflite)._get_ops_details()]


def most_values_in_a_channel(kernel: np.ndarray) -> int:
    return max(np.unique(channel).size for channel in kernel.reshape(-1, kernel.shape[-1]).T)


def int8(model: Path, prepared: Path, out: Path) -> tuple[Path, float]:
    record = convert_model(model, "int8", out / "model.tflite", prepared)
    return Path(record.tflite_path), evaluate_tflite(Path(record.tflite_path), prepared).score


def test_qat_on_a_conv1d_batchnorm_model_converts_to_the_post_training_int8_graph(prepared, base, tmp_path):
    record = fine_tune(QAT, base, prepared, QAT_SETTINGS, TRAIN, TASK, SEED, tmp_path / "qat")
    assert "folded batch_normalization into conv1d" in record.notes
    assert "Conv1D layers quantized in their Conv2D form" in record.notes
    qat_tflite, qat_score = int8(Path(record.model_path), prepared, tmp_path / "qat-int8")
    ptq_tflite, ptq_score = int8(base, prepared, tmp_path / "base-int8")
    # The same kernels in the same order (the PTQ graph folds BN too); the QAT graph needs fewer RESHAPEs.
    kernels_only = [[op for op in op_names(path) if op != "RESHAPE"] for path in (qat_tflite, ptq_tflite)]
    assert kernels_only[0] == kernels_only[1] and len(op_names(qat_tflite)) <= len(op_names(ptq_tflite))
    assert "DEQUANTIZE" not in op_names(qat_tflite) and "QUANTIZE" not in op_names(qat_tflite)
    chance = 0.25
    assert qat_score > chance + 0.4 and qat_score >= ptq_score - 0.05, (qat_score, ptq_score)
    sizes = [[kernel.size for kernel in kernels(load_model(path)).values()] for path in (record.model_path, base)]
    assert sizes[0] == sizes[1]  # every Conv1D and Dense kernel is there, in the Conv2D form where 1-D


def test_pqat_keeps_the_pruned_zeros_of_a_conv1d_model(prepared, base, tmp_path):
    pruning = PruneParams(target_sparsity=0.6, initial_sparsity=0.3, fine_tune_epochs=1)
    pruned = fine_tune(PRUNE, base, prepared, pruning, TRAIN, TASK, SEED, tmp_path / "prune")
    record = fine_tune(PQAT, Path(pruned.model_path), prepared, QAT_SETTINGS, TRAIN, TASK, SEED, tmp_path / "pqat")
    zeros = {name: kernel == 0 for name, kernel in kernels(load_model(pruned.model_path)).items()}
    after = kernels(load_model(record.model_path))
    for name, was_zero in zeros.items():  # tfmot names the wrapped layer quant_<name>
        assert np.all(after[f"quant_{name}"].reshape(was_zero.shape)[was_zero] == 0), name
    assert record.sparsity == pytest.approx(pruned.sparsity, abs=0.01)
    tflite, score = int8(Path(record.model_path), prepared, tmp_path / "pqat-int8")
    assert "DEQUANTIZE" not in op_names(tflite) and score > 0.6


@pytest.mark.parametrize("chain", [("cluster", "cqat"), ("prune", "sp_cluster", "pcqat")])
def test_cluster_preserving_qat_keeps_a_conv1d_models_clusters(prepared, base, tmp_path, chain):
    settings = {
        "prune": (PRUNE, PruneParams(target_sparsity=0.5, initial_sparsity=0.2, fine_tune_epochs=1)),
        "cluster": (CLUSTER, ClusterParams(clusters=6, fine_tune_epochs=1)),
        "sp_cluster": (SP_CLUSTER, ClusterParams(clusters=6, fine_tune_epochs=1)),
        "cqat": (CQAT, QAT_SETTINGS),
        "pcqat": (PCQAT, QAT_SETTINGS),
    }
    parent, records = base, []
    for token in chain:
        technique, step_settings = settings[token]
        records.append(fine_tune(technique, parent, prepared, step_settings, TRAIN, TASK, SEED, tmp_path / token))
        parent = Path(records[-1].model_path)
    clustered, final = records[-2], records[-1]
    assert max(clustered.unique_weights.values()) <= 6
    # QAT folds the BatchNorm into the first Conv1D, which scales each channel's clusters: compare each
    # layer with the clustered model as folded.
    folded = kernels(fold_layers(load_model(clustered.model_path))[0])
    for name, kernel in kernels(load_model(final.model_path)).items():
        before = folded[name.removeprefix("quant_")]
        # tfmot keeps a Conv2D's clusters per output channel when every channel has as many, else
        # across the layer: either way no more distinct values than the clustered model had.
        kept_per_channel = most_values_in_a_channel(kernel) <= most_values_in_a_channel(before)
        assert kept_per_channel or np.unique(kernel).size <= np.unique(before).size, name
    tflite, score = int8(Path(final.model_path), prepared, tmp_path / "int8")
    assert "DEQUANTIZE" not in op_names(tflite) and score > 0.6


# A temporal depthwise net (wake-word / sensor): tfmot refuses DepthwiseConv1D in pruning, clustering and
# QAT; tinyopt computes it as a (k x 1) DepthwiseConv2D whose kernel tfmot prunes, clusters and quantizes.


@pytest.fixture(scope="module")
def depthwise_base(prepared, tmp_path_factory) -> Path:
    return trained_sensor_model(
        lambda layers: [
            layers.Conv1D(8, 5, padding="same", name="conv1d"),
            layers.BatchNormalization(name="batch_normalization"),
            layers.ReLU(),
            layers.DepthwiseConv1D(3, padding="same", name="depthwise"),
            layers.BatchNormalization(name="batch_normalization_1"),
            layers.ReLU(),
            layers.Conv1D(8, 1, name="pointwise"),
            layers.GlobalAveragePooling1D(),
            layers.Dense(4),
        ],
        prepared,
        tmp_path_factory.mktemp("depthwise-base"),
    )


def test_the_2d_form_of_a_depthwise_conv1d_model_computes_the_same(prepared, depthwise_base):
    from tinyopt.datasets.prepared import load_prepared
    from tinyopt.ml.conv1d import DepthwiseConv1DAsDepthwiseConv2D, as_1d_convolutions, as_2d_convolutions, tfmot_form

    model, x = load_model(depthwise_base), load_prepared(prepared)["x_test"][:64]
    expected = model.predict(x, verbose=0)
    for form in (as_2d_convolutions(model), tfmot_form(model, "pruned")[0]):
        assert isinstance(form.get_layer("depthwise"), DepthwiseConv1DAsDepthwiseConv2D)
        assert form.get_layer("depthwise").get_weights()[0].shape == (3, 1, 8, 1)
        np.testing.assert_allclose(form.predict(x, verbose=0), expected, atol=1e-5)
    assert type(tfmot_form(model, "pruned")[0].get_layer("conv1d")).__name__ == "Conv1D"  # tfmot prunes Conv1D
    back = as_1d_convolutions(tfmot_form(model, "pruned")[0])
    assert type(back.get_layer("depthwise")).__name__ == "DepthwiseConv1D"
    np.testing.assert_allclose(back.predict(x, verbose=0), expected, atol=1e-5)


@pytest.mark.parametrize("token", ["prune", "cluster", "qat"])
def test_a_depthwise_conv1d_model_is_pruned_clustered_and_quantized(prepared, depthwise_base, tmp_path, token):
    from tinyopt.mcu.codegen import generate

    technique, settings = {
        "prune": (PRUNE, PruneParams(target_sparsity=0.6, initial_sparsity=0.3, fine_tune_epochs=1)),
        "cluster": (CLUSTER, ClusterParams(clusters=6, fine_tune_epochs=1)),
        "qat": (QAT, QAT_SETTINGS),
    }[token]
    record = fine_tune(technique, depthwise_base, prepared, settings, TRAIN, TASK, SEED, tmp_path / token)
    verb = {"prune": "pruned", "cluster": "clustered", "qat": "quantized"}[token]
    assert f"DepthwiseConv1D layers {verb} in their DepthwiseConv2D form" in record.notes
    trained = kernels(load_model(record.model_path))
    depthwise = trained["quant_depthwise" if token == "qat" else "depthwise"]
    if token == "prune":  # the depthwise kernel kept dense, the others pruned; the model is plain Keras again
        assert np.mean(depthwise == 0) == 0 and np.mean(trained["pointwise"] == 0) == pytest.approx(0.6, abs=0.05)
        assert type(load_model(record.model_path).get_layer("depthwise")).__name__ == "DepthwiseConv1D"
    if token == "cluster":
        assert np.unique(depthwise).size <= 6 and record.unique_weights["depthwise"] <= 6
    if token == "qat":
        assert "folded batch_normalization_1 into depthwise" in record.notes
    tflite, score = int8(Path(record.model_path), prepared, tmp_path / "int8")
    ptq_tflite, _ = int8(depthwise_base, prepared, tmp_path / "base-int8")
    assert op_names(tflite).count("DEPTHWISE_CONV_2D") == op_names(ptq_tflite).count("DEPTHWISE_CONV_2D") == 1
    assert "DEQUANTIZE" not in op_names(tflite)
    assert score > 0.6, score  # chance is 0.25
    assert "DEPTHWISE_CONV_2D" in generate(tflite.read_bytes(), "dw1d").op_kinds
