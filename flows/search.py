"""The `search` flow: the data and the baseline as a run makes them, then the trials (flows.trials)
until search.trials or search.time_budget_s; choices use the validation split. At the end the test split
scores the Pareto front and the picks once, and each pick is written back as a params file.

MLflow follows it live: the search's run opens as the flow starts, each trial's nested run as the trial
starts (its fine-tunes' epochs arrive as they end), and the front is on the search's run at the end."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from flows.optimize import data_stage, new_run_id, train_stage
from flows.trials import Trials, in_flight, open_study
from tasks.evaluate import evaluate_tflite
from tasks.train import train_baseline, untrained_model
from tasks.trial import latency_searched, run_trial, untrained_int8
from tinyopt.core import layout
from tinyopt.core.console import Progress
from tinyopt.ml.architectures import describe_blocks
from tinyopt.ml.metrics import HIGHER_IS_BETTER
from tinyopt.ml.models import int8_weight_bytes
from tinyopt.orchestration import tracking
from tinyopt.orchestration.cache import compute_code_versions
from tinyopt.orchestration.steps import Submitter
from tinyopt.params import Params, load_params, with_inputs
from tinyopt.records.steps import StoppedTraining, TrialRecord
from tinyopt.run import plan
from tinyopt.search.pruning import ArchitectureOverBudget, ArchitecturePruner, ArchitectureStopped
from tinyopt.search.report import TOO_LARGE, TOO_SLOW, ReferencePoint, SearchResult, write_search_report
from tinyopt.search.space import pareto_front, picks, same_family, searches_model, width_of, write_plan


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


def floor_of(baseline_val_score: float, drop: float | None, metric: str) -> float | None:
    """The baseline's validation score less `drop`, in the metric's direction; None for no drop."""
    if drop is None:
        return None
    return baseline_val_score + (-drop if HIGHER_IS_BETTER[metric] else drop)


def conclude(records: list[TrialRecord], trials: Trials, params: Params, params_path: Path, prepared: Path, **about):
    """The front and the picks, scored once on the test split, and each pick's params file."""
    size, metric, out_dir = params.search.size, params.task.score_metric, layout.REPORTS / about["search_id"]
    latency = trials.latency
    front, chosen = pareto_front(records, size, latency), picks(records, size, about["floor"], latency)
    tested = sorted({r.number for r in front} | {r.number for r in chosen.values() if r})
    by_number = {r.number: r for r in records}
    out_dir.mkdir(parents=True, exist_ok=True)
    return SearchResult(
        latency=latency,
        instruction_budget=params.search.instruction_budget(params.devices[params.search.profile].clock_mhz),
        metric=metric,
        size=size,
        profile=params.search.profile,
        runner=f"{params.runner.kind} x {in_flight(params)}",
        trials=records,
        front=[r.number for r in front],
        picks={objective: (r.number if r else None) for objective, r in chosen.items()},
        test_scores={n: evaluate_tflite(Path(by_number[n].tflite_path), prepared, metric).score for n in tested},
        plans={
            objective: str(write_plan(r, trials.drawn, params_path, out_dir / f"plan-{objective}.yaml"))
            for objective, r in chosen.items()
            if r
        },
        front_plans={  # every trade-off on the front, not only the picks, is a run away
            r.number: str(write_plan(r, trials.drawn, params_path, out_dir / f"plan-trial-{r.number}.yaml"))
            for r in front
        },
        **about,
    )


# Weights move an architecture's instruction count a little (a ReLU's negative accumulators exit early, and the
# requantization path follows the scales): trained counts were 0.01-3.7% off the untrained ones on blocks and the
# paper CNN. One within 25% over the budget trains, and its trial's own count decides.
UNTRAINED_MARGIN = 1.25


class Baselines:
    """The baseline each trial starts from: the search's own, or, for a width the search drew, that width
    of tinyopt's architecture trained by the same step and seed, once per width (under artifacts/search/,
    where the task cache finds it again for the next search with the same data and settings)."""

    def __init__(
        self,
        params: Params,
        prepared: Path,
        run: Submitter,
        baseline: Path,
        pruner: ArchitecturePruner | None = None,
        latency: bool = False,
    ):
        self.prepared, self.run, self.pruner, self.latency = prepared, run, pruner, latency
        self.trained = {self.key(params): baseline}
        self.stopped: dict[str, ArchitectureStopped] = {}  # why an architecture did not train in full, by key

    @staticmethod
    def key(params: Params) -> str:
        return json.dumps(width_of(params), sort_keys=True)

    @staticmethod
    def name(params: Params) -> str:
        """The baseline's name in task runs and under artifacts/search/baselines/: `12x5` (the paper CNN's
        filters and kernel), `blocks-c16k3-s32k5p`, or `<your model>-x0.5`."""
        model = params.model
        if model.path:
            return f"{Path(model.path).stem}-x{model.width_multiplier:g}"
        if model.architecture == "blocks":
            return f"blocks-{describe_blocks(model)}"
        return f"{model.conv_filters}x{model.kernel_size}"

    @staticmethod
    def most(params: Params) -> int:
        """How many widths besides the search's own its trials may draw: each a baseline to train."""
        space = params.search.space
        if params.model.path:
            multipliers = set(space.width_multiplier or [])
            return min(params.search.trials, len(multipliers - {params.model.width_multiplier}))
        if space.blocks:  # every trial may draw another architecture
            return params.search.trials
        widths = {
            (filters, kernel)
            for filters in space.conv_filters or [params.model.conv_filters]
            for kernel in space.kernel_size or [params.model.kernel_size]
        }
        return min(params.search.trials, len(widths - {(params.model.conv_filters, params.model.kernel_size)}))

    def skip_undrawn(self, params: Params) -> None:
        """The models no trial drew: their baselines, counted in the progress line's total, never train."""
        self.run.progress.skip("baselines of models no trial drew", self.most(params) + 1 - len(self.trained))

    def __call__(self, drawn: Params, curves_to: tuple[str, ...] = ()) -> Path:
        """The baseline of `drawn`'s width; one trained now sends its epochs live to the MLflow runs
        `curves_to` (the trial's that asked first), as `train.loss`, ... Raises ArchitectureStopped for one the
        pruner stopped, now or before."""
        key = self.key(drawn)
        if key in self.stopped:
            raise self.stopped[key]
        if key not in self.trained:
            name = self.name(drawn)
            if over := self.over_budget(drawn):
                why, excess = over
                self.stopped[key] = ArchitectureOverBudget(f"architecture {name} {why}; not trained", excess)
                raise self.stopped[key]
            watch = self.pruner.watch(name) if self.pruner else None
            record, outcome = self.run.now_told(
                train_baseline,
                f"train baseline {name}",
                prepared=self.prepared,
                model_params=drawn.model,
                train_params=drawn.train,
                task=drawn.task,
                seed=drawn.seed,
                out_dir=layout.ARTIFACTS / "search" / "baselines" / name,
                curves_to=curves_to,
                stop_early=watch,
            )
            if isinstance(record, StoppedTraining):
                self.stopped[key] = ArchitectureStopped(record.reason)
                raise self.stopped[key]
            if watch:
                watch.done(record.history)
            if outcome == "cached":  # trained by an earlier search: nothing went live, its record has the curves
                tracking.log_curves(curves_to, "train", record.history)
            self.trained[key] = Path(record.model_path)
        return self.trained[key]

    def over_budget(self, drawn: Params) -> tuple[str, float] | None:
        """Why `drawn`'s architecture cannot fit the search's budget whatever its training, and how far over it
        is (relative), or None: its int8 weights alone over search.max_model_bytes (counted without converting),
        its untrained int8 .tflite over it, or (the latency searched) that model's instructions on
        search.profile's core over the budget."""
        search, limit = drawn.search, drawn.search.max_model_bytes
        budget = search.instruction_budget(drawn.devices[search.profile].clock_mhz) if self.latency else None
        if not limit and budget is None:
            return None
        model = untrained_model(self.prepared, drawn.model, drawn.task, drawn.seed)
        if limit and (least := int8_weight_bytes(model)) > limit:  # no conversion needed
            why = f"{TOO_LARGE}: its int8 weights alone take at least {least:,} B, over search.max_model_bytes"
            return f"{why} ({limit:,})", least / limit - 1
        untrained = untrained_int8(model, self.prepared, drawn, on_core=budget is not None)
        if limit and (raw_bytes := untrained.get("raw_bytes", 0)) > limit:
            why = f"{TOO_LARGE}: its int8 .tflite, untrained, takes {raw_bytes:,} B (trained, more), over"
            return f"{why} search.max_model_bytes ({limit:,})", raw_bytes / limit - 1
        instructions = untrained.get("instructions")
        if budget is not None and instructions is not None and instructions > UNTRAINED_MARGIN * budget:
            why = f"{TOO_SLOW}: its int8 model, untrained, takes {instructions:,.0f} instructions per inference on"
            return (
                f"{why} {search.profile}, over the budget ({budget:,.0f}) by more than trained weights move a count",
                instructions / budget - 1,
            )
        return None


def log_search(result: SearchResult, files: list[Path], trial_runs: dict[int, str]) -> None:
    """The search's figures and report files, on its MLflow run; its Pareto front there too (log_front)."""
    by_number = {r.number: r for r in result.trials}
    metrics = {"seconds": result.seconds}
    for objective, number in result.picks.items():
        if number is not None:
            metrics[f"{objective}.test_score"] = result.test_scores[number]
            metrics[f"{objective}.{result.size}"] = getattr(by_number[number], result.size)
    tracking.log_run_data(result.mlflow_run_id, metrics=metrics, artifacts=files)
    log_front(result, trial_runs)


FRONT_FIGURES = ("val_score", "raw_bytes", "gzip_bytes", "arena_bytes")


def log_front(result: SearchResult, trial_runs: dict[int, str]) -> None:
    """The front on the search's run: each front trial's figures as `front.<figure>` (`front.trial` its
    number) at step = its rank on the front, smallest first, and the tag `front` listing the trial numbers;
    each front trial's own run tagged `front` (true) and `front.rank`, each pick's `pick`."""
    by_number = {r.number: r for r in result.trials}
    front = [by_number[number] for number in result.front]
    curves: dict[str, list] = {
        "trial": [r.number for r in front],
        "test_score": [result.test_scores[r.number] for r in front],
    }
    for figure in dict.fromkeys((*FRONT_FIGURES, result.size)):
        values = [getattr(r, figure) for r in front]
        if all(value is not None for value in values):
            curves[figure] = values
    if front:
        tracking.log_curves([result.mlflow_run_id], "front", curves)
    mlflow_client = tracking.client()
    mlflow_client.set_tag(result.mlflow_run_id, "front", " ".join(str(n) for n in result.front) or "none")
    for rank, number in enumerate(result.front):
        mlflow_client.set_tag(trial_runs[number], "front", "true")
        mlflow_client.set_tag(trial_runs[number], "front.rank", str(rank))
    picked: dict[int, list[str]] = {}
    for objective, number in result.picks.items():
        if number is not None:
            picked.setdefault(number, []).append(objective)
    for number, objectives in picked.items():
        mlflow_client.set_tag(trial_runs[number], "pick", " ".join(objectives))


@flow(name="search", task_runner=ThreadPoolTaskRunner(max_workers=2))
def search(params_path: str = "params.yaml", model: str | None = None, data: str | None = None) -> SearchResult:
    """Search chains and settings for the best score and the smallest size that fit search.profile. The
    search's MLflow run opens here, before any step: RUNNING while it goes, FAILED with its error if it fails."""
    logger, started = get_run_logger(), time.monotonic()
    params = with_inputs(load_params(params_path), model, data)
    search_id = "search-" + new_run_id()
    with tracking.tracked_run(params.tracking.experiment, search_id, {"tinyopt.kind": "search"}) as parent_run_id:
        search_settings = {k: v for k, v in params.search.model_dump().items() if k != "space"}
        tracking.log_run_data(parent_run_id, params=search_settings)
        result, files = run_search(params, Path(params_path), search_id, parent_run_id, started, logger)
    logger.info("search report: %s", files[0])
    return result


def run_search(
    params: Params, params_path: Path, search_id: str, parent_run_id: str, started: float, logger
) -> tuple[SearchResult, list[Path]]:
    """The search's steps, inside its MLflow run: the data, the baseline, the trials, the conclusion."""
    compute_code_versions()
    run = Submitter(Progress(3 + params.search.trials + Baselines.most(params), logger.info, started))
    _, prepared, references, _ = data_stage(params, run, logger)
    prepared_path = Path(prepared.path)
    baseline = train_stage(params, prepared_path, run)
    # Trained once for the whole search (or found in the task cache): its curves from its record.
    tracking.log_curves([parent_run_id], "train", baseline.history)
    tracking.log_run_data(parent_run_id, metrics={"baseline.val_score": baseline.val_score})
    metric, budget = params.task.score_metric, params.search
    floor = floor_of(baseline.val_score, budget.max_drop, metric)  # the smallest pick's
    stop_floor = floor_of(baseline.val_score, budget.max_drop if budget.stop_drop is None else budget.stop_drop, metric)

    unmeasured = latency_searched(params)
    if unmeasured and params.search.latency:
        logger.warning("search: %s", unmeasured)
    latency = unmeasured is None
    trials = Trials(open_study(params, search_id, latency), params, run.progress, parent_run_id, started, latency)
    out_dir = layout.ARTIFACTS / "search" / search_id
    pruner = None
    if budget.prune_architectures and searches_model(params):
        pruner = ArchitecturePruner(metric, budget.pruner_startup, budget.pruner_warmup_epochs)
        if same_family(params):
            pruner.add_trained(baseline.history)
    baseline_of = Baselines(params, prepared_path, run, Path(baseline.model_path), pruner, latency)
    trials_started = time.monotonic()
    records = trials.run(
        lambda number, drawn, run_id: run(
            run_trial,
            f"trial {number} {plan.variant_name(drawn.plan[0])}",
            number=number,
            chain=drawn.plan[0],
            params=drawn,
            prepared=prepared_path,
            baseline=baseline_of(drawn, (run_id,)),
            floor=stop_floor,
            out_dir=out_dir / f"trial-{number}",
            curves_to=(run_id,),
        )
    )
    baseline_of.skip_undrawn(params)
    result = conclude(
        records,
        trials,
        params,
        params_path,
        prepared_path,
        search_id=search_id,
        floor=floor,
        stop_floor=stop_floor,
        baseline_val_score=baseline.val_score,
        references=reference_points(references, prepared_path, params.task.score_metric),
        mlflow_run_id=parent_run_id,
        seconds=round(time.monotonic() - started, 1),
        trial_stage_seconds=round(time.monotonic() - trials_started, 1),
    )
    files = write_search_report(result, layout.REPORTS / search_id)
    log_search(result, files, trials.run_ids)
    return result, files
