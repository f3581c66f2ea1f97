"""`dvc repro` from a clean copy of the repository runs the same steps through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import SMALL, copy_repo, full_params, needs_fashion


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)


@pytest.mark.slow
@needs_fashion
def test_dvc_repro_on_a_small_slice(tmp_path):
    root = copy_repo(tmp_path / "clone")
    (root / "params.yaml").write_text(yaml.safe_dump(full_params(**SMALL), sort_keys=False))
    targets = ["convert", "technique@prune"]  # the baseline's stages and one technique: a fast slice
    result = dvc(["repro", *targets], cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("fetch", "prepare", "train", "convert", "technique@prune"):
        assert f"Running stage '{stage}'" in result.stdout
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"fetch", "prepare", "train", "convert", "technique@prune"}
    pruned = json.loads((root / "artifacts" / "models" / "prune" / "model.json").read_text())
    assert pruned["step"] == "prune" and pruned["sparsity"] > 0.3
    evaluation = json.loads((root / "artifacts" / "baseline" / "eval.json").read_text())
    assert evaluation["num_test"] == 400 and evaluation["metric"] == "accuracy" and evaluation["score"] > 0.3
    status = dvc(["status", *targets], cwd=root)
    assert "up to date" in status.stdout, status.stdout
    again = dvc(["repro", *targets], cwd=root)
    assert again.returncode == 0 and "Running stage" not in again.stdout


STEP_OF_STAGE = {
    "fetch": ["tasks.data"],
    "prepare": ["tasks.data"],
    "train": ["tasks.train", "tinyopt.run.preflight"],
    "convert": ["tasks.convert", "tasks.evaluate"],
    "technique": ["tasks.techniques"],
    "graph": ["tasks.techniques"],
}


@pytest.mark.parametrize("stage", sorted(STEP_OF_STAGE))
def test_each_stage_lists_every_module_its_step_runs(stage):
    """One rule for when a step runs again: DVC re-runs a stage on a change in exactly the code the
    Prefect cache digests for its step (tinyopt.orchestration.cache.own_modules), and the CLI."""
    import importlib

    from tests.conftest import REPO
    from tinyopt.orchestration.cache import own_modules

    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage]
    deps = set((spec.get("do") or spec)["deps"])
    needed = {
        str(Path(importlib.import_module(name).__file__).relative_to(REPO))
        for step in STEP_OF_STAGE[stage]
        for name in own_modules(step)
    }
    assert "cli" in deps and needed <= deps, sorted(needed - deps)
