"""From an int8 .tflite to dependency-free C99: weights and quantization parameters as const arrays, one
statically planned activation buffer, and `int <name>_invoke(const in_t *in, out_t *out)`.

in_t/out_t are int8_t for full-integer models and float for int8 models with float input/output (their
QUANTIZE/DEQUANTIZE run inside invoke). The arithmetic is TFLM's reference integer arithmetic; every
quantization parameter is computed here exactly as TFLM's Prepare functions compute it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tinyopt.errors import NotApplicable
from tinyopt.files import write_bytes
from tinyopt.mcu.graph import Graph, Op, Tensor, load_graph

SUPPORTED_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "RESHAPE",
    "EXPAND_DIMS",
    "SQUEEZE",
    "SOFTMAX",
    "QUANTIZE",
    "DEQUANTIZE",
    "ADD",
    "MEAN",
)
ALIAS_OPS = ("RESHAPE", "EXPAND_DIMS", "SQUEEZE")  # same bytes, new shape: no code, shared storage
WIDE_WEIGHTS_MAX = 2048  # convolutions with at most this many weights store them as int16 (see to_conv16)
# Below this share of non-zero weights, (index, value) lists beat dense SMLAD rows in flash and instructions
# (measured on Cortex-M4: about 8 instructions per listed weight against 2.2 per dense one, 3 bytes against 1).
SPARSE_DENSITY = 0.25
ALIGN = 8


def kernels_header() -> str:
    return resources.files("tinyopt.mcu").joinpath("kernels.h").read_text()


# --- TFLM's quantization arithmetic (quantization_util.cc, kernel_util.cc) -------------------------------


def tflite_round(x: float) -> float:
    """std::round: half away from zero."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def quantize_multiplier(real: float) -> tuple[int, int]:
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    fixed = int(tflite_round(q * (1 << 31)))
    if fixed == 1 << 31:
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return fixed, shift


def activation_range(fused: int, scale: float, zero_point: int) -> tuple[int, int]:
    """CalculateActivationRangeQuantized for int8 (the quantized bound is round(f / scale) in float)."""

    def quantize(f: float) -> int:
        return zero_point + int(tflite_round(float(np.float32(f) / np.float32(scale))))

    if fused == 0:
        return -128, 127
    if fused == 1:
        return max(-128, quantize(0.0)), 127
    if fused == 2:
        return max(-128, quantize(-1.0)), min(127, quantize(1.0))
    if fused == 3:
        return max(-128, quantize(0.0)), min(127, quantize(6.0))
    raise NotApplicable(f"the MCU code generator does not handle fused activation {fused}")


def compute_padding(stride: int, dilation: int, in_size: int, filter_size: int, out_size: int) -> int:
    effective = (filter_size - 1) * dilation + 1
    return max(0, (out_size - 1) * stride + effective - in_size) // 2


# --- memory plan ---------------------------------------------------------------------------------------


@dataclass
class Buffer:
    name: str
    nbytes: int
    first: int
    last: int
    offset: int = -1


def plan_arena(buffers: list[Buffer]) -> int:
    """Greedy by size: each buffer goes at the lowest offset free of every placed buffer that is alive at the
    same time. Returns the arena size."""
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.first)):
        offset = 0
        for other in sorted((p for p in placed if p.first <= buf.last and buf.first <= p.last), key=lambda p: p.offset):
            if offset + buf.nbytes <= other.offset:
                break
            offset = max(offset, _aligned(other.offset + other.nbytes))
        buf.offset = offset
        placed.append(buf)
    return _aligned(max((b.offset + b.nbytes for b in placed), default=0) + 4)  # +4: word reads at row ends


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


# --- emitting C ----------------------------------------------------------------------------------------


def c_array(ctype: str, name: str, values) -> str:
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    body, line = [], []
    for v in flat:
        line.append(str(v))
        if len(line) == 24:
            body.append("  " + ", ".join(line) + ",")
            line = []
    if line:
        body.append("  " + ", ".join(line) + ",")
    return (
        f"static const {ctype} {name}[{max(1, len(flat))}] __attribute__((aligned(4))) = {{\n"
        + ("\n".join(body) if flat else "  0")
        + "\n};\n"
    )


def c_float(x: float) -> str:
    return f"{float(np.float32(x)).hex()}f" if np.isfinite(x) else "0.0f"


@dataclass
class Technique:
    """What a kernel choice saves, reported per op: dense vs sparse weights."""

    op: int
    kind: str
    weights: int
    nonzero: int
    sparse: bool
    clustered: bool = False  # weights stored as 4-bit indices into a table of at most 16 values


@dataclass
class Generated:
    name: str
    source: str
    header: str
    arena_bytes: int
    input_bytes: int
    output_bytes: int
    input_dtype: str
    output_dtype: str
    op_kinds: list[str]
    techniques: list[Technique] = field(default_factory=list)

    def write(self, directory: Path) -> dict[str, Path]:
        directory = Path(directory)
        paths = {
            "source": directory / f"{self.name}.c",
            "header": directory / f"{self.name}.h",
            "kernels": directory / "kernels.h",
        }
        write_bytes(paths["source"], self.source.encode())
        write_bytes(paths["header"], self.header.encode())
        write_bytes(paths["kernels"], kernels_header().encode())
        return paths


class _Emitter:
    def __init__(self, graph: Graph, name: str, sparse: bool, cluster_indices: bool = False):
        self.g, self.name, self.sparse, self.cluster_indices = graph, name, sparse, cluster_indices
        self.consts: list[str] = []
        self.body: list[str] = []
        self.buffers: dict[str, Buffer] = {}
        self.storage: dict[int, str] = {}  # tensor index -> buffer name
        self.techniques: list[Technique] = []

    def t(self, i: int) -> Tensor:
        return self.g.tensors[i]

    def ptr(self, i: int, ctype: str = "int8_t") -> str:
        return f"(({ctype} *)(arena + {self.name.upper()}_OFF_{self.storage[i]}))"

    def const_name(self, op: Op, what: str) -> str:
        return f"{self.name}_op{op.index}_{what}"


def generate(blob: bytes, name: str, sparse: bool = True, cluster_indices: bool = False) -> Generated:
    """C source and header for the model in `blob`. Raises NotApplicable naming an op it cannot compile.

    sparse: dense layers with few non-zero weights list them as (index, value) and skip the zeros.
    cluster_indices: dense layers with at most 16 distinct weights store 4-bit indices into those values
    (half the weight flash, more instructions: a choice for flash-bound devices)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"model name {name!r} must be a C identifier in lower case")
    graph = load_graph(blob)
    unknown = sorted({op.kind for op in graph.ops if op.kind not in SUPPORTED_OPS})
    if unknown:
        raise NotApplicable(f"the MCU code generator does not support op {', '.join(unknown)}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise NotApplicable("the MCU code generator handles models with one input and one output")
    em = _Emitter(graph, name, sparse, cluster_indices)
    _plan(em)
    for op in graph.ops:
        em.body.append(f"  /* op {op.index}: {op.kind} */")
        em.body.append(f"  TINYOPT_OP_HOOK({op.index});")
        _EMIT[op.kind](em, op)
    em.body.append(f"  TINYOPT_OP_HOOK({len(graph.ops)});")
    return _assemble(em)


def _plan(em: _Emitter) -> None:
    g = em.g
    # Alias chains: the output of a reshape-like op shares its input's storage.
    root = {i: i for i in range(len(g.tensors))}
    for op in g.ops:
        if op.kind in ALIAS_OPS:
            root[op.outputs[0]] = root[op.inputs[0]]
        elif _pool_in_place(g, op, root):
            root[op.outputs[0]] = root[op.inputs[0]]
    alive: dict[int, list[int]] = {}

    def touch(i: int, step: int) -> None:
        if g.tensors[i].data is not None:
            return
        r = root[i]
        span = alive.setdefault(r, [step, step])
        span[0], span[1] = min(span[0], step), max(span[1], step)

    for i in g.inputs:
        touch(i, -1)
    for op in g.ops:
        for i in op.inputs + op.outputs:
            if i >= 0:
                touch(i, op.index)
    for i in g.outputs:
        touch(i, len(g.ops))
    for r, (first, last) in alive.items():
        em.buffers[f"T{r}"] = Buffer(f"T{r}", g.tensors[r].nbytes, first, last)
    for i in range(len(g.tensors)):
        if root[i] in alive:
            em.storage[i] = f"T{root[i]}"
    # Scratch buffers (im2col columns, mean sums) live for their op only.
    for op in g.ops:
        need = _scratch_bytes(em, op)
        if need:
            em.buffers[f"S{op.index}"] = Buffer(f"S{op.index}", need, op.index, op.index)


def _pool_in_place(g: Graph, op: Op, root: dict[int, int]) -> bool:
    """A pool without top/left padding can write over its own input: output position p is written after every
    read at or below p, and later outputs read only above it. Only when nothing reads the input afterwards."""
    if op.kind not in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
        return False
    inp, out = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    o = op.options
    padded = compute_padding(o.strideH, 1, inp.shape[1], o.filterHeight, out.shape[1]) or compute_padding(
        o.strideW, 1, inp.shape[2], o.filterWidth, out.shape[2]
    )
    if padded or op.inputs[0] in g.inputs or inp.dtype is not out.dtype:
        return False
    shared = {i for i in range(len(g.tensors)) if root[i] == root[op.inputs[0]]}
    later = any(set(other.inputs) & shared for other in g.ops[op.index + 1 :])
    return not later and not shared & set(g.outputs)


def _scratch_bytes(em: _Emitter, op: Op) -> int:
    if op.kind == "CONV_2D" or (op.kind == "DEPTHWISE_CONV_2D" and em.t(op.inputs[0]).shape[-1] == 1):
        w = em.t(op.inputs[1])
        k = int(np.prod(w.shape[1:])) if op.kind == "CONV_2D" else int(np.prod(w.shape[1:3]))
        return 2 * _round4(k)  # int8 columns, or int16 ones for convolutions with few weights
    if op.kind == "MEAN":
        return 4 * em.t(op.inputs[0]).shape[-1]
    return 0


def _round4(n: int) -> int:
    return (n + 3) // 4 * 4


def _require_int8(em: _Emitter, op: Op, *tensors: int) -> None:
    for i in tensors:
        if em.t(i).dtype is not np.int8:
            raise NotApplicable(
                f"the MCU code generator handles {op.kind} on int8 tensors only "
                f"({em.t(i).name!r} is {np.dtype(em.t(i).dtype).name})"
            )


def _bias(em: _Emitter, op: Op, outs: int) -> np.ndarray:
    if len(op.inputs) > 2 and op.inputs[2] >= 0:
        b = em.t(op.inputs[2])
        if b.dtype is not np.int32:
            raise NotApplicable(f"the MCU code generator needs int32 biases ({op.kind} has {np.dtype(b.dtype).name})")
        return b.data.reshape(-1).astype(np.int64)
    return np.zeros(outs, dtype=np.int64)


def _per_channel_multipliers(inp: Tensor, w: Tensor, out: Tensor, channels: int) -> tuple[list[int], list[int]]:
    """PopulateConvolutionQuantizationParams: input_scale * filter_scale / output_scale in double."""
    mults, shifts = [], []
    for c in range(channels):
        fs = float(w.scales[c] if len(w.scales) > 1 else w.scales[0])
        m, s = quantize_multiplier(float(inp.scales[0]) * fs / float(out.scales[0]))
        mults.append(m)
        shifts.append(s)
    return mults, shifts


def _emit_requant_consts(em: _Emitter, op: Op, mults: list[int], shifts: list[int]) -> tuple[str, str]:
    m, s = em.const_name(op, "mult"), em.const_name(op, "shift")
    em.consts.append(c_array("int32_t", m, mults))
    em.consts.append(c_array("int8_t", s, shifts))
    return m, s


def _geom(em: _Emitter, inp: Tensor, out: Tensor, kh: int, kw: int, sh: int, sw: int, dh: int, dw: int) -> str:
    _, ih, iw, ic = inp.shape
    _, oh, ow, oc = out.shape
    ph, pw = compute_padding(sh, dh, ih, kh, oh), compute_padding(sw, dw, iw, kw, ow)
    return f"{{{ih}, {iw}, {ic}, {oh}, {ow}, {oc}, {kh}, {kw}, {sh}, {sw}, {dh}, {dw}, {ph}, {pw}}}"


def _emit_conv(em: _Emitter, op: Op) -> None:
    inp, w, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    _require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
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
    bias = _bias(em, op, oc)
    folded = bias - in_zp * weights.astype(np.int64).sum(axis=1 if (not depthwise or inp.shape[-1] == 1) else 0)
    mults, shifts = _per_channel_multipliers(inp, w, out, oc)
    act_min, act_max = activation_range(o.fusedActivationFunction, out.scale, out.zero_point)
    geom = _geom(em, inp, out, kh, kw, o.strideH, o.strideW, o.dilationHFactor, o.dilationWFactor)
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
        m, s = _emit_requant_consts(em, op, mults, shifts)
    b = em.const_name(op, "bias")
    em.consts.append(c_array("int32_t", b, folded))
    wn = em.const_name(op, "w")
    em.body.append(f"  {{ static const to_geom g = {geom};")
    if depthwise and inp.shape[-1] != 1:
        em.consts.append(c_array("int8_t", wn, weights))
        em.body.append(
            f"    to_depthwise({em.ptr(op.inputs[0])}, &g, {o.depthMultiplier}, {wn}, {b}, {in_zp}, "
            f"{m}, {s}, {out.zero_point}, {act_min}, {act_max}, {em.ptr(op.outputs[0])}); }}"
        )
        em.techniques.append(Technique(op.index, op.kind, weights.size, int(np.count_nonzero(weights)), False))
        return
    k = weights.shape[1]
    if wide:
        kp = k + (k % 2)
        widened = np.zeros((oc, kp), dtype=np.int16)
        widened[:, :k] = weights
        em.consts.append(c_array("int16_t", wn, widened))
        em.body.append(
            f"    to_conv16({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {kp}, {in_zp}, {m}, {s}, "
            f"{out.zero_point}, {act_min}, {act_max}, "
            f"(int16_t *)(arena + {em.name.upper()}_OFF_S{op.index}), "
            f"{em.ptr(op.outputs[0])}); }}"
        )
        em.techniques.append(Technique(op.index, op.kind, weights.size, int(np.count_nonzero(weights)), False))
        return
    kp = _round4(k)
    padded = np.zeros((oc, kp), dtype=np.int8)
    padded[:, :k] = weights
    em.consts.append(c_array("int8_t", wn, padded))
    em.body.append(
        f"    to_conv({em.ptr(op.inputs[0])}, &g, {wn}, {b}, {kp}, {in_zp}, {m}, {s}, {out.zero_point}, "
        f"{act_min}, {act_max}, (int8_t *)(arena + {em.name.upper()}_OFF_S{op.index}), "
        f"{em.ptr(op.outputs[0])}); }}"
    )
    em.techniques.append(Technique(op.index, op.kind, weights.size, int(np.count_nonzero(weights)), False))


def _emit_fully_connected(em: _Emitter, op: Op) -> None:
    inp, w, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    _require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
    outs, k = w.shape
    if inp.size != k:
        raise NotApplicable("the MCU code generator handles FULLY_CONNECTED with batch 1 only")
    if np.any(w.zero_points != 0):
        raise NotApplicable("the MCU code generator needs symmetric int8 weights (FULLY_CONNECTED)")
    weights = w.data.reshape(outs, k)
    bias = _bias(em, op, outs)
    folded = bias - inp.zero_point * weights.astype(np.int64).sum(axis=1)
    per_channel = len(w.scales) > 1
    # TFLM's FULLY_CONNECTED takes its multipliers as convolutions do (input_scale * filter_scale / output_scale
    # in double); the float product of older versions differs in the last bit (1 LSB on 1 of 10,000 images).
    mults, shifts = _per_channel_multipliers(inp, w, out, outs if per_channel else 1)
    act_min, act_max = activation_range(op.options.fusedActivationFunction, out.scale, out.zero_point)
    m, s = _emit_requant_consts(em, op, mults, shifts)
    b = em.const_name(op, "bias")
    em.consts.append(c_array("int32_t", b, folded))
    nonzero = int(np.count_nonzero(weights))
    sparse = em.sparse and nonzero <= SPARSE_DENSITY * weights.size and k < 65536
    table = _cluster_table(weights) if em.cluster_indices and not sparse else None
    em.techniques.append(Technique(op.index, op.kind, weights.size, nonzero, sparse, table is not None))
    tail = f"{int(per_channel)}, {out.zero_point}, {act_min}, {act_max}, {em.ptr(op.outputs[0])});"
    if table is not None:
        kp = _round4(k)
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
    kp = _round4(k)
    padded = np.zeros((outs, kp), dtype=np.int8)
    padded[:, :k] = weights
    wn = em.const_name(op, "w")
    em.consts.append(c_array("int8_t", wn, padded))
    em.body.append(f"  to_fully_connected({em.ptr(op.inputs[0])}, {wn}, {b}, {kp}, {outs}, {m}, {s}, {tail}")


def _cluster_table(weights: np.ndarray) -> np.ndarray | None:
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


def _emit_pool(em: _Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    _require_int8(em, op, op.inputs[0], op.outputs[0])
    o = op.options
    act_min, act_max = activation_range(o.fusedActivationFunction, out.scale, out.zero_point)
    geom = _geom(em, inp, out, o.filterHeight, o.filterWidth, o.strideH, o.strideW, 1, 1)
    avg = int(op.kind == "AVERAGE_POOL_2D")
    em.body.append(f"  {{ static const to_geom g = {geom};")
    em.body.append(f"    to_pool({em.ptr(op.inputs[0])}, &g, {avg}, {act_min}, {act_max}, {em.ptr(op.outputs[0])}); }}")


def _emit_alias(em: _Emitter, op: Op) -> None:
    em.body.append("  /* same storage as its input */")


def _emit_quantize(em: _Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is not np.float32 or out.dtype is not np.int8:
        raise NotApplicable("the MCU code generator handles QUANTIZE from float32 to int8 only")
    scale = float(out.scales[0])
    em.body.append(
        f"  to_quantize({em.ptr(op.inputs[0], 'float')}, {inp.size}, {scale.hex()}, "
        f"{c_float(np.float32(1.0) / np.float32(scale))}, {out.zero_point}, {em.ptr(op.outputs[0])});"
    )


def _emit_dequantize(em: _Emitter, op: Op) -> None:
    inp, out = em.t(op.inputs[0]), em.t(op.outputs[0])
    if inp.dtype is not np.int8 or out.dtype is not np.float32:
        raise NotApplicable("the MCU code generator handles DEQUANTIZE from int8 to float32 only")
    em.body.append(
        f"  to_dequantize({em.ptr(op.inputs[0])}, {inp.size}, {c_float(inp.scale)}, {inp.zero_point}, "
        f"{em.ptr(op.outputs[0], 'float')});"
    )


def _emit_softmax(em: _Emitter, op: Op) -> None:
    inp = em.t(op.inputs[0])
    _require_int8(em, op, op.inputs[0], op.outputs[0])
    # PreprocessSoftmaxScaling and CalculateInputRadius with 5 integer bits (double rounding build).
    real = min(float(op.options.beta) * float(inp.scales[0]) * (1 << 26), float((1 << 31) - 1))
    mult, shift = quantize_multiplier(real)
    diff_min = -int(math.floor(31.0 * (1 << 26) / (1 << shift)))
    depth = inp.shape[-1]
    em.body.append(
        f"  to_softmax({em.ptr(op.inputs[0])}, {inp.size // depth}, {depth}, {mult}, {shift}, "
        f"{diff_min}, {em.ptr(op.outputs[0])});"
    )


def _emit_add(em: _Emitter, op: Op) -> None:
    a, b, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    _require_int8(em, op, op.inputs[0], op.inputs[1], op.outputs[0])
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


def _emit_mean(em: _Emitter, op: Op) -> None:
    inp, axis, out = em.t(op.inputs[0]), em.t(op.inputs[1]), em.t(op.outputs[0])
    _require_int8(em, op, op.inputs[0], op.outputs[0])
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
        f"{out.zero_point}, (int32_t *)(arena + {em.name.upper()}_OFF_S{op.index}), "
        f"{em.ptr(op.outputs[0])});"
    )


_EMIT = {
    "CONV_2D": _emit_conv,
    "DEPTHWISE_CONV_2D": _emit_conv,
    "FULLY_CONNECTED": _emit_fully_connected,
    "MAX_POOL_2D": _emit_pool,
    "AVERAGE_POOL_2D": _emit_pool,
    "RESHAPE": _emit_alias,
    "EXPAND_DIMS": _emit_alias,
    "SQUEEZE": _emit_alias,
    "QUANTIZE": _emit_quantize,
    "DEQUANTIZE": _emit_dequantize,
    "SOFTMAX": _emit_softmax,
    "ADD": _emit_add,
    "MEAN": _emit_mean,
}

C_TYPES = {np.int8: "int8_t", np.float32: "float"}


def _assemble(em: _Emitter) -> Generated:
    g, name, up = em.g, em.name, em.name.upper()
    arena = plan_arena(list(em.buffers.values()))
    tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    if tin.dtype not in C_TYPES or tout.dtype not in C_TYPES:
        raise NotApplicable("the MCU code generator handles int8 or float32 model inputs and outputs")
    in_t, out_t = C_TYPES[tin.dtype], C_TYPES[tout.dtype]
    ordered = sorted(em.buffers.values(), key=lambda b: b.name)
    offsets = "\n".join(f"#define {up}_OFF_{b.name} {b.offset}" for b in ordered)
    header = f"""/* Generated by tinyopt.mcu.codegen: do not edit. */
#ifndef {up}_H
#define {up}_H
#include <stdint.h>
#define {up}_ARENA_BYTES {arena}
#define {up}_INPUT_ELEMENTS {tin.size}
#define {up}_OUTPUT_ELEMENTS {tout.size}
typedef {in_t} {name}_input_t;
typedef {out_t} {name}_output_t;
/* The input tensor's place in the activation buffer: fill it and pass it to invoke to save a copy. */
{in_t} *{name}_input(void);
int {name}_invoke(const {in_t} *in, {out_t} *out);
#endif
"""
    source = f"""/* Generated by tinyopt.mcu.codegen from an int8 .tflite: do not edit. */
#include "kernels.h"
#include "{name}.h"
#ifndef TINYOPT_OP_HOOK
#define TINYOPT_OP_HOOK(i) ((void)0)
#else
void TINYOPT_OP_HOOK(int op);
#endif

{offsets}
static uint8_t arena[{up}_ARENA_BYTES] __attribute__((aligned(8)));

{"".join(em.consts)}
{in_t} *{name}_input(void) {{ return ({in_t} *)(arena + {up}_OFF_{em.storage[g.inputs[0]]}); }}

int {name}_invoke(const {in_t} *in, {out_t} *out) {{
  to_copy(in, {tin.nbytes}, arena + {up}_OFF_{em.storage[g.inputs[0]]});
{chr(10).join(em.body)}
  to_copy(arena + {up}_OFF_{em.storage[g.outputs[0]]}, {tout.nbytes}, out);
  return 0;
}}

#ifdef TINYOPT_GENERIC_ENTRY
/* Fixed names for the firmware and host harnesses. */
const unsigned tinyopt_input_bytes = {tin.nbytes}, tinyopt_output_bytes = {tout.nbytes};
const unsigned tinyopt_op_count = {len(g.ops)};
void *tinyopt_input(void) {{ return {name}_input(); }}
int tinyopt_invoke(const void *in, void *out) {{ return {name}_invoke((const {in_t} *)in, ({out_t} *)out); }}
#endif
"""
    return Generated(
        name,
        source,
        header,
        arena,
        tin.nbytes,
        tout.nbytes,
        np.dtype(tin.dtype).name,
        np.dtype(tout.dtype).name,
        [op.kind for op in g.ops],
        em.techniques,
    )


def generate_file(tflite_path: str | Path, name: str, out_dir: str | Path, sparse: bool = True) -> Generated:
    generated = generate(Path(tflite_path).read_bytes(), name, sparse=sparse)
    generated.write(Path(out_dir))
    return generated
