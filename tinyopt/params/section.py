"""The base of every params.yaml section: unknown keys and true/false for a number are errors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError


def _number_not_bool(annotation: object) -> bool:
    """True for int and float fields (optional or not), which must not take YAML's true/false."""
    kinds = set(getattr(annotation, "__args__", ())) | {annotation}
    return bool(kinds & {int, float}) and bool not in kinds


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: object, info: ValidationInfo) -> object:
        # Pydantic reads YAML's true as 1 (and 1.0): `epochs: true` must not quietly mean one epoch.
        if isinstance(value, bool) and _number_not_bool(cls.model_fields[info.field_name].annotation):
            raise PydanticCustomError("bool_for_number", "Input should be a number, not true/false")
        return value
