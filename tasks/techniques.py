"""The plan's technique tokens and the step each one runs: the one table the flow, the CLI and the search's
trials dispatch by. A technique's step is its FineTuning recipe in one of the step modules (or, for a technique
that trains nothing, a step function named by its token); its record (tinyopt.params.techniques) says the rest."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from tasks import cluster, distill, graph, prune, qat, separable
from tasks.fine_tune import fine_tuning_step
from tinyopt.ml.training import FineTuning
from tinyopt.params import TECHNIQUES, Params

STEP_MODULES = (prune, cluster, qat, separable, distill, graph)


def steps_in(module: ModuleType) -> dict[str, Callable]:
    """The technique steps a module defines: each FineTuning recipe, and each step function named by a token."""
    found = {}
    for value in vars(module).values():
        if isinstance(value, FineTuning) and type(value).__module__ == module.__name__:
            found[value.token] = fine_tuning_step(value)
        elif hasattr(value, "task") and getattr(value, "__name__", None) in TECHNIQUES:
            found[value.__name__] = value
    return found


def technique_steps() -> dict[str, Callable]:
    """Token -> step, for every technique record: exactly one step module defines each."""
    found: dict[str, list[Callable]] = {}
    for module in STEP_MODULES:
        for token, step in steps_in(module).items():
            found.setdefault(token, []).append(step)
    for token in TECHNIQUES:
        if len(found.get(token, [])) != 1:
            raise RuntimeError(f"technique '{token}': {len(found.get(token, []))} step modules define it, not one")
    return {token: found[token][0] for token in TECHNIQUES}


STEPS = technique_steps()


def technique_call(token: str, parent: Path, prepared: Path, params: Params, out_dir: Path) -> tuple[Any, dict]:
    """The task that applies the technique `token` to the parent model file, and its arguments."""
    technique = TECHNIQUES[token]
    arguments = dict(
        parent=parent,
        prepared=prepared,
        settings=getattr(params.techniques, technique.settings),
        task=params.task,
        out_dir=out_dir,
    )
    if technique.fine_tuned:  # graph trains nothing: no training settings, no seed
        arguments.update(train=params.train, seed=params.seed)
    return STEPS[token], arguments
