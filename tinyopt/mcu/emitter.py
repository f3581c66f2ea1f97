"""What one generation run accumulates (constant arrays, invoke's body lines, the storage plan, how each op's
weights are stored) and the helpers every per-op emitter shares."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.arena import Buffer
from tinyopt.mcu.graph import Graph, Op, Tensor
from tinyopt.mcu.literals import c_array
from tinyopt.mcu.quant import compute_padding


@dataclass
class WeightStorage:
    """How one op's weights are stored in flash, reported per op: dense, sparse (kept weights as steps) or
    clustered."""

    op: int
    kind: str
    weights: int
    nonzero: int
    sparse: bool
    clustered: bool = False  # weights stored as 4-bit indices into a table of at most 16 values


class Emitter:
    def __init__(
        self,
        graph: Graph,
        name: str,
        plan: tuple[dict[str, Buffer], dict[int, str]],
        sparse: bool,
        cluster_indices: bool = False,
    ):
        """plan: arena.plan_storage's buffers and each tensor's buffer name."""
        self.g, self.name, self.sparse, self.cluster_indices = graph, name, sparse, cluster_indices
        self.consts: list[str] = []
        self.body: list[str] = []
        self.buffers: dict[str, Buffer]
        self.storage: dict[int, str]  # tensor index -> buffer name
        self.buffers, self.storage = plan
        self.weight_storage: list[WeightStorage] = []

    def t(self, i: int) -> Tensor:
        return self.g.tensors[i]

    def ptr(self, i: int, ctype: str = "int8_t") -> str:
        return f"(({ctype} *)(arena + {self.name.upper()}_OFF_{self.storage[i]}))"

    def scratch(self, op: Op, ctype: str) -> str:
        return f"({ctype} *)(arena + {self.name.upper()}_OFF_S{op.index})"

    def const_name(self, op: Op, what: str) -> str:
        return f"{self.name}_op{op.index}_{what}"


def require_int8(em: Emitter, op: Op, *tensors: int) -> None:
    for i in tensors:
        if em.t(i).dtype is not np.int8:
            raise NotApplicable(
                f"the MCU code generator handles {op.kind} on int8 tensors only "
                f"({em.t(i).name!r} is {np.dtype(em.t(i).dtype).name})"
            )


def bias(em: Emitter, op: Op, outs: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = em.t(op.inputs[2])
        if b.dtype is not np.int32:
            raise NotApplicable(f"the MCU code generator needs int32 biases ({op.kind} has {np.dtype(b.dtype).name})")
        return b.data.reshape(-1).astype(np.int64)
    return np.zeros(outs, dtype=np.int64)


def requant_consts(em: Emitter, op: Op, mults: list[int], shifts: list[int]) -> tuple[str, str]:
    m, s = em.const_name(op, "mult"), em.const_name(op, "shift")
    em.consts.append(c_array("int32_t", m, mults))
    em.consts.append(c_array("int8_t", s, shifts))
    return m, s


TO_ANY_LEFT, TO_SMALL_ACC = 1, 2  # kernels.h's flags for to_requant_s


def requant_flagged(
    em: Emitter, op: Op, mults: list[int], shifts: list[int], folded: np.ndarray, taps: int
) -> tuple[str, str, int]:
    """The requantization constants of the kernels that take to_requant_s's flags: without any left shift (every
    multiplier below one) the shifts are stored as right shifts; TO_SMALL_ACC as small_acc_flag says."""
    any_left = max(shifts) > 0
    flags = (TO_ANY_LEFT if any_left else 0) | small_acc_flag(folded, taps)
    return *requant_consts(em, op, mults, shifts if any_left else [-x for x in shifts]), flags


def small_acc_flag(folded: np.ndarray, taps: int) -> int:
    """TO_SMALL_ACC when no accumulator can reach 2^30: the folded bias plus taps products of at most 128 * 127."""
    return TO_SMALL_ACC if int(np.abs(folded).max(initial=0)) + 128 * 127 * taps < 2**30 else 0


def geom(inp: Tensor, out: Tensor, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> str:
    """A to_geom initializer: NHWC sizes, window, strides, dilations and TFLite's SAME/VALID padding."""
    _, ih, iw, ic = inp.shape
    _, oh, ow, oc = out.shape
    ph, pw = compute_padding(sh, dh, ih, kh, oh), compute_padding(sw, dw, iw, kw, ow)
    return f"{{{ih}, {iw}, {ic}, {oh}, {ow}, {oc}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {ph}, {pw}}}"


def matrix_weights(em: Emitter, name: str, weights: np.ndarray, kp: int) -> None:
    """An [outputs][k] int8 weight matrix as the row kernels read it: rows padded with zeros to kp; and, for cores
    with Helium (kernels.h's TINYOPT_MVE), in groups of four rows and sixteen inputs ([rows / 4][kp16 / 16][4][16],
    rows to a multiple of 4 and inputs to one of 16, zeros), so one pointer walks all four rows with immediate
    offsets. The C compiler keeps one of the two."""
    outs, k = weights.shape
    padded = np.zeros((outs, kp), dtype=np.int8)
    padded[:, :k] = weights
    em.consts.append(
        f"#ifdef TINYOPT_MVE\n{c_array('int8_t', name, mve_matrix(weights))}#else\n"
        f"{c_array('int8_t', name, padded)}#endif\n"
    )


def mve_matrix(weights: np.ndarray) -> np.ndarray:
    """matrix_weights' Helium layout: [rows / 4][kp16 / 16][4][16], zero padded."""
    outs, k = weights.shape
    kp16, outs4 = -(-k // 16) * 16, -(-outs // 4) * 4
    mve = np.zeros((outs4, kp16), dtype=np.int8)
    mve[:outs, :k] = weights
    return mve.reshape(outs4 // 4, 4, kp16 // 16, 16).transpose(0, 2, 1, 3)
