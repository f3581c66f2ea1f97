"""Shared fixtures: an isolated project directory with small params, and helpers to run the CLI."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import tinyopt  # noqa: F401  (tf-keras, as tfmot needs, before any test imports TensorFlow)

# The bad-input checks live in a helper module; rewrite its asserts as pytest does a test module's.
pytest.register_assert_rewrite("tests.bad_input_helpers")

REPO = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
TINYOPT = [sys.executable, "-m", "tinyopt"]

needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(), reason="needs the Debian package dataset-fashion-mnist (make setup installs it)"
)


def full_params(**overrides: dict) -> dict:
    """The repository's params.yaml with sections overridden (DVC needs every key present)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in overrides.items():
        if isinstance(values, dict):
            for key, value in values.items():
                if isinstance(value, dict):
                    params[section][key].update(value)
                else:
                    params[section][key] = value
        else:
            params[section] = values
    return params


SMALL = dict(
    seed=7,
    data={"train_limit": 1200, "test_limit": 400},
    train={"epochs": 2},
    techniques={"prune": {"fine_tune_epochs": 1}, "cluster": {"fine_tune_epochs": 1}, "qat": {"fine_tune_epochs": 1}},
    conversion={"calibration_samples": 100},
    plan=[
        ["float32"],
        ["int8"],
        ["prune", "int8"],
        ["prune", "float16"],
        ["prune", "sp_cluster", "int8"],
        ["qat", "int16x8"],
    ],
    reference={"dir": str(REPO.parent / "shared" / "reference" / "seed-cnn1")},
    benchmark={"latency_warmup": 5, "latency_repeats": 30},
)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path_factory):
    """Tests never touch the user's MLflow server or Prefect home."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path_factory.getbasetemp() / "prefect-home"))
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_RESULTS_LOCAL_STORAGE_PATH", raising=False)


def prepare_fashion_slice(root: Path, train_limit: int, test_limit: int, seed: int) -> Path:
    """A prepared slice of Fashion-MNIST (fetched from the Debian package) under root."""
    from tasks.data import fetch_dataset, prepare_dataset
    from tinyopt.params import DataParams

    params = DataParams(train_limit=train_limit, test_limit=test_limit)
    record = fetch_dataset(params, root / "data")
    return Path(prepare_dataset(Path(record.directory), params, seed=seed, out=root / "prepared.npz").path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    """Until something listens on 127.0.0.1:port (a server the test started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def make_project(root: Path, **overrides) -> Path:
    """A project directory holding params.yaml (small by default) and the DVC files."""
    root.mkdir(parents=True, exist_ok=True)
    params = full_params(**(overrides or SMALL))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        TINYOPT + args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def copy_repo(dest: Path) -> Path:
    """The tracked files of this repository (as a clean clone has them), in a fresh git repository."""
    files = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    return dest


BUCKET = "tinyopt-fleet-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    """A real S3-compatible HTTP server on loopback, with the fleet bucket created."""
    import boto3

    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    credentials = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    os.environ.update(credentials)
    wait_for_port(port)
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path]:
    from tinyopt.release.signing import generate_keys

    return generate_keys(tmp_path_factory.mktemp("keys"))
