"""Each optimization technique and conversion does what it claims, checked on the models themselves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tasks.benchmark import graph_facts
from tasks.cluster import CLUSTER, SP_CLUSTER
from tasks.convert import convert_model
from tasks.evaluate import evaluate_tflite
from tasks.fine_tune import fine_tune
from tasks.graph import fold_layers, graph
from tasks.prune import PRUNE, PRUNE_2_4
from tasks.qat import PQAT, QAT
from tasks.separable import SEPARABLE
from tasks.train import train_baseline
from tests.conftest import needs_fashion, prepare_fashion_slice
from tinyopt.core.errors import NotApplicable
from tinyopt.datasets.prepared import load_prepared
from tinyopt.ml.models import kernels, load_model
from tinyopt.params import (
    ClusterParams,
    ConversionParams,
    ModelParams,
    PruneParams,
    QatParams,
    StructuredPruneParams,
    TaskParams,
    TrainParams,
)
from tinyopt.runtimes.litert import load_interpreter

pytestmark = needs_fashion
TRAIN = TrainParams(epochs=1, batch_size=64)
TASK = TaskParams()
SEED = 13


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_fashion_slice(tmp_path_factory.mktemp("data"), 1500, 300, seed=SEED)


@pytest.fixture(scope="module")
def base(prepared, tmp_path_factory) -> Path:
    return Path(train_baseline(prepared, ModelParams(), TRAIN, TASK, SEED, tmp_path_factory.mktemp("base")).model_path)


@pytest.fixture(scope="module")
def pruned(prepared, base, tmp_path_factory):
    settings = PruneParams(target_sparsity=0.75, initial_sparsity=0.3, fine_tune_epochs=1)
    return fine_tune(PRUNE, base, prepared, settings, TRAIN, TASK, SEED, tmp_path_factory.mktemp("pruned"))


def test_pruned_model_has_the_target_sparsity_after_stripping(pruned):
    model = load_model(pruned.model_path)
    assert not any("prune" in type(layer).__name__.lower() for layer in model.layers)  # wrappers stripped
    for name, kernel in kernels(model).items():
        assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.01), name
    assert pruned.sparsity == pytest.approx(0.75, abs=0.01)


def test_2_4_pruning_leaves_two_zeros_in_every_block_of_four(prepared, base, tmp_path):
    record = fine_tune(
        PRUNE_2_4, base, prepared, StructuredPruneParams(fine_tune_epochs=1), TRAIN, TASK, SEED, tmp_path
    )
    # Layer names depend on what else this process built, so find the layers by their shapes.
    dense = next(k for k in kernels(load_model(record.model_path)).values() if k.shape == (2028, 10))
    blocks = dense.T.reshape(10, -1, 4)  # blocks of four consecutive input weights per output
    assert (np.sum(blocks == 0, axis=-1) >= 2).all()
    assert re.search(r"left dense: conv2d\w* \(input depth", record.notes)  # one input channel: 2:4 cannot apply


def test_clustered_layers_have_at_most_n_unique_values(prepared, base, tmp_path):
    record = fine_tune(
        CLUSTER, base, prepared, ClusterParams(clusters=8, fine_tune_epochs=1), TRAIN, TASK, SEED, tmp_path
    )
    for name, kernel in kernels(load_model(record.model_path)).items():
        assert np.unique(kernel).size <= 8, name
    assert max(record.unique_weights.values()) <= 8


def test_sparsity_preserving_clustering_keeps_the_pruned_zeros(prepared, pruned, tmp_path):
    settings = ClusterParams(clusters=8, fine_tune_epochs=1)
    record = fine_tune(SP_CLUSTER, Path(pruned.model_path), prepared, settings, TRAIN, TASK, SEED, tmp_path)
    assert record.step == "sp_cluster"
    before, after = kernels(load_model(pruned.model_path)), kernels(load_model(record.model_path))
    for name in before:
        assert ((before[name] == 0) <= (after[name] == 0)).all(), name  # every zero stays zero
        assert np.unique(after[name]).size <= 8 + 1  # the clusters, plus the preserved zero
    assert record.sparsity >= pruned.sparsity


def tensor_dtypes(path: Path) -> set[str]:
    return {np.dtype(t["dtype"]).name for t in load_interpreter(path).get_tensor_details()}


MLIR_ERROR = (
    "Could not translate MLIR to FlatBuffer./work/main/tasks/convert.py:91:1: error: "
    "'tf.Igamma' op is neither a custom op nor a flex op\n"
    "    blob = converter.convert()\n^\n"
    "/work/main/tasks/convert.py:91:1: note: called from\n"
    '<unknown>:0: note: loc(fused["StatefulPartitionedCall:", "StatefulPartitionedCall"]): called from\n'
    '/work/main/tasks/convert.py:91:1: note: see current operation: %2 = "tf.Igamma"(%arg0, %arg0) '
    '{device = ""} : (tensor<?x8xf32>, tensor<?x8xf32>) -> tensor<?x8xf32>\n'
    "<unknown>:0: error: failed while converting: 'main': \n"
    "Some ops in the model are custom ops\n"
    '<unknown>:0: note: see current operation: \n"func.func"() <{arg_attrs = [{}]}> ({\n'
    + '  %1 = "arith.constant"() <{value = dense<[[0.233870e-01, 7.064290e-01]]> : tensor<2x8xf32>}>\n'
    * 60
)


def test_a_converter_error_becomes_its_own_message_in_one_short_line():
    from tasks.convert import converter_message

    assert len(MLIR_ERROR) > 4000
    assert converter_message(MLIR_ERROR) == "'tf.Igamma' op is neither a custom op nor a flex op"
    # Where the only error is the generic one, the line after it says what went wrong.
    generic = "<unknown>:0: error: failed while converting: 'main': \nSome ops are not supported by TFLite.\n"
    assert converter_message(generic + '<unknown>:0: note: see current operation: %0 = "tf.X"()') == (
        "Some ops are not supported by TFLite."
    )
    located = 'loc(callsite("a(b)" at fused["c:", "d"])): error: bad op: see current operation: %0 = "tfl.add"(%1)'
    assert converter_message(located + " x" * 3000) == "bad op"
    # A message of the converter's own Python code stays exactly as it is.
    own = "Quantization to 16x8-bit not yet supported for op: 'DEQUANTIZE'."
    assert converter_message(own) == own
    assert len(converter_message("word " * 200)) <= 300 and "\n" not in converter_message("a\nb")


def test_a_real_converter_error_is_one_line():
    import tensorflow as tf

    from tasks.convert import converter_message

    inputs = tf.keras.Input((8,))
    odd = tf.keras.layers.Lambda(lambda t: tf.math.igamma(t, t))(inputs)  # no TFLite kernel: a custom op
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(odd))
    with pytest.raises(Exception) as raised:
        tf.lite.TFLiteConverter.from_keras_model(model).convert()
    assert len(str(raised.value)) > 1000 and ":1: error: " in str(raised.value)  # locations and an IR dump
    assert converter_message(str(raised.value)) == "'tf.Igamma' op is neither a custom op nor a flex op"


@pytest.fixture(scope="module")
def pruned_int8(prepared, pruned, tmp_path_factory):
    """The pruned model as full-integer int8, converted once for the tests that read it."""
    out = tmp_path_factory.mktemp("pruned-int8") / "m.tflite"
    return convert_model(
        Path(pruned.model_path), "int8", out, prepared, ConversionParams(calibration_samples=100), SEED
    )


def test_full_integer_int8_has_int8_io_and_no_float_tensors(pruned_int8):
    record = pruned_int8
    assert (record.input_dtype, record.output_dtype) == ("int8", "int8")
    assert tensor_dtypes(Path(record.tflite_path)) <= {"int8", "int32"}  # no float op anywhere


def test_every_conversion_produces_what_it_names(prepared, base, tmp_path):
    sizes = {}
    for conversion, io, must_have in [
        ("float32", "float32", {"float32"}),
        ("float16", "float32", {"float16"}),
        ("dynamic_range", "float32", {"int8", "float32"}),
        ("int8_fallback", "float32", {"int8", "float32"}),
        ("int16x8", "float32", {"int16", "int8"}),
    ]:
        record = convert_model(
            base,
            conversion,
            tmp_path / f"{conversion}.tflite",
            prepared,
            ConversionParams(calibration_samples=50),
            SEED,
        )
        assert record.input_dtype == io and record.output_dtype == io, conversion
        assert must_have <= tensor_dtypes(tmp_path / f"{conversion}.tflite"), conversion
        assert record.calibration_samples == (50 if conversion in ("int8_fallback", "int16x8") else 0)
        sizes[conversion] = record.raw_bytes
    assert sizes["float16"] < 0.6 * sizes["float32"] and sizes["dynamic_range"] < 0.35 * sizes["float32"]


def test_qat_family_trains_and_converts_to_int8(prepared, base, pruned, tmp_path):
    settings = QatParams(fine_tune_epochs=1)
    qat = fine_tune(QAT, base, prepared, settings, TRAIN, TASK, SEED, tmp_path / "qat")
    pqat = fine_tune(PQAT, Path(pruned.model_path), prepared, settings, TRAIN, TASK, SEED, tmp_path / "pqat")
    assert Path(qat.model_path).is_dir()  # SavedModel: tfmot's wrappers do not survive .keras
    for record in (qat, pqat):
        converted = convert_model(
            Path(record.model_path),
            "int8",
            tmp_path / f"{record.step}.tflite",
            prepared,
            ConversionParams(calibration_samples=50),
            SEED,
        )
        assert converted.input_dtype == "int8"
        assert evaluate_tflite(Path(converted.tflite_path), prepared).score > 0.5
    assert pqat.sparsity == pytest.approx(pruned.sparsity, abs=0.01)  # PQAT keeps the zeros
    # QAT's float32 file feeds each layer its float weights through QUANTIZE > DEQUANTIZE: all counted (was 22).
    as_float = convert_model(Path(qat.model_path), "float32", tmp_path / "qat-float32.tflite", prepared)
    assert {"QUANTIZE", "DEQUANTIZE"} <= set(graph_facts(Path(as_float.tflite_path))["ops"])
    assert graph_facts(Path(as_float.tflite_path))["params"] == 20410  # the paper CNN's weights and biases


def test_accuracy_is_that_of_the_converted_file_run_example_by_example(prepared, pruned_int8):
    """evaluate_tflite's figure equals a plain LiteRT loop over the test set, one example at a time."""
    from ai_edge_litert.interpreter import Interpreter

    record = pruned_int8
    data = load_prepared(prepared)
    interpreter = Interpreter(model_path=record.tflite_path)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    correct = 0
    for x, y in zip(data["x_test"], data["y_test"], strict=False):
        interpreter.set_tensor(inp["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)[None])
        interpreter.invoke()
        correct += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == y)
    assert evaluate_tflite(Path(record.tflite_path), prepared).score == pytest.approx(correct / len(data["y_test"]))


def test_a_chain_is_reproducible_with_the_same_seed(prepared, base, pruned, tmp_path):
    settings = PruneParams(target_sparsity=0.75, initial_sparsity=0.3, fine_tune_epochs=1)
    again = fine_tune(PRUNE, base, prepared, settings, TRAIN, TASK, SEED, tmp_path / "again")
    weights = load_model(pruned.model_path).get_weights(), load_model(again.model_path).get_weights()
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    first = convert_model(
        Path(pruned.model_path),
        "int8",
        tmp_path / "a.tflite",
        prepared,
        ConversionParams(calibration_samples=100),
        SEED,
    )
    second = convert_model(
        Path(again.model_path), "int8", tmp_path / "b.tflite", prepared, ConversionParams(calibration_samples=100), SEED
    )
    assert Path(first.tflite_path).read_bytes() == Path(second.tflite_path).read_bytes()


def test_separable_replaces_conv2d_and_reports_it(prepared, base, tmp_path):
    from tinyopt.params import SeparableParams

    record = fine_tune(SEPARABLE, base, prepared, SeparableParams(epochs=1), TRAIN, TASK, SEED, tmp_path)
    layers = [type(layer).__name__ for layer in load_model(record.model_path).layers]
    assert "SeparableConv2D" in layers and "Conv2D" not in layers
    assert "started from a rank-1-per-channel SVD of its kernel" in record.notes
    assert "parameters 20,410 -> 20,323" in record.notes
    assert "read one input channel: every filter of a separable pair there is a multiple of one" in record.notes


def residual_model():
    """A functional model with a 1x1 and a 3x3 convolution, BatchNorm and an Add."""
    import tensorflow as tf

    layers = tf.keras.layers
    inputs = tf.keras.Input((12, 12, 3))
    skip = layers.Conv2D(8, 1, name="pointwise")(inputs)
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv3")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU()(layers.Add()([skip, x]))
    outputs = layers.Dense(10, name="head")(layers.GlobalAveragePooling2D()(x))
    model = tf.keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    return model


def synthetic_prepared(path: Path, shape: tuple[int, ...], classes: int = 10) -> Path:
    """A tiny prepared split of random inputs (already scaled) and labels."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 64), ("val", 16), ("test", 16)):
        arrays[f"x_{split}"] = rng.random((count, *shape), dtype=np.float32)
        arrays[f"y_{split}"] = rng.integers(0, classes, count)
    np.savez(path, input_scale=np.float64(1.0), **arrays)
    return path


def test_separable_replaces_only_the_kxk_conv_and_keeps_the_other_weights():
    from tasks.separable import to_separable
    from tinyopt.params import SeparableParams

    model = residual_model()
    rebuilt, notes = SEPARABLE.wrap(model, SeparableParams(), None)
    kinds = {layer.name: type(layer).__name__ for layer in rebuilt.layers}
    assert kinds["pointwise"] == "Conv2D" and kinds["conv3_separable"] == "SeparableConv2D" and "conv3" not in kinds
    for name in ("pointwise", "bn", "head"):  # untouched: the given weights, not fresh ones
        for given, kept in zip(model.get_layer(name).get_weights(), rebuilt.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(given, kept)
    assert rebuilt.count_params() < model.count_params()
    assert "replaced conv3 (3x3, 3->8" in notes and "kept pointwise (1x1, 3->8: nothing to separate)" in notes
    assert f"parameters {model.count_params():,} -> {rebuilt.count_params():,}" in notes

    # A kernel that is rank 1 per input channel separates exactly: the rebuilt model computes the same outputs.
    rng = np.random.default_rng(1)
    rank1 = np.einsum("hwc,co->hwco", rng.normal(size=(3, 3, 3)), rng.normal(size=(3, 8))).astype(np.float32)
    model.get_layer("conv3").set_weights([rank1])
    rewrite = to_separable(model)
    assert rewrite.energy["conv3"] == pytest.approx(1.0, abs=1e-5)
    x = rng.random((4, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(rewrite.model.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_separable_fine_tunes_a_functional_model_into_a_smaller_one(tmp_path):
    from tinyopt.ml.models import save_model
    from tinyopt.params import SeparableParams

    model = residual_model()
    save_model(model, tmp_path / "residual.keras")
    prepared = synthetic_prepared(tmp_path / "prepared.npz", (12, 12, 3))
    record = fine_tune(
        SEPARABLE, tmp_path / "residual.keras", prepared, SeparableParams(epochs=1), TRAIN, TASK, SEED, tmp_path / "out"
    )
    rebuilt = load_model(record.model_path)
    kinds = [type(layer).__name__ for layer in rebuilt.layers]
    assert kinds.count("Conv2D") == 1 and kinds.count("SeparableConv2D") == 1 and "Add" in kinds
    assert rebuilt.count_params() < model.count_params() and record.num_params == rebuilt.count_params()


def test_separable_skips_a_model_with_only_pointwise_convs_and_dense_layers():
    import tensorflow as tf

    from tinyopt.params import SeparableParams

    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            layers.InputLayer((8, 8, 4)),
            layers.Conv2D(16, 1, name="expand"),
            layers.Conv2D(4, 1, name="project"),
            layers.Flatten(),
            layers.Dense(10),
        ]
    )
    with pytest.raises(NotApplicable, match=r"expand \(1x1, 4->16: nothing to separate\).*project \(1x1"):
        SEPARABLE.wrap(model, SeparableParams(), None)
    # A 3x3 convolution to one channel costs more as a pair: 36 depthwise + 4 pointwise MACs a position, not 36.
    single = tf.keras.Sequential([layers.InputLayer((8, 8, 4)), layers.Conv2D(1, 3, name="to_one"), layers.Flatten()])
    with pytest.raises(NotApplicable, match="to_one .*the separable pair would not be smaller"):
        SEPARABLE.wrap(single, SeparableParams(), None)


def test_separable_on_a_model_without_conv2d_is_not_applicable(prepared, tmp_path):
    import tensorflow as tf

    from tinyopt.ml.models import save_model
    from tinyopt.params import SeparableParams

    mlp = tf.keras.Sequential(
        [tf.keras.layers.InputLayer((28, 28)), tf.keras.layers.Flatten(), tf.keras.layers.Dense(10)]
    )
    save_model(mlp, tmp_path / "mlp.keras")
    with pytest.raises(NotApplicable, match="no Conv2D"):
        fine_tune(
            SEPARABLE, tmp_path / "mlp.keras", prepared, SeparableParams(epochs=1), TRAIN, TASK, SEED, tmp_path / "out"
        )


def test_graph_folds_batch_norm_and_activation_without_changing_outputs():
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential(
        [
            layers.InputLayer((12, 12, 3)),
            layers.Conv2D(8, 3, use_bias=False, name="conv"),
            layers.BatchNormalization(name="bn"),
            layers.Activation("relu", name="act"),
            layers.Flatten(),
            layers.Dense(4),
        ]
    )
    rng = np.random.default_rng(0)
    bn = model.layers[1]
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(size=8), rng.normal(size=8), rng.uniform(0.5, 2, 8)])
    folded, changes = fold_layers(model)
    assert [type(layer).__name__ for layer in folded.layers] == ["Conv2D", "Flatten", "Dense"]
    assert changes == ["folded bn into conv", "fused act (relu) into conv"]
    x = rng.random((5, 12, 12, 3)).astype(np.float32)
    np.testing.assert_allclose(folded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)


def test_graph_step_on_the_paper_cnn_says_nothing_changed(prepared, base, tmp_path):
    from tinyopt.params import GraphParams

    record = graph(base, prepared, GraphParams(), TASK, tmp_path)
    assert record.notes.startswith("nothing to fold")
    assert "the converted graph is unchanged" in record.notes


def test_graph_step_folds_a_functional_model_and_says_what_it_folded(prepared, tmp_path):
    import tensorflow as tf

    from tinyopt.params import GraphParams

    layers = tf.keras.layers
    data = load_prepared(prepared)
    inputs = tf.keras.Input(data["x_train"].shape[1:])
    x = layers.Reshape((*data["x_train"].shape[1:3], 1))(inputs)
    x = layers.Conv2D(4, 3, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    skip = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(skip)
    x = layers.BatchNormalization()(x)
    x = layers.Add()([x, skip])
    x = layers.GlobalAveragePooling2D()(x)
    model = tf.keras.Model(inputs, layers.Dense(10, activation="softmax")(x))
    model.save(tmp_path / "functional.keras")
    record = graph(tmp_path / "functional.keras", prepared, GraphParams(), TASK, tmp_path / "out")
    assert record.notes.startswith("folded 2 BatchNormalization and 1 activation into their producers: folded ")
    assert "Keras layers 10 -> 7" in record.notes
    assert not any(type(layer).__name__ == "BatchNormalization" for layer in load_model(record.model_path).layers)


def test_c_array_compiles_and_holds_the_model_bytes(base, tmp_path):
    if not shutil.which("g++"):
        pytest.skip("needs g++")
    tflite = tmp_path / "base-float32.tflite"
    convert_model(base, "float32", tflite)
    source = tflite.with_suffix(".cc")
    assert "alignas(16) const unsigned char g_base_float32_model[]" in source.read_text()
    main = tmp_path / "main.cc"
    main.write_text(
        '#include <cstdio>\n#include "base-float32.h"\n'
        "int main() { std::fwrite(g_base_float32_model, 1, g_base_float32_model_len, stdout); return 0; }\n"
    )
    subprocess.run(
        ["g++", "-std=c++17", "-o", str(tmp_path / "dump"), str(main), str(source)], check=True, cwd=tmp_path
    )
    dumped = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout
    assert dumped == tflite.read_bytes()
