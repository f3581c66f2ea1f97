"""The static memory plan: which tensors share storage, how long each buffer lives, and the one activation arena
(greedy placement by size) that holds them all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tinyopt.mcu.graph import Graph, Op
from tinyopt.mcu.quant import compute_padding

if TYPE_CHECKING:  # the table imports the emitters, which import this module: passed in, not imported
    from tinyopt.mcu.ops import SupportedOp

ALIGN = 8


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


def round4(n: int) -> int:
    return (n + 3) // 4 * 4


def plan_storage(g: Graph, ops: Mapping[str, SupportedOp]) -> tuple[dict[str, Buffer], dict[int, str]]:
    """The buffers (T<root tensor> for activations, S<op> for scratch) with their lifetimes, and each
    non-constant tensor's buffer name. `ops` is the op table (tinyopt.mcu.ops.OPS): which ops alias their input,
    which need scratch."""
    buffers: dict[str, Buffer] = {}
    storage: dict[int, str] = {}
    # Alias chains: the output of a reshape-like op shares its input's storage.
    root = {i: i for i in range(len(g.tensors))}
    for op in g.ops:
        if ops[op.kind].alias or _pool_in_place(g, op, root):
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
        buffers[f"T{r}"] = Buffer(f"T{r}", g.tensors[r].nbytes, first, last)
    for i in range(len(g.tensors)):
        if root[i] in alive:
            storage[i] = f"T{root[i]}"
    # Scratch buffers (im2col columns, mean sums) live for their op only.
    for op in g.ops:
        scratch_bytes = ops[op.kind].scratch_bytes
        need = scratch_bytes(g, op) if scratch_bytes else 0
        if need:
            buffers[f"S{op.index}"] = Buffer(f"S{op.index}", need, op.index, op.index)
    return buffers, storage


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
