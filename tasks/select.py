"""Selection: the best variant for each objective in params.yaml, with the reason and what it beat.

Accuracy constraints and the accuracy objective use the converted model's accuracy on the validation
split, so that picking a model never looks at the test set; the test accuracy is what gets reported.
"""

from __future__ import annotations

from tinyopt.params import Objective


def _value(variant: dict, metric: str):
    return variant["val_accuracy"] if metric == "accuracy" else variant.get(metric)


def select(variants: list[dict], baseline_val_accuracy: float, objectives: dict[str, Objective]) -> dict[str, dict]:
    """objective name -> {'variant', 'metric', 'value', 'why', 'runner_up', 'candidates'} (variant None
    when nothing meets the constraints, with the reason)."""
    picks = {}
    for name, objective in objectives.items():
        candidates, rules = [], []
        for variant in variants:
            if _value(variant, objective.metric) is None:
                continue
            if objective.tflm_only and not variant["tflm_runs"]:
                continue
            if objective.profile and not variant["fits"].get(objective.profile, False):
                continue
            if objective.max_accuracy_drop is not None and (
                variant["val_accuracy"] < baseline_val_accuracy - objective.max_accuracy_drop
            ):
                continue
            candidates.append(variant)
        if objective.tflm_only:
            rules.append("TFLM runs it")
        if objective.profile:
            rules.append(f"fits {objective.profile}")
        if objective.max_accuracy_drop is not None:
            rules.append(f"validation accuracy at most {objective.max_accuracy_drop * 100:g} points below the "
                         f"baseline's {baseline_val_accuracy:.4f}")  # fmt: skip
        constraint = ("; ".join(rules)) or "no constraint"
        if not candidates:
            picks[name] = {"variant": None, "metric": objective.metric, "value": None, "candidates": 0,
                           "why": f"no variant meets the constraints ({constraint})", "runner_up": None}  # fmt: skip
            continue
        reverse = objective.goal == "max"
        # Ties go to the smaller file, then the name: a pick must not depend on the order of the plan.
        ranked = sorted(candidates, key=lambda v: (-_value(v, objective.metric) if reverse else _value(v, objective.metric),
                                                   v["gzip_bytes"], v["name"]))  # fmt: skip
        best, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        label = "validation accuracy" if objective.metric == "accuracy" else objective.metric
        why = (f"{'highest' if reverse else 'lowest'} {label} ({_value(best, objective.metric)}) of "
               f"{len(candidates)} variants meeting: {constraint}")  # fmt: skip
        if runner_up:
            why += f"; runner-up {runner_up['name']} ({_value(runner_up, objective.metric)})"
        picks[name] = {"variant": best["name"], "metric": objective.metric, "value": _value(best, objective.metric),
                       "candidates": len(candidates), "why": why,
                       "runner_up": runner_up["name"] if runner_up else None}  # fmt: skip
    return picks
