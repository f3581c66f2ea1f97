"""The fast kernels (to_depthwise4, to_depthwise, to_pointwise, to_conv's 2x2 blocks, to_add, max pooling) bit-exact
with TFLM's reference kernels: on the host through the portable C, and on emulated Cortex-M4, M7 and M55 through
the DSP, widened and Helium paths. Small models with awkward shapes: channel counts that are not multiples of 4,
odd sizes, SAME and VALID padding, strides 1 and 2, a 5x3 window, depth multiplier 2, a residual ADD."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_mcu import _int8_from_keras, _tflm_input_detail, needs_arm, needs_gcc

SHAPES = {
    # name: (input shape, layers as (kind, options))
    "dw3x3_s1_same": ((9, 7, 6), [("dw", {"kernel_size": 3, "padding": "same", "activation": "relu"})]),
    "dw3x3_s2_same": ((10, 7, 5), [("dw", {"kernel_size": 3, "strides": 2, "padding": "same"})]),
    "dw3x3_s2_valid": ((9, 8, 12), [("dw", {"kernel_size": 3, "strides": 2, "padding": "valid"})]),
    "dw3x3_20ch_relu6": ((6, 5, 20), [("dw", {"kernel_size": 3, "padding": "same", "activation": "relu6"})]),
    "dw5x3_s12_same": ((11, 9, 7), [("dw", {"kernel_size": (5, 3), "strides": (1, 2), "padding": "same"})]),
    "dw3x3_multiplier2": ((8, 6, 3), [("dw", {"kernel_size": 3, "padding": "same", "depth_multiplier": 2})]),
    "pointwise_odd": ((7, 5, 7), [("conv", {"filters": 5, "kernel_size": 1, "activation": "relu"})]),
    "pointwise_even": ((5, 7, 10), [("conv", {"filters": 12, "kernel_size": 1, "activation": "relu"})]),
    "pointwise_wide": ((6, 6, 24), [("conv", {"filters": 19, "kernel_size": 1})]),
    "pointwise_relu6_kp12": ((5, 5, 12), [("conv", {"filters": 9, "kernel_size": 1, "activation": "relu6"})]),
    "conv1x1_s2": ((9, 7, 6), [("conv", {"filters": 10, "kernel_size": 1, "strides": 2, "activation": "relu"})]),
    "conv1x1_s2_even": ((8, 8, 16), [("conv", {"filters": 8, "kernel_size": 1, "strides": 2, "padding": "same"})]),
    "dense_rows": (
        (3, 2, 10),
        [("flatten", {}), ("dense", {"units": 11, "activation": "relu"}), ("dense", {"units": 6})],
    ),
    "avgpool_same": (
        (7, 5, 6),
        [("conv", {"filters": 6, "kernel_size": 1}), ("avgpool", {"pool_size": 3, "strides": 2, "padding": "same"})],
    ),
    "maxpool_same_odd": (  # six channels: the DSP path's four and two scalar, a predicated Helium vector
        (7, 5, 6),
        [("conv", {"filters": 6, "kernel_size": 1}), ("maxpool", {"pool_size": 3, "strides": 2, "padding": "same"})],
    ),
    "maxpool_20ch": ((6, 6, 20), [("conv", {"filters": 20, "kernel_size": 1}), ("maxpool", {"pool_size": 2})]),
    "pointwise_add_tail": ((5, 3, 5), [("conv+", {"filters": 5, "kernel_size": 1, "activation": "relu"})]),
    "conv3x3_residual_add": ((8, 7, 6), [("conv+", {"filters": 6, "kernel_size": 3, "padding": "same"})]),
}


def _model(name: str):
    import tf_keras as keras

    shape, layers = SHAPES[name]
    inp = x = keras.Input(shape)
    for kind, options in layers:
        if kind == "flatten":
            x = keras.layers.Flatten()(x)
            continue
        if kind in ("avgpool", "maxpool"):
            x = {"avgpool": keras.layers.AveragePooling2D, "maxpool": keras.layers.MaxPooling2D}[kind](**options)(x)
            continue
        layer = {"dw": keras.layers.DepthwiseConv2D, "dense": keras.layers.Dense}.get(kind, keras.layers.Conv2D)
        y = layer(bias_initializer="random_normal", **options)(x)
        x = keras.layers.Add()([x, y]) if kind.endswith("+") else y  # a residual: ADD
    return keras.Model(inp, x)


@pytest.fixture(scope="module")
def blobs() -> dict[str, bytes]:
    import tensorflow as tf

    out = {}
    for name in SHAPES:
        tf.keras.utils.set_random_seed(3)
        out[name] = _int8_from_keras(_model(name))
    return out


def _inputs(blob: bytes, n: int) -> np.ndarray:
    from tinyopt.runtimes.random_inputs import random_inputs

    return random_inputs(_tflm_input_detail(blob), n, seed=2)


@needs_gcc
@pytest.mark.parametrize("name", list(SHAPES))
def test_portable_kernels_bit_exact_with_tflm_on_host(name, blobs):
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.host import run_host, run_tflm, tflm_interpreter
    from tinyopt.runtimes.quantized_io import quantize_input

    blob = blobs[name]
    inputs = quantize_input(_inputs(blob, 16), tflm_interpreter(blob).get_input_details(0))
    ours, tflm = run_host(generate(blob, "m"), inputs), run_tflm(blob, inputs)
    assert len(np.unique(tflm)) > 2  # not a constant output
    assert np.array_equal(ours, tflm), f"{int((ours != tflm).sum())} of {ours.size} output bytes differ"


@needs_arm
@pytest.mark.parametrize("profile", ["nano33ble", "stm32f746", "corstone-300"])  # M4, M7 (widened inputs), M55
def test_dsp_kernels_bit_exact_with_tflm_on_emulated_cores(profile, blobs):
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.on_device import measure_library
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.records.run import DeviceFigures

    for name, blob in blobs.items():
        report = measure_library(generate(blob, "m"), blob, {profile: DEFAULT_DEVICES[profile]}, _inputs(blob, 4), None)
        report = report[profile]
        assert isinstance(report, DeviceFigures), (name, report)
        assert report.bit_exact, (name, report.bit_exact_share)


def test_generator_picks_the_fast_kernels(blobs):
    from tinyopt.mcu.codegen import generate

    def kernels(name):
        body = generate(blobs[name], "m").source.split("_invoke(", 1)[1]
        return {
            k
            for k in ("to_depthwise4(", "to_depthwise(", "to_pointwise(", "to_pointwise_strided(", "to_conv(")
            if k in body
        }

    assert kernels("dw3x3_s1_same") == {"to_depthwise4("}
    assert kernels("dw3x3_multiplier2") == {"to_depthwise("}
    assert kernels("pointwise_odd") == {"to_pointwise("}
    assert kernels("conv1x1_s2") == {"to_pointwise_strided("}
    assert (
        kernels("conv3x3_residual_add") == {"to_conv("}
        and "to_add(" in generate(blobs["conv3x3_residual_add"], "m").source
    )
