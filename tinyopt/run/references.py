"""Reference models: the .tflite files a run is compared against, measured in the same harness.

The paper's own models are read from `reference.dir` when it exists (a machine without network, CI), else from
data/reference/seed-cnn1/, downloaded once from the authors' repository at a pinned commit (`reference.url`).
`reference.dir: null` means no reference models.
Every file is checked against the sha256 below: a file that differs is refused, never measured."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.core.files import atomic_dir, sha256_file
from tinyopt.datasets.download import download
from tinyopt.params import ReferenceParams
from tinyopt.runtimes import litert

PAPER_MODELS_DIR = layout.DATA_ROOT / "reference" / "seed-cnn1"


@dataclass(frozen=True)
class PublishedFile:
    path: str  # in the authors' repository
    sha256: str


_JOINT = "Pre-training_Post-training_and_Joint_Optimization/CNN1/tflite_models/"
_GRAPH = "Graph_Optimization/CNN1/tflite_models/"
_OPERATIONS = "Operations_Optimization/CNN1/tflite_models/"
# The paper's published CNN1 models (github.com/bharathsudharsan/CNN_on_MCU, MIT licence), renamed for clarity,
# as ../shared/reference/seed-cnn1/README.md lists them. The digests are pinned here, not read from there: a
# copy is checked against what the authors published, not against a list that travels with it.
PAPER_MODELS = {
    "base-dynrange.tflite": PublishedFile(
        _JOINT + "7_fashion_mnist_Integer_float_model.tflite",
        "83cd90f29cef40a6c862cca4f4cf29bf32f84e4cd980967f904d2b96be15868f",
    ),
    "base-f16.tflite": PublishedFile(
        _JOINT + "10_fashion_mnist_float16_model.tflite",
        "427813519926f02f03fe39439b3d139034e9f204d434d2cdc3f1b830e368d8d0",
    ),
    "base-f32.tflite": PublishedFile(
        _JOINT + "4_fashion_mnist_model.tflite", "a4e7bd6cb58717b775d2f4682afe9f2a900588209f439bb77907d236fcc607be"
    ),
    "base-int8-floatio.tflite": PublishedFile(
        _JOINT + "13_fashion_mnist_integeronly_model.tflite",
        "4f8ca7ebf0ce74cbb7251734a218449221e1017e3a0502ab3137c07d55720895",
    ),
    "graph-dynrange.tflite": PublishedFile(
        _GRAPH + "5_custom_train_grappler_Int_float_model.tflite",
        "e788efab0e180c2329ce638f4ad5f72670e3f04605ab099c61e152482eb4b923",
    ),
    "graph-f16.tflite": PublishedFile(
        _GRAPH + "6_custom_trained_grappler_float16_model.tflite",
        "77473359ab41d31b44f9f13c6bfc4503fa5691173377f01c891eec7860f50bca",
    ),
    "graph-f32.tflite": PublishedFile(
        _GRAPH + "3_custom_model_with_TFfunction_Grappler_fashion_mnist.tflite",
        "21bd736fe5f2d41fab4130d385a83d8c2078760eb17b4f203ecc21cff053220d",
    ),
    "graph-int8-floatio.tflite": PublishedFile(
        _GRAPH + "4_custom_train_grappler_Integer_model.tflite",
        "985ecbf128ab8078f6506cd46524774426d8206dc3f8b5c7c0b47e66a1f8a53f",
    ),
    "pruned-dynrange.tflite": PublishedFile(
        _JOINT + "8_fashion_mnist_pruning_Integer_float_model.tflite",
        "1b50bfcf7c4a165cb8077c6ceefcc298558f8d3d49b459415966c1422cd86948",
    ),
    "pruned-f16.tflite": PublishedFile(
        _JOINT + "11_fashion_mnist_float_pruning_model.tflite",
        "e304224663ed8af74bdbd2ec26c71b9d6380e9f423919b90a57336a52ec43988",
    ),
    "pruned-f32.tflite": PublishedFile(
        _JOINT + "5_fashion_mnist_pruning_model.tflite",
        "fe73261e7b7f36f5e6bc99680f1d689378c5ff686b1d7841a4ecd9d67a8a4659",
    ),
    "pruned-int8-floatio.tflite": PublishedFile(
        _JOINT + "14_fashion_mnist_Integeronly_pruning_model.tflite",
        "15547701740edae04effc899599ea0f65926d960d5c0ddf4bf681f2e52d384f2",
    ),
    "qat-dynrange.tflite": PublishedFile(
        _JOINT + "9_fashion_mnist_Qaware_Integer_float_model.tflite",
        "9a27d8f3ef4cf70d138d5007b98c82842eab4397fb29ff1acf7131f000de6fdb",
    ),
    "qat-f16.tflite": PublishedFile(
        _JOINT + "12_fashion_mnist_Qaware_float16_model.tflite",
        "f563b930e3a0c23d5af8a3838b3497edb457e813e3d9a1954809e0e053c92c9e",
    ),
    "qat-f32.tflite": PublishedFile(
        _JOINT + "6_fashion_mnist_model_qaware.tflite",
        "c2396ca717881c2bdb8d410c4c3b9b08aa790d75e10267ac2fb77884342f4b16",
    ),
    "separable-dynrange.tflite": PublishedFile(
        _OPERATIONS + "4_fashion_mnist_seperable_Integer_float_model.tflite",
        "ca745a5037e2a5606f5c2faedda552c9dedb7d4458549795b9b0cb0e7b663baf",
    ),
    "separable-f16.tflite": PublishedFile(
        _OPERATIONS + "5_fashion_mnist_seperable_float16_model.tflite",
        "681a37aa778d979d84998d6629c038206103383fb5ca81a45b83f4d4c267edb1",
    ),
    "separable-f32.tflite": PublishedFile(
        _OPERATIONS + "3_fashion_mnist_model_sperable_tflite.tflite",
        "977e8762d103597e1b5bf3dcdff82e958871d950eda07ea0b9b246f8395d0404",
    ),
    "separable-int8-floatio.tflite": PublishedFile(
        _OPERATIONS + "6_fashion_mnist_seperable_integeronly_model.tflite",
        "e668d09c34fd7562409cc14cdb86efac4629fbcf2c67dbcee26775f52496b845",
    ),
}


class _Unavailable(Exception):
    """A file could not be downloaded; the message says which and why."""


def paper_models(
    settings: ReferenceParams, files: dict[str, PublishedFile] = PAPER_MODELS, target: Path = PAPER_MODELS_DIR
) -> tuple[Path | None, str | None]:
    """The directory holding the reference models, or None and one line saying why and where to put them."""
    if Path(settings.dir).is_dir():
        refuse_altered(Path(settings.dir), files)
        return Path(settings.dir), None
    if holds_all(target, files):
        return target, None
    where = f"put the {len(files)} .tflite files that tinyopt/run/references.py lists in {settings.dir}"
    if not settings.url:
        return None, f"reference models skipped: not in {target} and reference.url is null; {where}"
    try:
        download_all(settings.url, files, target)
    except _Unavailable as exc:
        return None, f"reference models skipped: not in {target} and not downloadable ({exc}); {where}"
    return target, None


def refuse_altered(directory: Path, files: dict[str, PublishedFile]) -> None:
    """A local copy may hold fewer files (or others of the user's), but none of the paper's files altered."""
    for name, published in files.items():
        path = directory / name
        if path.is_file() and sha256_file(path) != published.sha256:
            raise UserError(f"{path}: not the published {name} (sha256 differs); replace it with the authors' file")


def holds_all(directory: Path, files: dict[str, PublishedFile]) -> bool:
    return all((directory / name).is_file() and sha256_file(directory / name) == f.sha256 for name, f in files.items())


def download_all(url_template: str, files: dict[str, PublishedFile], target: Path) -> None:
    """Every file into `target`, each checked before the directory is moved in whole (nothing half-written)."""
    with atomic_dir(target) as staging:
        for name, published in files.items():
            url = url_template.format(path=published.path)
            try:
                download(url, staging / name)
            except OSError as exc:
                raise _Unavailable(f"{url}: {exc}") from None
            if sha256_file(staging / name) != published.sha256:
                raise UserError(f"{url}: not the published {name} (sha256 differs); refused, nothing written")


def reference_candidates(settings: ReferenceParams, dataset: str) -> int:
    """How many reference models find_references may return for a run on `dataset`, known before the data is
    read or the files fetched: an upper bound (a file whose input shape differs is left out later)."""
    if not settings.dir or settings.dataset != dataset:
        return 0
    if Path(settings.dir).is_dir():
        return len(list(Path(settings.dir).glob("*.tflite")))
    if holds_all(PAPER_MODELS_DIR, PAPER_MODELS) or settings.url:  # there, or fetched there
        return max(len(PAPER_MODELS), len(list(PAPER_MODELS_DIR.glob("*.tflite"))))
    return 0


def find_references(settings: ReferenceParams, dataset: str, input_shape: list[int]) -> tuple[list[Path], str | None]:
    """The reference .tflite files that can be measured on this run's data, and a note on what was
    left out and why (None when nothing was)."""
    if not settings.dir:
        return [], "no reference models configured (reference.dir is null)"
    if settings.dataset != dataset:
        return [], (
            f"reference models skipped: they were trained on {settings.dataset}, this run's dataset is {dataset}"
        )
    directory, note = paper_models(settings)
    if directory is None:
        return [], note
    usable, refused = [], []
    for path in sorted(directory.glob("*.tflite")):
        try:
            shape = list(litert.load_interpreter(path).get_input_details()[0]["shape"][1:])
        except UserError as exc:
            refused.append(f"{path.name} ({exc})")
            continue
        if [d for d in shape if d != 1] != [d for d in input_shape if d != 1]:
            refused.append(f"{path.name} (input {shape}, data {input_shape})")
            continue
        usable.append(path)
    note = f"left out: {'; '.join(refused)}" if refused else None
    if not usable:
        note = f"reference models skipped: no usable .tflite in {directory}" + (f"; {note}" if note else "")
    return usable, note
