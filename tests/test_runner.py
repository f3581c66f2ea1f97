"""The same plan on the default thread runner and on a local Dask cluster gives the same variants,
byte for byte: tasks hand each other file paths, and every training step seeds itself."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port, make_project, needs_fashion, run_cli, wait_for_port

pytestmark = [pytest.mark.slow, needs_fashion]

SMALL = dict(
    seed=3,
    data={"train_limit": 1200, "test_limit": 300},
    train={"epochs": 1},
    techniques={"prune": {"fine_tune_epochs": 1}, "cluster": {"fine_tune_epochs": 1}},
    conversion={"calibration_samples": 64},
    plan=[["float32"], ["int8"], ["prune", "int8"], ["cluster", "int8"]],
    reference={"dir": None},
    benchmark={"latency_warmup": 2, "latency_repeats": 20},
)


def fingerprints(root) -> dict:
    summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
    return {
        v["name"]: (v["score"], hashlib.sha256((root / v["tflite"]).read_bytes()).hexdigest())
        for v in summary["variants"]
    }


@pytest.fixture(scope="module")
def on_threads(tmp_path_factory) -> dict:
    root = make_project(tmp_path_factory.mktemp("threads"), runner={"kind": "threads", "workers": 4}, **SMALL)
    done = run_cli(["run"], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return fingerprints(root)


def test_a_local_dask_cluster_gives_identical_variants(on_threads, tmp_path):
    root = make_project(tmp_path, runner={"kind": "dask", "workers": 2}, **SMALL)
    done = run_cli(["run"], cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "on dask" in done.stdout + done.stderr  # the flow says where the stage ran
    assert fingerprints(root) == on_threads
    assert set(on_threads) == {"base-float32", "base-int8", "prune-int8", "cluster-int8"}


def test_a_dask_scheduler_at_an_address_gives_identical_variants(on_threads, tmp_path):
    """A cluster the pipeline did not start: `dask scheduler` and a `dask worker` process, which run
    in the project directory (a shared filesystem, in a real cluster) with its task-result store."""
    port = free_port()
    dask = str(Path(sys.executable).parent / "dask")
    root = make_project(tmp_path / "project", runner={"kind": "dask", "address": f"tcp://127.0.0.1:{port}"}, **SMALL)
    env = {**os.environ, "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root / ".tinyopt" / "prefect-results")}
    with (tmp_path / "dask.log").open("w") as log:
        scheduler = subprocess.Popen(
            [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_for_port(port)
        worker = subprocess.Popen(
            [dask, "worker", f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-dashboard"],
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        done = run_cli(["run"], cwd=root)
        assert done.returncode == 0, done.stderr[-3000:] + (tmp_path / "dask.log").read_text()[-2000:]
        assert fingerprints(root) == on_threads
        assert "Task run" in (tmp_path / "dask.log").read_text()  # the tasks ran in the worker process
    finally:
        for process in (worker, scheduler):
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
