"""Generated inputs for measuring a model without data made for it (`tinyopt bench --inputs random[:N]`).

They are written as a prepared-like .npz (tinyopt.datasets.prepared reads it) holding test and validation
inputs and no labels, so every measuring step runs on them unchanged and scores nothing: the device figures
(flash, RAM, instructions) and the agreement of the generated C, TFLM and LiteRT hold for any input.

The inputs have the model's own input shape. An integer input tensor gets integers across its type's full
range, stored as the floats that its quantization maps back to exactly those integers; a float input gets
uniform values in [-1, 1]. The same model, count and seed give the same inputs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.core.files import atomic_path
from tinyopt.runtimes import litert

DEFAULT_COUNT = 16
NO_LABELS = "none (random inputs)"  # the metric a run on random inputs reports: there is no score


def parse_inputs(option: str) -> int:
    """The number of random inputs that `--inputs random[:N]` asks for (UserError for anything else)."""
    match = re.fullmatch(r"random(?::(\d+))?", option.strip())
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise UserError(f"--inputs {option!r}: say random, or random:N with N a positive count (e.g. random:16)")
    return int(match.group(1)) if match.group(1) else DEFAULT_COUNT


def random_inputs(detail: dict, count: int, seed: int) -> np.ndarray:
    """`count` float inputs for a tensor described by `detail` (a LiteRT input detail), batch dimension first."""
    shape = (count, *(int(n) for n in detail["shape"][1:]))
    rng = np.random.default_rng(seed)
    dtype = np.dtype(detail["dtype"])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        q = rng.integers(info.min, info.max, size=shape, endpoint=True)
        params = detail["quantization_parameters"]
        if len(params["scales"]) and params["scales"][0]:
            scale, zero_point = float(params["scales"][0]), int(params["zero_points"][0])
            return ((q - zero_point) * scale).astype(np.float32)  # quantize_input maps these back to q
        return q.astype(np.float32)
    return rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)


def write_random_inputs(tflite_path: str | Path, count: int, seed: int, out: str | Path) -> Path:
    """A prepared-like .npz at `out` with `count` random inputs for the model (as test and validation inputs),
    no labels; UserError when the model cannot be loaded or has more than one input."""
    interpreter = litert.load_interpreter(tflite_path)
    details = interpreter.get_input_details()
    if len(details) != 1:
        raise UserError(f"{tflite_path}: the model has {len(details)} inputs; tinyopt measures models with one input")
    x = random_inputs(details[0], count, seed)
    with atomic_path(out) as tmp, open(tmp, "wb") as sink:
        np.savez(sink, x_test=x, x_val=x, input_scale=np.float64(1.0))
    return Path(out)
