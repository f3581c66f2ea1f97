"""The schema of params.yaml: every knob of the pipeline, validated on load with one-line errors.

The sections live beside this module (pipeline, devices, operations); `Params` puts them together and
checks what spans sections (a channel's or an objective's profile, the schedule's objective)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, model_validator

from tinyopt.core.errors import UserError
from tinyopt.params.devices import (
    DEFAULT_DEVICES,
    DEFAULT_OBJECTIVE,
    DEFAULT_OBJECTIVES,
    DEFAULT_PROFILE,
    DEVICE_METRICS,
    BenchmarkParams,
    DeviceProfile,
    Objective,
    ReferenceParams,
)
from tinyopt.params.machines import emulation_problem
from tinyopt.params.operations import (
    NAME_PATTERN,
    ChannelParams,
    FleetParams,
    RunnerParams,
    ScheduleParams,
    TrackingParams,
    check_name,
)
from tinyopt.params.pipeline import (
    DEFAULT_PLAN,
    USER_DATASETS,
    ClusterParams,
    ConversionParams,
    DataParams,
    DistillParams,
    FilterPruneParams,
    GraphParams,
    ModelParams,
    PruneParams,
    QatParams,
    SeparableParams,
    StructuredPruneParams,
    TaskParams,
    Techniques,
    TrainParams,
)
from tinyopt.params.search import SearchParams, SearchSpace
from tinyopt.params.section import Section, _number_not_bool
from tinyopt.params.techniques import (
    CONVERSION_STEPS,
    CONVERSIONS,
    NEEDS_CALIBRATION,
    QAT_STEPS,
    TECHNIQUES,
    check_chain,
    sections_read,
)


class Params(Section):
    """The one place for tinyopt's knobs. Validated on load: unknown keys, wrong types and out-of-range values are
    errors that name the key."""

    seed: int = Field(
        default=42,
        ge=0,
        le=2**31 - 1,
        description="seeds Python, NumPy and TensorFlow (ops made deterministic), the split and calibration",
    )
    data: DataParams = DataParams()
    task: TaskParams = TaskParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()
    techniques: Techniques = Field(
        default=Techniques(), description="Settings of each optimization technique (a step of a chain in `plan`)."
    )
    conversion: ConversionParams = ConversionParams()
    plan: list[list[str]] = Field(
        default_factory=lambda: [list(chain) for chain in DEFAULT_PLAN],
        description="The variants: each chain is techniques applied in order to the trained model, then one "
        "conversion. Techniques: prune, prune_2_4, prune_filters, cluster, sp_cluster (needs a pruning step first), "
        "qat, pqat (after a pruning step), cqat (after clustering), pcqat (after prune and sp_cluster), separable "
        "(first only), distill (first, or right after separable), graph. Conversions: float32, float16, dynamic_range, "
        "int8_fallback (int8 kernels, float fallback and float I/O), int8 (full integer, int8 I/O), int16x8 "
        "(int16 activations, int8 weights). Shared prefixes are trained once: [prune, int8] and [prune, float16] "
        "prune one model.",
    )
    devices: dict[str, DeviceProfile] = Field(
        default_factory=lambda: dict(DEFAULT_DEVICES),
        description="Target devices (public datasheet figures); add your own. benchmark.devices lists the profiles "
        "measured on their emulated core.",
    )
    objectives: dict[str, Objective] = Field(
        default_factory=lambda: dict(DEFAULT_OBJECTIVES),
        description="How the pipeline picks its best variants. Scores here are validation scores: picks never see "
        "the test set.",
    )
    reference: ReferenceParams = ReferenceParams()
    benchmark: BenchmarkParams = BenchmarkParams()
    fleet: FleetParams = FleetParams()
    runner: RunnerParams = RunnerParams()
    schedule: ScheduleParams = ScheduleParams()
    search: SearchParams = SearchParams()

    @model_validator(mode="after")
    def _valid_plan(self) -> Params:
        seen = set()
        for index, chain in enumerate(self.plan):
            try:
                check_chain(chain)
            except ValueError as exc:
                raise ValueError(f"plan[{index}]: {exc}") from None
            if tuple(chain) in seen:
                raise ValueError(f"plan[{index}]: [{', '.join(chain)}] is listed twice")
            seen.add(tuple(chain))
        for name, channel in self.fleet.channels.items():
            if channel.profile not in self.devices:
                raise ValueError(f"fleet.channels.{name}.profile: no device profile '{channel.profile}'")
        for name, objective in self.objectives.items():
            if objective.profile and objective.profile not in self.devices:
                raise ValueError(
                    f"objectives.{name}.profile: no device profile '{objective.profile}' "
                    f"(profiles: {', '.join(self.devices)})"
                )
        if self.search.profile not in self.devices:
            raise ValueError(
                f"search.profile: no device profile '{self.search.profile}' (profiles: {', '.join(self.devices)})"
            )
        if self.search.max_latency_ms and not self.devices[self.search.profile].clock_mhz:
            raise ValueError(
                f"search.max_latency_ms: the profile {self.search.profile} has no clock_mhz; give it one, or use "
                "search.max_instructions"
            )
        for name in self.benchmark.devices:
            if name not in self.devices:
                raise ValueError(f"benchmark.devices: no device profile '{name}' (profiles: {', '.join(self.devices)})")
            profile = self.devices[name]
            problem = emulation_problem(profile.core, profile.emulator)
            if problem:
                raise ValueError(f"benchmark.devices: {name} cannot be emulated: {problem}")
        for name, objective in self.objectives.items():
            if objective.metric in DEVICE_METRICS and objective.profile not in self.benchmark.devices:
                raise ValueError(
                    f"objectives.{name}: {objective.metric} is measured on an emulated device; set its profile to "
                    f"one of benchmark.devices ({', '.join(self.benchmark.devices) or 'none'})"
                )
        if self.schedule.objective not in self.objectives:
            raise ValueError(
                f"schedule.objective: no objective '{self.schedule.objective}' "
                f"(objectives: {', '.join(self.objectives)})"
            )
        if self.schedule.channel is not None and self.schedule.channel not in self.fleet.channels:
            raise ValueError(
                f"schedule.channel: no channel '{self.schedule.channel}' (channels: {', '.join(self.fleet.channels)})"
            )
        return self

    def digest(self) -> str:
        """A stable hash of every knob, recorded as lineage on each run."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}' (check the spelling; params.yaml lists every allowed key)"
    if kind == "literal_error":
        allowed = error.get("ctx", {}).get("expected", "")
        return f"'{key}' must be one of {allowed}, got {error['input']!r}"
    message = error["msg"].removeprefix("Value error, ")
    if error["loc"] and kind != "value_error":
        return f"'{key}': {message}, got {error['input']!r}"
    return message


def parse_params(raw: object, source: str = "params.yaml") -> Params:
    """Validate already-parsed YAML; raise UserError naming the first bad key and what is allowed."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise UserError(f"{source}: the top level must be a mapping of sections (seed, data, model, ...)")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = len(exc.errors()) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise UserError(f"{source}: {_describe(first)}{suffix}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice in one mapping is an error (PyYAML keeps the
    last one silently: a knob set twice would run with whichever came later)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml (it must exist and hold a mapping: `{}` means all defaults)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such params file (copy params.yaml from the repository or pass --params)")
    if path.is_dir():
        raise UserError(f"{path}: a directory, not a params file (pass --params FILE)")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read as text ({exc}); fix or replace it") from None
    if not text.strip():
        raise UserError(f"{path}: empty file; copy params.yaml from the repository (or write {{}} for all defaults)")
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    params = parse_params(raw, str(path))
    return _resolve_paths(params, path.parent)


def with_inputs(params: Params, model: str | None = None, data: str | None = None) -> Params:
    """params with the command line's --model and --data applied: a .npz file, a directory of IDX
    files, or a directory of images with one sub-directory per class."""
    if model:
        if not Path(model).exists():
            raise UserError(
                f"{model}: no such model file (--model takes a .keras or .h5 file or a SavedModel directory)"
            )
        params = params.model_copy(update={"model": params.model.model_copy(update={"path": os.path.abspath(model)})})
    if data:
        path = Path(data)
        if path.is_file():
            kind = "npz"
        elif path.is_dir():
            # IDX data is files named like MNIST's; a class folder named "idx..." is still images.
            kind = "idx" if any(p.is_file() and "idx" in p.name for p in path.iterdir()) else "images"
        else:
            raise UserError(
                f"{data}: no such file or directory (--data takes a .npz, or a directory of IDX files or images)"
            )
        params = params.model_copy(
            update={
                "data": DataParams.model_validate(
                    {**params.data.model_dump(), "dataset": kind, "path": os.path.abspath(data)}
                )
            }
        )
    return params


def _resolve_paths(params: Params, base: Path) -> Params:
    """Relative paths in a params file mean relative to that file, wherever the pipeline runs."""

    teacher = params.techniques.distill.teacher

    def resolve(value: str | None) -> str | None:
        return value if value is None or Path(value).is_absolute() else os.path.normpath(base.resolve() / value)

    return params.model_copy(
        update={
            "data": params.data.model_copy(update={"path": resolve(params.data.path)}),
            "model": params.model.model_copy(update={"path": resolve(params.model.path)}),
            "reference": params.reference.model_copy(update={"dir": resolve(params.reference.dir)}),
            "techniques": params.techniques.model_copy(
                update={"distill": params.techniques.distill.model_copy(update={"teacher": resolve(teacher)})}
            ),
        }
    )
