"""Benchmark: int8 models as a Cortex-M4 runs them (tinyopt's generated C, QEMU mps2-an386, -icount), beside
the TensorFlow Lite Micro figures measured for issue 12 on the same machine and counting.

    python benchmarks/mcu_int8.py [--images 10000] [--models DIR_OR_FILES ...] [--profile nano33ble]
    python benchmarks/mcu_int8.py --summary reports/latest/summary.json [--profile nano33ble]

The second form prints what a `tinyopt run` measured (every int8 variant of its plan and the reference int8
models, same firmware and QEMU counting) beside the TFLM anchor, measuring nothing again.

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

from tinyopt.core.errors import NotApplicable  # noqa: E402
from tinyopt.datasets.idx import read_idx  # noqa: E402
from tinyopt.params import DEFAULT_DEVICES, DEFAULT_PROFILE  # noqa: E402

SEED = Path(__file__).resolve().parents[2] / "shared" / "reference" / "seed-cnn1"
FASHION = Path("/usr/share/datasets/fashion-mnist")
# Measured for issue 12 (Cortex-M4 with FPU, base-int8-floatio, all 10,000 test images, same QEMU counting).
TFLM_CMSIS = {"instructions": 956_691, "flash": 79_232, "ram": 12_400}
TFLM_REFERENCE = {"instructions": 3_495_658, "flash": 55_292}


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
    args = parser.parse_args()
    if args.summary:
        return print_run(args.summary, args.profile)
    from tinyopt.mcu.on_device import measure_on_device

    profile = DEFAULT_DEVICES[args.profile]
    x = read_idx(FASHION / "t10k-images-idx3-ubyte.gz")[: args.images].astype(np.float32) / 255.0
    y = read_idx(FASHION / "t10k-labels-idx1-ubyte.gz")[: args.images]
    paths = []
    for item in args.models:
        p = Path(item)
        paths += sorted(p.rglob("*.tflite")) if p.is_dir() else [p]
    rows = []
    for path in paths:
        pruned, clustered = "prun" in path.name, "cluster" in path.name
        runs = [("sparse" if pruned else "", True, False)]
        if pruned:  # what skipping zeros saves
            runs.append(("dense", False, False))
        if clustered:  # what 4-bit cluster indices save (and cost)
            runs.append(("cluster indices", True, True))
        for label, sparse, indices in runs:
            name = f"{path.stem}{' (' + label + ')' if label else ''}"
            try:
                rows.append(
                    (name, measure_on_device(path, profile, x, y, sparse=sparse, cluster_indices=indices, timeout=1800))
                )
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
    for name, r in rows:
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
                    f"{r.flash_bytes / TFLM_CMSIS['flash']:.3f}",
                    f"{r.instructions / TFLM_CMSIS['instructions']:.3f}",
                    f"{r.ram_bytes / TFLM_CMSIS['ram']:.3f}",
                    f"{r.latency_ms_estimate:.2f}",
                    f"{r.score:.4f}",
                    f"{r.bit_exact_share:.2%}",
                ]
            )
        )
    print(
        f"\nTFLM + CMSIS-NN (base-int8-floatio): {TFLM_CMSIS['flash']:,} B flash, about {TFLM_CMSIS['ram']:,} B RAM, "
        f"{TFLM_CMSIS['instructions']:,} instructions; TFLM reference kernels: {TFLM_REFERENCE['flash']:,} B, "
        f"{TFLM_REFERENCE['instructions']:,}. Targets: flash x <= 0.35, instr x <= 0.5, RAM x <= 1."
    )
    print("\nInstructions per op (mean per inference):")
    for name, r in rows:
        print(f"  {name}: " + ", ".join(f"{k} {v:,.0f}" for k, v in r.instructions_per_op.items()))


def print_run(summary_path: Path, profile: str) -> None:
    """The device figures of every int8 model of a run on `profile`, with the ratios to TFLM + CMSIS-NN."""
    from tinyopt.records.run import load_summary

    summary = load_summary(summary_path)
    models = [*summary.variants, *(r.model_copy(update={"name": f"ref:{r.name}"}) for r in summary.reference)]
    print(f"run {summary.run_id}: {profile} ({summary.devices[profile]['core']}), QEMU, test split\n")
    head = ("model", "flash B", "model B", "RAM B", "instr/inf", "flash x", "instr x", "RAM x", "score", "bit-exact")
    print(" | ".join(head))
    for m in sorted((m for m in models if profile in m.device), key=lambda m: m.device[profile].instructions):
        d = m.device[profile]
        cells = [m.name, f"{d.flash_bytes:,}", f"{d.model_flash_bytes:,}", f"{d.ram_bytes:,}", f"{d.instructions:,.0f}"]
        cells += [f"{d.flash_bytes / TFLM_CMSIS['flash']:.3f}", f"{d.instructions / TFLM_CMSIS['instructions']:.3f}"]
        cells += [
            f"{d.ram_bytes / TFLM_CMSIS['ram']:.3f}",
            f"{d.score:.4f}",
            f"{d.bit_exact_share:.2%} of {d.images:,}",
        ]
        print(" | ".join(cells))
    print(
        f"\nTFLM + CMSIS-NN (base-int8-floatio, Cortex-M4): {TFLM_CMSIS['flash']:,} B flash, about "
        f"{TFLM_CMSIS['ram']:,} B RAM, {TFLM_CMSIS['instructions']:,} instructions."
    )


if __name__ == "__main__":
    main()
