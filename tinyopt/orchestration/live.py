"""The optimize flow's MLflow runs while it runs. The parent run opens with the flow (tinyopt.orchestration
.tracking.tracked_run); each variant's child run opens when the step that makes its model starts (the
baseline's training for base-*, `prune` for prune-*), receives that fit's per-epoch curves live and its
ancestors' curves from their records, and each figure once, as it is measured. A run the flow does not
finish ends FAILED with it; a variant whose technique does not apply ends KILLED with the reason."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

from tinyopt.orchestration import tracking
from tinyopt.records.steps import TrainedModel
from tinyopt.run import plan


class LiveRuns:
    """The child runs of one pipeline run, by variant name."""

    def __init__(self, experiment: str, parent_run_id: str, tags: Mapping[str, str], dataset: Any = None):
        """`dataset`: the MLflow dataset input (tracking.dataset_input) each run records."""
        self.experiment, self.parent_run_id, self.tags, self.dataset = experiment, parent_run_id, dict(tags), dataset
        self.runs: dict[str, str] = {}  # variant -> its run id
        self.logged: dict[str, set[str]] = {}  # run id -> the metric keys it has (each figure once)
        self.ended: set[str] = set()
        self.lock = threading.Lock()

    def start(self, chains: Iterable[list[str]], ancestors: Mapping[plan.Prefix, TrainedModel] = {}) -> tuple[str, ...]:
        """The runs of these variants, opened now (RUNNING) if they were not; a new run gets the curves of
        the models its chain was built from (`ancestors`, by prefix). Returns their ids."""
        ids = []
        for chain in chains:
            name = plan.variant_name(chain)
            with self.lock:
                new = name not in self.runs
                if new:
                    tags = {**self.tags, "variant": name, "chain": " > ".join(chain), "kind": "variant"}
                    run_id = tracking.start_run(self.experiment, name, tags, self.parent_run_id)
                    self.runs[name] = run_id
                    self.logged[run_id] = set()
                    if self.dataset is not None:
                        tracking.log_dataset(run_id, self.dataset)
            if new:
                for prefix, model in ancestors.items():
                    if tuple(chain[: len(prefix)]) == prefix and len(prefix) < len(chain) - 1:
                        self.curves([chain], step_token(prefix), model.history)
            ids.append(self.runs[name])
        return tuple(ids)

    def curves(self, chains: Iterable[list[str]], token: str, history: Mapping[str, list[float]]) -> None:
        """A fit's per-epoch curves from its record, on runs that do not have them yet (its step's result was
        reused from the cache, so nothing went live)."""
        for chain in chains:
            run_id = self.runs.get(plan.variant_name(chain))
            if run_id and history and not tracking.client().get_metric_history(run_id, f"{token}.loss"):
                tracking.log_curves([run_id], token, history)

    def figures(self, variant: str, metrics: Mapping[str, float]) -> None:
        """Figures of a variant as they are measured; a key its run already has is not logged again."""
        run_id = self.runs.get(variant)
        if run_id:
            tracking.log_run_data(run_id, metrics=self.unlogged(run_id, metrics))

    def unlogged(self, run_id: str, metrics: Mapping[str, float]) -> dict[str, float]:
        """The figures the run does not have yet; from now on it has them."""
        with self.lock:
            have = self.logged.setdefault(run_id, set())
            new = {key: value for key, value in metrics.items() if key not in have and value is not None}
            have.update(new)
        return new

    def end(self, variant: str, status: str, tags: Mapping[str, str] = {}) -> None:
        run_id = self.runs.get(variant)
        if run_id and run_id not in self.ended:
            for key, value in tags.items():
                tracking.client().set_tag(run_id, key, value[: tracking.TAG_LIMIT])
            tracking.client().set_terminated(run_id, status=status)
            self.ended.add(run_id)

    def end_all(self, status: str) -> None:
        """Every run still open: the flow ended without finishing them."""
        for variant in list(self.runs):
            self.end(variant, status)


def step_token(prefix: plan.Prefix) -> str:
    """How a model's curves are named: `train.loss` for the baseline, `<technique>.loss` for the rest."""
    return prefix[-1] if prefix else "train"


def trained_figures(model: TrainedModel) -> dict[str, float]:
    """What a fine-tune measured, as the variant's final metrics name it."""
    return {
        "keras_score": model.keras_score,
        "keras_val_score": model.val_score,
        "sparsity": model.sparsity,
        "train_seconds": model.train_seconds,
    }
