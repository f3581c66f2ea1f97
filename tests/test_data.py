"""Data loading: IDX parsing, checksums, fetching (local copy and download), .npz, and the split."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from tasks.data import fetch_dataset, prepare_dataset
from tests.conftest import needs_fashion, run_cli
from tinyopt.core.errors import UserError
from tinyopt.datasets import idx
from tinyopt.datasets.idx import IdxDataset, read_idx
from tinyopt.datasets.labels import class_labels
from tinyopt.datasets.prepared import load_prepared
from tinyopt.datasets.sources import load_raw
from tinyopt.datasets.split import check_split, split_indices
from tinyopt.params import DataParams


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_small_idx_dataset(directory: Path, n_train: int = 100, n_test: int = 30) -> dict[str, str]:
    """Four small gzipped IDX files in MNIST's layout; returns split -> md5 of each .gz."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images": rng.integers(0, 256, (n_train, 28, 28)),
        "train-labels": np.arange(n_train) % 10,
        "test-images": rng.integers(0, 256, (n_test, 28, 28)),
        "test-labels": np.arange(n_test) % 10,
    }
    directory.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for split, array in arrays.items():
        blob = gzip.compress(idx_bytes(array), mtime=0)
        (directory / idx._NAMES[split]).write_bytes(blob)
        md5[split] = hashlib.md5(blob).hexdigest()
    return md5


@pytest.fixture
def small_mnist(tmp_path, monkeypatch):
    """MNIST's spec pointed at small files made here (the real download needs internet)."""
    source = tmp_path / "source"
    md5 = write_small_idx_dataset(source)
    spec = IdxDataset(files=idx._NAMES, gz_md5=md5, local_dir=str(source))
    monkeypatch.setitem(idx.IDX_DATASETS, "mnist", spec)
    return source, spec


def test_read_idx_roundtrip(tmp_path: Path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a.idx").write_bytes(idx_bytes(array))
    (tmp_path / "a.idx.gz").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx.gz"), array)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\x1f\x8b\x08garbage", "cannot be read"),
        (gzip.compress(b"\x12\x34\x56\x78rest", mtime=0), "not an IDX file"),
        (gzip.compress(idx_bytes(np.zeros((5, 4), np.uint8))[:-3], mtime=0), "truncated or padded IDX file"),
    ],
    ids=["not-gzip", "not-idx", "truncated"],  # stable ids: pytest-xdist workers must collect the same names
)
def test_corrupt_idx_names_the_file_and_the_fix(tmp_path: Path, content: bytes, message: str):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_idx(path)
    assert str(info.value).startswith(str(path))
    assert message in str(info.value) and "tinyopt fetch" in str(info.value)


def test_fetch_copies_from_the_local_source_and_verifies(tmp_path: Path, small_mnist):
    record = fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    assert record.directory == str(tmp_path / "data" / "mnist")
    assert record.version.endswith(".dir")  # DVC's own directory hash
    assert len(record.outputs) == 4 and record.intact()


def test_fetch_downloads_from_a_mirror_when_there_is_no_local_copy(tmp_path: Path, small_mnist, monkeypatch):
    source, spec = small_mnist
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(source))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        mirror = f"http://127.0.0.1:{server.server_address[1]}/"
        dead = "http://127.0.0.1:9/"  # nothing listens on the discard port: the next mirror is tried
        monkeypatch.setitem(
            idx.IDX_DATASETS, "mnist", IdxDataset(files=spec.files, gz_md5=spec.gz_md5, mirrors=(dead, mirror))
        )
        record = fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    finally:
        server.shutdown()
    assert record.intact()
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(spec.files.values())


def test_fetch_with_no_source_fails_in_one_line_and_leaves_nothing(tmp_path: Path, small_mnist, monkeypatch):
    _, spec = small_mnist
    monkeypatch.setitem(
        idx.IDX_DATASETS, "mnist", IdxDataset(files=spec.files, gz_md5=spec.gz_md5, mirrors=("http://127.0.0.1:9/",))
    )
    with pytest.raises(UserError, match="not found locally and no mirror answered"):
        fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []  # no half-fetched directory


def test_fetch_replaces_a_corrupted_file(tmp_path: Path, small_mnist):
    fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    victim = tmp_path / "data" / "mnist" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(b"oops")
    record = fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    assert record.intact() and victim.read_bytes() != b"oops"


def test_missing_and_corrupt_files_are_reported_by_name(tmp_path: Path, small_mnist):
    fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    directory = tmp_path / "data" / "mnist"
    (directory / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz: missing mnist file; run `tinyopt fetch`"):
        load_raw("mnist", directory)
    shutil.copy(directory / "t10k-labels-idx1-ubyte.gz", directory / "train-labels-idx1-ubyte.gz")
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte.gz: checksum mismatch"):
        load_raw("mnist", directory)


@needs_fashion
def test_the_real_fashion_mnist_files_verify_and_load(tmp_path: Path):
    record = fetch_dataset(DataParams(), tmp_path / "data")
    x_train, y_train, x_test, y_test = load_raw("fashion-mnist", Path(record.directory))
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert sorted(np.unique(y_train)) == list(range(10))
    assert np.bincount(y_test).tolist() == [1000] * 10


def write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


def test_user_npz_is_copied_in_and_prepared(tmp_path: Path):
    rng = np.random.default_rng(1)
    source = write_npz(
        tmp_path / "mine.npz",
        x_train=rng.random((200, 8)).astype(np.float32),
        y_train=rng.integers(0, 3, 200),
        x_test=rng.random((50, 8)).astype(np.float32),
        y_test=rng.integers(0, 3, 50),
    )
    params = DataParams(dataset="npz", path=str(source))
    record = fetch_dataset(params, tmp_path / "data")
    prepared = prepare_dataset(Path(record.directory), params, seed=0, out=tmp_path / "prepared.npz")
    assert (prepared.num_train, prepared.num_val, prepared.num_test) == (180, 20, 50)
    assert prepared.input_shape == [8] and prepared.num_classes == 3


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not a zip"), "not a readable .npz file"),
        (lambda p: write_npz(p, x_train=np.zeros(3), y_train=np.zeros(3)), "lacks x_test, y_test"),
        (
            lambda p: write_npz(
                p, x_train=np.zeros((3, 2)), y_train=np.zeros(2), x_test=np.zeros((1, 2)), y_test=np.zeros(1)
            ),
            "x_train has 3 examples and y_train 2; they must match",
        ),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_user_npz_is_rejected_in_one_line(tmp_path: Path, make, message):
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(UserError, match=message):
        fetch_dataset(DataParams(dataset="npz", path=str(path)), tmp_path / "data")
    assert not (tmp_path / "data" / "npz" / "data.npz").exists()


def test_split_is_seeded_disjoint_and_leaves_the_test_set_alone(tmp_path: Path, small_mnist):
    record = fetch_dataset(DataParams(dataset="mnist"), tmp_path / "data")
    raw = Path(record.directory)
    params = DataParams(dataset="mnist", validation_fraction=0.2)
    first = prepare_dataset(raw, params, seed=3, out=tmp_path / "a.npz")
    prepare_dataset(raw, params, seed=3, out=tmp_path / "b.npz")
    prepare_dataset(raw, params, seed=4, out=tmp_path / "c.npz")
    assert (first.num_train, first.num_val, first.num_test) == (80, 20, 30)
    a, b, c = (load_prepared(tmp_path / name) for name in ("a.npz", "b.npz", "c.npz"))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])  # same seed, same split
    assert not np.array_equal(a["x_val"], c["x_val"])  # another seed, another split
    x_train, _, x_test, _ = load_raw("mnist", raw)
    np.testing.assert_array_equal(a["x_test"], x_test.astype(np.float32) / 255.0)  # test set untouched, in order
    rows = lambda x: {row.tobytes() for row in x}  # noqa: E731
    assert not rows(a["x_train"]) & rows(a["x_val"])  # validation carved out of train, disjoint
    assert rows(a["x_train"]) | rows(a["x_val"]) == rows(x_train.astype(np.float32) / 255.0)
    assert a["x_train"].dtype == np.float32 and a["x_train"].max() <= 1.0


def test_cli_prepare_on_a_missing_dataset_is_one_line(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("data: {dataset: fashion-mnist}\n")
    result = run_cli(["prepare", "--raw", str(tmp_path / "nowhere")], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "train-images-idx3-ubyte.gz: missing fashion-mnist file; run `tinyopt fetch`" in lines[0]
    assert not (tmp_path / "artifacts").exists()


def test_integral_float_labels_are_class_indices_and_others_are_refused():
    labels, width = class_labels(np.array([0.0, 1.0, 2.0]), "y_train", "d.npz")
    assert labels.dtype == np.int64 and labels.tolist() == [0, 1, 2] and width is None
    labels, width = class_labels(np.eye(4)[[3, 0, 1]], "y_train", "d.npz")
    assert labels.tolist() == [3, 0, 1] and width == 4
    with pytest.raises(UserError, match=r"d.npz: y_train holds non-integer labels \(1.5 at index 1\)"):
        class_labels(np.array([0.0, 1.5]), "y_train", "d.npz")


def test_a_class_missing_from_the_validation_split_is_a_warning_not_an_error():
    from tinyopt.params import TaskParams

    params = DataParams(dataset="npz", path="d.npz", validation_fraction=0.1)
    train_idx, val_idx = split_indices(100, params, seed=0)
    y = np.zeros(100, dtype=np.int64)
    y[train_idx[:5]] = 1  # class 1 only in the training split
    labels = {"train": y, "test": np.array([0, 1]), "classes": 2, "one_hot": None}
    warnings = check_split(labels, 100, params, 0, TaskParams(), "d.npz")
    assert len(warnings) == 1 and "1 of 2 classes have no example in the validation split" in warnings[0]
    y[:] = 0
    y[val_idx[:1]] = 1  # class 1's only example lands in validation: nothing to learn it from
    with pytest.raises(UserError, match="class 1 has 1 training examples and none is left in the training split"):
        check_split({**labels, "train": y}, 100, params, 0, TaskParams(), "d.npz")
