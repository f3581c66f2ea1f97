"""Benchmark: wall time of one small `tinyopt search` on 1 and 2 Dask worker processes (and on threads),
same trials, same seed, each in a fresh project (cold: data, baseline and every trial built anew).

    python benchmarks/search_workers.py [--trials 6] [--train-limit 6000]

Prints each setting's wall seconds and the 1-worker / 2-worker ratio. Training takes turns within one
process (Keras seeds are process-wide), so only separate worker processes train two trials at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def project(root: Path, runner: dict, trials: int, train_limit: int) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["train_limit"] = train_limit
    params["train"]["epochs"] = 3
    params["reference"]["dir"] = None
    params["plan"] = [["int8"]]
    params["runner"] = {"kind": runner["kind"], "workers": runner["workers"], "address": None}
    params["search"].update(trials=trials, time_budget_s=3600, max_drop=None)
    params["search"]["space"].update(
        chains=[["qat", "int8"], ["prune", "int8"], ["cluster", "cqat", "int8"]],
        fine_tune_epochs=[1, 2],
        qat_epochs=[1, 2],
        conv_filters=None,  # one baseline: the runners differ in how trials overlap, not in baselines
        kernel_size=None,
    )
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def timed_search(root: Path) -> tuple[float, float]:
    """(wall seconds of the command, seconds of its trial stage as search.json reports them)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tinyopt", "search"], cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    [result] = (root / "reports").glob("search-*/search.json")
    return time.perf_counter() - started, json.loads(result.read_text())["trial_stage_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--train-limit", type=int, default=6000)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.trials} trials on {args.train_limit} training images, cold each time")
    seconds = {}
    with tempfile.TemporaryDirectory() as scratch:
        for label, runner in (
            ("dask x1", {"kind": "dask", "workers": 1}),
            ("dask x2", {"kind": "dask", "workers": 2}),
            ("threads", {"kind": "threads", "workers": 4}),
        ):
            root = project(Path(scratch) / label.replace(" ", ""), runner, args.trials, args.train_limit)
            seconds[label] = timed_search(root)
            print(f"{label}: {seconds[label][0]:7.1f} s in all, {seconds[label][1]:7.1f} s of trials")
    one, two = seconds["dask x1"], seconds["dask x2"]
    print(f"1 worker / 2 workers: {one[0] / two[0]:.2f}x in all, {one[1] / two[1]:.2f}x for the trials")


if __name__ == "__main__":
    main()
