"""The same plan on the default thread runner and on a local Dask cluster gives the same variants,
byte for byte: tasks hand each other file paths, and every training step seeds itself."""

from __future__ import annotations

import hashlib
import json

import pytest

from tests.conftest import make_project, needs_fashion, run_cli

pytestmark = [pytest.mark.slow, needs_fashion]

SMALL = dict(seed=3, data={"train_limit": 1200, "test_limit": 300}, train={"epochs": 1},
             techniques={"prune": {"fine_tune_epochs": 1}, "cluster": {"fine_tune_epochs": 1}},
             conversion={"calibration_samples": 64}, plan=[["float32"], ["int8"], ["prune", "int8"], ["cluster", "int8"]],
             reference={"dir": None}, benchmark={"latency_warmup": 2, "latency_repeats": 20})  # fmt: skip


def fingerprints(root) -> dict:
    summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
    return {v["name"]: (v["score"], hashlib.sha256((root / v["tflite"]).read_bytes()).hexdigest()) for v in summary["variants"]}


def test_dask_and_threads_give_identical_variants(tmp_path):
    results = {}
    for runner in ({"kind": "threads", "workers": 4}, {"kind": "dask", "workers": 2}):
        root = make_project(tmp_path / runner["kind"], runner=runner, **SMALL)
        done = run_cli(["run"], cwd=root)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"on {runner['kind']}" in done.stdout + done.stderr  # the flow says where the stage ran
        results[runner["kind"]] = fingerprints(root)
    assert results["threads"] == results["dask"]
    assert set(results["dask"]) == {"base-float32", "base-int8", "prune-int8", "cluster-int8"}
