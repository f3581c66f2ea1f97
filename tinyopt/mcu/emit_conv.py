"""C for the convolutions: CONV_2D and DEPTHWISE_CONV_2D (im2col rows, int16-widened small filters, the
depthwise kernel), and the im2col scratch they need."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.arena import round4
from tinyopt.mcu.emitter import (
    TO_ANY_LEFT,
    Emitter,
    WeightStorage,
    bias,
    geom,
    matrix_weights,
    mve_matrix,
    requant_flagged,
    require_int8,
    small_acc_flag,
)
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
    pointwise = not depthwise and kh == kw == 1 and o.strideH == o.strideW == 1  # no window, no padding
    strided_1x1 = not depthwise and kh == kw == 1 and not pointwise  # no padding either: to_pointwise_strided
    wide = (
        not pointwise
        and not strided_1x1
        and weights.size <= WIDE_WEIGHTS_MAX
        and weights.shape[1] <= 16
        and max(shifts) <= 0
        and not (depthwise and inp.shape[-1] != 1)
    )
    depth4 = depthwise and inp.shape[-1] == oc != 1  # to_depthwise4: depth multiplier 1, several channels
    if wide:  # to_conv16 takes right shifts (so does to_conv without a left shift: Helium's choice, below)
        m, s = em.const_name(op, "mult"), em.const_name(op, "right")
        em.consts.append(c_array("int32_t", m, mults))
        em.consts.append(c_array("uint8_t", s, [-x for x in shifts]))
        flags = small_acc_flag(folded, weights.shape[1])
    else:
        taps = weights.shape[0 if depthwise and inp.shape[-1] != 1 else 1]  # products per accumulator
        m, s, flags = requant_flagged(em, op, mults, shifts, folded, taps)
    b = em.const_name(op, "bias")
    em.consts.append(c_array("int32_t", b, np.pad(folded, (0, round4(oc) - oc)) if depth4 else folded))  # in fours
    if depth4:  # Helium's to_depthwise4 reads the requantization constants in its lane order (mve_lanes)
        plain = em.consts[-3:]
        del em.consts[-3:]
        stored = shifts if flags & TO_ANY_LEFT else [-x for x in shifts]
        mve = [
            c_array("int32_t", m, mve_lanes(np.array(mults))),
            c_array("int8_t", s, mve_lanes(np.array(stored))),
            c_array("int32_t", b, mve_lanes(folded)),
        ]
        em.consts.append(f"#ifdef TINYOPT_MVE\n{''.join(mve)}#else\n{''.join(plain)}#endif\n")
    wn = em.const_name(op, "w")
    em.body.append("  {" if pointwise else f"  {{ static const to_geom g = {g};")
    em.weight_storage.append(WeightStorage(op.index, op.kind, weights.size, int(np.count_nonzero(weights)), False))
    if depthwise and inp.shape[-1] != 1:
        taps = kh * kw
        if depth4:  # depth multiplier 1: four channels per step, a tap's four weights in one word
            groups = round4(oc) // 4
            reordered = np.zeros((groups * 4, taps), dtype=np.int8)
            reordered[:oc] = weights.T
            reordered = reordered.reshape(groups, 4, taps).transpose(0, 2, 1)  # [group][tap][4]
            oc16 = -(-oc // 16) * 16  # Helium: sixteen channels a vector, [group of 16][tap][16]
            mve = np.zeros((oc16, taps), dtype=np.int8)
            mve[:oc] = weights.T
            mve = mve.reshape(oc16 // 16, 16, taps).transpose(0, 2, 1)
            em.consts.append(
                f"#ifdef TINYOPT_MVE\n{c_array('int8_t', wn, mve)}#else\n"
                f"{c_array('int8_t', wn, reordered.reshape(groups, -1))}#endif\n"
            )
            em.body.append(
                f"    to_depthwise4({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {in_zp}, {m}, {s}, {flags}, "
                f"{out.zero_point}, {act_min}, {act_max}, {em.scratch(op, 'int32_t')}, {em.ptr(op.outputs[0])}); }}"
            )
            return
        em.consts.append(c_array("int8_t", wn, weights.T))  # [oc][tap]: each channel's taps together
        em.body.append(
            f"    to_depthwise({em.ptr(op.inputs[0])}, &g, {o.depthMultiplier}, {wn}, {b}, {in_zp}, "
            f"{m}, {s}, {flags}, {out.zero_point}, {act_min}, {act_max}, {em.ptr(op.outputs[0])}); }}"
        )
        return
    k = weights.shape[1]
    if pointwise or strided_1x1:
        kp = round4(k)
        matrix_weights(em, wn, weights, kp)
        if strided_1x1:
            em.body.append(
                f"    to_pointwise_strided({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {kp}, {m}, {s}, {flags}, "
                f"{out.zero_point}, {act_min}, {act_max}, {em.scratch(op, 'uint32_t')}, {em.ptr(op.outputs[0])}); }}"
            )
            return
        em.body.append(
            f"    to_pointwise({em.ptr(op.inputs[0])}, {out.shape[1] * out.shape[2]}, {k}, {wn}, {b}, {kp}, {oc}, "
            f"{m}, {s}, {flags}, {out.zero_point}, {act_min}, {act_max}, {em.scratch(op, 'uint32_t')}, "
            f"{em.ptr(op.outputs[0])}); }}"
        )
        return
    # to_conv16 reads int16 weights in pairs, to_conv int8 weights in fours: rows padded with zeros to that.
    kernel, c_type, np_type, kp = (
        ("to_conv16", "int16_t", np.int16, k + k % 2) if wide else ("to_conv", "int8_t", np.int8, round4(k))
    )
    if wide:
        # Helium has no use for the widened weights: its to_conv takes sixteen int8 products per instruction.
        padded = np.zeros((oc, kp), dtype=np_type)
        padded[:, :k] = weights
        em.consts.append(
            f"#ifdef TINYOPT_MVE\n{c_array('int8_t', wn, mve_matrix(weights))}#else\n"
            f"{c_array(c_type, wn, padded)}#endif\n"
        )
        em.body.append(
            f"#ifdef TINYOPT_MVE\n    to_conv({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {round4(k)}, {in_zp}, {m}, "
            f"(const int8_t *){s}, {flags}, {out.zero_point}, {act_min}, {act_max}, {em.scratch(op, 'int8_t')}, "
            f"{em.ptr(op.outputs[0])});\n#else"
        )
    else:
        matrix_weights(em, wn, weights, kp)
    em.body.append(
        f"    {kernel}({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {kp}, {in_zp}, {m}, {s}, "
        f"{'' if wide else f'{flags}, '}{out.zero_point}, "
        f"{act_min}, {act_max}, {em.scratch(op, c_type)}, {em.ptr(op.outputs[0])});"
        + ("\n#endif\n  }" if wide else " }")
    )


def mve_lanes(values: np.ndarray) -> np.ndarray:
    """Per-channel values in the order Helium's to_depthwise4 accumulates sixteen channels (VMULLB/VMULLT then
    VMOVLB/VMOVLT: vector k, lane j holds channel 4j + k): position 16g + 4k + j holds channel 16g + 4j + k; zeros
    pad to a multiple of 16."""
    n = -(-len(values) // 16) * 16
    padded = np.zeros(n, dtype=np.int64)
    padded[: len(values)] = values
    return padded.reshape(-1, 4, 4).transpose(0, 2, 1).reshape(-1)


def im2col_bytes(g: Graph, op: Op) -> int:
    """Scratch for im2col: two int8 columns (to_conv's two pixels per pass) and, for DSP cores without Helium, the
    two widened (to_rows2w, 4 bytes per 4 inputs per pixel), or one int16 column for convolutions with few
    weights (covered). A pointwise convolution reads its input in place and widens two pixels at a time; a
    depthwise one over several channels, to_depthwise4, needs tap offsets and pad bytes, or with Helium an output
    row's padded window rows."""
    w = g.tensors[op.inputs[1]]
    if op.kind == "CONV_2D" and w.shape[1] == w.shape[2] == 1:
        return 4 * round4(w.shape[3])  # to_pointwise and to_pointwise_strided: two pixels widened
    if op.kind == "CONV_2D":
        k = int(np.prod(w.shape[1:]))
    elif g.tensors[op.inputs[0]].shape[-1] == 1:
        k = int(np.prod(w.shape[1:3]))
    elif g.tensors[op.inputs[0]].shape[-1] == w.shape[-1]:
        # to_depthwise4: tap offsets and a row of pad bytes; with Helium, an output row's window rows, padded
        ic, (kh, kw), out = w.shape[-1], w.shape[1:3], g.tensors[op.outputs[0]]
        width = (out.shape[2] - 1) * op.options.strideW + (kw - 1) * op.options.dilationWFactor + 1
        return max(4 * kh * kw + round4(ic), kh * width * ic + 16)
    else:
        return 0
    return 6 * round4(k)
