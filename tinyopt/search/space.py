"""What `tinyopt search` decides, apart from running trials: the settings a trial draws from the search
space (through an Optuna trial), the Pareto front of score against size, the pick per objective, and
the params file that rebuilds a pick with `tinyopt run`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tinyopt.core.files import atomic_path
from tinyopt.ml.metrics import HIGHER_IS_BETTER, better
from tinyopt.params import Params, sections_read
from tinyopt.params.pipeline import Block
from tinyopt.params.search import BlockSpace
from tinyopt.run import pareto
from tinyopt.run.plan import variant_name

WIDTH = ("conv_filters", "kernel_size")  # what a search may change in tinyopt's own architecture


def draw(trial: Any, params: Params) -> Params:
    """params with one chain as its plan and the settings its techniques read drawn from search.space."""
    space, techniques = params.search.space, params.techniques
    names = [variant_name(chain) for chain in space.chains]
    chain = list(space.chains[names.index(trial.suggest_categorical("chain", names))])
    if space.distill and trial.suggest_categorical("distill", [False, True]):
        chain = ["distill", *chain]
    model = params.model
    if model.path is None and space.blocks:  # an architecture of tinyopt's own
        model = model.model_copy(update=draw_blocks(trial, space.blocks))
    elif model.path is None:  # the paper CNN's width
        width = {name: trial.suggest_categorical(name, getattr(space, name)) for name in WIDTH if getattr(space, name)}
        model = model.model_copy(update=width)
    elif space.width_multiplier:  # a user's model, rescaled
        multiplier = trial.suggest_categorical("width_multiplier", space.width_multiplier)
        model = model.model_copy(update={"width_multiplier": multiplier})
    updates: dict[str, Any] = {}
    sections = sections_read(chain)  # a trial draws the settings its chain reads, no others
    if "prune" in sections:
        target = trial.suggest_float("target_sparsity", *space.target_sparsity)
        updates["prune"] = techniques.prune.model_copy(
            update=dict(
                target_sparsity=round(target, 4),
                initial_sparsity=round(min(techniques.prune.initial_sparsity, target / 2), 4),
                fine_tune_epochs=trial.suggest_int("prune_epochs", *space.fine_tune_epochs),
                learning_rate=trial.suggest_float("prune_learning_rate", *space.learning_rate, log=True),
            )
        )
    if "cluster" in sections:
        updates["cluster"] = techniques.cluster.model_copy(
            update=dict(
                clusters=trial.suggest_categorical("clusters", space.clusters),
                fine_tune_epochs=trial.suggest_int("cluster_epochs", *space.fine_tune_epochs),
                learning_rate=trial.suggest_float("cluster_learning_rate", *space.learning_rate, log=True),
            )
        )
    if "qat" in sections:
        updates["qat"] = techniques.qat.model_copy(
            update=dict(
                fine_tune_epochs=trial.suggest_int("qat_epochs", *space.qat_epochs),
                learning_rate=trial.suggest_float("qat_learning_rate", *space.learning_rate, log=True),
            )
        )
    techniques = techniques.model_copy(update=updates)
    return params.model_copy(update={"model": model, "techniques": techniques, "plan": [chain]})


def draw_blocks(trial: Any, space: BlockSpace) -> dict[str, Any]:
    """A blocks architecture from the space: its depth, then each block's kind, filters, kernel, stride, pool."""
    blocks = []
    for index in range(trial.suggest_int("depth", *space.depth)):
        choice = {
            name: trial.suggest_categorical(f"block{index}_{name}", getattr(space, plural))
            for name, plural in (
                ("kind", "kinds"),
                ("filters", "filters"),
                ("kernel_size", "kernel_size"),
                ("stride", "stride"),
                ("pool", "pool"),
            )
        }
        blocks.append(Block(**choice))
    return {"architecture": "blocks", "blocks": blocks, "head": trial.suggest_categorical("head", space.head)}


def searches_model(params: Params) -> bool:
    """Whether the search changes the model itself: an architecture, a width, or a width multiplier."""
    space = params.search.space
    if params.model.path:
        return bool(space.width_multiplier)
    return bool(space.blocks) or any(getattr(space, name) for name in WIDTH)


def same_family(params: Params) -> bool:
    """Whether the search's own baseline is of the family its trials draw: the paper CNN is no blocks
    architecture (it learns faster in its first epochs than batch-normed blocks, so it is no median for them)."""
    return not (params.model.path is None and params.search.space.blocks and params.model.architecture != "blocks")


def chain_settings(chain: list[str], params: Params) -> dict[str, dict]:
    """The settings section each technique of the chain reads, by section name, and the model's width when
    the search draws it: what a trial is, with its chain."""
    settings = {
        section: getattr(params.techniques, section).model_dump(mode="json") for section in sections_read(chain)
    }
    if searches_model(params):
        settings["model"] = width_of(params)
    return settings


def width_of(params: Params) -> dict[str, Any]:
    """What a search may change in the model: a user model's width multiplier, a blocks architecture, or the
    paper CNN's width (the model.* keys a pick's params file sets)."""
    model = params.model
    if model.path:
        return {"width_multiplier": model.width_multiplier}
    if model.architecture == "blocks":
        return {"architecture": "blocks", "blocks": [b.model_dump() for b in model.blocks], "head": model.head}
    return {name: getattr(model, name) for name in WIDTH}


def directions(metric: str, latency: bool = False) -> list[str]:
    """Optuna's directions for (score, size), and instructions when the search measures them."""
    return ["maximize" if HIGHER_IS_BETTER[metric] else "minimize", "minimize", *(["minimize"] if latency else [])]


def objective_values(record: Any, size: str, latency: bool = False) -> list[float]:
    """A complete trial's values, in directions' order."""
    return [record.val_score, getattr(record, size), *([record.instructions] if latency else [])]


def feasible(records: list) -> list:
    return [r for r in records if r.state == "complete" and r.fits]


def pareto_front(records: list, size: str, latency: bool = False) -> list:
    """The feasible trials no other feasible trial beats on score, size (and instructions, when the search
    measures them), smallest first."""
    candidates = sorted(feasible(records), key=lambda r: r.number)  # the earliest of equal trials stands for all
    if not candidates:
        return []
    sign = 1 if HIGHER_IS_BETTER[candidates[0].metric] else -1
    if not latency:
        points = [(getattr(r, size), sign * r.val_score) for r in candidates]
        return [candidates[i] for i in pareto.pareto_front(points)]
    points3 = [(getattr(r, size), -sign * r.val_score, r.instructions) for r in candidates]
    return [candidates[i] for i in pareto.nondominated(points3)]


def picks(records: list, size: str, floor: float | None, latency: bool = False) -> dict[str, Any]:
    """most_accurate: the best validation score that fits; smallest: the least `size` that fits at a
    validation score no worse than `floor` (the baseline's, less search.max_drop); fastest (when the search
    measures instructions): the fewest instructions per inference that fits at that floor."""
    fits = feasible(records)
    chosen: dict[str, Any] = {"most_accurate": None, "smallest": None, **({"fastest": None} if latency else {})}
    if fits:
        sign = 1 if HIGHER_IS_BETTER[fits[0].metric] else -1
        chosen["most_accurate"] = max(fits, key=lambda r: (sign * r.val_score, -getattr(r, size), -r.number))
        good = [r for r in fits if floor is None or not better(r.metric, floor, r.val_score)]
        if good:
            chosen["smallest"] = min(good, key=lambda r: (getattr(r, size), -sign * r.val_score, r.number))
            if latency:
                chosen["fastest"] = min(good, key=lambda r: (r.instructions, -sign * r.val_score, r.number))
    return chosen


def write_plan(record: Any, trial_params: dict[str, Params], params_path: Path, out: Path) -> Path:
    """The user's params file with the pick's technique settings and its chain as the plan: `tinyopt run
    --params` on it rebuilds the pick's .tflite byte for byte (its sha256 is in the header)."""
    raw = yaml.safe_load(params_path.read_text()) if params_path.is_file() else {}
    raw = raw or {}
    chosen = trial_params[record.number]
    # Paths resolved as the search read them: the file lives elsewhere (reports/), relative ones would move.
    for section, key, value in (
        ("data", "path", chosen.data.path),
        ("model", "path", chosen.model.path),
        ("reference", "dir", chosen.reference.dir),
    ):
        if value is not None:
            raw.setdefault(section, {})[key] = value
    raw.setdefault("techniques", {})
    for section in record.settings:
        if section == "model":
            raw.setdefault("model", {}).update(width_of(chosen))
        else:
            raw["techniques"][section] = getattr(chosen.techniques, section).model_dump(mode="json")
    raw["plan"] = [record.chain]
    header = (
        f"# tinyopt search, trial {record.number}: {variant_name(record.chain)}, validation "
        f"{record.metric} {record.val_score:.4f}, {record.raw_bytes:,} bytes ({record.gzip_bytes:,} gzip)"
        + (f", {record.instructions:,.0f} instructions on {chosen.search.profile}" if record.instructions else "")
        + "\n"
        f"# `tinyopt run --params {out}` rebuilds it: sha256 {record.sha256}\n"
    )
    with atomic_path(out) as tmp:
        tmp.write_text(header + yaml.safe_dump(raw, sort_keys=False))
    return out
