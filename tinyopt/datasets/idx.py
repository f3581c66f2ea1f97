"""IDX files: the built-in datasets (Fashion-MNIST, MNIST) and how to recognise their files, reading
one IDX file, verifying a dataset's files by checksum, and a user's directory of four IDX files."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.datasets.checks import check_arrays
from tinyopt.params import DataParams

SPLITS = ("train-images", "train-labels", "test-images", "test-labels")


@dataclass(frozen=True)
class IdxDataset:
    """Where an IDX dataset comes from and how to recognise its files."""

    files: dict[str, str]  # split -> file name
    # A file passes if either its decompressed IDX payload has the known sha256 (independent of how it
    # was gzipped: Debian recompresses) or the .gz itself has the canonical md5.
    idx_sha256: dict[str, str] = field(default_factory=dict)
    gz_md5: dict[str, str] = field(default_factory=dict)
    local_dir: str | None = None
    debian_package: str | None = None
    mirrors: tuple[str, ...] = ()


_NAMES = dict(
    zip(
        SPLITS,
        (
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ),
        strict=False,
    )
)

IDX_DATASETS = {
    "fashion-mnist": IdxDataset(
        files=_NAMES,
        idx_sha256={
            "train-images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "test-images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "test-labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        gz_md5={
            "train-images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels": "25c81989df183df01b3e8a0aad5dffbe",
            "test-images": "bef4ecab320f06d8554ea6380940ec79",
            "test-labels": "bb300cfdad3c16e7a12a480ee83cd310",
        },
        local_dir="/usr/share/datasets/fashion-mnist",
        debian_package="dataset-fashion-mnist",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ),
    "mnist": IdxDataset(
        files=_NAMES,
        gz_md5={
            "train-images": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels": "d53e105ee54ea40749a09fcbcd1e9432",
            "test-images": "9fb629c4189551a2d022fa330f9573f3",
            "test-labels": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
}


def read_idx(path: str | Path) -> np.ndarray:
    """Parse an IDX file (gzipped or not) into an array; a corrupt file raises UserError naming it."""
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise UserError(f"{path}: cannot be read ({exc}); delete it and run `tinyopt fetch` again") from None
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise UserError(f"{path}: not an IDX file (bad magic number); delete it and run `tinyopt fetch` again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(dtypes[raw[2]])
    expected = header + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise UserError(
            f"{path}: truncated or padded IDX file ({len(raw)} bytes, header says {expected}); "
            "delete it and run `tinyopt fetch` again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _checksum_ok(spec: IdxDataset, split: str, path: Path) -> bool:
    if split in spec.gz_md5 and hashlib.md5(path.read_bytes()).hexdigest() == spec.gz_md5[split]:
        return True
    if split in spec.idx_sha256:
        try:
            payload = gzip.decompress(path.read_bytes())
        except (OSError, EOFError, zlib.error):
            return False
        return hashlib.sha256(payload).hexdigest() == spec.idx_sha256[split]
    return False


def verify_idx_dir(name: str, directory: Path) -> None:
    """Check that every file of an IDX dataset is present and has a known checksum."""
    spec = IDX_DATASETS[name]
    for split, file_name in spec.files.items():
        path = directory / file_name
        if not path.is_file():
            raise UserError(f"{path}: missing {name} file; run `tinyopt fetch` to restore it")
        if not _checksum_ok(spec, split, path):
            raise UserError(
                f"{path}: checksum mismatch (corrupt or not the {name} file); delete it and run `tinyopt fetch`"
            )


def _find_one(directory: Path, patterns: tuple[str, ...], what: str) -> Path:
    for pattern in patterns:
        found = sorted(directory.glob(pattern))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise UserError(
                f"{directory}: several files match {pattern} ({', '.join(p.name for p in found)}); keep one"
            )
    raise UserError(f"{directory}: no {what} file (expected a name like {patterns[0]})")


def load_user_idx(directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
    """A directory of four IDX files named as MNIST names them (gzipped or not)."""
    files = (
        _find_one(directory, ("train-images*", "*train*images*"), "training images"),
        _find_one(directory, ("train-labels*", "*train*labels*"), "training labels"),
        _find_one(directory, ("t10k-images*", "test-images*", "*test*images*"), "test images"),
        _find_one(directory, ("t10k-labels*", "test-labels*", "*test*labels*"), "test labels"),
    )
    arrays = tuple(read_idx(f) for f in files)
    check_arrays(arrays, str(directory))
    return arrays
