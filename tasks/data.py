"""Data steps: fetch a dataset's raw files (verified), and prepare a fixed train/validation/test split.

Supported sources: Fashion-MNIST and MNIST as IDX files, or the user's own .npz holding
x_train, y_train, x_test, y_test. The validation set is carved from the training set with a fixed
seed; the test set is never used for training, early stopping or calibration. Reading and checking
each source is the library's (tinyopt/datasets/); these are the steps that run it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.core.files import atomic_dir, atomic_path, sha256_file, sha256_tree
from tinyopt.core.lineage import dvc_hash
from tinyopt.datasets.download import gather_idx
from tinyopt.datasets.idx import load_user_idx, verify_idx_dir
from tinyopt.datasets.images import load_images
from tinyopt.datasets.labels import sparse_if_one_hot
from tinyopt.datasets.npz import NPZ_FILE, read_npz
from tinyopt.datasets.sources import load_raw
from tinyopt.datasets.split import split_indices
from tinyopt.orchestration.steps import step
from tinyopt.params import DataParams
from tinyopt.records.steps import DatasetRecord, PreparedRecord, outputs_of


@step("fetch", retries=2)
def fetch_dataset(params: DataParams, out_root: Path) -> DatasetRecord:
    """Make `out_root/<dataset>/` hold the dataset's verified raw files and return its version.

    Files already there and intact are kept; otherwise they are copied from the local source (the
    Debian package, or the user's files) or downloaded, verified, and moved in as a whole.
    """
    target = out_root / params.dataset
    if params.dataset in ("idx", "images"):
        source = Path(params.path)  # type: ignore[arg-type]
        if not source.is_dir():
            raise UserError(f"{source}: no such directory (data.path must point at your {params.dataset} directory)")
        (load_user_idx if params.dataset == "idx" else load_images)(source, params)  # refuse bad data early
        if not target.is_dir() or sha256_tree(target) != sha256_tree(source):
            with atomic_dir(target) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
    elif params.dataset == "npz":
        source = Path(params.path)  # type: ignore[arg-type]
        if not source.is_file():
            raise UserError(f"{source}: no such file (data.path in params.yaml must point at your .npz)")
        read_npz(source)
        if not (target / NPZ_FILE).is_file() or sha256_file(target / NPZ_FILE) != sha256_file(source):
            with atomic_path(target / NPZ_FILE) as tmp:
                shutil.copyfile(source, tmp)
    else:
        try:
            verify_idx_dir(params.dataset, target)
        except UserError:
            with atomic_dir(target) as staging:
                gather_idx(params.dataset, staging)
                verify_idx_dir(params.dataset, staging)
    files = sorted(p for p in target.iterdir() if p.is_file())
    return DatasetRecord(
        name=params.dataset, directory=str(target), version=dvc_hash(target), outputs=outputs_of(*files)
    )


@step("prepare")
def prepare_dataset(raw_dir: Path, params: DataParams, seed: int, out: Path) -> PreparedRecord:
    """Split into train / validation / test with a fixed seed and write one .npz (atomically).
    The data's shapes and values were checked on loading; its labels are check_data's concern."""
    x_train, y_train, x_test, y_test = load_raw(params.dataset, raw_dir, params)
    y_train, y_test = sparse_if_one_hot(y_train), sparse_if_one_hot(y_test)
    scale = params.input_scale or (1 / 255 if x_train.dtype == np.uint8 else 1.0)
    train_idx, val_idx = split_indices(len(x_train), params, seed)
    num_val = len(val_idx)
    if params.test_limit:
        x_test, y_test = x_test[: params.test_limit], y_test[: params.test_limit]
    labels = np.concatenate([y_train, y_test])
    num_classes = int(labels.max()) + 1 if labels.size and np.issubdtype(labels.dtype, np.integer) else 0
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                x_train=x_train[train_idx],
                y_train=y_train[train_idx],
                x_val=x_train[val_idx],
                y_val=y_train[val_idx],
                x_test=x_test,
                y_test=y_test,
                input_scale=np.float64(scale),
            )
    return PreparedRecord(
        path=str(out),
        dataset=params.dataset,
        dataset_version=dvc_hash(raw_dir),
        num_train=len(train_idx),
        num_val=num_val,
        num_test=len(x_test),
        input_shape=list(x_train.shape[1:]),
        num_classes=num_classes,
        outputs=outputs_of(out),
    )
