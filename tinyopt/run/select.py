"""Selection: the best variant for each objective in params.yaml, with the reason and what it beat.

Score constraints and the score objective use the converted model's validation score, so that picking
a model never looks at the test set; the test score is what gets reported.

A pick named after its device profile (`best-on-nano33ble` with profile nano33ble) promises a model for that
device: it considers only variants measured on the profile's emulated core, bit-exact there with TFLM's
reference kernels, and picks nothing (with the reason) when none was.
"""

from __future__ import annotations

import re

from tinyopt.ml.metrics import HIGHER_IS_BETTER, drop
from tinyopt.params import DEVICE_METRICS, Objective
from tinyopt.records.run import Pick, Variant


def _value(variant: Variant, objective: Objective):
    return variant.val_score if objective.metric == "score" else variant.figure(objective.metric, objective.profile)


def named_after_device(name: str, objective: Objective) -> bool:
    """Whether the objective's name names its device profile (as a whole word: `best-on-nano33ble`)."""
    if not objective.profile:
        return False
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(objective.profile)}(?![A-Za-z0-9])", name) is not None


def measured_bit_exact(variant: Variant, profile: str) -> bool:
    figures = variant.device.get(profile)
    return figures is not None and figures.bit_exact


def select(
    variants: list[Variant], baseline_val_score: float, score_metric: str, objectives: dict[str, Objective]
) -> dict[str, Pick]:
    """objective name -> the pick (its variant None when nothing meets the constraints, with the reason)."""
    picks = {}
    for name, objective in objectives.items():
        candidates, rules = [], []
        on_device = named_after_device(name, objective)
        for variant in variants:
            if _value(variant, objective) is None:
                continue
            if objective.tflm_only and not variant.tflm_runs:
                continue
            if objective.profile and not variant.fits.get(objective.profile, False):
                continue
            if on_device and not measured_bit_exact(variant, objective.profile):
                continue
            if objective.max_score_drop is not None and (
                drop(score_metric, baseline_val_score, variant.val_score) > objective.max_score_drop + 1e-12
            ):
                continue
            candidates.append(variant)
        if objective.tflm_only:
            rules.append("TFLM runs it")
        if objective.profile:
            rules.append(f"fits {objective.profile}")
        if on_device:
            rules.append(f"measured on {objective.profile}'s emulated core, bit-exact with TFLM there")
        if objective.max_score_drop is not None:
            rules.append(
                f"validation {score_metric} at most {objective.max_score_drop:g} worse than the "
                f"baseline's {baseline_val_score:.4f}"
            )
        constraint = ("; ".join(rules)) or "no constraint"
        label = f"validation {score_metric}" if objective.metric == "score" else objective.metric
        if objective.metric in DEVICE_METRICS:
            label += f" on {objective.profile}'s emulated core"
        if not candidates:
            why = f"no variant meets the constraints ({constraint})"
            if on_device and not any(measured_bit_exact(v, objective.profile) for v in variants):
                why = (
                    f"no variant was measured bit-exact on {objective.profile}'s emulated core, and a pick named "
                    f"after {objective.profile} considers only those ({constraint})"
                )
            picks[name] = Pick(variant=None, metric=label, value=None, candidates=0, why=why, runner_up=None)
            continue
        goal = objective.goal
        if goal == "best":
            goal = "max" if objective.metric != "score" or HIGHER_IS_BETTER[score_metric] else "min"
        sign = -1 if goal == "max" else 1
        # Ties go to the smaller file, then the name: a pick must not depend on the order of the plan.
        ranked = sorted(candidates, key=lambda v: (sign * _value(v, objective), v.gzip_bytes, v.name))
        best, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        why = (
            f"{'highest' if goal == 'max' else 'lowest'} {label} ({_value(best, objective)}) of "
            f"{len(candidates)} variants meeting: {constraint}"
        )
        if runner_up:
            why += f"; runner-up {runner_up.name} ({_value(runner_up, objective)})"
        picks[name] = Pick(
            variant=best.name,
            metric=label,
            value=_value(best, objective),
            candidates=len(candidates),
            why=why,
            runner_up=runner_up.name if runner_up else None,
        )
    return picks
