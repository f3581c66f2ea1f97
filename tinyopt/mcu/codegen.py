"""From an int8 .tflite to dependency-free C99: weights and quantization parameters as const arrays, one
statically planned activation buffer, and `int <name>_invoke(const in_t *in, out_t *out)`.

in_t/out_t are int8_t for full-integer models and float for int8 models with float input/output (their
QUANTIZE/DEQUANTIZE run inside invoke). The arithmetic is TFLM's reference integer arithmetic; every
quantization parameter is computed here exactly as TFLM's Prepare functions compute it.

This module drives a run and writes the C text around the ops; each op's C comes from its record in ops (an
emit_* module per kind of op), the storage from arena, the parameters from quant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.core.files import write_bytes
from tinyopt.mcu.arena import plan_arena, plan_storage
from tinyopt.mcu.emitter import Emitter, WeightStorage
from tinyopt.mcu.graph import load_graph
from tinyopt.mcu.ops import OPS


def kernels_header() -> str:
    return resources.files("tinyopt.mcu").joinpath("kernels.h").read_text()


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
    weight_storage: list[WeightStorage] = field(default_factory=list)
    reconstructs: bool = False  # output and input have as many elements: <name>_reconstruction_error is there

    @property
    def sparse_ops(self) -> int:
        return sum(w.sparse for w in self.weight_storage)

    @property
    def clustered_ops(self) -> int:
        return sum(w.clustered for w in self.weight_storage)

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


def generate(blob: bytes, name: str, sparse: bool = True, cluster_indices: bool = False) -> Generated:
    """C source and header for the model in `blob`. Raises NotApplicable naming an op it cannot compile.

    sparse: dense layers with few non-zero weights list them as (gap, value) steps and skip the zeros.
    cluster_indices: dense layers with at most 16 distinct weights store 4-bit indices into those values
    (half the weight flash, more instructions: a choice for flash-bound devices)."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"model name {name!r} must be a C identifier in lower case")
    graph = load_graph(blob)
    unknown = sorted({op.kind for op in graph.ops if op.kind not in OPS})
    if unknown:
        raise NotApplicable(f"the MCU code generator does not support op {', '.join(unknown)}")
    if len(graph.inputs) != 1 or len(graph.outputs) != 1:
        raise NotApplicable("the MCU code generator handles models with one input and one output")
    em = Emitter(graph, name, plan_storage(graph, OPS), sparse, cluster_indices)
    for op in graph.ops:
        em.body.append(f"  /* op {op.index}: {op.kind} */")
        em.body.append(f"  TINYOPT_OP_HOOK({op.index});")
        OPS[op.kind].emit(em, op)
    em.body.append(f"  TINYOPT_OP_HOOK({len(graph.ops)});")
    return _assemble(em)


C_TYPES = {np.int8: "int8_t", np.float32: "float"}


def _real(tensor, element: str) -> str:
    """C for an element's real value: a float as is, an int8 dequantized with its tensor's parameters."""
    if tensor.dtype == np.float32:
        return element
    return f"((float)({element} - ({tensor.zero_point})) * {float(np.float32(tensor.scale))!r}f)"


def _reconstruction_error(name: str, tin, tout) -> str:
    """An autoencoder's anomaly score beside it: the mean squared error between an input and its
    reconstruction in real units, as tinyopt's evaluator computes it (invoke reuses the input's place in
    the activation buffer, so it reads a copy of the input)."""
    in_t, out_t = C_TYPES[tin.dtype], C_TYPES[tout.dtype]
    return f"""
float {name}_reconstruction_error(const {in_t} *in, const {out_t} *out) {{
  float sum = 0.0f;
  for (int i = 0; i < {tin.size}; i++) {{
    const float d = {_real(tout, "out[i]")} - {_real(tin, "in[i]")};
    sum += d * d;
  }}
  return sum / {tin.size}.0f;
}}
"""


def _assemble(em: Emitter) -> Generated:
    g, name, up = em.g, em.name, em.name.upper()
    arena = plan_arena(list(em.buffers.values()))
    tin, tout = g.tensors[g.inputs[0]], g.tensors[g.outputs[0]]
    if tin.dtype not in C_TYPES or tout.dtype not in C_TYPES:
        raise NotApplicable("the MCU code generator handles int8 or float32 model inputs and outputs")
    in_t, out_t = C_TYPES[tin.dtype], C_TYPES[tout.dtype]
    reconstructs = tin.size == tout.size and tin.size > 2
    error_decl = (
        f"/* The anomaly score: mean squared error between an input (a copy: invoke reuses its place) and its\n"
        f"   reconstruction `out`, in real units. */\nfloat {name}_reconstruction_error(const {in_t} *in, "
        f"const {out_t} *out);\n"
        if reconstructs
        else ""
    )
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
{error_decl}#endif
"""
    generic_error = (
        f"float tinyopt_reconstruction_error(const void *in, const void *out) {{\n"
        f"  return {name}_reconstruction_error((const {in_t} *)in, (const {out_t} *)out);\n}}\n"
        if reconstructs
        else ""
    )
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
{_reconstruction_error(name, tin, tout) if reconstructs else ""}
#ifdef TINYOPT_GENERIC_ENTRY
/* Fixed names for the firmware and host harnesses. */
const unsigned tinyopt_input_bytes = {tin.nbytes}, tinyopt_output_bytes = {tout.nbytes};
const unsigned tinyopt_op_count = {len(g.ops)};
void *tinyopt_input(void) {{ return {name}_input(); }}
int tinyopt_invoke(const void *in, void *out) {{ return {name}_invoke((const {in_t} *)in, ({out_t} *)out); }}
{generic_error}#endif
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
        em.weight_storage,
        reconstructs,
    )


def generate_file(tflite_path: str | Path, name: str, out_dir: str | Path, sparse: bool = True) -> Generated:
    generated = generate(Path(tflite_path).read_bytes(), name, sparse=sparse)
    generated.write(Path(out_dir))
    return generated
