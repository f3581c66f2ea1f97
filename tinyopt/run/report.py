"""The run's report: a Markdown page and its plots (tinyopt.run.plots), from the run's typed summary."""

from __future__ import annotations

import os
import platform
import shutil
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.files import atomic_path
from tinyopt.ml.metrics import HIGHER_IS_BETTER
from tinyopt.records.run import Measured, Summary, Variant
from tinyopt.records.steps import DEVICES_OFF
from tinyopt.run.plots import axes_of, plot

HOST_LATENCY_NOTE = (
    "Latency is host latency: the LiteRT interpreter on this machine's x86 CPU, one thread, batch 1, "
    "after a warm-up, every model timed one after another with the same input. It is not device "
    "latency: LiteRT delegates float ops to XNNPACK here, and runs int16x8 on slow reference kernels "
    "(tens of times slower than int8 on x86), while a microcontroller runs CMSIS-NN or reference "
    "kernels. Compare ratios within one run, not absolute times across machines."
)
DEVICE_NOTE = (
    "On the emulated devices: each int8 model compiled to C by tinyopt (its C library is an artifact), built "
    "into bare-metal firmware for the profile's core with arm-none-eabi-gcc (the profile's flash and RAM in "
    "the linker script) and run under qemu-system-arm on the test split. Flash is text + data of the whole "
    "firmware (model part in brackets), RAM is data + bss + the stack's painted high-water mark. QEMU counts "
    "instructions, not cycles (no pipeline, caches or wait states): the estimated latency assumes one cycle "
    "per instruction at the profile's clock. Bit-exact: the share of test examples whose outputs equal TFLM's "
    "reference kernels' exactly."
)


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


def markdown_table(rows: list[list[str]]) -> str:
    """A markdown table: the first row is its header."""
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def model_rows(models: list[Measured]) -> list[list[str]]:
    metric = models[0].metric if models else "score"
    rows = [["model", "bytes", "gzip", metric, "p50 us", "p99 us", "in/out", "TFLM", "arena", "params", "MACs", "fits"]]
    for m in models:
        tflm = "yes" if m.tflm_runs else "no: " + (m.tflm_error or "").split(";")[0][:60]
        fits = ", ".join(name for name, ok in m.fits.items() if ok) or "none"
        rows.append(
            [
                m.name,
                _fmt(m.raw_bytes),
                _fmt(m.gzip_bytes),
                _fmt(m.score, "acc"),
                _fmt(m.latency_us_p50),
                _fmt(m.latency_us_p99),
                f"{m.input_dtype}/{m.output_dtype}",
                tflm,
                _fmt(m.arena_bytes),
                _fmt(m.params),
                _fmt(m.macs),
                fits,
            ]
        )
    return rows


def device_rows(models: list[Measured], profiles: list[str], base: str = "base-int8") -> list[list[str]]:
    """One row per model and profile it ran on, with its flash and instructions as a share of `base`'s on the
    same profile: what each technique saves (or costs) on the device."""
    anchor = next((m for m in models if m.name == base), None)
    head = ["model", "profile", "core", "flash B (model)", "RAM B", "instructions", "est. ms", "score", "bit-exact"]
    rows = [[*head, f"flash / {base}", f"instr. / {base}"]]
    for m in models:
        for profile in profiles:
            d = m.device.get(profile)
            if not d:
                continue
            a = anchor.device.get(profile) if anchor else None
            rows.append(
                [
                    m.name,
                    profile,
                    f"{d.core} ({d.machine})",
                    f"{d.flash_bytes:,} ({d.model_flash_bytes:,})",
                    f"{d.ram_bytes:,}",
                    f"{d.instructions:,.0f}",
                    _fmt(d.latency_ms_estimate and round(d.latency_ms_estimate, 2)),
                    _fmt(d.score, "acc"),
                    f"{d.bit_exact_share:.2%} of {d.images:,}",
                    f"{d.flash_bytes / a.flash_bytes:.3f}" if a else "-",
                    f"{d.instructions / a.instructions:.3f}" if a else "-",
                ]
            )
    return rows


def device_gaps(models: list[Measured]) -> list[str]:
    """'model, model: reason' for the models without figures on some profile, one line per reason. A reason
    every model shares (devices_off_reason's) is said once, not here."""
    by_reason: dict[str, list[str]] = {}
    for m in models:
        if m.device_note and not m.device_note.startswith(DEVICES_OFF):
            by_reason.setdefault(m.device_note, []).append(m.name)
    return [f"{', '.join(names)}: {reason}" for reason, names in by_reason.items()]


# An int8 variant scoring this much below base-int8 (accuracy or AUC points) is flagged with its cause.
SCORE_DROP_FLAG = 0.03


def score_drops(variants: list[Variant], base: str = "base-int8") -> list[str]:
    """A line for each int8 variant more than SCORE_DROP_FLAG below `base` on the test set, with what its
    techniques noted (a collapse, a skipped layer) or that none noted a cause."""
    reference = next((v for v in variants if v.name == base), None)
    if reference is None or reference.score is None or not HIGHER_IS_BETTER.get(reference.metric, False):
        return []
    lines = []
    for v in variants:
        lost = reference.score - v.score if v.score is not None else 0.0
        if v.name != base and v.chain[-1] == "int8" and lost > SCORE_DROP_FLAG:
            lines.append(
                f"{v.name}: {v.metric} {v.score:.4f}, {lost:.3f} below {base} ({reference.score:.4f}): "
                f"{where_lost(v, reference)}" + (f"; its techniques noted: {v.notes}" if v.notes else "")
            )
    return lines


def where_lost(variant: Variant, base: Variant) -> str:
    """Which step lost the score: the fine-tunes (its Keras model already scores lower on the test split than
    the baseline's) or the int8 conversion (its Keras model scores as the baseline's)."""
    fine_tuned = base.keras_score - variant.keras_score
    converted = variant.keras_score - variant.score
    steps = "-".join(variant.chain[1:-1]) or "nothing"
    if fine_tuned >= converted:
        return (
            f"lost in the fine-tunes: its Keras model ({steps}) scores {variant.keras_score:.4f} against the "
            f"baseline's {base.keras_score:.4f} (more epochs, a lower learning rate or a gentler setting may help)"
        )
    return (
        f"lost in the int8 conversion: its Keras model scores {variant.keras_score:.4f}, its int8 file "
        f"{variant.score:.4f}"
    )


def devices_off_reason(models: list[Measured]) -> str | None:
    """Why no model was measured on a device (no cross compiler or QEMU, no profile), or None."""
    return next(
        (m.device_note[len(DEVICES_OFF) :] for m in models if (m.device_note or "").startswith(DEVICES_OFF)), None
    )


def comparison_parts(summary: Summary) -> list[str]:
    head = [["reference", "ours", "size ratio", "gzip ratio", "score difference", "latency ratio"]]
    for row in summary.comparisons:
        head.append(
            [
                row.reference,
                row.ours,
                f"{row.size_ratio:.3f}",
                f"{row.gzip_ratio:.3f}",
                f"{row.score_diff:+.4f}",
                _fmt(row.latency_ratio),
            ]
        )
    parts = ["## Ours beside the reference (ours / reference)", markdown_table(head)]
    for row in summary.headline:
        figures = row.reference_figures
        found = (
            ", ".join(
                f"{m.name} ({m.raw_bytes:,} bytes, {m.gzip_bytes:,} gzip, {m.score:.4f}, "
                f"{m.latency_ratio_to_fastest_reference:.2f}x the latency of {row.fastest_reference})"
                for m in row.ours
            )
            or "none"
        )
        parts.append(
            f"**Against {row.reference}** ({figures.raw_bytes:,} bytes, {figures.gzip_bytes:,} "
            f"gzip, {figures.score:.4f}): ours that TFLM runs with int8 input and output, "
            f"{row.claim} (on the test set; listed, not chosen): {found}."
        )
    return parts


def markdown(summary: Summary) -> str:
    ours, reference, data = summary.variants, summary.reference, summary.dataset
    profiles = summary.measured_profiles()
    parts = [
        f"# tinyopt run {summary.run_id}",
        f"Dataset {data['name']} (version {data['version']}): {data['num_train']:,} train / "
        f"{data['num_val']:,} validation / {data['num_test']:,} test examples. "
        f"Code {summary.git_commit}, params {summary.params_hash}. "
        f"Measured on {platform.machine()} with {os.cpu_count()} cores ({platform.platform()}).",
        f"Scores ({summary.baseline.metric}) are on the full held-out test set, computed by running each .tflite "
        "file itself with LiteRT; picks use the validation split, so choosing never looks at the test set.",
        "## Picks",
        markdown_table(
            [["objective", "variant", "value", "why"]]
            + [
                [name, p.variant or "none", _fmt(p.value, "acc" if p.metric.startswith("validation") else ""), p.why]
                for name, p in summary.picks.items()
            ]
        ),
        "## Variants",
        markdown_table(model_rows(ours)),
    ]
    models = [*ours, *summary.named_references()]
    if profiles:
        parts += ["## On the emulated devices", markdown_table(device_rows(models, profiles))]
    off = devices_off_reason(models)
    if off:
        parts += [f"No device figures: {off}."]
    gaps = device_gaps(models)
    if gaps:
        parts += ["## Why no device figures", "\n".join(f"- {gap}" for gap in gaps)]
    if reference:
        parts += ["## Reference models, measured in the same run and harness", markdown_table(model_rows(reference))]
        parts += comparison_parts(summary)
    elif summary.reference_note:
        parts += ["## Reference models", summary.reference_note]
    drops = score_drops(ours)
    if drops:
        parts += [
            f"## Score drops over {SCORE_DROP_FLAG:g} against base-int8",
            "\n".join(f"- {line}" for line in drops),
        ]
    if summary.skipped:
        parts += ["## Skipped", "\n".join(f"- {s.name}: {s.reason}" for s in summary.skipped)]
    notes = sorted({f"- {v.chain[-2]} ({'-'.join(v.chain[1:-1])}): {v.notes}" for v in ours if v.notes})
    if notes:
        parts += ["## What the techniques did", "\n".join(notes)]
    parts += [
        "## How to read this",
        f"- {HOST_LATENCY_NOTE}",
        f"- {DEVICE_NOTE}",
        "- TFLM: loaded and run with the tflite-micro package's interpreter; the arena is its recording "
        "allocator's figure, then verified by running with exactly that arena; outputs compared with "
        "LiteRT's on 32 test examples.",
        "- Device fit: measured on the profiles run on an emulator (the firmware linked within the profile's "
        "flash and RAM); elsewhere the model's bytes plus an estimated runtime (TFLM and a minimal application, "
        "50 KB of flash by default) against flash, and the measured arena plus an estimated 8 KB of runtime "
        "RAM against SRAM, labelled as an estimate in each reason.",
        "- Pruning and clustering do not shrink a .tflite file; they shrink its gzip size. On the device a "
        "pruned dense layer with at most a third of its weights non-zero lists only those (less flash, a few more "
        "instructions); a pruned convolution runs its zeros like any weight (the same instructions): structured "
        "pruning (prune_filters) removes whole filters, which the device does notice.",
        *(
            [
                f"- Files: every file summary.json names is this run's own, kept read-only under "
                f"artifacts/runs/{summary.run_id}/ (a later run replaces only artifacts/' working copies), with the "
                f"sha256 of each ({len(summary.files)} files); `tinyopt register` and `tinyopt bench --summary` "
                "refuse one whose bytes changed."
            ]
            if summary.files
            else []
        ),
        *(f"![score vs {name[9:-4]}]({name})" for name, _, _ in axes_of(summary)),
    ]
    return "\n\n".join(parts) + "\n"


def write_report(summary: Summary, out_dir: Path) -> list[Path]:
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
