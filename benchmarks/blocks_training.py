"""Benchmark: how tinyopt's `blocks` architectures train on Fashion-MNIST with a constant learning rate and with
`train.lr_schedule: plateau`: the baseline's epochs and validation accuracy, then its full-int8 conversion's
validation and test accuracy, bytes, and instructions per inference on the emulated Cortex-M4 (nano33ble).

    python benchmarks/blocks_training.py [--archs A D F] [--schedules constant plateau] [--seed 42]

The train step is tinyopt's own (`tasks.train.train_baseline`, params.yaml's train defaults but the schedule and,
for plateau, a patience of 5); the split: 6,000 of the 60,000 training images for validation (a seeded
permutation), the 10,000 test images scored once. Every figure printed is measured by the run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tasks.convert import convert_model  # noqa: E402
from tasks.evaluate import evaluate_tflite  # noqa: E402
from tasks.train import train_baseline  # noqa: E402
from tinyopt.mcu.codegen import generate  # noqa: E402
from tinyopt.mcu.on_device import measure_library  # noqa: E402
from tinyopt.ml.architectures import describe_blocks  # noqa: E402
from tinyopt.params import DEFAULT_DEVICES, DataParams, ModelParams, TaskParams, TrainParams  # noqa: E402


def conv(filters: int, stride: int = 1, pool: bool = False, kind: str = "conv") -> dict:
    return {"kind": kind, "filters": filters, "kernel_size": 3, "stride": stride, "pool": pool}


def sep(filters: int, stride: int = 1, pool: bool = False) -> dict:
    return conv(filters, stride, pool, kind="separable")


ARCHS = {  # name -> (blocks, head)
    "A": ([conv(16, pool=True), sep(32, pool=True), sep(64)], "average"),
    "B": ([conv(16, 2), sep(32, 2), sep(48)], "average"),
    "D": ([conv(16, pool=True), sep(32, pool=True), sep(48, pool=True)], "flatten"),
    "E": ([conv(24, pool=True), conv(32, pool=True), sep(64)], "average"),
    "F": ([conv(16, pool=True), conv(32, pool=True), sep(64, pool=True)], "flatten"),
    "G": ([conv(24, pool=True), sep(48, pool=True), sep(64, pool=True)], "flatten"),
}  # fmt: skip
SCHEDULES = {
    "constant": TrainParams(),
    "plateau": TrainParams(lr_schedule="plateau", early_stopping_patience=5),
}


def prepare(seed: int, out: Path) -> Path:
    from tinyopt.datasets.sources import load_source

    x, y, x_test, y_test = load_source(DataParams())
    order = np.random.default_rng(seed).permutation(len(x))
    val, train = order[:6000], order[6000:]
    path = out / "prepared.npz"
    np.savez(path, x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val], x_test=x_test, y_test=y_test)
    return path


def measure(name: str, schedule: str, prepared: Path, seed: int, out: Path) -> dict:
    blocks, head = ARCHS[name]
    model = ModelParams(architecture="blocks", blocks=blocks, head=head)
    trained = train_baseline(prepared, model, SCHEDULES[schedule], TaskParams(), seed, out / f"{name}-{schedule}")
    converted = convert_model(Path(trained.model_path), "int8", out / f"{name}-{schedule}.tflite", prepared)
    scored = evaluate_tflite(Path(converted.tflite_path), prepared, "accuracy")
    blob = Path(converted.tflite_path).read_bytes()
    inputs = np.load(prepared)["x_test"][:3].astype(np.float32) / 255
    device = measure_library(generate(blob, "m"), blob, {"m4": DEFAULT_DEVICES["nano33ble"]}, inputs, None)["m4"]
    return {
        "arch": f"{name} {describe_blocks(model)}",
        "schedule": schedule,
        "epochs": trained.epochs_run,
        "keras_val": trained.val_score,
        "int8_val": scored.val_score,
        "int8_test": scored.score,
        "bytes": converted.raw_bytes,
        "m4_instructions": getattr(device, "instructions", str(device)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["A", "D", "F"], choices=sorted(ARCHS))
    parser.add_argument("--schedules", nargs="+", default=sorted(SCHEDULES), choices=sorted(SCHEDULES))
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        prepared = prepare(args.seed, Path(scratch))
        for name in args.archs:
            for schedule in args.schedules:
                print(json.dumps(measure(name, schedule, prepared, args.seed, Path(scratch))), flush=True)


if __name__ == "__main__":
    main()
