"""The schema of params.yaml: every knob of the pipeline, validated on load with one-line errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tinyopt.errors import UserError


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataParams(Section):
    dataset: Literal["fashion-mnist", "mnist", "npz"] = "fashion-mnist"
    path: Optional[str] = Field(
        default=None, description="the user's .npz file (x_train, y_train, x_test, y_test) when dataset is npz"
    )
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    train_limit: Optional[int] = Field(
        default=None, ge=20, description="use a random subset of this many training examples (quick runs, tests)"
    )
    test_limit: Optional[int] = Field(default=None, ge=10, description="use the first N test examples")

    @model_validator(mode="after")
    def _npz_needs_path(self) -> "DataParams":
        if self.dataset == "npz" and not self.path:
            raise ValueError("data.path is required when data.dataset is npz")
        if self.dataset != "npz" and self.path:
            raise ValueError("data.path is only used when data.dataset is npz")
        return self


class ModelParams(Section):
    architecture: Literal["paper-cnn"] = "paper-cnn"
    conv_filters: int = Field(default=12, ge=1, le=512)
    kernel_size: int = Field(default=3, ge=1, le=11)


class TrainParams(Section):
    epochs: int = Field(default=10, ge=1, le=1000)
    batch_size: int = Field(default=64, ge=1, le=65536)
    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    early_stopping_patience: int = Field(
        default=3, ge=0, description="epochs without validation-loss improvement before stopping; 0 disables"
    )


class TrackingParams(Section):
    experiment: str = Field(default="tinyopt", min_length=1)


class Params(Section):
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    data: DataParams = DataParams()
    model: ModelParams = ModelParams()
    train: TrainParams = TrainParams()
    tracking: TrackingParams = TrackingParams()

    def digest(self) -> str:
        """A stable hash of every knob, recorded as lineage on each run."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"unknown key '{key}' (check the spelling; allowed keys are listed in the README)"
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


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; a missing file means all defaults."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such params file (copy params.yaml from the repository or pass --params)")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None
    return parse_params(raw, str(path))
