"""Data steps: fetch a dataset's raw files (verified), and prepare a fixed train/validation/test split.

Supported sources: Fashion-MNIST and MNIST as IDX files, or the user's own .npz holding
x_train, y_train, x_test, y_test. The validation set is carved from the training set with a fixed
seed; the test set is never used for training, early stopping or calibration.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinyopt.errors import UserError
from tinyopt.files import atomic_dir, atomic_path, sha256_file, sha256_tree
from tinyopt.lineage import dvc_hash
from tinyopt.params import USER_DATASETS, DataParams, TaskParams
from tinyopt.steps import StepRecord, outputs_of, step_task

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

NPZ_FILE = "data.npz"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


class DatasetRecord(StepRecord):
    name: str
    directory: str
    version: str  # DVC's md5 of the raw directory, as dvc.lock records it


class PreparedRecord(StepRecord):
    path: str
    dataset: str
    dataset_version: str
    num_train: int
    num_val: int
    num_test: int
    input_shape: list[int]
    num_classes: int


# ---------------------------------------------------------------------------------------------------
# IDX parsing and verification


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


# ---------------------------------------------------------------------------------------------------
# Fetch


def _download(url: str, target: Path) -> None:
    with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out)


def _gather_idx(name: str, staging: Path) -> None:
    spec = IDX_DATASETS[name]
    local = Path(spec.local_dir) if spec.local_dir else None
    for file_name in spec.files.values():
        if local and (local / file_name).is_file():
            shutil.copyfile(local / file_name, staging / file_name)
            continue
        errors = []
        for mirror in spec.mirrors:
            try:
                _download(mirror + file_name, staging / file_name)
                break
            except OSError as exc:
                errors.append(f"{mirror}: {exc}")
        else:
            hint = (
                f"install the Debian package {spec.debian_package} (apt-get install {spec.debian_package}) or "
                if spec.debian_package
                else ""
            )
            raise UserError(
                f"cannot get {name} file {file_name}: not found locally and no mirror answered; "
                f"{hint}connect this machine to the internet and run `tinyopt fetch` again"
            )


def _read_npz(path: Path) -> tuple[np.ndarray, ...]:
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


def _kind_of(array: np.ndarray) -> str:
    return {"U": "text", "S": "bytes", "O": "Python object", "c": "complex", "M": "date", "m": "time"}.get(
        array.dtype.kind, str(array.dtype)
    )


def check_arrays(arrays: tuple[np.ndarray, ...], source: str) -> None:
    """What every task needs of x_train, y_train, x_test, y_test: one entry per example, numbers only
    (finite ones), as many labels as inputs, and test examples shaped like the training ones."""
    named = dict(zip(NPZ_KEYS, arrays, strict=False))
    for key, array in named.items():
        if array.ndim == 0:
            raise UserError(f"{source}: {key} is a single value (a 0-d array); it needs one entry per example")
        if len(array) == 0:
            raise UserError(f"{source}: {key} is empty; it needs at least one example")
        if array.dtype.kind not in "biuf":
            raise UserError(
                f"{source}: {key} holds {_kind_of(array)} values; it must hold numbers "
                "(class labels as integers 0..K-1)"
            )
    for x in ("x_train", "x_test"):
        if named[x].ndim < 2:
            raise UserError(
                f"{source}: {x} has shape {named[x].shape}: one number per example; reshape it to "
                f"({len(named[x])}, 1) for a single feature"
            )
    for x, y in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(named[x]) != len(named[y]):
            raise UserError(f"{source}: {x} has {len(named[x])} examples and {y} {len(named[y])}; they must match")
    for a, b in (("x_train", "x_test"), ("y_train", "y_test")):
        if named[a].shape[1:] != named[b].shape[1:]:
            raise UserError(
                f"{source}: each {a} entry has shape {named[a].shape[1:]}, each {b} entry "
                f"{named[b].shape[1:]}; train and test must be shaped alike"
            )
    for key, array in named.items():
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                raise UserError(
                    f"{source}: {key} has NaN or infinite values in {int(bad.sum())} examples (the first "
                    f"at index {int(np.flatnonzero(bad)[0])}); clean or drop them"
                )


def class_labels(y: np.ndarray, key: str, source: str) -> tuple[np.ndarray, int | None]:
    """Classification labels as integer class indices, and the width of one-hot labels (None for
    indices). Integral floats (1.0) are taken as the indices they spell; anything else is an error."""
    width = None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    elif y.ndim == 2:
        if not (np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all()):
            raise UserError(
                f"{source}: {key} has shape {y.shape} but is not one-hot (one 1 per row); give class "
                "indices, or set task.kind: regression for several targets"
            )
        y, width = np.argmax(y, axis=1), y.shape[1]
    elif y.ndim > 2:
        raise UserError(f"{source}: {key} has shape {y.shape}; classification labels are class indices or one-hot rows")
    if y.dtype.kind == "f":
        fractional = y != np.round(y)
        if fractional.any():
            first = int(np.flatnonzero(fractional)[0])
            raise UserError(
                f"{source}: {key} holds non-integer labels ({y[first]:g} at index {first}); "
                "classification needs class indices 0..K-1 (task.kind: regression for continuous targets)"
            )
    y = y.astype(np.int64)
    if (y < 0).any():
        first = int(np.flatnonzero(y < 0)[0])
        raise UserError(
            f"{source}: {key} holds negative labels ({y[first]} at index {first}); classes are numbered 0..K-1"
        )
    return y, width


def check_labels(arrays: tuple[np.ndarray, ...], task: TaskParams, source: str) -> dict | None:
    """The labels fit the task. For classification and anomaly: {'train': ..., 'test': ...} as class
    indices, 'classes' (how many) and 'one_hot' (width, or None); None for regression."""
    _, y_train, _, y_test = arrays
    if task.kind == "regression":
        return None
    train, width = class_labels(y_train, "y_train", source)
    test, test_width = class_labels(y_test, "y_test", source)
    if width != test_width:
        raise UserError(
            f"{source}: y_train is {_label_form(width)} and y_test {_label_form(test_width)}; give both alike"
        )
    if len(np.unique(train)) < 2:
        raise UserError(
            f"{source}: y_train holds a single class ({int(train[0])}); a {task.kind} task needs at least two"
        )
    if task.kind == "anomaly":
        for key, y in (("y_train", train), ("y_test", test)):
            if not np.isin(y, (0, 1)).all():
                others = sorted(set(np.unique(y).tolist()) - {0, 1})[:5]
                raise UserError(
                    f"{source}: {key} holds labels other than 0 and 1 ({others}); an anomaly task "
                    "scores against 0 (normal) and 1 (anomaly)"
                )
        if len(np.unique(test)) < 2:
            raise UserError(
                f"{source}: y_test holds only label {int(test[0])}; AUC needs normal (0) and anomalous (1) "
                "test examples"
            )
    classes = width or int(max(train.max(), test.max())) + 1
    return {"train": train, "test": test, "classes": classes, "one_hot": width}


def _label_form(width: int | None) -> str:
    return f"one-hot with {width} columns" if width else "class indices"


def split_indices(num_examples: int, params: DataParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into the training set: a seeded permutation, cut to train_limit,
    with validation_fraction of it (at least one example) for validation."""
    order = np.random.default_rng(seed).permutation(num_examples)
    if params.train_limit:
        order = order[: params.train_limit]
    num_val = max(1, int(round(len(order) * params.validation_fraction)))
    return order[num_val:], order[:num_val]


def check_split(
    labels: dict | None, num_examples: int, params: DataParams, seed: int, task: TaskParams, source: str
) -> list[str]:
    """Errors for a split that cannot train: no training example left, or a class with none in the
    training split (the model could never learn it); for anomaly, a validation split without both
    labels (AUC is undefined). Returns warnings for what only weakens the run: a class absent from
    the validation split (early stopping and the picks do not see it)."""
    train_idx, val_idx = split_indices(num_examples, params, seed)
    limit = f" and train_limit {params.train_limit}" if params.train_limit else ""
    if len(train_idx) == 0:
        raise UserError(
            f"{source}: {num_examples} training examples leave none to train on after the validation "
            f"split (validation_fraction {params.validation_fraction}{limit}); give more data"
        )
    if labels is None:
        return []
    y_train = labels["train"]
    present = np.union1d(np.unique(y_train), np.unique(labels["test"]))
    counts = np.bincount(y_train[train_idx], minlength=labels["classes"])
    empty = [int(c) for c in present if counts[c] == 0]
    if empty:
        have = np.bincount(y_train, minlength=labels["classes"])
        raise UserError(
            f"{source}: class {empty[0]} has {have[empty[0]]} training examples and none is left in the "
            f"training split (validation_fraction {params.validation_fraction}{limit}); give every class "
            "a few examples more"
        )
    val_classes = set(np.unique(y_train[val_idx]).tolist())
    if task.kind == "anomaly" and len(val_classes) < 2:
        raise UserError(
            f"{source}: the validation split ({len(val_idx)} examples) holds only label "
            f"{val_classes.pop()}; AUC needs both: give more examples or raise "
            "data.validation_fraction"
        )
    missing = [int(c) for c in present if c not in val_classes]
    if missing:
        return [
            f"{source}: {len(missing)} of {len(present)} classes have no example in the validation split "
            f"({len(val_idx)} examples; e.g. class {missing[0]}): early stopping and the picks will not see them"
        ]
    return []


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
        (_load_user_idx if params.dataset == "idx" else _load_images)(source, params)  # refuse bad data early
        if not target.is_dir() or sha256_tree(target) != sha256_tree(source):
            with atomic_dir(target) as staging:
                shutil.copytree(source, staging, dirs_exist_ok=True)
    elif params.dataset == "npz":
        source = Path(params.path)  # type: ignore[arg-type]
        if not source.is_file():
            raise UserError(f"{source}: no such file (data.path in params.yaml must point at your .npz)")
        _read_npz(source)
        if not (target / NPZ_FILE).is_file() or sha256_file(target / NPZ_FILE) != sha256_file(source):
            with atomic_path(target / NPZ_FILE) as tmp:
                shutil.copyfile(source, tmp)
    else:
        try:
            verify_idx_dir(params.dataset, target)
        except UserError:
            with atomic_dir(target) as staging:
                _gather_idx(params.dataset, staging)
                verify_idx_dir(params.dataset, staging)
    files = sorted(p for p in target.iterdir() if p.is_file())
    return DatasetRecord(
        name=params.dataset, directory=str(target), version=dvc_hash(target), outputs=outputs_of(*files)
    )


# ---------------------------------------------------------------------------------------------------
# Prepare


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


def _load_user_idx(directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
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


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _read_class_dirs(root: Path) -> tuple[list[np.ndarray], list[int], list[str]]:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels, shape = [], [], None
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise UserError(
                f"{root / name}: a class folder with no images ({', '.join(IMAGE_SUFFIXES)}); add some or "
                "remove the folder"
            )
        for file in files:
            try:
                with Image.open(file) as image:
                    array = np.asarray(image.convert("L" if image.mode in ("L", "1", "P", "I;16") else "RGB"))
            except (UnidentifiedImageError, OSError) as exc:
                raise UserError(f"{file}: not a readable image ({exc}); remove or replace it") from None
            if shape is not None and array.shape != shape:
                raise UserError(
                    f"{file}: {array.shape[1]}x{array.shape[0]} pixels, the others are "
                    f"{shape[1]}x{shape[0]}; resize the images to one size"
                )
            shape = array.shape
            images.append(array)
            labels.append(label)
    return images, labels, classes


def _load_images(directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
    """One sub-directory of images per class; with train/ and test/ sub-directories, those are the
    split, otherwise `test_fraction` of each class (seeded by file order) is the test set."""
    _refuse_symlink_loops(directory)
    if (directory / "train").is_dir() and (directory / "test").is_dir():
        x_train, y_train, classes = _read_class_dirs(directory / "train")
        x_test, y_test, test_classes = _read_class_dirs(directory / "test")
        if classes != test_classes:
            raise UserError(f"{directory}: train/ and test/ have different class folders ({classes} vs {test_classes})")
        arrays = (x_train, y_train, x_test, y_test)
    else:
        images, labels, classes = _read_class_dirs(directory)
        fraction = params.test_fraction if params else 0.2
        rng = np.random.default_rng(0)
        test = np.zeros(len(images), dtype=bool)
        for label in set(labels):
            members = np.flatnonzero(np.asarray(labels) == label)
            test[rng.choice(members, size=max(1, int(round(len(members) * fraction))), replace=False)] = True
        arrays = (
            [i for i, t in zip(images, test, strict=False) if not t],
            [label for label, t in zip(labels, test, strict=False) if not t],
            [i for i, t in zip(images, test, strict=False) if t],
            [label for label, t in zip(labels, test, strict=False) if t],
        )
    if len(classes) < 2 or not arrays[0] or not arrays[2]:
        raise UserError(f"{directory}: needs at least two class folders with images in both splits")
    x_train, y_train, x_test, y_test = arrays
    return np.stack(x_train), np.asarray(y_train), np.stack(x_test), np.asarray(y_test)


def _refuse_symlink_loops(root: Path) -> None:
    """A link to a folder that holds it makes copying the directory endless (shutil.copytree follows
    links); a link that loops or points nowhere is no image either. Say which link, once."""
    for folder, dirs, files in os.walk(root):  # os.walk itself does not follow links
        for name in dirs + files:
            link = Path(folder) / name
            if not link.is_symlink():
                continue
            try:
                target = link.resolve(strict=True)
            except (OSError, RuntimeError):
                raise UserError(f"{link}: a symbolic link that loops or points nowhere; remove it") from None
            inside = Path(folder).resolve()
            if target == inside or target in inside.parents:
                raise UserError(
                    f"{link}: a symbolic link to {target}, a folder that contains it (a loop); remove the link"
                )


def load_raw(dataset: str, directory: Path, params: DataParams | None = None) -> tuple[np.ndarray, ...]:
    """x_train, y_train, x_test, y_test from a fetched dataset directory, verified first."""
    if dataset == "idx":
        return _load_user_idx(directory)
    if dataset == "images":
        return _load_images(directory, params)
    if dataset == "npz":
        path = directory / NPZ_FILE
        if not path.is_file():
            raise UserError(f"{path}: missing; run `tinyopt fetch` to copy your .npz in")
        return _read_npz(path)
    verify_idx_dir(dataset, directory)
    files = IDX_DATASETS[dataset].files
    return tuple(read_idx(directory / files[split]) for split in SPLITS)  # type: ignore[return-value]


def check_data(
    arrays: tuple[np.ndarray, ...], params: DataParams, seed: int, task: TaskParams, source: str
) -> tuple[dict | None, list[str]]:
    """Everything about the data that can fail a run, checked before one starts: the labels for the
    task and the split. Returns check_labels' answer and the warnings to show."""
    check_split(None, len(arrays[0]), params, seed, task, source)  # enough examples at all, before their labels
    if params.test_limit:  # the test examples the run will score on
        arrays = (*arrays[:2], arrays[2][: params.test_limit], arrays[3][: params.test_limit])
    labels = check_labels(arrays, task, source)
    return labels, check_split(labels, len(arrays[0]), params, seed, task, source)


def load_source(params: DataParams) -> tuple[np.ndarray, ...] | None:
    """The dataset's arrays read where they are now, without copying anything (to check them before a
    run): the user's file or directory, or a built-in dataset's verified local files; None when a
    built-in dataset has none yet (fetching verifies it by checksum)."""
    if params.dataset in USER_DATASETS:
        source = Path(params.path)  # type: ignore[arg-type]
        if params.dataset == "npz":
            if not source.is_file():
                raise UserError(f"{source}: no such file (data.path in params.yaml must point at your .npz)")
            return _read_npz(source)
        if not source.is_dir():
            raise UserError(f"{source}: no such directory (data.path must point at your {params.dataset} directory)")
        return (_load_user_idx if params.dataset == "idx" else _load_images)(source, params)
    from tinyopt import layout

    spec = IDX_DATASETS[params.dataset]
    for directory in (layout.DATA_ROOT / params.dataset, Path(spec.local_dir) if spec.local_dir else None):
        if directory is not None and all((directory / name).is_file() for name in spec.files.values()):
            try:
                return load_raw(params.dataset, directory)
            except UserError:
                continue  # a damaged copy: fetching replaces it
    return None


def prepare_dataset(raw_dir: Path, params: DataParams, seed: int, out: Path) -> PreparedRecord:
    """Split into train / validation / test with a fixed seed and write one .npz (atomically).
    The data's shapes and values were checked on loading; its labels are check_data's concern."""
    x_train, y_train, x_test, y_test = load_raw(params.dataset, raw_dir, params)
    y_train, y_test = _sparse_if_one_hot(y_train), _sparse_if_one_hot(y_test)
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


def _sparse_if_one_hot(y: np.ndarray) -> np.ndarray:
    """One-hot labels become class indices; anything else is kept."""
    if y.ndim == 2 and y.shape[1] > 1 and np.isin(y, (0, 1)).all() and (y.sum(axis=1) == 1).all():
        return np.argmax(y, axis=1)
    return y


def load_prepared(path: str | Path) -> dict[str, np.ndarray]:
    """The prepared split with inputs as float32, scaled as prepared (8-bit data to [0, 1] by default)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: missing prepared data; run `tinyopt prepare` (or `tinyopt run`)")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    scale = float(arrays.pop("input_scale", 1 / 255))
    for key in ("x_train", "x_val", "x_test"):
        x = arrays[key]
        arrays[key] = (
            (x.astype(np.float64) * scale).astype(np.float32)
            if x.dtype.kind in "iub" or scale != 1
            else x.astype(np.float32)
        )
    return arrays


fetch_task = step_task(fetch_dataset, name="fetch", retries=2)
prepare_task = step_task(prepare_dataset, name="prepare")
