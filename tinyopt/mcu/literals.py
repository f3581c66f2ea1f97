"""C literals for generated sources: constant arrays (word-aligned, 24 values a line) and exact float constants."""

from __future__ import annotations

import numpy as np


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
    """A float32 constant as a hex literal (exact), 0.0f for a non-finite value."""
    return f"{float(np.float32(x)).hex()}f" if np.isfinite(x) else "0.0f"
