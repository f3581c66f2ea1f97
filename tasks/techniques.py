"""The plan's technique tokens and the step each one runs: the one table the flow dispatches by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.cluster import cluster_task, sp_cluster_task
from tasks.distill import distill_task
from tasks.graph import graph_task
from tasks.prune import prune_2_4_task, prune_task
from tasks.qat import cqat_task, pcqat_task, pqat_task, qat_task
from tasks.separable import separable_task
from tinyopt.params import TECHNIQUE_SETTINGS, Params

FINE_TUNED = {
    "prune": prune_task,
    "prune_2_4": prune_2_4_task,
    "cluster": cluster_task,
    "sp_cluster": sp_cluster_task,
    "qat": qat_task,
    "pqat": pqat_task,
    "cqat": cqat_task,
    "pcqat": pcqat_task,
    "separable": separable_task,
    "distill": distill_task,
}
STEPS = {**FINE_TUNED, "graph": graph_task}  # graph trains nothing: no training settings, no seed


def technique_call(token: str, parent: Path, prepared: Path, params: Params, out_dir: Path) -> tuple[Any, dict]:
    """The task that applies the technique `token` to the parent model file, and its arguments."""
    arguments = dict(
        parent=parent,
        prepared=prepared,
        settings=getattr(params.techniques, TECHNIQUE_SETTINGS[token]),
        task=params.task,
        out_dir=out_dir,
    )
    if token in FINE_TUNED:
        arguments.update(train=params.train, seed=params.seed)
    return STEPS[token], arguments
