"""Registry and fleet promotion against a real S3 HTTP endpoint (moto's server) on loopback."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BUCKET, copy_repo, full_params, make_project, needs_fashion, run_cli
from tests.fleet_attack_helpers import drop_manifest_writes
from tests.test_manifest import example as manifest_example
from tinyopt.release.signing import peek

pytestmark = [pytest.mark.slow, needs_fashion]


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_endpoint) -> Path:
    """A pipeline run on a small slice, with the fleet pointed at the loopback S3 server."""
    root = make_project(
        tmp_path_factory.mktemp("project"),
        seed=3,
        data={"train_limit": 1200, "test_limit": 400},
        train={"epochs": 2},
        techniques={"prune": {"fine_tune_epochs": 1}},
        conversion={"calibration_samples": 64},
        plan=[["float32"], ["int8"], ["prune", "int8"]],
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20},
        fleet={
            "bucket": BUCKET,
            "endpoint_url": s3_endpoint,
            "channels": {
                "canary": {"profile": "nano33ble", "gated": False},
                "stable": {"profile": "nano33ble", "gated": True},
                "tiny": {"profile": "uno", "gated": True},
            },
        },
    )
    result = run_cli(["run"], cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture
def env(project, keys, monkeypatch):
    monkeypatch.chdir(project)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("TINYOPT_SIGNING_KEY_FILE", str(keys[0]))
    from tinyopt.params import load_params

    return load_params(project / "params.yaml")


def summary(project: Path) -> dict:
    return json.loads((project / "reports" / "latest" / "summary.json").read_text())


def register(project: Path, variant: str) -> int:
    from tinyopt.records.run import load_summary
    from tinyopt.release.registry import register_variant

    summary_path = project / "reports" / "latest" / "summary.json"
    return register_variant(load_summary(summary_path), variant, "nano33ble")["version"]


def test_cli_register_promote_verify_status_rollback(project, keys, s3_endpoint):
    cli_env = {"TINYOPT_SIGNING_KEY_FILE": str(keys[0])}
    done = run_cli(["register", "--variant", "base-int8", "--name", "cli-model"], cwd=project, env=cli_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "registered base-int8 as cli-model version 1 (alias candidate)" in done.stdout
    run_cli(["register", "--variant", "prune-int8", "--name", "cli-model"], cwd=project, env=cli_env)
    for version in (1, 2):
        published = run_cli(
            ["promote", "cli-model", "--version", str(version), "--channel", "canary"], cwd=project, env=cli_env
        )
        assert published.returncode == 0, published.stderr[-2000:]
        assert f"canary: published cli-model v{version}" in published.stdout
    device = run_cli(["verify", "--channel", "canary", "--public-key", str(keys[1]), "--into", "device"], cwd=project)
    assert device.returncode == 0 and "verified: cli-model v2" in device.stdout
    manifest = peek((project / "device" / "manifest.json").read_bytes())
    assert (project / "device" / f"{manifest['sha256']}.tflite").is_file()
    assert json.loads((project / "device" / "state.json").read_text())["channels"]["canary"]["sequence"] == 2
    assert manifest["previous"]["version"] == 1 and manifest["lineage"]["pipeline_run"] == summary(project)["run_id"]
    assert "canary: cli-model v2" in run_cli(["status"], cwd=project).stdout
    back = run_cli(["rollback", "canary"], cwd=project, env=cli_env)
    assert back.returncode == 0 and "canary: back to cli-model v1" in back.stdout
    again = run_cli(["verify", "--channel", "canary", "--public-key", str(keys[1]), "--into", "device"], cwd=project)
    assert "verified: cli-model v1" in again.stdout and "sequence 3" in again.stdout  # a rollback is a newer manifest
    nothing = run_cli(["rollback", "canary"], cwd=project, env=cli_env)
    assert nothing.returncode == 2 and "no earlier manifest to roll back to" in nothing.stderr


def test_registered_version_links_back_to_its_run(env, project):
    from tinyopt.orchestration import tracking

    version = register(project, "base-int8")
    found = tracking.client().get_model_version("fashion-mnist-nano33ble", str(version))
    record = next(v for v in summary(project)["variants"] if v["name"] == "base-int8")
    assert found.run_id == record["mlflow_run_id"] and found.tags["variant"] == "base-int8"
    assert int(tracking.client().get_model_version_by_alias("fashion-mnist-nano33ble", "candidate").version) == version
    assert json.loads(found.tags["record"])["arena_bytes"] == record["arena_bytes"]


def test_tampered_model_or_manifest_is_rejected(env, project, keys, tmp_path):
    from tinyopt.core.errors import UserError
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote
    from tinyopt.release.signing import canonical, load_public_key
    from tinyopt.release.updater import verify

    version = register(project, "base-int8")
    promote("fashion-mnist-nano33ble", version, "canary", env)
    store = FleetStore(env.fleet)
    published = store.get(store.manifest_key("canary"))
    model = store.get(peek(published)["model_key"])
    public, state = load_public_key(keys[1]), tmp_path / "state.json"
    flipped, good = bytearray(model), tmp_path / "good.tflite"
    flipped[len(flipped) // 2] ^= 0x01
    (tmp_path / "flipped.tflite").write_bytes(flipped)
    good.write_bytes(model)
    with pytest.raises(UserError, match=r"does not match the manifest \(its sha256\)"):
        verify(published, tmp_path / "flipped.tflite", public, "canary", state)
    assert not state.exists()  # nothing accepted, nothing recorded
    forged = json.loads(published)
    forged["payload"] = base64.b64encode(canonical(dict(peek(published), score=0.999))).decode()
    with pytest.raises(UserError, match="signature does not verify"):
        verify(forged, good, public, "canary", state)
    assert verify(published, good, public, "canary", state).version == version


def test_a_failure_between_the_writes_leaves_the_old_manifest_valid(env, project, keys, monkeypatch, tmp_path):
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote
    from tinyopt.release.signing import load_public_key
    from tinyopt.release.updater import verify

    old = register(project, "base-int8")
    promote("fashion-mnist-nano33ble", old, "canary", env)
    new = register(project, "prune-int8")
    real_put = drop_manifest_writes(monkeypatch)
    with pytest.raises(ConnectionError):
        promote("fashion-mnist-nano33ble", new, "canary", env)
    monkeypatch.setattr(FleetStore, "put", real_put)
    store = FleetStore(env.fleet)
    published = store.get(store.manifest_key("canary"))
    model = tmp_path / "model.tflite"
    model.write_bytes(store.get(peek(published)["model_key"]))
    assert verify(published, model, load_public_key(keys[1]), "canary", tmp_path / "state.json").version == old
    # Running the promotion again completes it; running it once more changes nothing.
    assert promote("fashion-mnist-nano33ble", new, "canary", env)["status"] == "published"
    history = len(store.history("canary"))
    assert promote("fashion-mnist-nano33ble", new, "canary", env)["status"] == "unchanged"
    assert len(store.history("canary")) == history


def test_gated_channels_refuse_unless_forced_with_a_reason(env, project):
    from tinyopt.core.errors import UserError
    from tinyopt.orchestration import tracking
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote

    version = register(project, "base-int8")
    with pytest.raises(UserError, match="tiny refuses .* it does not fit uno"):
        promote("fashion-mnist-nano33ble", version, "tiny", env)
    done = promote("fashion-mnist-nano33ble", version, "tiny", env, force_reason="bench demo board")
    assert done["forced"]
    store = FleetStore(env.fleet)
    assert peek(store.get(store.manifest_key("tiny")))["forced"]["reason"] == "bench demo board"
    by_score = sorted(summary(project)["variants"], key=lambda v: -v["score"])  # all fit nano33ble
    better, worse = by_score[0]["name"], by_score[-1]["name"]
    if by_score[0]["score"] == by_score[-1]["score"]:
        pytest.skip("every variant scores the same on this slice")
    promote("fashion-mnist-nano33ble", register(project, better), "stable", env)
    with pytest.raises(UserError, match="stable serves fashion-mnist-nano33ble"):
        promote("fashion-mnist-nano33ble", register(project, worse), "stable", env)
    assert (
        tracking.client().get_model_version_by_alias("fashion-mnist-nano33ble", "production").tags["variant"] == better
    )


def test_gate_refuses_what_does_not_fit_or_scores_worse():
    from tinyopt.release.decision import gate
    from tinyopt.release.registry import RegisteredRecord

    record = RegisteredRecord(name="base-int8", metric="accuracy", score=0.89, fits={"nano33ble": True, "uno": False})
    serving = manifest_example(model_name="m", version=3, metric="accuracy", score=0.90)
    assert gate("stable", record, "uno", None).startswith("it does not fit uno")
    assert (
        gate("stable", record, "nano33ble", serving)
        == "stable serves m v3 with accuracy 0.9000; this one scores 0.8900"
    )
    as_good = record.model_copy(update={"score": 0.90})
    assert gate("stable", as_good, "nano33ble", serving) is None  # as good is good enough
    errors = RegisteredRecord(name="reg-int8", metric="mae", score=0.20, fits={"nano33ble": True})
    lower_mae = serving.model_copy(update={"metric": "mae", "score": 0.25})
    assert gate("stable", errors, "nano33ble", lower_mae) is None  # lower MAE is better


def test_promotion_without_a_signing_key_is_one_line(project, monkeypatch):
    monkeypatch.delenv("TINYOPT_SIGNING_KEY_FILE", raising=False)
    monkeypatch.delenv("TINYOPT_SIGNING_KEY", raising=False)
    run_cli(["register", "--variant", "base-int8", "--name", "keyless"], cwd=project)
    result = run_cli(["promote", "keyless", "--version", "1", "--channel", "canary"], cwd=project)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "tinyopt: error: no signing key: set TINYOPT_SIGNING_KEY_FILE" in result.stderr


def test_dvc_push_and_pull_through_the_s3_remote(tmp_path, s3_endpoint):
    import yaml

    root = copy_repo(tmp_path / "clone")
    params = full_params(seed=1, data={"train_limit": 300, "test_limit": 100}, train={"epochs": 1})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def dvc(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, env=env)

    assert dvc("repro", "prepare").returncode == 0
    dvc("remote", "modify", "--local", "fleet", "endpointurl", s3_endpoint)
    dvc("remote", "modify", "--local", "fleet", "url", f"s3://{BUCKET}/dvc")
    pushed = dvc("push")
    assert pushed.returncode == 0, pushed.stderr[-2000:]
    original = (root / "artifacts" / "prepared.npz").read_bytes()
    for path in ("data", "artifacts", ".dvc/cache"):
        subprocess.run(["rm", "-rf", str(root / path)], check=True)
    pulled = dvc("pull", "--with-deps", "prepare")
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    assert (root / "artifacts" / "prepared.npz").read_bytes() == original
    assert (root / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz").is_file()
