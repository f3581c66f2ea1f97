"""C for the ops that only move bytes: reshape-like aliases (RESHAPE, EXPAND_DIMS, SQUEEZE: no code, the output
shares its input's storage) and CONCATENATION of same-scale activations."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter, require_int8
from tinyopt.mcu.graph import Op


def emit_alias(em: Emitter, op: Op) -> None:
    em.body.append("  /* same storage as its input */")


def emit_concatenation(em: Emitter, op: Op) -> None:
    """TFLM's int8 CONCATENATION copies bytes (reference_ops::Concatenation): each input's slice of every outer
    row in turn. The converter gives every input the output's scale (requantizing where it must), as we require."""
    out = em.t(op.outputs[0])
    require_int8(em, op, *op.inputs, op.outputs[0])
    ins = [em.t(i) for i in op.inputs]
    if any(t.data is not None for t in ins) or op.options.fusedActivationFunction != 0:
        raise NotApplicable("the MCU code generator handles CONCATENATION of activations without activation only")
    if any(float(t.scales[0]) != float(out.scales[0]) or t.zero_point != out.zero_point for t in ins):
        raise NotApplicable("the MCU code generator handles CONCATENATION of inputs with the output's scale only")
    axis = op.options.axis % len(out.shape)
    outer = int(np.prod(out.shape[:axis]))
    lines = [f"  {{ int8_t *y = {em.ptr(op.outputs[0])};", f"    for (int r = 0; r < {outer}; r++) {{"]
    for i, t in zip(op.inputs, ins, strict=True):
        n = int(np.prod(t.shape[axis:]))
        lines.append(f"      to_copy({em.ptr(i)} + r * {n}, {n}, y); y += {n};")
    em.body.append("\n".join([*lines, "    } }"]))
