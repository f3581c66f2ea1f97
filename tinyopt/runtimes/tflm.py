"""Can TensorFlow Lite Micro run this .tflite, with how large a tensor arena, and does it compute what
LiteRT computes?

TFLM prints its diagnostics (the arena report, why a node failed) from C++ to stderr, and a model it
rejects could take the process down with it; so the check runs in a child process
(`python -m tinyopt.runtimes.tflm MODEL SAMPLES RESULT`) that captures its own C++ output and writes JSON.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tinyopt.core.children import run_child
from tinyopt.runtimes.quantized_io import dequantize_output, quantize_input

PROBE_ARENA = 4 * 1024 * 1024  # more than any microcontroller holds: the real need is measured


@contextlib.contextmanager
def _captured_output() -> Iterator[list[str]]:
    """Collect what TFLM's C++ code writes (to file descriptor 2) inside the block."""
    lines: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            sys.stderr.flush()
            ctypes.CDLL(None).fflush(None)  # C stdio buffers too, before fd 2 is put back
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line.strip() for line in sink.read().splitlines() if line.strip())


def _interpreter(blob: bytes, arena: int):
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(blob, arena_size=arena)


def _check_in_child(model_path: str, samples_path: str) -> dict:
    blob = Path(model_path).read_bytes()
    samples = np.load(samples_path)
    with _captured_output() as said:
        try:
            interpreter = _interpreter(blob, PROBE_ARENA)
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    if error:
        # TFLM's own words name the node and the type it refuses; they say more than the exception.
        reasons = [line for line in said if "RecordingMicroAllocator" not in line]
        return {"runs": False, "error": "; ".join(reasons[-2:]) or error, "arena_bytes": None}
    detail_in, detail_out = interpreter.get_input_details(0), interpreter.get_output_details(0)
    outputs = []
    for sample in samples:
        interpreter.set_input(quantize_input(sample[np.newaxis], detail_in), 0)
        interpreter.invoke()
        outputs.append(dequantize_output(interpreter.get_output(0), detail_out).reshape(-1))
    with _captured_output() as report:
        interpreter.print_allocations()
    match = next(
        (re.search(r"Arena allocation total (\d+) bytes", line) for line in report if "Arena allocation total" in line),
        None,
    )
    arena = int(match.group(1)) if match else None
    verified = False
    if arena:  # the recorded figure must be enough on its own: run once with exactly that arena
        with _captured_output():
            try:
                exact = _interpreter(blob, arena)
                exact.set_input(quantize_input(samples[:1], detail_in), 0)
                exact.invoke()
                verified = True
            except Exception:
                verified = False
    return {
        "runs": True,
        "error": None,
        "arena_bytes": arena,
        "arena_verified": verified,
        "outputs": np.asarray(outputs).tolist(),
    }


def check(tflite_path: str | Path, samples: np.ndarray, timeout: float = 300) -> dict:
    """{'runs', 'error', 'arena_bytes', 'arena_verified', 'outputs'}: TFLM's verdict on the file, the
    tensor arena its recording allocator reports (then verified by running with exactly that arena),
    and its dequantized outputs for `samples`."""
    with tempfile.TemporaryDirectory() as scratch:
        samples_path, result_path = os.path.join(scratch, "samples.npy"), os.path.join(scratch, "result.json")
        np.save(samples_path, samples.astype(np.float32))
        try:
            done = run_child(
                [sys.executable, "-m", "tinyopt.runtimes.tflm", str(tflite_path), samples_path, result_path],
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return {"runs": False, "error": f"TFLM did not finish within {timeout:.0f} s", "arena_bytes": None}
        if done.returncode != 0 or not os.path.exists(result_path):
            tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-2:])
            return {"runs": False, "error": f"TFLM crashed (exit {done.returncode}): {tail}", "arena_bytes": None}
        return json.loads(Path(result_path).read_text())


if __name__ == "__main__":
    model, samples_file, result_file = sys.argv[1:4]
    Path(result_file).write_text(json.dumps(_check_in_child(model, samples_file)))
