"""The optimize flow refuses, in one line and before any work, what it cannot run with."""

from __future__ import annotations

import os

import pytest

from tests.conftest import make_project, needs_fashion, run_cli

pytestmark = [pytest.mark.slow, needs_fashion]


def test_unreachable_tracking_server_is_one_line_before_any_work(tmp_path):
    root = make_project(tmp_path / "p")
    result = run_cli(["run"], cwd=root, env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tinyopt: error: MLflow tracking server http://127.0.0.1:9 is unreachable ([Errno 111] Connection refused); "
        "start it, or unset MLFLOW_TRACKING_URI to use the local store"
    ]
    assert sorted(os.listdir(root)) == ["params.yaml"]


def test_a_corrupt_dataset_stops_the_flow_with_one_line(tmp_path, monkeypatch):
    """A corrupt file that cannot be re-fetched: the user sees which file and what to do."""
    root = make_project(tmp_path / "p", data={"dataset": "npz", "path": str(tmp_path / "broken.npz")})
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 truncated")
    result = run_cli(["run"], cwd=root)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert f"tinyopt: error: {tmp_path / 'broken.npz'}: not a readable .npz file" in result.stderr
    assert not (root / "reports").exists() and not (root / "data" / "npz").exists()
