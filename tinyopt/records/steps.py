"""Every step's result record, in one place: what a step wrote (each output with its sha256, so a cached
record can be checked) and the figures it found. Steps (tasks/), the ML kit and the search return these."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tinyopt.core.files import sha256_file
from tinyopt.records.run import DeviceFigures, EdgeFigures


class StepRecord(BaseModel):
    """A step's result. `outputs` maps each written file to its sha256, so a cached record can be checked."""

    model_config = ConfigDict(frozen=True)
    outputs: dict[str, str] = {}

    def intact(self) -> bool:
        """True when every output still exists with the content this record describes."""
        return all(Path(p).is_file() and sha256_file(p) == digest for p, digest in self.outputs.items())


class SkippedRecord(StepRecord):
    """What a technique step returns when it cannot apply to the model (cached like any result)."""

    reason: str


class NotRun(BaseModel):
    """Why a step did not run for a model, where its record would be (a float model on the devices...)."""

    model_config = ConfigDict(frozen=True)
    reason: str


# How the reason every model of a run shares begins (no cross compiler or QEMU, no profile in benchmark.devices):
# said once for the run, not once per model.
DEVICES_OFF = "not measured on a device: "
FIRMWARE_FAILED = "failed on "  # starts a DeviceRecord.not_run reason: built, or run, and failed there


def outputs_of(*paths: Path) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths}


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


class EvalRecord(StepRecord):
    tflite_path: str
    metric: str
    score: float | None  # None: inputs without labels (bench --inputs random), nothing to score
    val_score: float | None
    num_test: int


class ConvertRecord(StepRecord):
    conversion: str
    tflite_path: str
    c_source: str
    c_header: str
    raw_bytes: int
    gzip_bytes: int
    input_dtype: str
    output_dtype: str
    calibration_samples: int


class LibraryRecord(StepRecord):
    tflite_path: str
    directory: str
    name: str  # the C prefix: <name>_invoke, <name>.h
    arena_bytes: int
    ops: list[str]
    sparse_ops: int  # dense layers that list their non-zero weights and skip the zeros
    clustered_ops: int


class DeviceRecord(StepRecord):
    tflite_path: str
    library: str
    figures: dict[str, DeviceFigures]  # profile -> what its emulated core measured
    not_run: dict[str, str]  # profile -> why not (the firmware does not fit it, ...)


class EdgeRecord(StepRecord, EdgeFigures):
    tflite_path: str


class TrainedModel(StepRecord):
    """A trained or optimized Keras model: one node of the plan's tree."""

    step: str
    model_path: str
    parent_path: str | None = None
    epochs_run: int = 0
    train_seconds: float = 0.0
    history: dict[str, list[float]] = {}  # per-epoch curves of its fit: loss, the task's metric, val_*
    metric: str
    val_score: float  # the task's metric on the validation split (Keras model)
    keras_score: float  # the same on the test split
    num_params: int
    sparsity: float
    unique_weights: dict[str, int]
    notes: str = ""


class StoppedTraining(StepRecord):
    """A training a search's pruner stopped (tasks.train's `stop_early`): no model. Never served from the cache,
    since where it stops depends on the trainings before it."""

    reason: str
    epochs_run: int

    def intact(self) -> bool:
        return False


class TrialRecord(StepRecord):
    number: int
    chain: list[str]
    settings: dict[str, dict]  # the settings section each technique of the chain read, by section name
    state: Literal["complete", "pruned", "skipped"]
    reason: str = ""
    metric: str
    val_score: float | None = None
    raw_bytes: int | None = None
    gzip_bytes: int | None = None
    arena_bytes: int | None = None
    tflm_runs: bool = False
    fits: bool = False
    fit_reason: str = ""
    tflite_path: str | None = None
    sha256: str | None = None
    train_seconds: float = 0.0
    instructions: float | None = None  # per inference on search.profile's emulated core (search.latency)
    flash_bytes: int | None = None  # that firmware's, as the device step measures them
    ram_bytes: int | None = None
