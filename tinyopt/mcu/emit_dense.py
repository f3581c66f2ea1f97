"""C for FULLY_CONNECTED: dense int8 rows, or 4-bit indices into the layer's few distinct weights (clustered)."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.arena import round4
from tinyopt.mcu.emitter import Emitter, WeightStorage, bias, matrix_weights, requant_consts, require_int8
from tinyopt.mcu.graph import Op
from tinyopt.mcu.literals import c_array
from tinyopt.mcu.quant import activation_range, per_channel_multipliers

# At most this share of non-zero weights, a layer's kept weights are listed as (gap, value) steps and its zeros
# skipped. Measured on Cortex-M4 (QEMU instructions): about 8 instructions per listed weight against 2.2 per
# dense one, 2 bytes against 1. At the default pruning's 30% kept, the paper CNN's dense layer takes 39% less
# flash (21,922 -> 13,452 model bytes) for 12% more of its instructions (1% of the model's); at 50% kept
# (2:4 sparsity) it would save 2% of the flash for 85% more instructions.
SPARSE_DENSITY = 1 / 3


def emit_fully_connected(em: Emitter, op: Op) -> None:
    inp, w, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
    outs, k = w.shape
    if inp.size != k:
        raise NotApplicable("the MCU code generator handles FULLY_CONNECTED with batch 1 only")
    if np.any(w.zero_points != 0):
        raise NotApplicable("the MCU code generator needs symmetric int8 weights (FULLY_CONNECTED)")
    weights = w.data.reshape(outs, k)
    folded = bias(em, op, outs) - inp.zero_point * weights.astype(np.int64).sum(axis=1)
    per_channel = len(w.scales) > 1
    # TFLM's FULLY_CONNECTED takes its multipliers as convolutions do (input_scale * filter_scale / output_scale
    # in double); the float product of older versions differs in the last bit (1 LSB on 1 of 10,000 images).
    mults, shifts = per_channel_multipliers(inp, w, out, outs if per_channel else 1)
    act_min, act_max = activation_range(op.options.fusedActivationFunction, out.scale, out.zero_point)
    m, s = requant_consts(em, op, mults, shifts)
    b = em.const_name(op, "bias")
    em.consts.append(c_array("int32_t", b, folded))
    nonzero = int(np.count_nonzero(weights))
    steps = sparse_steps(weights) if em.sparse and nonzero <= SPARSE_DENSITY * weights.size else None
    if steps is not None and len(steps[1]) >= 65536:  # row starts are uint16
        steps = None
    table = cluster_table(weights) if em.cluster_indices else None
    if steps is not None and table is not None:  # pruned and clustered: whichever takes less flash
        clustered_bytes, sparse_bytes = outs * round4(k) // 2 + 4 * 256, 2 * len(steps[1]) + 2 * (outs + 1)
        steps, table = (None, table) if clustered_bytes <= sparse_bytes else (steps, None)
    sparse = steps is not None
    em.weight_storage.append(WeightStorage(op.index, op.kind, weights.size, nonzero, sparse, table is not None))
    tail = f"{int(per_channel)}, {out.zero_point}, {act_min}, {act_max}, {em.ptr(op.outputs[0])});"
    kp = round4(k)
    if table is not None:
        codes = np.full((outs, kp), int(np.flatnonzero(table == 0)[0]), dtype=np.uint8)
        codes[:, :k] = np.searchsorted(np.unique(np.append(weights, 0)), weights)  # the table's leading values
        groups = codes.reshape(outs, kp // 4, 4)
        packed = np.stack([groups[..., 0] | (groups[..., 2] << 4), groups[..., 1] | (groups[..., 3] << 4)], axis=-1)
        byte = np.arange(256)
        pairs = (table[byte & 15].astype(np.int64) & 0xFFFF) | ((table[byte >> 4].astype(np.int64) & 0xFFFF) << 16)
        names = [em.const_name(op, x) for x in ("codes", "pairs")]
        em.consts.append(c_array("uint8_t", names[0], packed.reshape(outs, -1)))
        em.consts.append(c_array("uint32_t", names[1], pairs))
        em.body.append(
            f"  to_fully_connected_clustered({em.ptr(op.inputs[0])}, {names[0]}, {names[1]}, {b}, {kp}, "
            f"{outs}, {m}, {s}, {tail}"
        )
        return
    if sparse:  # a pruned layer: each row's non-zero weights as (gap from the one before, value)
        starts, gaps, values = steps
        names = [em.const_name(op, x) for x in ("rows", "gaps", "val")]
        em.consts.append(c_array("uint16_t", names[0], starts))
        em.consts.append(c_array("uint8_t", names[1], gaps))
        em.consts.append(c_array("int8_t", names[2], values))
        em.body.append(
            f"  to_fully_connected_sparse({em.ptr(op.inputs[0])}, {names[0]}, {names[1]}, {names[2]}, "
            f"{b}, {outs}, {m}, {s}, {tail}"
        )
        return
    wn = em.const_name(op, "w")
    matrix_weights(em, wn, weights, kp)
    em.body.append(f"  to_fully_connected({em.ptr(op.inputs[0])}, {wn}, {b}, {kp}, {outs}, {m}, {s}, {tail}")


def sparse_steps(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A pruned layer as to_fully_connected_sparse reads it: where each row's steps start, and per step the gap
    from the previous non-zero weight (from input 0 for a row's first; runs over 255 take zero-valued fillers)
    and the weight."""
    starts, gaps, values = [0], [], []
    for row in weights:
        previous = 0
        for col in np.flatnonzero(row):
            gap = int(col) - previous
            while gap > 255:
                gaps.append(255)
                values.append(0)
                gap -= 255
            gaps.append(gap)
            values.append(int(row[col]))
            previous = int(col)
        starts.append(len(gaps))
    return np.array(starts), np.array(gaps, dtype=np.uint8), np.array(values, dtype=np.int8)


def cluster_table(weights: np.ndarray) -> np.ndarray | None:
    """The sorted distinct weights, padded to 16 (with a zero among them for padding codes), or None when a
    4-bit index cannot address them."""
    values = np.unique(weights)
    if 0 not in values:
        values = np.sort(np.append(values, 0))
    if len(values) > 16:
        return None
    table = np.zeros(16, dtype=np.int8)
    table[: len(values)] = values
    return table
