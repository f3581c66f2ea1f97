"""Run generated C on this host (gcc, a shared library through ctypes) and TFLM's reference kernels on the same
inputs: the bit-exactness check, fast enough for the whole test split."""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from tinyopt.core.children import run_child
from tinyopt.mcu.codegen import Generated

HOST_CFLAGS = (
    "-O2",
    "-std=c99",
    "-ffp-contract=off",
    "-fno-strict-aliasing",
    "-Wall",
    "-Werror",
    "-shared",
    "-fPIC",
    "-DTINYOPT_GENERIC_ENTRY",
    "-DTINYOPT_PORTABLE",
)
COMPILE_TIMEOUT_S = 600  # the largest generated model compiles in well under a minute


def run_host(generated: Generated, inputs: np.ndarray, cc: str = "gcc") -> np.ndarray:
    """Outputs of the generated C for each input (inputs already in the model's input type)."""
    if shutil.which(cc) is None:
        raise FileNotFoundError(f"{cc} is not installed")
    out_dtype = np.dtype(generated.output_dtype)
    with tempfile.TemporaryDirectory() as scratch:
        paths = generated.write(Path(scratch))
        lib_path = Path(scratch) / "model.so"
        command = [cc, *HOST_CFLAGS, "-I", scratch, str(paths["source"]), "-o", str(lib_path)]
        try:
            done = run_child(command, timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{cc} did not finish within {COMPILE_TIMEOUT_S} s on the generated C") from None
        if done.returncode:
            raise RuntimeError(f"{cc} failed on the generated C: {done.stderr.strip()[-2000:]}")
        lib = ctypes.CDLL(str(lib_path))
        flat = np.ascontiguousarray(inputs.reshape(len(inputs), -1))
        outs = np.zeros((len(inputs), generated.output_bytes // out_dtype.itemsize), dtype=out_dtype)
        for i in range(len(inputs)):
            lib.tinyopt_invoke(flat[i].ctypes.data_as(ctypes.c_void_p), outs[i].ctypes.data_as(ctypes.c_void_p))
        return outs


def run_tflm(blob: bytes, inputs: np.ndarray, arena: int = 1 << 20) -> np.ndarray:
    """TFLM's reference kernels (the tflite-micro package), raw outputs (int8 or float) per input."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(blob, arena_size=arena)
    shape = interpreter.get_input_details(0)["shape"]
    outs = []
    for x in inputs:
        interpreter.set_input(x.reshape(shape), 0)
        interpreter.invoke()
        outs.append(np.array(interpreter.get_output(0)).reshape(-1))
    return np.asarray(outs)


def tflm_interpreter(blob: bytes, arena: int = 1 << 20):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(blob, arena_size=arena)
