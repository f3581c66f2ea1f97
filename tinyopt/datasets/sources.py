"""A dataset's x_train, y_train, x_test, y_test, whatever its source: from a fetched dataset directory,
or read where it is now (to check it before a run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.datasets.idx import IDX_DATASETS, SPLITS, load_user_idx, read_idx, verify_idx_dir
from tinyopt.datasets.images import load_images
from tinyopt.datasets.npz import NPZ_FILE, read_npz
from tinyopt.params import USER_DATASETS, DataParams


def load_raw(dataset: str, directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test from a fetched dataset directory, verified first."""
    if dataset == "idx":
        return load_user_idx(directory)
    if dataset == "images":
        return load_images(directory, params)
    if dataset == "npz":
        path = directory / NPZ_FILE
        if not path.is_file():
            raise UserError(f"{path}: missing; run `tinyopt fetch` to copy your .npz in")
        return read_npz(path)
    verify_idx_dir(dataset, directory)
    files = IDX_DATASETS[dataset].files
    return tuple(read_idx(directory / files[split]) for split in SPLITS)  # type: ignore[return-value]


def load_source(params: DataParams) -> tuple[np.ndarray, ...] | None:
    """The dataset's arrays read where they are now, without copying anything (to check them before a
    run): the user's file or directory, or a built-in dataset's verified local files; None when a
    built-in dataset has none yet (fetching verifies it by checksum)."""
    if params.dataset in USER_DATASETS:
        source = Path(params.path)  # type: ignore[arg-type]
        if params.dataset == "npz":
            if not source.is_file():
                raise UserError(f"{source}: no such file (data.path in params.yaml must point at your .npz)")
            return read_npz(source)
        if not source.is_dir():
            raise UserError(f"{source}: no such directory (data.path must point at your {params.dataset} directory)")
        return (load_user_idx if params.dataset == "idx" else load_images)(source, params)
    from tinyopt.core import layout

    spec = IDX_DATASETS[params.dataset]
    for directory in (layout.DATA_ROOT / params.dataset, Path(spec.local_dir) if spec.local_dir else None):
        if directory is not None and all((directory / name).is_file() for name in spec.files.values()):
            try:
                return load_raw(params.dataset, directory)
            except UserError:
                continue  # a damaged copy: fetching replaces it
    return None
