"""C for the type conversions at a model's edges: QUANTIZE float32 -> int8 and DEQUANTIZE int8 -> float32."""

from __future__ import annotations

import numpy as np

from tinyopt.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter
from tinyopt.mcu.graph import Op
from tinyopt.mcu.literals import c_float


def emit_quantize(em: Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is not np.float32 or out.dtype is not np.int8:
        raise NotApplicable("the MCU code generator handles QUANTIZE from float32 to int8 only")
    scale = float(out.scales[0])
    em.body.append(
        f"  to_quantize({em.ptr(op.inputs[0], 'float')}, {inp.size}, {scale.hex()}, "
        f"{c_float(np.float32(1.0) / np.float32(scale))}, {out.zero_point}, {em.ptr(op.outputs[0])});"
    )


def emit_dequantize(em: Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is not np.int8 or out.dtype is not np.float32:
        raise NotApplicable("the MCU code generator handles DEQUANTIZE from int8 to float32 only")
    em.body.append(
        f"  to_dequantize({em.ptr(op.inputs[0])}, {inp.size}, {c_float(inp.scale)}, {inp.zero_point}, "
        f"{em.ptr(op.outputs[0], 'float')});"
    )
