"""The MCU code generator and firmware: generated C is bit-exact with TFLM's reference kernels on the host, and
the firmware runs on each emulated core (Cortex-M4, M7, M55) with measured, reproducible figures."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FASHION_DIR, REPO, needs_fashion, prepare_fashion_slice
from tinyopt.core.errors import NotApplicable
from tinyopt.params import DeviceProfile

SEED_DIR = REPO.parent / "shared" / "reference" / "seed-cnn1"
SEED_MODELS = ["base-int8-floatio", "pruned-int8-floatio", "graph-int8-floatio", "separable-int8-floatio"]
HOST_IMAGES = 1000  # the benchmark checks all 10,000; the tests keep CPU use modest

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc for the host build")


def _toolchain_reason() -> str | None:
    from tinyopt.mcu.firmware import toolchain_missing

    return toolchain_missing()


needs_arm = pytest.mark.skipif(_toolchain_reason() is not None, reason=str(_toolchain_reason()))


def _test_images(n: int) -> np.ndarray:
    from tinyopt.datasets.idx import read_idx

    return read_idx(FASHION_DIR / "t10k-images-idx3-ubyte.gz")[:n].astype(np.float32) / 255.0


def _model_inputs(blob: bytes, x: np.ndarray) -> np.ndarray:
    from tinyopt.mcu.host import tflm_interpreter
    from tinyopt.runtimes.quantized_io import quantize_input

    return quantize_input(x, tflm_interpreter(blob).get_input_details(0))


def _assert_bit_exact(blob: bytes, x: np.ndarray, name: str = "m") -> np.ndarray:
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.host import run_host, run_tflm

    generated = generate(blob, name)
    inputs = _model_inputs(blob, x)
    ours, tflm = run_host(generated, inputs), run_tflm(blob, inputs)
    differ = np.flatnonzero((ours != tflm).any(axis=1))
    assert differ.size == 0, f"{differ.size} of {len(x)} inputs differ from TFLM, first {differ[:5]}"
    return ours


@needs_fashion
@needs_gcc
@pytest.mark.parametrize("model", SEED_MODELS)
def test_seed_models_bit_exact_with_tflm_on_host(model):
    blob = (SEED_DIR / f"{model}.tflite").read_bytes()
    x = _test_images(HOST_IMAGES)
    outputs = _assert_bit_exact(blob, x)
    assert outputs.dtype == np.float32 and np.ptp(outputs) > 0  # float I/O, and not a constant output


# --- small full-int8 models covering the other ops (random weights suffice for bit-exactness) -------------


def _keras_models():
    import tf_keras as keras

    def conv_model():  # CONV_2D SAME + stride, DEPTHWISE, ADD (residual), AVERAGE_POOL, MEAN, FC, SOFTMAX
        inp = keras.Input((28, 28))
        x = keras.layers.Reshape((28, 28, 1))(inp)
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
        y = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=1, activation="relu6")(x)
        x = keras.layers.Add()([x, y])
        x = keras.layers.AveragePooling2D(2, padding="same")(x)
        x = keras.layers.Conv2D(12, 3, dilation_rate=2, padding="valid")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        out = keras.layers.Dense(10, activation="softmax")(x)
        return keras.Model(inp, out)

    def conv1d_model():  # CONV over 1-D inputs (EXPAND_DIMS + CONV_2D + RESHAPE), MAX_POOL, FC
        inp = keras.Input((28, 28))
        x = keras.layers.Conv1D(6, 5, padding="same", activation="relu")(inp)
        x = keras.layers.MaxPooling1D(2)(x)
        x = keras.layers.Flatten()(x)
        out = keras.layers.Dense(10)(x)
        return keras.Model(inp, out)

    return {"conv": conv_model, "conv1d": conv1d_model}


@pytest.fixture(scope="module")
def prepared_slice(tmp_path_factory) -> Path:
    return prepare_fashion_slice(tmp_path_factory.mktemp("mcu-data"), train_limit=300, test_limit=100, seed=3)


def _convert(build, prepared: Path, tmp: Path, conversion: str = "int8") -> bytes:
    import tensorflow as tf

    from tasks.convert import convert_model
    from tinyopt.params import ConversionParams

    tf.keras.utils.set_random_seed(11)
    model = build()
    path = tmp / "model.keras"
    model.save(path)
    record = convert_model(
        path, conversion, tmp / f"{conversion}.tflite", prepared, ConversionParams(calibration_samples=100), seed=0
    )
    return Path(record.tflite_path).read_bytes()


@needs_fashion
@needs_gcc
@pytest.mark.parametrize("kind", ["conv", "conv1d"])
def test_full_int8_ops_bit_exact_with_tflm(kind, prepared_slice, tmp_path):
    from tinyopt.mcu.codegen import generate

    blob = _convert(_keras_models()[kind], prepared_slice, tmp_path)
    generated = generate(blob, "m")
    assert generated.input_dtype == "int8" and generated.output_dtype == "int8"
    expected = {
        "conv": {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "MEAN", "SOFTMAX", "FULLY_CONNECTED"},
        "conv1d": {"CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED"},
    }[kind]
    assert expected <= set(generated.op_kinds)
    outputs = _assert_bit_exact(blob, _test_images(HOST_IMAGES))
    assert len(np.unique(outputs, axis=0)) > 10  # the inputs reach the outputs


@needs_fashion
def test_a_model_with_another_op_is_skipped_with_its_name(prepared_slice, tmp_path):
    import tf_keras as keras

    from tinyopt.mcu.codegen import generate

    def tanh_model():
        inp = keras.Input((28, 28))
        x = keras.layers.Flatten()(inp)
        x = keras.layers.Dense(16, activation="tanh")(x)
        return keras.Model(inp, keras.layers.Dense(10)(x))

    blob = _convert(tanh_model, prepared_slice, tmp_path)
    with pytest.raises(NotApplicable, match="does not support op TANH"):
        generate(blob, "m")


@needs_fashion
@needs_gcc
def test_requantize_between_scales_bit_exact_with_tflm(prepared_slice, tmp_path):
    """Issue 12: a softmax's fixed output scale (1/256) concatenated with a dense branch makes the converter insert
    an int8 -> int8 QUANTIZE (TFLM's Requantize) before the CONCATENATION."""
    import tf_keras as keras

    from tinyopt.mcu.graph import load_graph

    def branches_model():
        inp = keras.Input((28, 28))
        x = keras.layers.Flatten()(inp)
        probs = keras.layers.Dense(10, activation="softmax")(x)
        x = keras.layers.Concatenate()([probs, keras.layers.Dense(10)(x)])
        return keras.Model(inp, keras.layers.Dense(10)(x))

    blob = _convert(branches_model, prepared_slice, tmp_path)
    g = load_graph(blob)
    requant = [op for op in g.ops if op.kind == "QUANTIZE" and g.tensors[op.inputs[0]].dtype is np.int8]
    assert requant and g.tensors[requant[0].outputs[0]].dtype is np.int8, [op.kind for op in g.ops]
    assert g.tensors[requant[0].inputs[0]].scale != g.tensors[requant[0].outputs[0]].scale  # not a plain copy
    outputs = _assert_bit_exact(blob, _test_images(300))
    assert len(np.unique(outputs, axis=0)) > 10


def test_each_op_record_names_a_tflite_operator():
    """The op table is keyed by the names load_graph gives ops: a misspelt record would never match."""
    from tensorflow.lite.python import schema_py_generated as schema

    from tinyopt.mcu.ops import OPS

    assert set(OPS) <= set(vars(schema.BuiltinOperator))
    assert all(kind == op.kind for kind, op in OPS.items())


def test_memory_plan_reuses_space_of_dead_tensors():
    from tinyopt.mcu.arena import Buffer, plan_arena

    buffers = [Buffer("a", 1000, 0, 1), Buffer("b", 800, 1, 2), Buffer("c", 900, 2, 3)]
    size = plan_arena(buffers)
    a, b, c = buffers
    assert c.offset == a.offset  # a is dead when c is born
    assert b.offset >= a.offset + a.nbytes or b.offset + b.nbytes <= a.offset
    assert size < 1000 + 800 + 900


# --- firmware under QEMU -----------------------------------------------------------------------------------

PROFILE = {"Cortex-M4": "nano33ble", "Cortex-M7": "stm32f746"}


def _profile(core: str) -> DeviceProfile:
    from tinyopt.params import DEFAULT_DEVICES

    if core in PROFILE:
        return DEFAULT_DEVICES[PROFILE[core]]
    return DeviceProfile(
        name="Arm Corstone-300 (MPS3 AN547)", core=core, clock_mhz=32, flash_bytes=512 * 1024, sram_bytes=512 * 1024
    )


@needs_fashion
@needs_arm
@pytest.mark.parametrize("core", ["Cortex-M4", "Cortex-M7", "Cortex-M55"])
def test_firmware_runs_on_each_core_bit_exact_and_reproducible(core, tmp_path):
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.firmware import build_firmware, run_firmware
    from tinyopt.mcu.host import run_tflm

    blob = (SEED_DIR / "base-int8-floatio.tflite").read_bytes()
    generated = generate(blob, "base")
    x = _test_images(20)
    firmware = build_firmware(generated, _profile(core), tmp_path / "fw")
    first = run_firmware(firmware, x, generated.op_kinds, generated.output_dtype, timeout=120)
    second = run_firmware(firmware, x, generated.op_kinds, generated.output_dtype, timeout=120)
    assert np.array_equal(first.outputs, run_tflm(blob, x))  # as the emulated device computes it
    assert first.instructions_per_inference > 0
    assert first.instructions_per_inference == second.instructions_per_inference  # -icount is deterministic
    assert first.instructions_per_op == second.instructions_per_op
    assert 0.9 * first.instructions_per_inference <= sum(first.instructions_per_op) <= first.instructions_per_inference
    assert 0 < first.model_flash_bytes < first.flash_bytes < 64 * 1024
    assert generated.arena_bytes <= first.ram_bytes < 32 * 1024
    assert 0 < first.stack_bytes < 2048


@needs_arm
def test_link_fails_with_the_reason_for_a_too_small_profile(tmp_path):
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.firmware import build_firmware

    generated = generate((SEED_DIR / "base-int8-floatio.tflite").read_bytes(), "base")
    tiny = DeviceProfile(name="Tiny M4", core="Cortex-M4", flash_bytes=16 * 1024, sram_bytes=64 * 1024)
    with pytest.raises(NotApplicable, match=r"does not fit Tiny M4: FLASH \(16,384 bytes\) overflowed by [\d,]+ bytes"):
        build_firmware(generated, tiny, tmp_path / "fw")
    short_ram = DeviceProfile(name="Short RAM", core="Cortex-M4", flash_bytes=1 << 20, sram_bytes=8 * 1024)
    with pytest.raises(NotApplicable, match="does not fit Short RAM: RAM"):
        build_firmware(generated, short_ram, tmp_path / "fw2")


def test_a_core_without_an_emulated_machine_is_not_applicable():
    from tinyopt.mcu.firmware import core_for
    from tinyopt.params import DEFAULT_DEVICES

    assert core_for(DEFAULT_DEVICES["nano33ble"]).machine == "mps2-an386"
    with pytest.raises(NotApplicable, match="no emulated machine for core 'Xtensa LX6'"):
        core_for(DEFAULT_DEVICES["esp32"])


@needs_fashion
@needs_gcc
def test_clustered_dense_layer_stored_as_indices_is_bit_exact_and_smaller(prepared_slice, tmp_path):
    import tf_keras as keras

    from tinyopt.mcu.codegen import generate

    def clustered_model():  # a dense layer with 12 distinct weights, as weight clustering leaves it
        inp = keras.Input((28, 28))
        x = keras.layers.Flatten()(inp)
        dense = keras.layers.Dense(10)
        out = dense(x)
        model = keras.Model(inp, out)
        kernel, bias = dense.get_weights()
        centroids = np.linspace(-0.05, 0.05, 12, dtype=np.float32)
        dense.set_weights([centroids[np.random.default_rng(1).integers(0, 12, kernel.shape)], bias])
        return model

    blob = _convert(clustered_model, prepared_slice, tmp_path)
    plain, clustered = generate(blob, "m"), generate(blob, "m", cluster_indices=True)
    assert [w.clustered for w in clustered.weight_storage] == [True]
    assert len(clustered.source) < 0.75 * len(plain.source)  # 4-bit indices instead of int8 weights
    from tinyopt.mcu.host import run_host, run_tflm

    inputs = _model_inputs(blob, _test_images(300))
    assert np.array_equal(run_host(clustered, inputs), run_tflm(blob, inputs))


@needs_fashion
@needs_gcc
@pytest.mark.parametrize("conversion", ["int8", "int8_fallback"])
def test_quantization_aware_model_bit_exact_with_tflm(conversion, prepared_slice):
    """The plan's QAT chains end in these conversions; converted with a fixed batch of one, as the pipeline does."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    from tasks.convert import calibration_set, configure
    from tinyopt.mcu.codegen import generate

    tf.keras.utils.set_random_seed(5)
    inp = keras.Input((28, 28))
    x = keras.layers.Reshape((28, 28, 1))(inp)
    x = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(12, 3, activation="relu")(x))
    model = tfmot.quantization.keras.quantize_model(keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(x))))
    serve = tf.function(lambda t: model(t, training=False)).get_concrete_function(tf.TensorSpec([1, 28, 28]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], model)
    configure(converter, conversion, calibration_set(prepared_slice, 100, 0))
    blob = converter.convert()
    assert generate(blob, "m").input_dtype == ("int8" if conversion == "int8" else "float32")
    _assert_bit_exact(blob, _test_images(HOST_IMAGES))


# --- models larger than any fixed harness buffer: the firmware's buffers are sized from the model -----------


def _int8_from_keras(model) -> bytes:
    """Full int8 (int8 input and output), calibrated on random inputs of the model's shape (bit-exactness with
    TFLM is what these tests check, not accuracy)."""
    import tensorflow as tf

    shape = model.input_shape[1:]
    rng = np.random.default_rng(0)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.random((1, *shape), dtype=np.float32)] for _ in range(20))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def _autoencoder():  # 640 -> 64 -> 640: 640 output bytes, more than the old harness's 256
    import tf_keras as keras

    inp = keras.Input((640,))
    return keras.Model(inp, keras.layers.Dense(640)(keras.layers.Dense(64, activation="relu")(inp)))


def _deep_stack():  # 72 small dense layers: more ops than the old harness's 64
    import tf_keras as keras

    inp = x = keras.Input((16,))
    for _ in range(72):
        x = keras.layers.Dense(16, activation="relu")(x)
    return keras.Model(inp, x)


@needs_arm
@pytest.mark.parametrize("build, outputs, ops", [(_autoencoder, 640, 2), (_deep_stack, 16, 72)])
def test_models_past_the_old_harness_limits_run_bit_exact_on_the_emulated_core(build, outputs, ops):
    import tensorflow as tf

    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.on_device import measure_library
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.records.run import DeviceFigures
    from tinyopt.runtimes.random_inputs import random_inputs

    tf.keras.utils.set_random_seed(5)
    blob = _int8_from_keras(build())
    generated = generate(blob, "m")
    assert generated.output_bytes == outputs and len(generated.op_kinds) == ops
    detail = _tflm_input_detail(blob)
    x = random_inputs(detail, 8, seed=1)
    report = measure_library(generated, blob, {"nano33ble": DEFAULT_DEVICES["nano33ble"]}, x, None)["nano33ble"]
    assert isinstance(report, DeviceFigures), report  # not the reason it failed
    assert report.bit_exact and report.images == 8 and report.score is None
    assert len(report.instructions_per_op) == ops and report.instructions > 0
    # RAM: the arena, the harness's output buffer (exactly the model's output bytes), its per-op counters, stack.
    assert generated.arena_bytes + outputs + 8 * ops + report.stack_bytes <= report.ram_bytes < 64 * 1024


def _tflm_input_detail(blob: bytes) -> dict:
    from tinyopt.mcu.host import tflm_interpreter

    return tflm_interpreter(blob).get_input_details(0)


def test_a_firmware_failure_says_why_in_words_and_the_profile_does_not_fit():
    from tinyopt.mcu.firmware import EXIT_REASONS, failure_reason
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.records.run import EdgeFigures
    from tinyopt.run.device_fit import fits_all

    assert set(EXIT_REASONS) == {1, 2, 3, 4, 5, 70}  # main.c's returns, the fault handler's, QEMU's own
    assert failure_reason(70, "") == (
        "the firmware failed under QEMU (exit 70): the core took a fault (HardFault, MemManage, BusFault or "
        "UsageFault) while running the model"
    )
    assert "exit status 9, which the harness never returns" in failure_reason(9, "")
    edge = EdgeFigures(
        raw_bytes=20_000, gzip_bytes=18_000, input_dtype="int8", output_dtype="int8", params=1, macs=1, ops={},
        tflm_runs=True, arena_bytes=4_000, arena_verified=True,
    )  # fmt: skip
    note = f"failed on Arduino Nano 33 BLE Sense: {failure_reason(70, '')}"
    verdict = fits_all(edge, {"nano33ble": DEFAULT_DEVICES["nano33ble"]}, {}, {"nano33ble": note})["nano33ble"]
    assert verdict["fits"] is False and verdict["reason"] == f"not known to fit: {note}"
