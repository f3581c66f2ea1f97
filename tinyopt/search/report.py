"""reports/<search-id>/: search.json (every trial, the front, the picks), search.md and search.png (score
against size: the trials, the Pareto front, the picks, and the reference models measured on this data; no plot
when there is no point to draw: no trial completed and no reference model was scored)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from tinyopt.core.files import write_json
from tinyopt.ml.architectures import describe_blocks
from tinyopt.params import ModelParams
from tinyopt.records.steps import TrialRecord
from tinyopt.run.plan import variant_name
from tinyopt.run.report import markdown_table


class ReferencePoint(BaseModel):
    name: str
    score: float  # on the test split
    raw_bytes: int
    gzip_bytes: int


class SearchResult(BaseModel):
    search_id: str
    metric: str
    size: str
    profile: str
    latency: bool = False  # instructions per inference on the profile's emulated core: a third objective
    instruction_budget: float | None = None
    baseline_val_score: float
    floor: float | None  # the smallest pick's
    stop_floor: float | None = None  # a trial's fine-tuned model below it ended the trial
    seconds: float  # the whole search, data and baseline included
    trial_stage_seconds: float  # from the first trial's start to the last trial's result
    runner: str
    trials: list[TrialRecord]
    front: list[int]  # trial numbers, smallest first
    picks: dict[str, int | None]
    test_scores: dict[int, float]  # the front's and the picks' only
    plans: dict[str, str]
    front_plans: dict[int, str] = {}  # each front trial's params file
    references: list[ReferencePoint]
    mlflow_run_id: str


def _settings(record: TrialRecord) -> str:
    shown = {"target_sparsity", "clusters", "fine_tune_epochs", "learning_rate", "conv_filters", "kernel_size"}
    shown |= {"width_multiplier"}

    def said(values: dict) -> str:
        if "blocks" in values:  # an architecture the search drew: its short name
            return "blocks " + describe_blocks(ModelParams(**values))
        return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items() if k in shown)

    return "; ".join(f"{section}: {said(values)}" for section, values in record.settings.items()) or "-"


def _row(record: TrialRecord, result: SearchResult) -> list[str]:
    test = result.test_scores.get(record.number)
    return [
        str(record.number),
        variant_name(record.chain),
        _settings(record),
        f"{record.val_score:.4f}",
        f"{test:.4f}" if test is not None else "-",
        f"{record.raw_bytes:,}",
        f"{record.gzip_bytes:,}",
        f"{record.arena_bytes:,}" if record.arena_bytes else "-",
        *([f"{record.instructions:,.0f}" if record.instructions else "-"] if result.latency else []),
    ]


# A reason's words for an architecture rejected untrained: over search.max_model_bytes, or the instruction budget.
TOO_LARGE, TOO_SLOW = "too large", "too slow"


def nothing_completed(result: SearchResult) -> str | None:
    """What to widen when no trial completed (one line, for search.md and the console), or None."""
    if any(r.state == "complete" for r in result.trials):
        return None
    if not result.trials:
        return "no trial ran: the data and the baseline took search.time_budget_s; raise it"
    too_large, too_slow = (
        sum(r.state == "pruned" and f" {words}: " in r.reason for r in result.trials) for words in (TOO_LARGE, TOO_SLOW)
    )
    over_budget = too_large + too_slow
    stopped = sum(r.state == "pruned" and r.reason.startswith("architecture ") for r in result.trials) - over_budget
    pruned = sum(r.state == "pruned" for r in result.trials) - stopped - over_budget
    if over_budget and not pruned and not stopped:
        over = [
            *([f"{too_large} too large for search.max_model_bytes"] if too_large else []),
            *([f"{too_slow} too slow for the instruction budget"] if too_slow else []),
        ]
        return (
            f"no trial completed: all {over_budget} architectures drawn were over budget untrained "
            f"({', '.join(over)}); give search.space.blocks fewer filters, more strides or pooling, or raise the budget"
        )
    if stopped and not pruned:
        return (
            f"no trial completed: the pruner stopped the architectures of all {stopped} early; raise "
            "search.pruner_startup or search.pruner_warmup_epochs, or set search.prune_architectures: false"
        )
    if pruned and result.stop_floor is not None:
        drop = abs(result.baseline_val_score - result.stop_floor)
        return (
            f"no trial completed: {pruned} of {len(result.trials)} fell below the stop floor {result.stop_floor:.4f} "
            f"(the baseline's validation {result.metric} {result.baseline_val_score:.4f}, a drop of {drop:.4g} "
            "allowed); widen search.stop_drop (null: max_drop) or the space's fine-tuning ranges"
        )
    return "no trial completed: each was skipped (search.md says why); give search.space.chains this model can take"


def has_points(result: SearchResult) -> bool:
    """Whether the plot has anything to draw: a completed trial or a reference model."""
    return bool(result.references) or any(r.state == "complete" for r in result.trials)


def markdown(result: SearchResult) -> str:
    by_number = {r.number: r for r in result.trials}
    head = ["trial", "chain", "settings", f"val {result.metric}", f"test {result.metric}", "bytes", "gzip", "arena"]
    head += [f"{result.profile} instructions"] if result.latency else []
    budget = f" within {result.instruction_budget:,.0f} instructions" if result.instruction_budget else ""
    third = f", instructions per inference on {result.profile}'s emulated core{budget}" if result.latency else ""
    counts = {state: sum(r.state == state for r in result.trials) for state in ("complete", "pruned", "skipped")}
    floor = f"{result.floor:.4f}" if result.floor is not None else "none"
    stop = f"{result.stop_floor:.4f}" if result.stop_floor is not None else "none"
    parts = [
        f"# tinyopt search {result.search_id}",
        f"{len(result.trials)} trials ({counts['complete']} complete, {counts['pruned']} pruned below the floor, "
        f"{counts['skipped']} skipped) in {result.seconds:,.0f} s ({result.trial_stage_seconds:,.0f} s of trials) "
        f"on {result.runner}. Objectives: validation "
        f"{result.metric}, {result.size}{third}, among models that fit {result.profile}. Baseline validation "
        f"{result.metric} {result.baseline_val_score:.4f}; the smallest pick's floor {floor}; a trial stopped "
        f"below {stop}. Choices used the validation split only; the test split scored the front and the picks "
        "once, at the end.",
        "## Picks",
    ]
    widen = nothing_completed(result)
    if widen:
        parts.insert(-1, widen[0].upper() + widen[1:] + ".")
    pick_rows = [["objective", *head]]
    for objective, number in result.picks.items():
        pick_rows.append(
            [objective, *(_row(by_number[number], result) if number is not None else ["none"] * len(head))]
        )
    parts += [markdown_table(pick_rows)]
    parts += [
        "\n".join(
            f"- {objective}: `tinyopt run --params {path}` rebuilds it" for objective, path in result.plans.items()
        )
    ]
    parts += [
        "## Pareto front (validation score against size" + (" and instructions)" if result.latency else ")"),
        markdown_table([head, *(_row(by_number[n], result) for n in result.front)]),
    ]
    if result.front_plans:
        parts += [
            "Each front trial's params file is beside this report: "
            + ", ".join(f"trial {n}: `{Path(path).name}`" for n, path in sorted(result.front_plans.items()))
            + " (`tinyopt run --params` on it rebuilds the trial's .tflite)."
        ]
    if result.references:
        rows = [["reference model", f"test {result.metric}", "bytes", "gzip"]]
        rows += [[p.name, f"{p.score:.4f}", f"{p.raw_bytes:,}", f"{p.gzip_bytes:,}"] for p in result.references]
        parts += ["## Reference models, scored on the same test split", markdown_table(rows)]
    rows = [["trial", "chain", "state", f"val {result.metric}", result.size, "fits", "why"]]
    for r in result.trials:
        size = getattr(r, result.size)
        rows.append(
            [
                str(r.number),
                variant_name(r.chain),
                r.state,
                f"{r.val_score:.4f}" if r.val_score is not None else "-",
                f"{size:,}" if size else "-",
                "yes" if r.fits else "no",
                r.reason or r.fit_reason,
            ]
        )
    parts += ["## Every trial", markdown_table(rows)]
    parts += [
        "![score against size](search.png)"
        if has_points(result)
        else "No plot: no trial completed and no reference model was scored."
    ]
    return "\n\n".join(parts) + "\n"


def plot(result: SearchResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in result.trials if r.state == "complete"]
    front = [next(r for r in done if r.number == n) for n in result.front]  # smallest first: the line runs along it
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter(
        [getattr(r, result.size) for r in done], [r.val_score for r in done], c="lightgrey", label="trials (validation)"
    )
    ax.plot(
        [getattr(r, result.size) for r in front],
        [r.val_score for r in front],
        "o-",
        c="tab:blue",
        label="Pareto front (validation)",
    )
    ax.scatter(
        [getattr(r, result.size) for r in front],
        [result.test_scores[r.number] for r in front],
        marker="x",
        c="tab:blue",
        label="front (test)",
    )
    for objective, number in result.picks.items():
        if number is not None:
            r = next(t for t in done if t.number == number)
            ax.annotate(f"{objective}: {variant_name(r.chain)}", (getattr(r, result.size), r.val_score), fontsize=8)
    if result.references:
        refs = result.references
        ax.scatter(
            [getattr(p, result.size) for p in refs],
            [p.score for p in refs],
            marker="^",
            c="tab:red",
            label="reference models (test)",
        )
    ax.set_xscale("log")
    ax.set_xlabel(f"{result.size} (log)")
    ax.set_ylabel(result.metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_search_report(result: SearchResult, out_dir: Path) -> list[Path]:
    json_path = write_json(out_dir / "search.json", result.model_dump(mode="json"))
    md = out_dir / "search.md"
    md.write_text(markdown(result))
    return [md, json_path, *([plot(result, out_dir / "search.png")] if has_points(result) else [])]
