"""C for SOFTMAX over the last axis, with TFLM's fixed-point exponent and its precomputed input scaling."""

from __future__ import annotations

import math

from tinyopt.mcu.emitter import Emitter, require_int8
from tinyopt.mcu.graph import Op
from tinyopt.mcu.quant import quantize_multiplier


def emit_softmax(em: Emitter, op: Op) -> None:
    inp = em.t(op.inputs[0])
    require_int8(em, op, op.inputs[0], op.outputs[0])
    # PreprocessSoftmaxScaling and CalculateInputRadius with 5 integer bits (double rounding build).
    real = min(float(op.options.beta) * float(inp.scales[0]) * (1 << 26), float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    diff_min = -int(math.floor(31.0 * (1 << 26) / (1 << shift)))
    depth = inp.shape[-1]
    em.body.append(
        f"  to_softmax({em.ptr(op.inputs[0])}, {inp.size // depth}, {depth}, {mult}, {shift}, "
        f"{diff_min}, {em.ptr(op.outputs[0])});"
    )
