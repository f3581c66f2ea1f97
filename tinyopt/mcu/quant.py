"""TFLM's quantization arithmetic (quantization_util.cc, kernel_util.cc, padding.h), computed in Python exactly as
TFLM's Prepare functions compute it, so that the generated C uses the very multipliers, shifts and bounds."""

from __future__ import annotations

import math

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.graph import Tensor


def tflite_round(x: float) -> float:
    """std::round: half away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(tflite_round(q * (1 << 31)))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def activation_range(fused: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 (the quantized bound is round(f / scale) in float)."""

    def quantize(f: float) -> int:
        return zero_point + int(tflite_round(float(np.float32(f) / np.float32(scale))))

    if fused == 0:
        return -128, 127
    if fused == 1:
        return max(-128, quantize(0.0)), 127
    if fused == 2:
        return max(-128, quantize(-1.0)), min(127, quantize(1.0))
    if fused == 3:
        return max(-128, quantize(0.0)), min(127, quantize(6.0))
    raise NotApplicable(f"the MCU code generator does not handle fused activation {fused}")


def compute_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    effective = (filter_size - 1) * dilation + 1
    return max(0, (out_size - 1) * stride + effective - in_size) // 2


def per_channel_multipliers(inp: Tensor, w: Tensor, out: Tensor, channels: int) -> tuple[list[int], list[int]]:
    """PopulateConvolutionQuantizationParams: input_scale * filter_scale / output_scale in double."""
    mults, shifts = [], []
    for c in range(channels):
        fs = float(w.scales[c] if len(w.scales) > 1 else w.scales[0])
        m, s = quantize_multiplier(float(inp.scales[0]) * fs / float(out.scales[0]))
        mults.append(m)
        shifts.append(s)
    return mults, shifts
