"""The plan's technique tokens and the step each one runs: the one table the flow, the CLI and the search's
trials dispatch by. A technique's step is `<token>_task` in one of the step modules; its record
(tinyopt.params.techniques) says the rest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks import cluster, distill, graph, prune, qat, separable
from tinyopt.params import TECHNIQUES, Params

STEP_MODULES = (prune, cluster, qat, separable, distill, graph)


def step_of(token: str) -> Any:
    """The task `<token>_task` of the one step module that defines it."""
    found = [getattr(module, f"{token}_task") for module in STEP_MODULES if hasattr(module, f"{token}_task")]
    if len(found) != 1:
        raise RuntimeError(f"technique '{token}': {len(found)} step modules define {token}_task, not one")
    return found[0]


STEPS = {token: step_of(token) for token in TECHNIQUES}


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
