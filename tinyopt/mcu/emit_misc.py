"""C for the remaining ops: reshape-like aliases (no code), CONCATENATION of same-scale activations, SOFTMAX, ADD
of two activations, and MEAN over the spatial axes."""

from __future__ import annotations

import math

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter, require_int8
from tinyopt.mcu.graph import Op
from tinyopt.mcu.quant import activation_range, quantize_multiplier


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


def emit_add(em: Emitter, op: Op) -> None:
    a, b, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
    if a.shape != b.shape or a.data is not None or b.data is not None:
        raise NotApplicable("the MCU code generator handles ADD of two same-shape activations only")
    twice = 2 * max(float(a.scales[0]), float(b.scales[0]))
    am, ash = quantize_multiplier(float(a.scales[0]) / twice)
    bm, bsh = quantize_multiplier(float(b.scales[0]) / twice)
    om, osh = quantize_multiplier(twice / ((1 << 20) * float(out.scales[0])))
    act_min, act_max = activation_range(op.options.fusedActivationFunction, out.scale, out.zero_point)
    em.body.append(
        f"  to_add({em.ptr(op.inputs[0])}, {em.ptr(op.inputs[1])}, {a.size}, {-a.zero_point}, "
        f"{-b.zero_point}, {am}, {ash}, {bm}, {bsh}, {om}, {osh}, {out.zero_point}, {act_min}, "
        f"{act_max}, {em.ptr(op.outputs[0])});"
    )


def emit_mean(em: Emitter, op: Op) -> None:
    inp, axis, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.outputs[0])
    axes = sorted(int(a) % len(inp.shape) for a in axis.data.reshape(-1))
    rank = len(inp.shape)
    inner = list(range(1, rank - 1))
    if inp.shape[0] != 1 or axes != inner:
        raise NotApplicable("the MCU code generator handles MEAN over the inner (spatial) axes only")
    depth = inp.shape[-1]
    n = inp.size // depth
    mult, shift = quantize_multiplier(float(inp.scales[0]) / float(out.scales[0]))
    fold = min(n.bit_length() - 1, 32, 31 + shift)  # TFLM folds 1/n into the multiplier this way
    mult, shift = (mult << fold) // n, shift - fold
    em.body.append(
        f"  to_mean({em.ptr(op.inputs[0])}, 1, {n}, {depth}, {inp.zero_point}, {mult}, {shift}, "
        f"{out.zero_point}, {em.scratch(op, 'int32_t')}, {em.ptr(op.outputs[0])});"
    )
