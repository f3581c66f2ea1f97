"""The report's plots: the task's score on the test set against payload, arena and device instructions, with
the Pareto front of our variants; only the front and the picks are labelled, so the labels stay readable."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tinyopt.core.files import atomic_path
from tinyopt.ml.metrics import HIGHER_IS_BETTER
from tinyopt.records.run import Measured, Summary
from tinyopt.run.pareto import pareto_front


def axes_of(summary: Summary) -> list[tuple[str, str, Callable[[Measured], float | None]]]:
    """(file, x label, x value of a record) for each plot."""
    axes = [
        ("score-vs-gzip.png", "gzip -9 bytes (over-the-air payload)", lambda m: m.gzip_bytes),
        ("score-vs-arena.png", "TFLM tensor arena bytes (models TFLM runs)", lambda m: m.arena_bytes),
    ]
    profiles = summary.measured_profiles()
    if profiles:
        profile = profiles[0]
        core = summary.devices.get(profile, {}).get("core", "")
        axes.append(
            (
                "score-vs-instructions.png",
                f"instructions per inference on {profile} ({core}, QEMU; instructions, not cycles)",
                lambda m: m.figure("instructions", profile),
            )
        )
    return axes


def plot(summary: Summary, out_dir: Path) -> list[Path]:
    """One PNG per axis in out_dir; returns the files."""
    import matplotlib.pyplot as plt

    written = []
    for file_name, x_label, x_of in axes_of(summary):
        figure = draw(summary, x_label, x_of)
        path = out_dir / file_name
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def draw(summary: Summary, x_label: str, x_of: Callable[[Measured], float | None]):
    """The figure of the task's score against one x axis (the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary.baseline.metric
    sign = 1 if HIGHER_IS_BETTER[metric] else -1
    picked = {pick.variant for pick in summary.picks.values() if pick.variant}
    figure, axes = plt.subplots(figsize=(9, 6))
    ours = [v for v in summary.variants if x_of(v)]
    theirs = [r for r in summary.reference if x_of(r)]
    axes.scatter([x_of(m) for m in ours], [m.score for m in ours], marker="o", label="tinyopt")
    if theirs:  # no legend entry for the paper's models when a run has none
        axes.scatter([x_of(m) for m in theirs], [m.score for m in theirs], marker="x", label="reference (paper)")
    # The front: no other variant is both smaller and better (for MAE, lower is better).
    front = [ours[i] for i in pareto_front([(x_of(v), sign * v.score) for v in ours])]
    front.sort(key=x_of)
    if front:
        axes.plot([x_of(v) for v in front], [v.score for v in front], "--", color="gray", label="Pareto front")
    for v in {v.name: v for v in [*front, *(v for v in ours if v.name in picked)]}.values():
        axes.annotate(v.name + (" (pick)" if v.name in picked else ""), (x_of(v), v.score), fontsize=7)
    xs = [x_of(m) for m in [*ours, *theirs]]
    if xs and max(xs) > 10 * min(xs):
        axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(f"{metric} on the test set")
    axes.legend()
    axes.grid(alpha=0.3)
    axes.set_title(f"run {summary.run_id}")
    figure.tight_layout()
    return figure
