"""Bad inputs a demanding user would try, each through the real CLI in a project directory.

Every case must end the same way: exit status 2, exactly one line on stderr (`tinyopt: error: ...`)
that names the problem, no traceback, and nothing written or changed anywhere in the case's directory
(the project's reports/, artifacts/, data/ copies, mlflow.db, and the user's own input files). The
checks run before Prefect, MLflow or any training start, so each case costs seconds.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import SMALL, make_project, run_cli
from tinyopt.datasets.split import split_indices
from tinyopt.params import DataParams

RNG = np.random.default_rng(0)
N_TRAIN, N_TEST, CLASSES = 60, 20, 3


def images(n: int, side: int = 6) -> np.ndarray:
    return RNG.integers(0, 256, (n, side, side)).astype(np.uint8)


def good(**overrides) -> dict:
    """A small valid image dataset (6x6, three classes, every class in every split), with overrides."""
    arrays = dict(
        x_train=images(N_TRAIN),
        y_train=np.arange(N_TRAIN) % CLASSES,
        x_test=images(N_TEST),
        y_test=np.arange(N_TEST) % CLASSES,
    )
    return {**arrays, **overrides}


def tabular(**overrides) -> dict:
    """Eight features per example, three classes: what the small test models take."""
    arrays = dict(
        x_train=RNG.random((N_TRAIN, 8)).astype(np.float32),
        y_train=np.arange(N_TRAIN) % CLASSES,
        x_test=RNG.random((N_TEST, 8)).astype(np.float32),
        y_test=np.arange(N_TEST) % CLASSES,
    )
    return {**arrays, **overrides}


def with_nan(array: np.ndarray, value: float = np.nan) -> np.ndarray:
    array = array.astype(np.float32)
    array.flat[17] = value
    return array


def npz(root: Path, arrays: dict, name: str = "data.npz") -> Path:
    np.savez(root / name, **arrays)
    return root / name


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


def params_text(root: Path, text: str) -> list[str]:
    (root / "project" / "params.yaml").write_text(text)
    return ["run"]


def set_params(root: Path, **sections) -> None:
    """Change keys of the project's params.yaml (the SMALL one make_project wrote)."""
    path = root / "project" / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_data(root: Path, arrays: dict, **sections) -> list[str]:
    set_params(root, **sections)
    return ["run", "--data", str(npz(root, arrays))]


def class_in_validation_only(root: Path) -> list[str]:
    """Class 2 has one training example, and the seeded split puts it in the validation split."""
    _, val_idx = split_indices(N_TRAIN, DataParams(**SMALL["data"]), SMALL["seed"])
    labels = np.arange(N_TRAIN) % 2
    labels[val_idx[0]] = 2
    return run_data(root, good(y_train=labels))


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


# --- models: built once per module (small tf-keras models, saved as a user would) ---------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    import tensorflow as tf

    root = tmp_path_factory.mktemp("models")
    layers = tf.keras.layers

    def dense(inputs: int, outputs: int, name: str, activation: str = "softmax") -> None:
        layers_ = [layers.InputLayer((inputs,)), layers.Dense(outputs, activation=activation)]
        tf.keras.Sequential(layers_).save(root / name)

    dense(8, 3, "mlp3.keras")
    dense(8, 5, "mlp5.keras")
    dense(8, 1, "binary.keras", activation="sigmoid")
    dense(7, 3, "takes7.keras")
    dense(8, 2, "regress2.keras", activation="linear")
    dense(8, 3, "mlp3.h5")
    first, second = tf.keras.Input((8,)), tf.keras.Input((8,))
    joined = layers.Dense(3)(layers.Concatenate()([first, second]))
    tf.keras.Model([first, second], joined).save(root / "two_inputs.keras")
    blob = (root / "mlp3.h5").read_bytes()
    (root / "truncated.h5").write_bytes(blob[: len(blob) // 3])  # a download cut short
    (root / "garbage.h5").write_bytes(blob[:8] + os.urandom(4096))  # the HDF5 signature, then noise
    (root / "text.keras").write_text("this is not a model\n")
    (root / "not_a_savedmodel").mkdir()
    (root / "not_a_savedmodel" / "README.txt").write_text("weights elsewhere\n")
    return root


def run_model(model: str, arrays: dict | None = None, **sections) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, models: Path) -> list[str]:
        set_params(root, **sections)
        return ["run", "--model", str(models / model), "--data", str(npz(root, arrays or tabular()))]

    return build


# --- other commands --------------------------------------------------------------------------------


def prepare_raw(arrays: dict) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        raw = root / "raw"
        raw.mkdir()
        npz(raw, arrays)
        set_params(root, data={"dataset": "npz", "path": str(root / "data.npz")})
        return ["prepare", "--raw", str(raw), "--out", str(root / "project" / "prepared.npz")]

    return build


def train_with(model: str) -> Callable[[Path, Path], list[str]]:
    def build(root: Path, models: Path) -> list[str]:
        arrays = tabular()
        np.savez(
            root / "prepared.npz",
            x_train=arrays["x_train"][:50],
            y_train=arrays["y_train"][:50],
            x_val=arrays["x_train"][50:],
            y_val=arrays["y_train"][50:],
            x_test=arrays["x_test"],
            y_test=arrays["y_test"],
            input_scale=np.float64(1.0),
        )
        set_params(root, model={"path": str(models / model)})
        return ["train", "--prepared", str(root / "prepared.npz"), "--out-dir", str(root / "project" / "baseline")]

    return build


def summary_file(content: bytes) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        (root / "summary.json").write_bytes(content)
        return ["register", "--summary", str(root / "summary.json")]

    return build


@dataclass
class Case:
    id: str
    build: Callable  # (case dir) -> CLI args, or (case dir, models dir) -> CLI args when needs_models
    expect: str  # a distinctive piece of the one error line
    env: dict | None = None
    needs_models: bool = False


def data(id: str, arrays: dict, expect: str, **sections) -> Case:
    return Case(id, lambda root: run_data(root, arrays, **sections), expect)


def model(id: str, expect: str, name: str, arrays: dict | None = None, **sections) -> Case:
    return Case(id, run_model(name, arrays, **sections), expect, needs_models=True)


def params(id: str, text: str, expect: str) -> Case:
    return Case(id, lambda root: params_text(root, text), expect)


ONE_HOT4 = np.eye(4, dtype=np.float32)[np.arange(N_TRAIN) % 4]
SECRET_URI = "http://alice:s3cret-token@127.0.0.1:9"

CASES = [
    # The data's values and shapes (a .npz through --data).
    data("nan-in-x_train", good(x_train=with_nan(images(N_TRAIN))), "x_train has NaN or infinite values in 1 examples"),
    data("inf-in-x_test", good(x_test=with_nan(images(N_TEST), np.inf)), "x_test has NaN or infinite values"),
    data(
        "nan-in-regression-target",
        good(y_train=with_nan(np.ones(N_TRAIN))),
        "y_train has NaN or infinite values",
        task={"kind": "regression"},
    ),
    data(
        "float-labels", good(y_train=(np.arange(N_TRAIN) % 3) / 2), "y_train holds non-integer labels (0.5 at index 1)"
    ),
    data("negative-labels", good(y_test=np.arange(N_TEST) % 3 - 1), "y_test holds negative labels (-1 at index 0)"),
    data("string-labels", good(y_train=np.array(["cat", "dog", "owl"] * 20)), "y_train holds text values"),
    data(
        "string-regression-targets",
        good(y_train=np.array(["1.5"] * N_TRAIN)),
        "y_train holds text values",
        task={"kind": "regression"},
    ),
    data(
        "object-array",
        good(y_train=np.array([1, "two", None] * 20, dtype=object)),
        "not a readable .npz file (Object arrays cannot be loaded when allow_pickle=False)",
    ),
    data("empty-arrays", good(x_train=np.zeros((0, 6, 6), np.uint8), y_train=np.zeros(0, int)), "x_train is empty"),
    data("0-d-array", good(x_test=np.float32(3.0)), "x_test is a single value (a 0-d array)"),
    data("1-d-inputs", good(x_train=np.zeros(N_TRAIN), x_test=np.zeros(N_TEST)), "x_train has shape (60,): one number"),
    data(
        "train-test-shapes-differ",
        good(x_test=images(N_TEST, side=7)),
        "each x_train entry has shape (6, 6), each x_test entry (7, 7)",
    ),
    data("x-y-length-mismatch", good(y_train=np.arange(N_TRAIN - 1) % 3), "x_train has 60 examples and y_train 59"),
    data("missing-key", {k: v for k, v in good().items() if k != "y_test"}, "the .npz lacks y_test"),
    data(
        "one-hot-widths-differ",
        good(y_train=np.eye(3)[np.arange(N_TRAIN) % 3], y_test=np.eye(4)[np.arange(N_TEST) % 4]),
        "each y_train entry has shape (3,), each y_test entry (4,)",
    ),
    data(
        "2-d-labels-not-one-hot",
        good(y_train=RNG.random((N_TRAIN, 3)), y_test=RNG.random((N_TEST, 3))),
        "has shape (60, 3) but is not one-hot",
    ),
    data("a-single-class", good(y_train=np.zeros(N_TRAIN, int)), "y_train holds a single class (0)"),
    Case("class-only-in-validation", class_in_validation_only, "class 2 has 1 training examples and none is left"),
    data("too-few-to-split", good(x_train=images(1), y_train=np.array([0])), "leave none to train on"),
    data("anomaly-labels-not-0-1", good(), "y_train holds labels other than 0 and 1 ([2])", task={"kind": "anomaly"}),
    data(
        "anomaly-test-one-label",
        good(y_train=np.arange(N_TRAIN) % 2, y_test=np.zeros(N_TEST, int)),
        "y_test holds only label 0; AUC needs",
        task={"kind": "anomaly"},
    ),
    data(
        "regression-without-a-model",
        good(y_train=np.ones(N_TRAIN), y_test=np.ones(N_TEST)),
        "the built-in paper-cnn is a classifier",
        task={"kind": "regression"},
    ),
    data("tabular-data-for-the-paper-cnn", tabular(), "the built-in paper-cnn takes images"),
    Case(
        "zero-byte-npz",
        lambda root: (root / "d.npz").touch() or ["run", "--data", str(root / "d.npz")],
        "d.npz: not a readable .npz file",
    ),
    Case(
        "garbage-npz",
        lambda root: (root / "d.npz").write_bytes(os.urandom(300)) and ["run", "--data", str(root / "d.npz")],
        "d.npz: not a readable .npz file",
    ),
    Case(
        "truncated-npz",
        lambda root: (
            (root / "d.npz").write_bytes(npz(root, good()).read_bytes()[:2000])
            and ["run", "--data", str(root / "d.npz")]
        ),
        "d.npz: not a readable .npz file",
    ),
    Case(
        "a-.npy-not-an-.npz",
        lambda root: np.save(root / "d.npy", images(5)) or ["run", "--data", str(root / "d.npy")],
        "a single .npy array, not an .npz archive",
    ),
    Case(
        "data-path-missing",
        lambda root: ["run", "--data", str(root / "nowhere.npz")],
        "nowhere.npz: no such file or directory",
    ),
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
    # params.yaml.
    params("epochs-true", "train: {epochs: true}\n", "'train.epochs': Input should be a number, not true/false"),
    params("learning-rate-false", "train: {learning_rate: false}\n", "'train.learning_rate': Input should be a number"),
    params(
        "fraction-true", "data: {validation_fraction: true}\n", "'data.validation_fraction': Input should be a number"
    ),
    params("key-twice", "train:\n  epochs: 3\n  epochs: 30\n", "the key 'epochs' is given twice in one mapping"),
    params("section-twice", "seed: 1\ntrain: {epochs: 2}\ntrain: {epochs: 3}\n", "the key 'train' is given twice"),
    params("a-list", "- seed\n- data\n", "the top level must be a mapping"),
    params("a-string", "just some text\n", "the top level must be a mapping"),
    params("wrong-type", "train: {batch_size: big}\n", "'train.batch_size': Input should be a valid integer"),
    params("fractional-seed", "seed: 1.5\n", "'seed': Input should be a valid integer, got a number with a fractional"),
    params("unknown-key", "train: {epoch: 3}\n", "unknown key 'train.epoch'"),
    params(
        "negative-fraction",
        "data: {validation_fraction: -0.1}\n",
        "'data.validation_fraction': Input should be greater than 0",
    ),
    params("section-not-a-mapping", "train: 5\n", "'train': Input should be a valid dictionary"),
    params("bad-yaml", "train:\n  epochs: [1,\n", "not valid YAML at line"),
    params("empty-file", "", "params.yaml: empty file"),
    Case(
        "not-utf8",
        lambda root: (root / "project" / "params.yaml").write_bytes(b"seed: \xff\xfe\n") and ["run"],
        "cannot be read as text",
    ),
    # Models (--model), with data they could fit.
    model("output-width-vs-classes", "the model has 5 outputs and the data 3 classes (labels 0..2)", "mlp5.keras"),
    model(
        "labels-beyond-the-outputs",
        "the model has 3 outputs and the data 8 classes (labels 0..7)",
        "mlp3.keras",
        tabular(y_train=np.arange(N_TRAIN) % 8, y_test=np.arange(N_TEST) % 8),
    ),
    model(
        "one-hot-wider-than-the-model",
        "the model has 3 outputs and the data one-hot labels with 4 columns",
        "mlp3.keras",
        tabular(y_train=ONE_HOT4, y_test=np.eye(4)[np.arange(N_TEST) % 4]),
    ),
    model("binary-model-three-classes", "the model has 1 output (a binary classifier)", "binary.keras"),
    model("two-inputs", "the model has 2 inputs; tinyopt handles models with one input", "two_inputs.keras"),
    model("input-shape", "the model takes inputs of shape (7,), the data has (8,)", "takes7.keras"),
    model(
        "regression-width",
        "the model has 2 outputs and the data 1 regression target",
        "regress2.keras",
        tabular(y_train=RNG.random(N_TRAIN), y_test=RNG.random(N_TEST)),
        task={"kind": "regression"},
    ),
    model("truncated-h5", "truncated.h5: ", "truncated.h5"),
    model("garbage-h5", "garbage.h5: ", "garbage.h5"),
    model("text-file-named-.keras", "text.keras: not a loadable Keras model", "text.keras"),
    model("directory-not-a-savedmodel", "not_a_savedmodel: not a loadable Keras model", "not_a_savedmodel"),
    model("model-missing", "nope.keras: no such model file", "nope.keras"),
    # Other commands.
    Case("prepare-nan", prepare_raw(good(x_test=with_nan(images(N_TEST)))), "x_test has NaN or infinite values"),
    Case("prepare-float-labels", prepare_raw(good(y_test=np.full(N_TEST, 0.25))), "y_test holds non-integer labels"),
    Case("train-corrupt-model", train_with("truncated.h5"), "truncated.h5: ", needs_models=True),
    Case(
        "train-width-mismatch",
        train_with("mlp5.keras"),
        "the model has 5 outputs and the data 3 classes",
        needs_models=True,
    ),
    Case("register-empty-summary", summary_file(b""), "not a readable run summary (empty file)"),
    Case(
        "register-corrupt-summary",
        summary_file(b'{"run_id": "x", "variants": ['),
        "not a readable run summary (not JSON",
    ),
    Case("register-summary-a-list", summary_file(b"[1, 2]"), "not a tinyopt run summary"),
    Case(
        "register-summary-missing-keys",
        summary_file(json.dumps({"run_id": "x"}).encode()),
        "not a tinyopt run summary (missing or malformed: variants, picks",
    ),
    Case("register-summary-binary", summary_file(b"\x89PNG\r\n\x1a\n" + os.urandom(64)), "not a readable run summary"),
    # Credentials in MLFLOW_TRACKING_URI are never printed (the server does not answer: one line).
    Case(
        "tracking-uri-credentials",
        lambda root: ["run", "--data", str(npz(root, good()))],
        "MLflow tracking server http://alice:***@127.0.0.1:9 is unreachable",
        env={"MLFLOW_TRACKING_URI": SECRET_URI},
    ),
    Case(
        "tracking-uri-credentials-ui",
        lambda root: ["ui"],
        "points at a server already (http://alice:***@127.0.0.1:9)",
        env={"MLFLOW_TRACKING_URI": SECRET_URI},
    ),
    Case(
        "tracking-uri-bad-port",
        lambda root: ["run", "--data", str(npz(root, good()))],
        "MLFLOW_TRACKING_URI http://alice:***@host:port is not a valid URL",
        env={"MLFLOW_TRACKING_URI": "http://alice:s3cret-token@host:port"},
    ),
]


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (files, folders, links) with the sha256 of each file's content."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = "link:" + os.readlink(path)
            elif path.is_file():
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[relative] = "dir"
    return found


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    make_project(tmp_path / "project", reference={"dir": None}, **{k: v for k, v in SMALL.items() if k != "reference"})
    args = case.build(tmp_path, request.getfixturevalue("models")) if case.needs_models else case.build(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(args, cwd=tmp_path / "project", env=case.env, timeout=300)
    output = result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("tinyopt: error: "), output[-3000:]
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in output
    assert "s3cret" not in output
    assert snapshot(tmp_path) == before  # nothing written, changed or removed


def test_there_are_at_least_forty_cases():
    assert len(CASES) >= 40 and len({case.id for case in CASES}) == len(CASES)
