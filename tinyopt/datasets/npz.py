"""A user's .npz holding x_train, y_train, x_test, y_test."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.datasets.checks import NPZ_KEYS, check_arrays

NPZ_FILE = "data.npz"


def read_npz(path: Path) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test of a user's .npz; UserError if it is not one."""
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise UserError(
                f"{path}: a single .npy array, not an .npz archive; save your data with "
                f"np.savez(path, {'=..., '.join(NPZ_KEYS)}=...)"
            )
        with archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise UserError(f"{path}: the .npz lacks {', '.join(missing)} (it needs {', '.join(NPZ_KEYS)})")
            arrays = tuple(archive[key] for key in NPZ_KEYS)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, zlib.error) as exc:
        reason = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a readable .npz file ({reason}); point data.path at a valid file") from None
    check_arrays(arrays, str(path))
    return arrays
