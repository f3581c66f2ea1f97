"""The run's report: a Markdown page and two plots, from the summary the flow assembled."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from tinyopt import layout
from tinyopt.files import atomic_path
from tinyopt.metrics import HIGHER_IS_BETTER

HOST_LATENCY_NOTE = (
    "Latency is host latency: the LiteRT interpreter on this machine's x86 CPU, one thread, batch 1, "
    "after a warm-up, every model timed one after another with the same input. It is not device "
    "latency: LiteRT delegates float ops to XNNPACK here, and runs int16x8 on slow reference kernels "
    "(tens of times slower than int8 on x86), while a microcontroller runs CMSIS-NN or reference "
    "kernels. Compare ratios within one run, not absolute times across machines."
)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (smaller x, larger y)."""
    front, best = [], float("-inf")
    for index in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def plot(summary: dict, out_dir: Path) -> list[Path]:
    """score-vs-gzip.png (with the Pareto front of our variants) and score-vs-arena.png: the task's
    metric (accuracy, MAE or AUC) on the test set against the payload and the arena."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, reference = summary["variants"], summary.get("reference", [])
    metric = ours[0]["metric"] if ours else "accuracy"
    written = []
    for x_key, x_label, file_name in [
        ("gzip_bytes", "gzip -9 bytes (over-the-air payload)", "score-vs-gzip.png"),
        ("arena_bytes", "TFLM tensor arena bytes (models TFLM runs)", "score-vs-arena.png"),
    ]:
        figure, axes = plt.subplots(figsize=(9, 6))
        for group, marker, label in ((ours, "o", "tinyopt"), (reference, "x", "reference (paper)")):
            shown = [v for v in group if v.get(x_key)]
            axes.scatter([v[x_key] for v in shown], [v["score"] for v in shown], marker=marker, label=label)
            for v in shown:
                axes.annotate(v["name"], (v[x_key], v["score"]), fontsize=6, alpha=0.7)
        # The front: no other variant is both smaller and better (for MAE, lower is better).
        sign = 1 if HIGHER_IS_BETTER[metric] else -1
        points = [(v[x_key], sign * v["score"]) for v in ours if v.get(x_key)]
        front = sorted(points[i] for i in pareto_front(points))
        if front:
            axes.plot(
                [p[0] for p in front], [sign * p[1] for p in front], "--", color="gray", label="Pareto front (ours)"
            )
        axes.set_xscale("log")
        axes.set_xlabel(x_label)
        axes.set_ylabel(f"{metric} on the test set (the .tflite itself)")
        axes.legend()
        axes.grid(alpha=0.3)
        axes.set_title(f"run {summary['run_id']}")
        figure.tight_layout()
        path = out_dir / file_name
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=120)
        plt.close(figure)
        written.append(path)
    return written


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "acc":
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def model_rows(models: list[dict]) -> list[list[str]]:
    metric = models[0]["metric"] if models else "score"
    rows = [["model", "bytes", "gzip", metric, "p50 us", "p99 us", "in/out", "TFLM", "arena", "params", "MACs", "fits"]]
    for v in models:
        tflm = "yes" if v["tflm_runs"] else "no: " + (v["tflm_error"] or "").split(";")[0][:60]
        fits = ", ".join(name for name, ok in v.get("fits", {}).items() if ok) or "none"
        rows.append(
            [
                v["name"],
                _fmt(v["raw_bytes"]),
                _fmt(v["gzip_bytes"]),
                _fmt(v["score"], "acc"),
                _fmt(v.get("latency_us_p50")),
                _fmt(v.get("latency_us_p99")),
                f"{v['input_dtype']}/{v['output_dtype']}",
                tflm,
                _fmt(v.get("arena_bytes")),
                _fmt(v["params"]),
                _fmt(v["macs"]),
                fits,
            ]
        )
    return rows


def markdown(summary: dict) -> str:
    ours, reference = summary["variants"], summary.get("reference", [])
    parts = [
        f"# tinyopt run {summary['run_id']}",
        f"Dataset {summary['dataset']['name']} (version {summary['dataset']['version']}): "
        f"{summary['dataset']['num_train']:,} train / {summary['dataset']['num_val']:,} validation / "
        f"{summary['dataset']['num_test']:,} test examples. "
        f"Code {summary['git_commit']}, params {summary['params_hash']}. "
        f"Measured on {platform.machine()} with {os.cpu_count()} cores ({platform.platform()}).",
        f"Scores ({ours[0]['metric'] if ours else 'accuracy'}) are on the full held-out test set, computed by "
        "running each .tflite file itself with LiteRT; picks use the validation split, so choosing never "
        "looks at the test set.",
        "## Picks",
        _table(
            [["objective", "variant", "value", "why"]]
            + [
                [
                    name,
                    pick["variant"] or "none",
                    _fmt(pick["value"], "acc" if pick["metric"].startswith("validation") else ""),
                    pick["why"],
                ]
                for name, pick in summary["picks"].items()
            ]
        ),
        "## Variants",
        _table(model_rows(ours)),
    ]
    if reference:
        parts += ["## Reference models, measured in the same run and harness", _table(model_rows(reference))]
        head = [["reference", "ours", "size ratio", "gzip ratio", "score difference", "latency ratio"]]
        for row in summary.get("comparisons", []):
            head.append(
                [
                    row["reference"],
                    row["ours"],
                    f"{row['size_ratio']:.3f}",
                    f"{row['gzip_ratio']:.3f}",
                    f"{row['score_diff']:+.4f}",
                    _fmt(row["latency_ratio"]),
                ]
            )
        parts += ["## Ours beside the reference (ours / reference)", _table(head)]
        for row in summary.get("headline", []):
            figures = row["reference_figures"]
            found = (
                ", ".join(
                    f"{m['name']} ({m['raw_bytes']:,} bytes, {m['gzip_bytes']:,} gzip, {m['score']:.4f}, "
                    f"{m['latency_ratio_to_fastest_reference']:.2f}x the latency of {row['fastest_reference']})"
                    for m in row["ours"]
                )
                or "none"
            )
            parts.append(
                f"**Against {row['reference']}** ({figures['raw_bytes']:,} bytes, {figures['gzip_bytes']:,} "
                f"gzip, {figures['score']:.4f}): ours that TFLM runs with int8 input and output, "
                f"{row['claim']} (on the test set; listed, not chosen): {found}."
            )
    elif summary.get("reference_note"):
        parts += ["## Reference models", summary["reference_note"]]
    if summary.get("skipped"):
        parts += ["## Skipped", "\n".join(f"- {s['name']}: {s['reason']}" for s in summary["skipped"])]
    notes = [v for v in ours if v.get("notes")]
    if notes:
        parts += [
            "## What the techniques did",
            "\n".join(sorted({f"- {v['chain'][-2]} ({'-'.join(v['chain'][1:-1])}): {v['notes']}" for v in notes})),
        ]
    parts += [
        "## How to read this",
        f"- {HOST_LATENCY_NOTE}",
        "- TFLM: loaded and run with the tflite-micro package's interpreter; the arena is its recording "
        "allocator's figure, then verified by running with exactly that arena; outputs compared with "
        "LiteRT's on 32 test examples.",
        "- Device fit counts the model's bytes plus an estimated runtime (TFLM and a minimal application, "
        "50 KB of flash by default) against flash, and the measured arena plus an estimated 8 KB of runtime "
        "RAM against SRAM. The runtime figures are estimates; the model and arena figures are measured.",
        "- Pruning and clustering do not shrink a .tflite file; they shrink its gzip size.",
        "![score vs gzip bytes](score-vs-gzip.png)",
        "![score vs arena bytes](score-vs-arena.png)",
    ]
    return "\n\n".join(parts) + "\n"


def write_report(summary: dict, out_dir: Path) -> list[Path]:
    """report.md and its plots in out_dir; returns the files."""
    plots = plot(summary, out_dir)
    path = out_dir / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text(markdown(summary))
    return [path, *plots]


def publish_latest(files: list[Path], reports: Path = layout.REPORTS) -> None:
    """Copy a run's report files to reports/latest/, each replaced atomically."""
    latest = reports / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, latest / f".{path.name}.tmp")
        (latest / f".{path.name}.tmp").replace(latest / path.name)
