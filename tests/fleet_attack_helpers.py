"""What the fleet attack modules (tests/test_fleet_tampering.py, test_fleet_recovery.py,
test_fleet_bad_inputs.py) share: a project whose fleet is on a real S3 HTTP server (moto), a fresh
prefix per test, a real MLflow registry to register small byte files in, and the device's and the
attacker's view of the bucket. The fixtures are imported by each module, so each gets its own project."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import BUCKET, make_project

if TYPE_CHECKING:
    from tinyopt.release.manifest import Manifest

MODEL = "attack-model"


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_endpoint) -> Path:
    return make_project(
        tmp_path_factory.mktemp("attacks"),
        fleet={
            "bucket": BUCKET,
            "endpoint_url": s3_endpoint,
            "prefix": "attacks",
            "channels": {
                "canary": {"profile": "nano33ble", "gated": False},
                "stable": {"profile": "nano33ble", "gated": True, "manifest_ttl_days": 7},
            },
        },
    )


@pytest.fixture
def env(project, keys, monkeypatch, tmp_path):
    """A fresh prefix per test (each starts with empty channels), the signing key, the registry."""
    import yaml

    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("TINYOPT_SIGNING_KEY_FILE", str(keys[0]))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["fleet"]["prefix"] = f"attacks/{tmp_path.name}"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    from tinyopt.params import load_params

    return load_params(tmp_path / "params.yaml")


def toy_summary(label: str, path: Path, score: float, mlflow_run_id: str):
    """A run summary of one variant, `label`, whose .tflite is `path` (only its bytes matter here)."""
    from tinyopt.records.run import Baseline, Summary

    variant = {
        **dict(name=label, tflite=str(path), raw_bytes=path.stat().st_size, gzip_bytes=path.stat().st_size),
        **dict(metric="accuracy", score=score, val_score=score, latency_us_p50=1.0, latency_us_p99=1.0),
        **dict(input_dtype="int8", output_dtype="int8", params=1, macs=1, ops={}, tflm_runs=True),
        **dict(fits={"nano33ble": True}, chain=["train", "int8"], model="model.keras", c_source="model.cc"),
        **dict(keras_score=score, train_seconds=0.0, sparsity=0.0, unique_weights={}, mlflow_run_id=mlflow_run_id),
    }
    return Summary(
        **dict(run_id="r1", created="2026-12-01T00:00:00+00:00", mlflow_run_id=mlflow_run_id, mlflow_experiment="t"),
        **dict(mlflow_tracking_uri=os.environ["MLFLOW_TRACKING_URI"], git_commit="c0ffee", params_hash="p"),
        **dict(dataset={"name": "toy", "version": "v"}, baseline=Baseline(**variant), variants=[variant]),
        **dict(skipped=[], picks={}, reference=[], reference_note=None, comparisons=[], headline=[]),
        devices={},
        timings={},
    )


def register(project: Path, tmp_path: Path, score: float, label: str, repeat: int = 40) -> int:
    """A registered version whose .tflite is `label`'s bytes (`repeat` times), logged to a real MLflow run."""
    import mlflow

    from tinyopt.release.registry import register_variant

    path = tmp_path / f"{label}.tflite"
    path.write_bytes(f"TFL3 model {label}".encode() * repeat)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(path))
    summary = toy_summary(label, path, score, run.info.run_id)
    return register_variant(summary, label, "nano33ble", MODEL)["version"]


def current(env) -> bytes:
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    return store.get(store.manifest_key("canary"))


def device(env, public, into: Path, channel: str = "canary", clock=None) -> Manifest:
    from tinyopt.release.updater import download_and_verify

    return download_and_verify(channel, env, public, into, clock)


def drop_manifest_writes(monkeypatch):
    """From now on, every write of a channel's manifest.json fails as a dropped network would; the
    other writes (model, history) still land: an interrupted promote. Returns the real put, to restore."""
    from tinyopt.release.fleet import FleetStore

    real_put = FleetStore.put

    def put_unless_manifest(self, key, body, content_type="application/octet-stream"):
        if key.endswith("/manifest.json"):
            raise ConnectionError("injected: the network dropped before the manifest was written")
        return real_put(self, key, body, content_type)

    monkeypatch.setattr(FleetStore, "put", put_unless_manifest)
    return real_put


def put_current(env, channel: str, body: bytes) -> None:
    """What an attacker with write access to the bucket does."""
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    store.put(store.manifest_key(channel), body, "application/json")


def put_object(env, key: str, body: bytes) -> None:
    """What an attacker with write access to the bucket does to a model object (a manifest's model_key)."""
    from tinyopt.release.fleet import FleetStore

    FleetStore(env.fleet).put(key, body)


def status_of(env, public, channel: str) -> str:
    """What `tinyopt status --public-key` says of the channel's manifest (the bracketed check)."""
    from tinyopt.release.channel import status

    return next(row.check for row in status(env, public) if row.channel == channel)


@pytest.fixture
def public(keys):
    from tinyopt.release.signing import load_public_key

    return load_public_key(keys[1])
