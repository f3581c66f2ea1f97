"""Early stopping of the architectures a search draws: Optuna's MedianPruner over each baseline's per-epoch
validation figure. Optuna prunes single-objective studies only, so the pruner keeps its own study beside the
search's multi-objective one: a trial per architecture trained, its epochs reported as they end."""

from __future__ import annotations

from typing import Any

from tinyopt.ml.metrics import HIGHER_IS_BETTER


class ArchitectureStopped(Exception):
    """The pruner stopped the architecture a trial drew: the trial is pruned, with this reason."""


class ArchitectureOverBudget(ArchitectureStopped):
    """The architecture is over the search's budget before any training: its int8 weights alone exceed
    search.max_model_bytes, or its untrained int8 model takes more instructions than the instruction budget.
    Rejected untrained, its trial pruned and not counted in search.trials. `excess`: how far over (0.5: 50% over
    the budget), which the sampler's constraint takes, so that it draws nearer the budget next."""

    def __init__(self, reason: str, excess: float):
        super().__init__(reason)
        self.excess = excess


class ArchitecturePruner:
    """A drawn architecture whose validation figure at an epoch is worse than the median of the architectures
    trained in full before it, at the same epoch, stops training there. Nothing is stopped before `startup`
    architectures have trained in full (the search's own baseline counts) nor before `warmup` epochs."""

    def __init__(self, metric: str, startup: int, warmup: int):
        self.metric, self.startup, self.warmup = metric, startup, warmup
        self.studies: dict[str, Any] = {}  # by the figure watched: the task's metric, else val_loss

    def figure(self, figures: dict[str, float]) -> str:
        """The task's metric on the validation split where Keras tracks it; else the validation loss."""
        return f"val_{self.metric}" if f"val_{self.metric}" in figures else "val_loss"

    def study(self, figure: str):
        import optuna

        if figure not in self.studies:
            higher = figure != "val_loss" and HIGHER_IS_BETTER[self.metric]
            pruner = optuna.pruners.MedianPruner(n_startup_trials=self.startup, n_warmup_steps=self.warmup)
            self.studies[figure] = optuna.create_study(direction="maximize" if higher else "minimize", pruner=pruner)
        return self.studies[figure]

    def add_trained(self, history: dict[str, list[float]]) -> None:
        """An architecture trained without the pruner watching (the search's own baseline, or one the task
        cache gave back): its curve counts as one trained in full."""
        import optuna

        figure = self.figure({key: 0.0 for key in history})
        curve = history.get(figure) or []
        if curve:
            study = self.study(figure)
            study.add_trial(
                optuna.trial.create_trial(
                    value=best_of(study, curve),
                    intermediate_values=dict(enumerate(curve)),
                    state=optuna.trial.TrialState.COMPLETE,
                )
            )

    def watch(self, name: str) -> Watch:
        return Watch(self, name)


class Watch:
    """One architecture's training as the pruner sees it: calling it is tasks.train's `stop_early`; `done`
    tells the study a training that ran to its end."""

    def __init__(self, pruner: ArchitecturePruner, name: str):
        self.pruner, self.name = pruner, name
        self.trial: Any = None  # asked at the first epoch, once the figure watched is known
        self.curve: list[float] = []
        self.stopped = False

    def __call__(self, epoch: int, figures: dict[str, float]) -> str | None:
        import optuna

        if self.trial is None:
            self.figure = self.pruner.figure(figures)
            self.study = self.pruner.study(self.figure)
            self.trial = self.study.ask()
        value = figures[self.figure]
        self.curve.append(value)
        self.trial.report(value, epoch)
        if not self.trial.should_prune():
            return None
        self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)
        self.stopped = True
        return (
            f"architecture {self.name} stopped training after epoch {epoch + 1}: {self.figure} {value:.4f}, worse "
            f"than the median {self.median(epoch):.4f} of the architectures trained in full, at that epoch "
            "(Optuna's MedianPruner)"
        )

    def median(self, epoch: int) -> float:
        import statistics

        import optuna

        complete = self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return statistics.median(t.intermediate_values[epoch] for t in complete if epoch in t.intermediate_values)

    def done(self, history: dict[str, list[float]]) -> None:
        """The training ran to its end (early stopping included): its curve joins the median. `history`: its
        record's curves, for a training the task cache gave back (no epoch ran under watch)."""
        if self.trial is None:
            self.pruner.add_trained(history)
        elif not self.stopped:
            self.study.tell(self.trial, best_of(self.study, self.curve))


def best_of(study: Any, curve: list[float]) -> float:
    """A curve's best value in the study's direction: what a training run in full is told."""
    return max(curve) if study.direction.name == "MAXIMIZE" else min(curve)
