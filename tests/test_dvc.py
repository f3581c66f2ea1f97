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

pytestmark = [pytest.mark.slow, needs_fashion]


def dvc(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True, env=env)


def test_dvc_repro_on_a_small_slice(tmp_path):
    root = copy_repo(tmp_path / "clone")
    (root / "params.yaml").write_text(yaml.safe_dump(full_params(**SMALL), sort_keys=False))
    result = dvc(["repro"], cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for stage in ("fetch", "prepare", "train", "convert"):
        assert f"Running stage '{stage}'" in result.stdout
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(lock["stages"]) == {"fetch", "prepare", "train", "convert"}
    evaluation = json.loads((root / "artifacts" / "baseline" / "eval.json").read_text())
    assert evaluation["num_test"] == 400 and evaluation["metric"] == "accuracy" and evaluation["score"] > 0.3
    status = dvc(["status"], cwd=root)
    assert "up to date" in status.stdout, status.stdout
    again = dvc(["repro"], cwd=root)
    assert again.returncode == 0 and "Running stage" not in again.stdout
