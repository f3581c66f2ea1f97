"""The search's trials: Optuna's multi-objective TPE draws each (score against size, infeasible where the
model does not fit), a Prefect task builds and scores it, its result is told back to the study. Each trial
is a nested MLflow run from its start (its fine-tunes' epochs go there live) to its result. A draw made
before is told its result again, not rebuilt, and not counted in search.trials."""

from __future__ import annotations

import json
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

from prefect.futures import as_completed

from tinyopt.orchestration import tracking
from tinyopt.params import Params
from tinyopt.records.steps import TrialRecord
from tinyopt.run import plan
from tinyopt.search.pruning import ArchitectureOverBudget, ArchitectureStopped
from tinyopt.search.space import chain_settings, directions, draw, objective_values

DRAWS_PER_TRIAL = 5  # the most draws per trial counted: the rest rejected over budget, or drawn before


def open_study(params: Params, name: str, latency: bool = False):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # constraints_func's
    sampler = optuna.samplers.TPESampler(
        seed=params.seed,
        n_startup_trials=min(8, max(2, params.search.trials // 3)),  # random draws before TPE models the rest
        constraints_func=lambda trial: trial.user_attrs.get("constraints", [1.0]),  # > 0: infeasible
    )
    return optuna.create_study(
        directions=directions(params.task.score_metric, latency), sampler=sampler, study_name=name
    )


def in_flight(params: Params) -> int:
    """Trials run at once: one per Dask worker process; two on threads (training takes turns in one
    process, so a second trial only overlaps its conversion and checks with the other's training)."""
    return params.runner.workers if params.runner.kind == "dask" else 2


def trial_name(number: int, chain: list[str]) -> str:
    return f"trial {number} {plan.variant_name(chain)}"


def start_trial_run(parent_run_id: str, experiment: str, number: int, chain: list[str], settings: dict) -> str:
    """The trial's nested MLflow run, RUNNING from now (its task is about to start): its chain and settings
    as params."""
    tags = {"tinyopt.kind": "trial", "tinyopt.trial_state": "running"}  # its state when told
    run_id = tracking.start_run(experiment, trial_name(number, chain), tags, parent_run_id)
    flat = {f"{section}.{k}": v for section, values in settings.items() for k, v in values.items()}
    tracking.log_run_data(run_id, params={"chain": " > ".join(chain), **flat})
    return run_id


def end_trial_run(run_id: str, record: TrialRecord) -> None:
    """The trial's figures and state on its run, which ends FINISHED."""
    figures = ("val_score", "raw_bytes", "gzip_bytes", "arena_bytes", "train_seconds", "instructions", "flash_bytes")
    metrics = {k: getattr(record, k) for k in (*figures, "ram_bytes")}
    tracking.log_run_data(run_id, metrics=metrics)
    mlflow_client = tracking.client()
    mlflow_client.set_tag(run_id, "tinyopt.trial_state", record.state)
    if record.reason:
        mlflow_client.set_tag(run_id, "tinyopt.trial_reason", record.reason[: tracking.TAG_LIMIT])
    tracking.end_run(run_id)


class Trials:
    """Runs the study's trials until search.trials or search.time_budget_s (counted from `started`, the
    search's start: the data, the baseline and the trials all count)."""

    def __init__(
        self, study: Any, params: Params, progress: Any, parent_run_id: str, started: float, latency: bool = False
    ):
        self.study, self.params, self.progress, self.latency = study, params, progress, latency
        self.parent_run_id, self.started = parent_run_id, started
        self.records: list[TrialRecord] = []
        self.drawn: dict[int, Params] = {}  # each trial's params: its chain as the plan, its settings
        self.seen: dict[str, TrialRecord] = {}
        self.walls: list[float] = []  # each finished trial's wall time, from launch to result
        self.run_ids: dict[int, str] = {}  # each trial's nested MLflow run
        self.running: dict[int, str] = {}  # the runs of trials not told yet
        self.over_budget = 0  # trials whose architecture was rejected untrained: not counted in search.trials
        self.repeats = 0  # draws made before, told their earlier result: not counted either

    def more(self) -> bool:
        """Another trial may start: fewer than search.trials so far, and the typical trial (the median so
        far) would still end within search.time_budget_s."""
        budget = self.params.search
        typical = statistics.median(self.walls) if self.walls else 0.0
        drawn_at_most = DRAWS_PER_TRIAL * budget.trials  # a space nearly all over budget, or drawn out, ends too
        return (
            self.counted() < budget.trials
            and len(self.drawn) < drawn_at_most
            and time.monotonic() - self.started + typical < budget.time_budget_s
        )

    def counted(self) -> int:
        """The trials that count in search.trials: those that ran, not those rejected untrained or repeated."""
        return len(self.drawn) - self.over_budget - self.repeats

    def run(self, launch: Callable[[int, Params, str], Any]) -> list[TrialRecord]:
        """`launch(number, params, run_id)` submits a trial's task and returns its future; `run_id` is the
        trial's MLflow run, RUNNING from just before the launch until its result is told (FAILED if the
        trial fails, and every other trial's run still open then, as the search stops)."""
        pending: dict = {}
        try:
            while pending or self.more():
                while len(pending) < in_flight(self.params) and self.more():
                    trial = self.study.ask()
                    drawn = self.drawn[trial.number] = draw(trial, self.params)
                    chain, settings = drawn.plan[0], chain_settings(drawn.plan[0], drawn)
                    earlier = self.seen.get(self.key(chain, settings))
                    run_id = self.start(trial.number, chain, settings)
                    if earlier:  # a chain with nothing to draw, or a repeat
                        why = f"the same chain and settings as trial {earlier.number}; not run again"
                        reused = earlier.model_copy(update={"number": trial.number, "reason": why})
                        self.repeats += 1
                        self.finish(trial, reused, reused=True)
                    else:
                        try:
                            pending[launch(trial.number, drawn, run_id)] = (trial, time.monotonic())
                        except ArchitectureStopped as stopped:  # its baseline, trained in this thread
                            record = TrialRecord(
                                number=trial.number,
                                chain=chain,
                                settings=settings,
                                state="pruned",
                                reason=str(stopped),
                                metric=self.params.task.score_metric,
                            )
                            over = isinstance(stopped, ArchitectureOverBudget)
                            self.finish(trial, record, violation=stopped.excess if over else None)
                            if over:  # no step ran: not in the progress total
                                self.over_budget += 1
                                self.progress.say(f"{trial_name(trial.number, chain)} pruned: {stopped}")
                            else:
                                self.progress.finished(trial_name(trial.number, chain), "pruned")
                        except BaseException as exc:  # its baseline, trained in this thread, failed
                            tracking.end_run(self.running.pop(trial.number), exc)
                            raise
                if pending:
                    finished = next(as_completed(list(pending)))
                    trial, launched = pending.pop(finished)
                    try:
                        record = finished.result()
                    except BaseException as exc:
                        tracking.end_run(self.running.pop(trial.number), exc)
                        raise
                    self.walls.append(time.monotonic() - launched)
                    self.seen.setdefault(self.key(record.chain, record.settings), record)
                    self.finish(trial, record)
        except BaseException as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            for number in list(self.running):
                tracking.end_run(self.running.pop(number), f"the search stopped: {first}")
            raise
        untried = self.params.search.trials - self.counted()
        ended_by = (
            "by the time budget"
            if len(self.drawn) < DRAWS_PER_TRIAL * self.params.search.trials
            else "after too many draws over budget or drawn before"
        )
        self.progress.skip(f"{untried} trials left out {ended_by}", untried)
        return sorted(self.records, key=lambda r: r.number)

    def start(self, number: int, chain: list[str], settings: dict) -> str:
        experiment = self.params.tracking.experiment
        run_id = self.run_ids[number] = start_trial_run(self.parent_run_id, experiment, number, chain, settings)
        self.running[number] = run_id
        return run_id

    def violation(self, record: TrialRecord) -> float:
        """0 for a trial that fits; else its greatest relative excess over search.max_model_bytes and the
        instruction budget, or 1.0 where neither is what fails (flash, RAM, a skip, a pruned trial)."""
        if record.fits:
            return 0.0
        search = self.params.search
        budget = search.instruction_budget(self.params.devices[search.profile].clock_mhz)
        excess = [
            *([record.raw_bytes / search.max_model_bytes - 1] if record.raw_bytes and search.max_model_bytes else []),
            *([record.instructions / budget - 1] if record.instructions and budget else []),
        ]
        return max([e for e in excess if e > 0] or [1.0])

    @staticmethod
    def key(chain: list[str], settings: dict) -> str:
        return json.dumps([chain, settings], sort_keys=True)

    def finish(self, trial: Any, record: TrialRecord, reused: bool = False, violation: float | None = None) -> None:
        """Tell the study `record`'s result. `violation`: how far over the budget its architecture was, measured
        untrained (relative); else the trial's own excess over the byte and instruction budgets, 1.0 for a
        trial that fails otherwise, 0 for one that fits. The sampler draws nearer the budget from the least over."""
        trial.set_user_attr("constraints", [self.violation(record) if violation is None else violation])
        if record.state == "complete":
            values = objective_values(record, self.params.search.size, self.latency)
            self.study.tell(trial, [float("inf") if v is None else v for v in values])  # None: not measured
        else:
            # Told complete at the worst values, infeasible by its constraint, rather than pruned: multi-objective
            # TPE (optuna 4.9) reads the values of every trial in its "below" group and fails on a pruned one's None.
            worst = [float("-inf") if d.name == "MAXIMIZE" else float("inf") for d in self.study.directions]
            self.study.tell(trial, worst)
        end_trial_run(self.running.pop(record.number), record)
        self.records.append(record)
        if reused:  # nothing ran: not in the progress total
            self.progress.say(f"{trial_name(record.number, record.chain)}: drawn before, reused; not counted")
