"""C for the convolutions: CONV_2D and DEPTHWISE_CONV_2D (im2col rows, int16-widened small filters, the
depthwise kernel), and the im2col scratch they need."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.arena import round4
from tinyopt.mcu.emitter import Emitter, WeightStorage, bias, geom, requant_consts, require_int8
from tinyopt.mcu.graph import Graph, Op
from tinyopt.mcu.literals import c_array
from tinyopt.mcu.quant import activation_range, per_channel_multipliers

WIDE_WEIGHTS_MAX = 2048  # convolutions with at most this many weights store them as int16 (see to_conv16)


def emit_conv(em: Emitter, op: Op) -> None:
    inp, w, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
    o = op.options
    if len(inp.shape) != 4 or inp.shape[0] != 1:
        raise NotApplicable(f"the MCU code generator handles {op.kind} with batch-1 NHWC input only")
    depthwise = op.kind == "DEPTHWISE_CONV_2D"
    oc = out.shape[-1]
    if depthwise:
        kh, kw = w.shape[1], w.shape[2]
        weights = w.data.reshape(kh * kw, oc).T if inp.shape[-1] == 1 else w.data.reshape(kh * kw, oc)
    else:
        kh, kw = w.shape[1], w.shape[2]
        weights = w.data.reshape(oc, -1)
    if np.any(w.zero_points != 0):
        raise NotApplicable(f"the MCU code generator needs symmetric int8 weights ({op.kind})")
    in_zp = inp.zero_point
    folded = bias(em, op, oc) - in_zp * weights.astype(np.int64).sum(
        axis=1 if (not depthwise or inp.shape[-1] == 1) else 0
    )
    mults, shifts = per_channel_multipliers(inp, w, out, oc)
    act_min, act_max = activation_range(o.fusedActivationFunction, out.scale, out.zero_point)
    g = geom(inp, out, kh, kw, o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor)
    wide = (
        weights.size <= WIDE_WEIGHTS_MAX
        and weights.shape[1] <= 16
        and max(shifts) <= 0
        and not (depthwise and inp.shape[-1] != 1)
    )
    if wide:  # to_conv16 takes right shifts
        m, s = em.const_name(op, "mult"), em.const_name(op, "right")
        em.consts.append(c_array("int32_t", m, mults))
        em.consts.append(c_array("uint8_t", s, [-x for x in shifts]))
    else:
        m, s = requant_consts(em, op, mults, shifts)
    b = em.const_name(op, "bias")
    em.consts.append(c_array("int32_t", b, folded))
    wn = em.const_name(op, "w")
    em.body.append(f"  {{ static const to_geom g = {g};")
    em.weight_storage.append(WeightStorage(op.index, op.kind, weights.size, int(np.count_nonzero(weights)), False))
    if depthwise and inp.shape[-1] != 1:
        em.consts.append(c_array("int8_t", wn, weights))
        em.body.append(
            f"    to_depthwise({em.ptr(op.inputs[0])}, &g, {o.depthMultiplier}, {wn}, {b}, {in_zp}, "
            f"{m}, {s}, {out.zero_point}, {act_min}, {act_max}, {em.ptr(op.outputs[0])}); }}"
        )
        return
    k = weights.shape[1]
    # to_conv16 reads int16 weights in pairs, to_conv int8 weights in fours: rows padded with zeros to that.
    kernel, c_type, np_type, kp = (
        ("to_conv16", "int16_t", np.int16, k + k % 2) if wide else ("to_conv", "int8_t", np.int8, round4(k))
    )
    padded = np.zeros((oc, kp), dtype=np_type)
    padded[:, :k] = weights
    em.consts.append(c_array(c_type, wn, padded))
    em.body.append(
        f"    {kernel}({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {kp}, {in_zp}, {m}, {s}, {out.zero_point}, "
        f"{act_min}, {act_max}, {em.scratch(op, c_type)}, {em.ptr(op.outputs[0])}); }}"
    )


def im2col_bytes(g: Graph, op: Op) -> int:
    """Scratch for one im2col column: int8, or int16 for convolutions with few weights (2 bytes a weight covers
    both). A depthwise convolution over several channels reads its input in place and needs none."""
    w = g.tensors[op.inputs[1]]
    if op.kind == "CONV_2D":
        k = int(np.prod(w.shape[1:]))
    elif g.tensors[op.inputs[0]].shape[-1] == 1:
        k = int(np.prod(w.shape[1:3]))
    else:
        return 0
    return 2 * round4(k)
