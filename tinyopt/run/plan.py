"""The plan as a tree: each technique prefix is one model, trained once; each chain is one variant."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core import layout
from tinyopt.params import NEEDS_CALIBRATION, TECHNIQUES, Params

Prefix = tuple[str, ...]


def variant_name(chain: list[str] | tuple[str, ...]) -> str:
    """['prune', 'int8'] -> 'prune-int8'; a conversion of the base model is 'base-<conversion>'."""
    return "-".join(chain if len(chain) > 1 else ("base", *chain))


def model_name(prefix: Prefix) -> str:
    return "-".join(prefix) if prefix else "base"


def model_dir(prefix: Prefix) -> Path:
    return layout.BASELINE_DIR if not prefix else layout.ARTIFACTS / "models" / model_name(prefix)


def variant_tflite(chain: list[str]) -> Path:
    name = variant_name(chain)
    return layout.ARTIFACTS / "variants" / name / f"{name}.tflite"


def chains(params: Params) -> list[list[str]]:
    """The plan's chains, with the float32 conversion of the base model always included: it is the
    baseline every other variant is compared with."""
    plan = [list(chain) for chain in params.plan]
    return plan if ["float32"] in plan else [["float32"], *plan]


def technique_prefixes(plan: list[list[str]]) -> list[Prefix]:
    """Every model the plan needs, parents before children, each once."""
    prefixes = {tuple(chain[:i]) for chain in plan for i in range(1, len(chain))}
    return sorted(prefixes, key=lambda prefix: (len(prefix), prefix))


def parent_variant(chain: list[str]) -> str:
    """The variant one technique up with the same conversion (e.g. prune-int8 for prune-cluster-int8)."""
    return variant_name([*chain[:-2], chain[-1]]) if len(chain) > 1 else "none"


def chain_params(chain: list[str], params: Params) -> dict[str, object]:
    """One MLflow param per setting of every step in the chain."""
    flat: dict[str, object] = {"chain": " > ".join(["train", *chain]), "conversion": chain[-1], "seed": params.seed}
    flat.update({f"train.{key}": value for key, value in params.train.model_dump().items()})
    flat.update({f"model.{key}": value for key, value in params.model.model_dump().items()})
    for step in chain[:-1]:
        settings = getattr(params.techniques, TECHNIQUES[step].settings)
        flat.update({f"{step}.{key}": value for key, value in settings.model_dump().items()})
    if chain[-1] in NEEDS_CALIBRATION:
        flat["calibration_samples"] = params.conversion.calibration_samples
    return flat
