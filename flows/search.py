"""The `search` flow: the data and the baseline as a run makes them, then trials that Optuna's
multi-objective TPE draws (score against size, under the profile's flash and RAM), each a Prefect task
on the configured runner and a nested MLflow run, until search.trials or search.time_budget_s. Choices
use the validation split; the test split scores the Pareto front and the picks once, at the end."""

from __future__ import annotations

import gzip
import json
import time
import warnings
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows.optimize import data_stage, new_run_id
from tasks.evaluate import evaluate_tflite
from tasks.train import train_task
from tasks.trial import trial_task
from tinyopt import layout, plan, tracking
from tinyopt.cache import compute_code_versions
from tinyopt.console import Progress
from tinyopt.metrics import HIGHER_IS_BETTER
from tinyopt.params import Params, load_params, with_inputs
from tinyopt.search import TrialRecord, chain_settings, directions, draw, pareto_front, picks, write_plan
from tinyopt.search_report import ReferencePoint, SearchResult, write_search_report
from tinyopt.steps import Submitter


def reference_points(references: dict[str, Path], prepared: Path, metric: str) -> list[ReferencePoint]:
    """The reference models scored on this run's test split, in the same harness as our picks."""
    points = []
    for name, path in sorted(references.items()):
        blob = path.read_bytes()
        score = evaluate_tflite(path, prepared, metric).score
        points.append(
            ReferencePoint(name=name, score=score, raw_bytes=len(blob), gzip_bytes=len(gzip.compress(blob, mtime=0)))
        )
    return points


def in_flight(params: Params) -> int:
    """Trials run at once: one per Dask worker process; two on threads (training takes turns in one
    process, so a second trial only overlaps its conversion and checks with the other's training)."""
    return params.runner.workers if params.runner.kind == "dask" else 2


def _constraints(trial) -> list[float]:
    return trial.user_attrs.get("constraints", [1.0])  # > 0: infeasible (doesn't fit, or didn't finish)


def _tell(study, trial, record: TrialRecord, size: str) -> None:
    import optuna

    trial.set_user_attr("constraints", [0.0 if record.fits else 1.0])
    if record.state == "complete":
        study.tell(trial, [record.val_score, getattr(record, size)])
    else:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)


def _track(parent_run_id: str, experiment: str, record: TrialRecord) -> None:
    name = f"trial {record.number} {plan.variant_name(record.chain)}"
    run_id = tracking.start_run(experiment, name, {"tinyopt.trial_state": record.state}, parent_run_id)
    settings = {f"{section}.{k}": v for section, values in record.settings.items() for k, v in values.items()}
    metrics = {k: getattr(record, k) for k in ("val_score", "raw_bytes", "gzip_bytes", "arena_bytes", "train_seconds")}
    tracking.log_run_data(run_id, params={"chain": " > ".join(record.chain), **settings}, metrics=metrics)
    tracking.end_run(run_id)


@flow(name="search", task_runner=ThreadPoolTaskRunner(max_workers=2))
def search(params_path: str = "params.yaml", model: str | None = None, data: str | None = None) -> dict:
    """Search chains and settings for the best score and the smallest size that fit search.profile."""
    import optuna

    logger, started = get_run_logger(), time.monotonic()
    params = with_inputs(load_params(params_path), model, data)
    settings, metric, search_id = params.search, params.task.score_metric, "search-" + new_run_id()
    compute_code_versions()
    run = Submitter(Progress(3 + settings.trials, logger.info, started))
    _, prepared, references, _ = data_stage(params, run, logger)
    run.progress.drop(3 * len(references))  # a search scores them once, not through the run's steps
    prepared_path = Path(prepared.path)
    baseline = run.now(
        train_task,
        "train baseline",
        prepared=prepared_path,
        model_params=params.model,
        train_params=params.train,
        task=params.task,
        seed=params.seed,
        out_dir=plan.model_dir(()),
    )
    drop = settings.max_drop
    floor = None if drop is None else baseline.val_score + (-drop if HIGHER_IS_BETTER[metric] else drop)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # constraints_func's
    sampler = optuna.samplers.TPESampler(
        seed=params.seed, n_startup_trials=min(8, max(2, settings.trials // 3)), constraints_func=_constraints
    )
    study = optuna.create_study(directions=directions(metric), sampler=sampler, study_name=search_id)
    parent_run_id = tracking.start_run(params.tracking.experiment, search_id, {"tinyopt.kind": "search"})
    tracking.log_run_data(parent_run_id, params={k: v for k, v in settings.model_dump().items() if k != "space"})
    records: list[TrialRecord] = []
    trial_params: dict[int, Params] = {}
    pending: dict = {}
    seen: dict[str, TrialRecord] = {}

    def finish(trial, record: TrialRecord, reused: bool = False) -> None:
        _tell(study, trial, record, settings.size)
        _track(parent_run_id, params.tracking.experiment, record)
        records.append(record)
        if reused:
            run.progress.finished(f"trial {record.number} {plan.variant_name(record.chain)}", "drawn before, reused")

    out_root = layout.ARTIFACTS / "search" / search_id
    try:
        while pending or (len(trial_params) < settings.trials and time.monotonic() - started < settings.time_budget_s):
            while (
                len(pending) < in_flight(params)
                and len(trial_params) < settings.trials
                and time.monotonic() - started < settings.time_budget_s
            ):
                trial = study.ask()
                drawn = draw(trial, params)
                trial_params[trial.number] = drawn
                chain = drawn.plan[0]
                key = json.dumps([chain, chain_settings(chain, drawn)], sort_keys=True)
                if key in seen:  # drawn before (a chain with nothing to draw, or a repeat): told, not run again
                    why = f"the same chain and settings as trial {seen[key].number}; not run again"
                    record = seen[key].model_copy(update={"number": trial.number, "reason": why})
                    finish(trial, record, reused=True)
                    continue
                future = run(
                    trial_task,
                    f"trial {trial.number} {plan.variant_name(chain)}",
                    number=trial.number,
                    chain=chain,
                    params=drawn,
                    prepared=prepared_path,
                    baseline=Path(baseline.model_path),
                    floor=floor,
                    out_dir=out_root / f"trial-{trial.number}",
                )
                pending[future] = trial
            if pending:
                finished = next(as_completed(list(pending)))
                record = finished.result()
                seen.setdefault(json.dumps([record.chain, record.settings], sort_keys=True), record)
                finish(pending.pop(finished), record)

        records.sort(key=lambda r: r.number)
        front, chosen = pareto_front(records, settings.size), picks(records, settings.size, floor)
        tested = {r.number for r in front} | {r.number for r in chosen.values() if r}
        test_scores = {
            n: evaluate_tflite(Path(records[n].tflite_path), prepared_path, metric).score for n in sorted(tested)
        }
        out_dir = layout.REPORTS / search_id
        out_dir.mkdir(parents=True, exist_ok=True)
        plans = {
            objective: write_plan(record, trial_params, Path(params_path), out_dir / f"plan-{objective}.yaml")
            for objective, record in chosen.items()
            if record
        }
        result = SearchResult(
            search_id=search_id,
            metric=metric,
            size=settings.size,
            profile=settings.profile,
            baseline_val_score=baseline.val_score,
            floor=floor,
            seconds=round(time.monotonic() - started, 1),
            runner=f"{params.runner.kind} x {in_flight(params)}",
            trials=records,
            front=[r.number for r in front],
            picks={k: (r.number if r else None) for k, r in chosen.items()},
            test_scores=test_scores,
            plans={k: str(v) for k, v in plans.items()},
            references=reference_points(references, prepared_path, metric),
            mlflow_run_id=parent_run_id,
        )
        files = write_search_report(result, out_dir)
        pick_metrics = {
            f"{objective}.{key}": value
            for objective, number in result.picks.items()
            if number is not None
            for key, value in (
                ("test_score", test_scores[number]),
                (settings.size, getattr(records[number], settings.size)),
            )
        }
        tracking.log_run_data(parent_run_id, metrics={"seconds": result.seconds, **pick_metrics}, artifacts=files)
    except BaseException:
        tracking.end_run(parent_run_id, "FAILED")
        raise
    tracking.end_run(parent_run_id)
    logger.info("search report: %s", files[0])
    return result.model_dump(mode="json")
