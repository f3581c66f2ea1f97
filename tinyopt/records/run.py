"""The typed records of a run, from conversion to summary, registry and report.

`Measured` holds every figure of one .tflite file (a variant of ours or a reference model), `Variant`
adds where a variant of ours came from, `Summary` is reports/<run-id>/summary.json. Their JSON is the
summary's: `Summary.model_validate_json(path.read_text())` reads one back, `.model_dump(mode="json")`
writes the same dicts (the score also under the task metric's own name: accuracy, mae or auc).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer

from tinyopt.core.errors import UserError
from tinyopt.params import DEVICE_METRICS


class Record(BaseModel):
    # Read back tolerantly (a summary written by an older tinyopt, the metric's own-name copy of the score).
    model_config = ConfigDict(extra="ignore")


class DeviceFigures(BaseModel):
    """One model on one device profile's emulated core (tasks/device.py): measured, except the latency."""

    model_config = ConfigDict(frozen=True)
    core: str
    machine: str  # the QEMU machine
    flash_bytes: int  # text + data of the whole firmware (model, kernels, measurement harness)
    model_flash_bytes: int  # the model's part: weights, parameters, its code
    ram_bytes: int  # data + bss + the stack's measured high-water mark
    arena_bytes: int  # the activation buffer, part of ram_bytes
    stack_bytes: int
    instructions: float  # per inference, mean over the test examples run (QEMU counts instructions, not cycles)
    instructions_per_op: dict[str, float]
    images: int
    score: float | None  # the task's metric on the outputs the emulated device computed; None without labels
    bit_exact: bool  # every output identical to TFLM's reference kernels'
    bit_exact_share: float
    latency_ms_estimate: float | None  # instructions x CPI 1 at the profile's clock: an estimate, not a measurement


class EdgeFigures(BaseModel):
    """What the edge benchmark reads from one .tflite file (tasks/benchmark.py)."""

    raw_bytes: int
    gzip_bytes: int
    input_dtype: str
    output_dtype: str
    params: int
    macs: int
    ops: dict[str, int]
    tflm_runs: bool
    tflm_error: str | None = None
    arena_bytes: int | None = None
    arena_verified: bool = False
    tflm_top1_agreement: float | None = None  # share of samples where TFLM and LiteRT agree on the class
    tflm_max_abs_diff: float | None = None  # largest output difference, in output units


class Measured(EdgeFigures, Record):
    """Every figure of one .tflite file: its edge figures, score, host latency, device figures, device fit."""

    name: str
    tflite: str
    metric: str
    score: float | None  # None when measured on inputs without labels (bench --inputs random)
    val_score: float | None
    latency_us_p50: float
    latency_us_p99: float
    device: dict[str, DeviceFigures] = {}  # device profile -> measured on its emulated core
    device_note: str | None = None  # why some or all profiles have no device figures
    c_library: str | None = None  # the generated C library's directory
    fits: dict[str, bool] = {}  # device profile -> fits its flash and SRAM
    fit_reasons: dict[str, str] = {}
    mlflow_run_id: str | None = None  # set once the record is logged
    mlflow_model_id: str | None = None  # its MLflow logged model (ours only): the registry's source

    @model_serializer(mode="wrap")
    def _as_summary(self, handler: Any) -> dict[str, Any]:
        fields = handler(self)
        ordered: dict[str, Any] = {"name": fields["name"], "tflite": fields["tflite"]}  # what it is, first
        for key, value in fields.items():
            if key not in ("mlflow_run_id", "name", "tflite"):
                ordered[key] = value
            if key == "val_score":
                ordered[self.metric] = fields["score"]  # the score under the task metric's own name too
        if self.mlflow_run_id is not None:
            ordered["mlflow_run_id"] = self.mlflow_run_id
        return ordered

    def figure(self, key: str, profile: str | None = None) -> Any:
        """A figure by the name params.yaml's objectives use (`gzip_bytes`, `latency_us_p50`...); the
        task metric's own name (`accuracy`) is the test score; `instructions`, `flash_bytes` and
        `ram_bytes` are the device figures measured on `profile` (None when not measured there)."""
        if key in DEVICE_METRICS:
            figures = self.device.get(profile or "")
            return getattr(figures, key) if figures else None
        return self.score if key == self.metric else getattr(self, key, None)


class Variant(Measured):
    """A variant of ours: the chain that made it, its Keras model and what the techniques reported."""

    chain: list[str]  # "train" first, the conversion last
    model: str  # the Keras model it was converted from
    c_source: str
    keras_score: float
    train_seconds: float
    sparsity: float
    unique_weights: dict[str, int]
    notes: str = ""
    parent_variant: str | None = None


class Baseline(Variant):
    epochs_run: int = 0


class Pick(Record):
    """The best variant for one objective, or None with the reason nothing qualified."""

    variant: str | None
    metric: str
    value: int | float | None  # bytes stay integers in the JSON
    candidates: int
    why: str
    runner_up: str | None


class Skipped(Record):
    name: str
    chain: list[str]
    reason: str


class Comparison(Record):
    """A reference model beside its counterpart among our variants: ours / theirs."""

    reference: str
    ours: str
    size_ratio: float
    gzip_ratio: float
    score_diff: float
    latency_ratio: float


class ReferenceFigures(Record):
    raw_bytes: int
    gzip_bytes: int
    score: float
    latency_us_p50: float


class Winner(Record):
    """One variant of ours that beats a headline reference."""

    name: str
    raw_bytes: int
    gzip_bytes: int
    score: float
    latency_us_p50: float
    arena_bytes: int | None
    latency_ratio_to_fastest_reference: float


class Headline(Record):
    """Every deployable variant of ours that beats one of the reference's models on its claim."""

    reference: str
    claim: str
    metric: str
    reference_figures: ReferenceFigures
    ours: list[Winner]
    fastest_reference: str


class Summary(Record):
    """reports/<run-id>/summary.json."""

    run_id: str
    created: str
    mlflow_run_id: str
    mlflow_tracking_uri: str
    mlflow_experiment: str
    git_commit: str | None
    params_hash: str
    dataset: dict[str, Any]
    baseline: Baseline
    variants: list[Variant]
    skipped: list[Skipped]
    picks: dict[str, Pick]
    reference: list[Measured]
    reference_note: str | None
    comparisons: list[Comparison]
    headline: list[Headline]
    devices: dict[str, dict[str, Any]]
    timings: dict[str, Any]
    # path -> sha256 of every file the summary names, a directory's each file (tinyopt.run.snapshot); empty in a
    # summary written before runs recorded hashes: its files are read unchecked
    files: dict[str, str] = {}

    def measured_profiles(self) -> list[str]:
        """The device profiles some model of the run was measured on, in params.yaml's order."""
        seen = {profile for m in [*self.variants, *self.reference] for profile in m.device}
        return [profile for profile in self.devices if profile in seen]

    def named_references(self) -> list[Measured]:
        """The reference models named as tables show them beside ours: ref:<name>."""
        return [r.model_copy(update={"name": f"ref:{r.name}"}) for r in self.reference]

    def variant(self, name: str) -> Variant:
        found = next((v for v in self.variants if v.name == name), None)
        if found is None:
            known = ", ".join(v.name for v in self.variants)
            raise UserError(f"run {self.run_id} has no variant '{name}'; its variants: {known}")
        return found


def load_summary(path: Path) -> Summary:
    """A run's summary.json, typed; UserError if it is missing, unreadable, or not a tinyopt run summary."""
    if not path.is_file():
        raise UserError(f"{path}: no such run summary; run `tinyopt run` first or pass --summary")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = "empty file" if not path.read_bytes().strip() else f"not JSON: {str(exc).splitlines()[0][:120]}"
        raise UserError(
            f"{path}: not a readable run summary ({reason}); pass the summary.json a `tinyopt run` "
            "wrote (reports/<run-id>/summary.json)"
        ) from None
    needed = ("run_id", "variants", "picks", "dataset", "git_commit", "params_hash")
    missing = [key for key in needed if key not in summary] if isinstance(summary, dict) else list(needed)
    if missing or not isinstance(summary["variants"], list) or not isinstance(summary["picks"], dict):
        what = ", ".join(missing) or "variants, picks"
        raise UserError(
            f"{path}: not a tinyopt run summary (missing or malformed: {what}); pass the summary.json "
            "a `tinyopt run` wrote"
        )
    try:
        return Summary.model_validate(summary)
    except ValueError as exc:
        first = str(exc).splitlines()[1:2] or ["invalid"]
        raise UserError(
            f"{path}: not a tinyopt run summary (malformed: {first[0].strip()}); pass the summary.json "
            "a `tinyopt run` wrote"
        ) from None
