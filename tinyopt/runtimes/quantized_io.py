"""Float values into and out of a model's quantized input and output tensors. LiteRT and TFLM describe a tensor
with the same detail dict (dtype, quantization_parameters), so both runtimes, and the MCU benchmark that
compares with TFLM, quantize and dequantize through these two functions."""

from __future__ import annotations

import numpy as np


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs as the input tensor wants them: quantized with its scale and zero point (rounded half to
    even, clipped to its type's range) for an integer tensor, cast otherwise."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu" and x.dtype.kind == "f":
        params = detail["quantization_parameters"]
        scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def dequantize_output(y: np.ndarray, detail: dict) -> np.ndarray:
    """Outputs in float32: an integer tensor's through its scale and zero point (an unquantized one as is)."""
    if y.dtype.kind in "iu":
        params = detail["quantization_parameters"]
        if len(params["scales"]) and params["scales"][0]:
            scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
            return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)
