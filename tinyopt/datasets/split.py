"""The validation split, carved from the training set with a fixed seed, and what makes one unusable."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.params import DataParams, TaskParams


def split_indices(num_examples: int, params: DataParams, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices into the training set: a seeded permutation, cut to train_limit,
    with validation_fraction of it (at least one example) for validation."""
    order = np.random.default_rng(seed).permutation(num_examples)
    if params.train_limit:
        order = order[: params.train_limit]
    num_val = max(1, int(round(len(order) * params.validation_fraction)))
    return order[num_val:], order[:num_val]


def check_split(
    labels: dict | None, num_examples: int, params: DataParams, seed: int, task: TaskParams, source: str
) -> list[str]:
    """Errors for a split that cannot train: no training example left, or a class with none in the
    training split (the model could never learn it); for anomaly, a validation split without both
    labels (AUC is undefined). Returns warnings for what only weakens the run: a class absent from
    the validation split (early stopping and the picks do not see it)."""
    train_idx, val_idx = split_indices(num_examples, params, seed)
    limit = f" and train_limit {params.train_limit}" if params.train_limit else ""
    if len(train_idx) == 0:
        raise UserError(
            f"{source}: {num_examples} training examples leave none to train on after the validation "
            f"split (validation_fraction {params.validation_fraction}{limit}); give more data"
        )
    if labels is None:
        return []
    y_train = labels["train"]
    present = np.union1d(np.unique(y_train), np.unique(labels["test"]))
    counts = np.bincount(y_train[train_idx], minlength=labels["classes"])
    empty = [int(c) for c in present if counts[c] == 0]
    if empty:
        have = np.bincount(y_train, minlength=labels["classes"])
        raise UserError(
            f"{source}: class {empty[0]} has {have[empty[0]]} training examples and none is left in the "
            f"training split (validation_fraction {params.validation_fraction}{limit}); give every class "
            "a few examples more"
        )
    val_classes = set(np.unique(y_train[val_idx]).tolist())
    if task.kind == "anomaly" and len(val_classes) < 2:
        raise UserError(
            f"{source}: the validation split ({len(val_idx)} examples) holds only label "
            f"{val_classes.pop()}; AUC needs both: give more examples or raise "
            "data.validation_fraction"
        )
    missing = [int(c) for c in present if c not in val_classes]
    if missing:
        return [
            f"{source}: {len(missing)} of {len(present)} classes have no example in the validation split "
            f"({len(val_idx)} examples; e.g. class {missing[0]}): early stopping and the picks will not see them"
        ]
    return []
