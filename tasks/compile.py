"""Compile step: an int8 .tflite to its C library (tinyopt.mcu: dependency-free C99, weights as const arrays,
one statically planned activation buffer), the artifact a firmware team builds into its device."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.codegen import generate
from tinyopt.mcu.graph import has_int8_tensors
from tinyopt.mcu.library import c_name, write_library
from tinyopt.orchestration.steps import step
from tinyopt.records.steps import LibraryRecord, outputs_of

FLOAT_MODEL = "a float model: microcontroller C libraries are made from int8 models"


@step("compile")
def compile_model(tflite_path: Path, model_name: str, out_dir: Path, cluster_indices: bool = True) -> LibraryRecord:
    """Write the model's C library to out_dir. NotApplicable (a skip, with the reason) for a model with an op or
    type the generator does not compile, e.g. any float model. A pruned dense layer (under a quarter of its
    weights non-zero) lists only those; a clustered one (at most 16 distinct weights) stores 4-bit indices into
    them when `cluster_indices`: half its weight flash, for a few more instructions."""
    blob = Path(tflite_path).read_bytes()
    if not has_int8_tensors(tflite_path):
        raise NotApplicable(FLOAT_MODEL)
    try:
        generated = generate(blob, c_name(model_name), cluster_indices=cluster_indices)
    except (KeyError, ValueError, IndexError, TypeError) as exc:  # a graph the generator did not foresee
        reason = f"the MCU code generator failed on it ({type(exc).__name__}: {exc}); please report it"
        raise NotApplicable(reason) from None
    written = write_library(generated, Path(tflite_path).name, Path(out_dir))
    return LibraryRecord(
        tflite_path=str(tflite_path),
        directory=str(out_dir),
        name=generated.name,
        arena_bytes=generated.arena_bytes,
        ops=generated.op_kinds,
        sparse_ops=generated.sparse_ops,
        clustered_ops=generated.clustered_ops,
        outputs=outputs_of(*written),
    )
