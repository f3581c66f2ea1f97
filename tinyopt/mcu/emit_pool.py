"""C for the pooling ops: MAX_POOL_2D and AVERAGE_POOL_2D over windows, and MEAN over the spatial axes (global
average pooling, summed in an int32 scratch row)."""

from __future__ import annotations

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.emitter import Emitter, geom, require_int8
from tinyopt.mcu.graph import Graph, Op
from tinyopt.mcu.quant import activation_range, quantize_multiplier


def emit_pool(em: Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.outputs[0])
    o = op.options
    act_min, act_max = activation_range(o.fusedActivationFunction, out.scale, out.zero_point)
    g = geom(inp, out, o.filterHeight, o.filterWidth, o.strideH, o.strideW, 1, 1)
    avg = int(op.kind == "AVERAGE_POOL_2D")
    em.body.append(f"  {{ static const to_geom g = {g};")
    em.body.append(f"    to_pool({em.ptr(op.inputs[0])}, &g, {avg}, {act_min}, {act_max}, {em.ptr(op.outputs[0])}); }}")


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


def mean_sums_bytes(g: Graph, op: Op) -> int:
    """Scratch for MEAN's int32 sum per channel."""
    return 4 * g.tensors[op.inputs[0]].shape[-1]
