"""The prepared split (what the prepare step writes), read back for training, conversion and evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError


def load_prepared(path: str | Path) -> dict[str, np.ndarray]:
    """The prepared split with inputs as float32, scaled as prepared (8-bit data to [0, 1] by default). Random
    inputs for `tinyopt bench --inputs random` (tinyopt.runtimes.random_inputs) have test and validation inputs
    only: no training split, no labels."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing prepared data; run `tinyopt prepare` (or `tinyopt run`)")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    scale = float(arrays.pop("input_scale", 1 / 255))
    for key in ("x_train", "x_val", "x_test"):
        if key not in arrays:
            continue
        x = arrays[key]
        arrays[key] = (
            (x.astype(np.float64) * scale).astype(np.float32)
            if x.dtype.kind in "iub" or scale != 1
            else x.astype(np.float32)
        )
    return arrays
