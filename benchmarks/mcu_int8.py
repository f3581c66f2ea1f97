"""Benchmark: int8 models as a Cortex-M4 runs them (tinyopt's generated C, QEMU mps2-an386, -icount), beside
TensorFlow Lite Micro + CMSIS-NN built from pinned commits and run in the same benchmark, on the same machine,
inputs and counting (benchmarks/tflm_anchor; its options: --tflm-sources, --tflm-work, --no-tflm).

    python benchmarks/mcu_int8.py [--images 10000] [--models DIR_OR_FILES ...] [--profile nano33ble]
    python benchmarks/mcu_int8.py --summary reports/latest/summary.json [--profile nano33ble]

The second form prints what a `tinyopt run` measured (every int8 variant of its plan and the reference int8
models, same firmware and QEMU counting) beside TFLM + CMSIS-NN measured now on each model's .tflite (on 3 random
inputs: instruction counts depend on shapes, not data).

For each model: flash (whole firmware and the model's part), RAM (data + bss + stack high-water mark),
instructions per inference, the ratios to TFLM + CMSIS-NN, top-1 accuracy as the emulated device computes
it, and the share of test images whose outputs are bit-exact with TFLM's reference kernels. Pruned models
are also built with dense kernels, to show what skipping zeros saves, and clustered ones with 4-bit indices
into their few weight values, to show the flash that saves and the instructions it costs. QEMU counts
instructions, not cycles; the latency column is instructions x CPI 1 at the profile's clock: an estimate.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.tflm_anchor import anchor  # noqa: E402
from tinyopt.core.errors import NotApplicable  # noqa: E402
from tinyopt.datasets.idx import read_idx  # noqa: E402
from tinyopt.params import DEFAULT_DEVICES, DEFAULT_PROFILE  # noqa: E402

SEED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-cnn1"
FASHION = Path("/usr/share/datasets/fashion-mnist")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--profile", default=DEFAULT_PROFILE)
    parser.add_argument(
        "--models",
        nargs="*",
        default=[str(SEED / f"{m}-int8-floatio.tflite") for m in ("base", "pruned", "graph", "separable")],
    )
    parser.add_argument("--summary", type=Path, help="print a run's device figures instead of measuring")
    anchor.add_arguments(parser)
    args = parser.parse_args()
    profile = DEFAULT_DEVICES[args.profile]
    library = anchor.libraries({profile.name: profile}, args)[profile.name]
    if args.summary:
        return print_run(args.summary, profile, library, args.tflm_work)
    from tinyopt.mcu.on_device import measure_on_device

    x = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[: args.images].astype(np.float32) / 255.0
    y = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[: args.images]
    paths = []
    for item in args.models:
        p = Path(item)
        paths += sorted(p.rglob("*.tflite")) if p.is_dir() else [p]
    rows, anchors = [], {}
    for path in paths:
        anchors[path] = tflm = measure_anchor(library, path, profile, x, args.tflm_work)
        pruned, clustered = "prun" in path.name, "cluster" in path.name
        runs = [("sparse" if pruned else "", True, False)]
        if pruned:  # what skipping zeros saves
            runs.append(("dense", False, False))
        if clustered:  # what 4-bit cluster indices save (and cost)
            runs.append(("cluster indices", True, True))
        for label, sparse, indices in runs:
            name = f"{path.stem}{' (' + label + ')' if label else ''}"
            try:
                ours = measure_on_device(path, profile, x, y, sparse=sparse, cluster_indices=indices, timeout=1800)
                rows.append((name, ours, tflm))
            except NotApplicable as exc:
                print(f"skipped {name}: {exc}")
    print(f"\n{profile.name}, {profile.core} as QEMU mps2-an386 emulates it, {args.images:,} test images\n")
    head = (
        "model",
        "flash B",
        "model B",
        "RAM B",
        "arena B",
        "stack B",
        "instr/inf",
        "flash x",
        "instr x",
        "RAM x",
        f"est. ms @{profile.clock_mhz:g}MHz",
        "accuracy",
        "bit-exact",
    )
    print(" | ".join(head))
    for name, r, tflm in rows:
        print(
            " | ".join(
                [
                    name,
                    f"{r.flash_bytes:,}",
                    f"{r.model_flash_bytes:,}",
                    f"{r.ram_bytes:,}",
                    f"{r.arena_bytes:,}",
                    f"{r.stack_bytes:,}",
                    f"{r.instructions:,.0f}",
                    *ratios(r, tflm),
                    f"{r.latency_ms_estimate:.2f}",
                    f"{r.score:.4f}",
                    f"{r.bit_exact_share:.2%}",
                ]
            )
        )
    print_anchors(anchors)
    print("\nInstructions per op (mean per inference):")
    for name, r, _ in rows:
        print(f"  {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in r.instructions_per_op.items()))


def measure_anchor(library, path: Path, profile, x: np.ndarray, work: Path):
    """TFLM + CMSIS-NN on the model at `path` and the inputs `x` (floats, quantized as the model's input wants)."""
    from tinyopt.mcu.host import tflm_interpreter
    from tinyopt.runtimes.quantized_io import quantize_input

    blob = path.read_bytes()
    interpreter = tflm_interpreter(blob)
    inputs = quantize_input(x, interpreter.get_input_details(0))
    dtype = np.dtype(interpreter.get_output_details(0)["dtype"]).name
    return anchor.measure_or_reason(library, blob, profile, inputs, work / "runs" / profile.name / path.stem, dtype)


def ratios(ours, tflm) -> list[str]:
    """flash, instructions and RAM against TFLM + CMSIS-NN's for the same model, or dashes without it."""
    if isinstance(tflm, str):
        return ["-", "-", "-"]
    return [
        f"{ours.flash_bytes / tflm.flash_bytes:.3f}",
        f"{ours.instructions / tflm.instructions_per_inference:.3f}",
        f"{ours.ram_bytes / tflm.ram_bytes:.3f}",
    ]


def print_anchors(anchors: dict) -> None:
    print("\nTFLM + CMSIS-NN, measured in this run:")
    for path, tflm in anchors.items():
        if isinstance(tflm, str):
            print(f"  {path.stem}: {tflm}")
        else:
            print(
                f"  {path.stem}: {tflm.flash_bytes:,} B flash, {tflm.ram_bytes:,} B RAM "
                f"(arena {tflm.arena_bytes:,} B), {tflm.instructions_per_inference:,.0f} instructions per inference"
            )


def print_run(summary_path: Path, profile, library, work: Path) -> None:
    """The device figures of every int8 model of a run on `profile`, with the ratios to TFLM + CMSIS-NN measured
    now on each model's .tflite."""
    from tinyopt.mcu.host import tflm_interpreter
    from tinyopt.records.run import load_summary
    from tinyopt.runtimes.random_inputs import random_inputs

    summary = load_summary(summary_path)
    models = [*summary.variants, *(r.model_copy(update={"name": f"ref:{r.name}"}) for r in summary.reference)]
    print(f"run {summary.run_id}: {profile.name} ({summary.devices[profile.name]['core']}), QEMU, test split\n")
    head = ("model", "flash B", "model B", "RAM B", "instr/inf", "flash x", "instr x", "RAM x", "score", "bit-exact")
    print(" | ".join(head))
    anchors = {}
    for m in sorted((m for m in models if profile.name in m.device), key=lambda m: m.device[profile.name].instructions):
        d = m.device[profile.name]
        path = Path(m.tflite)
        x = random_inputs(tflm_interpreter(path.read_bytes()).get_input_details(0), 3, seed=0)
        anchors[path] = tflm = measure_anchor(library, path, profile, x, work)
        cells = [m.name, f"{d.flash_bytes:,}", f"{d.model_flash_bytes:,}", f"{d.ram_bytes:,}", f"{d.instructions:,.0f}"]
        cells += [*ratios(d, tflm), f"{d.score:.4f}", f"{d.bit_exact_share:.2%} of {d.images:,}"]
        print(" | ".join(cells), flush=True)
    print_anchors(anchors)


if __name__ == "__main__":
    main()
