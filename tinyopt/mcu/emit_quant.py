"""C for QUANTIZE (float32 -> int8 at a model's input; int8 -> int8 where the converter requantizes between two
scales) and DEQUANTIZE int8 -> float32."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter
from tinyopt.mcu.graph import Op
from tinyopt.mcu.literals import c_float
from tinyopt.mcu.quant import quantize_multiplier


def emit_quantize(em: Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is np.int8 and out.dtype is np.int8:
        _emit_requantize(em, op)
        return
    if inp.dtype is not np.float32 or out.dtype is not np.int8:
        raise NotApplicable("the MCU code generator handles QUANTIZE from float32 or int8 to int8 only")
    scale = float(out.scales[0])
    em.body.append(
        f"  to_quantize({em.ptr(op.inputs[0], 'float')}, {inp.size}, {scale.hex()}, "
        f"{c_float(np.float32(1.0) / np.float32(scale))}, {out.zero_point}, {em.ptr(op.outputs[0])});"
    )


def _emit_requantize(em: Emitter, op: Op) -> None:
    """TFLM's int8 -> int8 QUANTIZE: PrepareQuantizeReference's multiplier for input_scale / output_scale (float
    scales divided in double), then reference_ops::Requantize: MultiplyByQuantizedMultiplier of the input less its
    zero point, plus the output zero point, clamped to int8."""
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if len(inp.scales) != 1 or len(out.scales) != 1:
        raise NotApplicable("the MCU code generator handles QUANTIZE int8 -> int8 with per-tensor scales only")
    mult, shift = quantize_multiplier(float(inp.scales[0]) / float(out.scales[0]))
    em.body.append(
        f"  {{ const int8_t *x = {em.ptr(op.inputs[0])}; int8_t *y = {em.ptr(op.outputs[0])};\n"
        f"    for (int i = 0; i < {inp.size}; i++) {{\n"
        f"      int32_t v = to_mbqm((int32_t)x[i] - ({inp.zero_point}), {mult}, {shift}) + ({out.zero_point});\n"
        f"      y[i] = (int8_t)(v < -128 ? -128 : v > 127 ? 127 : v);\n"
        f"    }} }}"
    )


def emit_dequantize(em: Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is not np.int8 or out.dtype is not np.float32:
        raise NotApplicable("the MCU code generator handles DEQUANTIZE from int8 to float32 only")
    em.body.append(
        f"  to_dequantize({em.ptr(op.inputs[0])}, {inp.size}, {c_float(inp.scale)}, {inp.zero_point}, "
        f"{em.ptr(op.outputs[0], 'float')});"
    )
