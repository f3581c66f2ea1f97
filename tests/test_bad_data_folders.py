"""Bad datasets on disk through `run --data`: IDX files that are truncated, missing or disagree in
length, and image folders with one class, an unreadable or odd-sized image, an empty class folder,
or symbolic links that loop or point nowhere.

Each case must exit 2 with one `tinyopt: error: ...` line and write nothing (see
tests/bad_input_helpers.py).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from tests.bad_input_helpers import N_TEST, N_TRAIN, RNG, Case, check_bad_input, images


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def idx_dir(root: Path, n_labels: int = N_TRAIN, truncate: bool = False, drop: str | None = None) -> Path:
    directory = root / "idx"
    directory.mkdir()
    files = {
        "train-images-idx3-ubyte.gz": images(N_TRAIN),
        "train-labels-idx1-ubyte.gz": np.arange(n_labels) % 3,
        "t10k-images-idx3-ubyte.gz": images(N_TEST),
        "t10k-labels-idx1-ubyte.gz": np.arange(N_TEST) % 3,
    }
    for name, array in files.items():
        if name != drop:
            blob = idx_bytes(array)
            (directory / name).write_bytes(gzip.compress(blob[:-5] if truncate and "train-images" in name else blob))
    return directory


def image_dir(root: Path, classes=("cat", "dog"), per_class: int = 4, sizes: dict | None = None) -> Path:
    from PIL import Image

    directory = root / "images"
    for name in classes:
        (directory / name).mkdir(parents=True)
        for i in range(per_class):
            side = (sizes or {}).get((name, i), 8)
            Image.fromarray(RNG.integers(0, 256, (side, side)).astype(np.uint8)).save(directory / name / f"{i}.png")
    return directory


def symlink_loop(root: Path) -> list[str]:
    directory = image_dir(root)
    os.symlink(directory, directory / "cat" / "again")  # cat/again -> images/: copying would never end
    return ["run", "--data", str(directory)]


def dangling_link(root: Path) -> list[str]:
    directory = image_dir(root)
    os.symlink(root / "nowhere.png", directory / "dog" / "9.png")
    return ["run", "--data", str(directory)]


def unreadable_image(root: Path) -> list[str]:
    directory = image_dir(root)
    (directory / "dog" / "2.png").write_bytes(b"not a png at all")
    return ["run", "--data", str(directory)]


def empty_class(root: Path) -> list[str]:
    directory = image_dir(root)
    (directory / "bird").mkdir()
    return ["run", "--data", str(directory)]


CASES = [
    # IDX and image directories.
    Case(
        "truncated-idx",
        lambda root: ["run", "--data", str(idx_dir(root, truncate=True))],
        "truncated or padded IDX file",
    ),
    Case(
        "idx-without-labels",
        lambda root: ["run", "--data", str(idx_dir(root, drop="train-labels-idx1-ubyte.gz"))],
        "no training labels file",
    ),
    Case(
        "idx-count-mismatch",
        lambda root: ["run", "--data", str(idx_dir(root, n_labels=50))],
        "x_train has 60 examples and y_train 50",
    ),
    Case(
        "images-one-class",
        lambda root: ["run", "--data", str(image_dir(root, classes=("cat",)))],
        "needs at least two class folders",
    ),
    Case(
        "class-folder-named-idx",
        lambda root: ["run", "--data", str(image_dir(root, classes=("idx-birds",)))],
        "needs at least two class folders",
    ),  # read as images (it used to be taken for IDX data)
    Case("unreadable-image", unreadable_image, "2.png: not a readable image"),
    Case(
        "images-of-two-sizes",
        lambda root: ["run", "--data", str(image_dir(root, sizes={("dog", 1): 9}))],
        "resize the images to one size",
    ),
    Case("empty-class-folder", empty_class, "bird: a class folder with no images"),
    Case("symlink-loop", symlink_loop, "again: a symbolic link to"),
    Case("dangling-symlink", dangling_link, "9.png: a symbolic link that loops or points nowhere"),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    check_bad_input(case, tmp_path, request)
