"""The fleet's trust model against someone with write access to the bucket, on a real S3 HTTP server
(moto) and a real MLflow registry. The registered "models" are small byte files logged as run
artifacts: what is checked here is the signing, not the model, so no pipeline run is needed."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from pathlib import Path

import pytest

from tests.conftest import BUCKET, make_project, run_cli

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
    from tinyopt.records import Baseline, Summary

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


def register(project: Path, tmp_path: Path, score: float, label: str) -> int:
    """A registered version whose .tflite is `label`'s bytes, logged to a real MLflow run."""
    import mlflow

    from tinyopt.release.registry import register_variant

    path = tmp_path / f"{label}.tflite"
    path.write_bytes(f"TFL3 model {label}".encode() * 40)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(path))
    summary = toy_summary(label, path, score, run.info.run_id)
    return register_variant(summary, label, "nano33ble", MODEL)["version"]


def current(env) -> bytes:
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    return store.get(store.manifest_key("canary"))


def device(env, public, into: Path, channel: str = "canary", clock=None) -> dict:
    from tinyopt.release.device import download_and_verify

    return download_and_verify(channel, env, public, into, clock)


def put_current(env, channel: str, body: bytes) -> None:
    """What an attacker with write access to the bucket does."""
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    store.put(store.manifest_key(channel), body, "application/json")


@pytest.fixture
def public(keys):
    from tinyopt.release.signing import load_public_key

    return load_public_key(keys[1])


def test_downgrade_an_old_history_manifest_copied_over_current_is_rejected(env, project, tmp_path, public):
    from tinyopt.errors import UserError
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote

    old, new = register(project, tmp_path, 0.80, "old"), register(project, tmp_path, 0.85, "new")
    promote(MODEL, old, "canary", env)
    promote(MODEL, new, "canary", env)
    into = tmp_path / "device"
    assert device(env, public, into)["sequence"] == 2
    state = (into / "state.json").read_bytes()
    store = FleetStore(env.fleet)
    put_current(env, "canary", store.get(store.history("canary")[0]))  # sequence 1, validly signed, but old
    with pytest.raises(UserError, match="sequence 1 is older than the last accepted 2 on canary: a downgrade"):
        device(env, public, into)
    assert (into / "state.json").read_bytes() == state
    assert json.loads(state)["channels"]["canary"]["sequence"] == 2
    # Polling the very same manifest again is fine (and a device that never saw 2 would take 1).
    put_current(env, "canary", store.get(store.history("canary")[1]))
    assert device(env, public, into)["version"] == new
    # Promoting again publishes a newer one (sequence 3). The signer cannot tell this copy from an
    # interrupted promote of 2 (which names 1 as what it replaces), so it keeps 1 as what was served.
    put_current(env, "canary", store.get(store.history("canary")[0]))
    again = promote(MODEL, new, "canary", env)
    assert (again["status"], again["sequence"]) == ("published", 3)
    assert device(env, public, into)["sequence"] == 3


def test_cross_channel_canary_manifest_copied_to_stable_is_rejected(env, project, tmp_path, public):
    from tinyopt.errors import UserError
    from tinyopt.release.promote import promote

    promote(MODEL, register(project, tmp_path, 0.80, "canary-only"), "canary", env)
    put_current(env, "stable", current(env))
    with pytest.raises(UserError, match="the manifest is for channel canary, this device is on stable"):
        device(env, public, tmp_path / "device", channel="stable")
    assert not (tmp_path / "device").exists()


@pytest.mark.parametrize("change", ["extra field", "key_id outside", "old schema-1 envelope"])
def test_unsigned_fields_are_rejected(env, project, tmp_path, public, change):
    from tinyopt.errors import UserError
    from tinyopt.release.promote import promote

    promote(MODEL, register(project, tmp_path, 0.80, "unsigned"), "canary", env)
    envelope = json.loads(current(env))
    if change == "extra field":
        envelope["model_key"] = "attacks/models/evil.tflite"
    elif change == "key_id outside":
        envelope["key_id"] = "0123456789abcdef"
    else:
        envelope = {
            "manifest": json.loads(base64.b64decode(envelope["payload"])),
            "signature": envelope["signature"],
            "key_id": "0123456789abcdef",
        }
    put_current(env, "canary", json.dumps(envelope).encode())
    with pytest.raises(UserError, match="must have exactly the fields payload and signature"):
        device(env, public, tmp_path / "device")


def test_a_changed_payload_or_another_key_fails_the_signature(env, project, tmp_path, public):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tinyopt.errors import UserError
    from tinyopt.release import signing
    from tinyopt.release.promote import promote

    promote(MODEL, register(project, tmp_path, 0.80, "forged"), "canary", env)
    envelope = json.loads(current(env))
    manifest = json.loads(base64.b64decode(envelope["payload"]))
    envelope["payload"] = base64.b64encode(signing.canonical(dict(manifest, sequence=10**6))).decode()
    put_current(env, "canary", json.dumps(envelope).encode())
    with pytest.raises(UserError, match="signature does not verify"):
        device(env, public, tmp_path / "device")
    put_current(env, "canary", signing.sign(dict(manifest, sequence=10**6), Ed25519PrivateKey.generate()))
    with pytest.raises(UserError, match="signature does not verify"):
        device(env, public, tmp_path / "device")


def test_an_expired_manifest_is_rejected_and_promoting_again_re_signs_it(env, project, tmp_path, public):
    from tinyopt.errors import UserError
    from tinyopt.release.promote import promote
    from tinyopt.release.signing import peek

    version = register(project, tmp_path, 0.80, "expiring")
    first = promote(MODEL, version, "stable", env)
    manifest = peek(current_of(env, "stable"))
    created, expires = (dt.datetime.fromisoformat(manifest[k]) for k in ("created", "expires"))
    assert expires - created == dt.timedelta(days=7)  # the channel's manifest_ttl_days
    with pytest.raises(UserError, match=r"expired at .*: a stale or replayed manifest; the publisher must promote"):
        device(env, public, tmp_path / "device", "stable", clock=expires + dt.timedelta(seconds=1))
    assert not (tmp_path / "device" / "state.json").exists()
    assert promote(MODEL, version, "stable", env)["status"] == "unchanged"  # fresh: nothing to re-sign
    # Past half its time to live, promoting the same version again publishes a fresh manifest.
    # A longer time to live on the channel: the 7 days left are less than half of it.
    longer = {"stable": env.fleet.channels["stable"].model_copy(update={"manifest_ttl_days": 20})}
    stale = env.model_copy(update={"fleet": env.fleet.model_copy(update={"channels": longer})})
    again = promote(MODEL, version, "stable", stale)
    assert (again["status"], again["sequence"]) == ("published", first["sequence"] + 1)
    assert device(env, public, tmp_path / "device", "stable", clock=expires + dt.timedelta(days=1))["sequence"] == 2


def current_of(env, channel: str) -> bytes:
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    return store.get(store.manifest_key(channel))


def test_rollback_publishes_a_higher_sequence_and_moves_the_alias(env, project, tmp_path, public):
    from tinyopt.release.promote import promote, rollback
    from tinyopt.release.registry import serving

    one, two = register(project, tmp_path, 0.80, "one"), register(project, tmp_path, 0.81, "two")
    promote(MODEL, one, "stable", env)
    promote(MODEL, two, "stable", env)
    into = tmp_path / "device"
    assert device(env, public, into, "stable")["version"] == two
    assert serving(MODEL, "production").version == two
    back = rollback("stable", env)
    assert (back["version"], back["sequence"]) == (one, 3)
    seen = device(env, public, into, "stable")  # the device, which accepted 2, takes 3
    assert (seen["version"], seen["rollback_from"]["version"], seen["previous"]) == (one, two, None)
    assert serving(MODEL, "production").version == one
    assert json.loads((into / "state.json").read_text())["channels"]["stable"]["sequence"] == 3


def test_rollback_after_an_interrupted_promote_goes_to_the_model_served_before(
    env, project, tmp_path, public, monkeypatch
):
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote, rollback
    from tinyopt.release.signing import peek

    v1, v2, v3 = (register(project, tmp_path, 0.80 + i / 100, f"chain{i}") for i in range(3))
    promote(MODEL, v1, "canary", env)
    promote(MODEL, v2, "canary", env)
    real_put = FleetStore.put

    def fail_on_current(self, key, body, content_type="application/octet-stream"):
        if key.endswith("/manifest.json"):
            raise ConnectionError("injected: the network dropped before the manifest was written")
        return real_put(self, key, body, content_type)

    monkeypatch.setattr(FleetStore, "put", fail_on_current)
    with pytest.raises(ConnectionError):
        promote(MODEL, v3, "canary", env)  # history/000003.json exists, never became current
    monkeypatch.setattr(FleetStore, "put", real_put)
    assert device(env, public, tmp_path / "device")["version"] == v2
    done = promote(MODEL, v3, "canary", env)
    assert done["sequence"] == 4  # past the orphan's number: sequence numbers are never reused
    back = rollback("canary", env)
    assert (back["version"], back["sequence"]) == (v2, 5)  # not v3 again (the orphan before current)
    assert device(env, public, tmp_path / "device")["version"] == v2
    # An older manifest copied back (5 replaced 4, not 1) is seen by the signer as tampered with.
    store = FleetStore(env.fleet)
    put_current(env, "canary", store.get(store.history("canary")[0]))
    repaired = promote(MODEL, v2, "canary", env)
    assert (repaired["status"], repaired["sequence"]) == ("repaired", 6)
    assert peek(current(env))["previous"]["version"] == v1


def test_promoting_again_repairs_a_tampered_current_manifest(env, project, tmp_path, public):
    from tinyopt.errors import UserError
    from tinyopt.release.promote import promote

    version = register(project, tmp_path, 0.80, "repair")
    promote(MODEL, version, "stable", env)
    put_current(env, "stable", b"{not json")
    with pytest.raises(UserError, match="the manifest is not JSON"):
        device(env, public, tmp_path / "device", "stable")
    # The gate compares with the last verified history entry, never the tampered file's score.
    worse = register(project, tmp_path, 0.50, "worse")
    with pytest.raises(UserError, match=f"stable serves {MODEL} v{version} with accuracy 0.8000"):
        promote(MODEL, worse, "stable", env)
    repaired = promote(MODEL, version, "stable", env)
    assert (repaired["status"], repaired["sequence"]) == ("repaired", 2)
    assert device(env, public, tmp_path / "device", "stable")["version"] == version


def test_a_failed_registry_step_is_an_error_and_running_again_moves_the_alias(env, project, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tinyopt.errors import UserError
    from tinyopt.release.promote import promote
    from tinyopt.release.registry import serving

    version = register(project, tmp_path, 0.80, "registry")
    real = MlflowClient.set_registered_model_alias

    def unavailable(self, *args, **kwargs):
        raise MlflowException("injected: the registry answered 503")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", unavailable)
    with pytest.raises(UserError, match="stable is published, but the registry step failed .*run the same command"):
        promote(MODEL, version, "stable", env)
    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", real)
    assert serving(MODEL, "production").version != version  # an earlier test's, not this one
    assert promote(MODEL, version, "stable", env)["status"] == "alias moved"
    assert serving(MODEL, "production").version == version
    assert promote(MODEL, version, "stable", env)["status"] == "unchanged"


def test_cli_verify_rejects_bad_inputs_in_one_line_and_writes_nothing(env, project, tmp_path, keys):
    from tinyopt.release.promote import promote

    promote(MODEL, register(project, tmp_path, 0.80, "cli"), "canary", env)
    cli_env = {"TINYOPT_SIGNING_KEY_FILE": str(keys[0])}
    params = ["--params", str(tmp_path / "params.yaml")]
    into = tmp_path / "device"
    good = run_cli(
        ["verify", "--channel", "canary", "--public-key", str(keys[1]), "--into", str(into), *params],
        cwd=project,
        env=cli_env,
    )
    assert good.returncode == 0 and "sequence 1" in good.stdout, good.stderr[-2000:]
    manifest, model = into / "manifest.json", next(into.glob("*.tflite"))
    offline = ["verify", "--channel", "canary", "--public-key", str(keys[1]), "--state", str(into / "state.json")]
    (tmp_path / "not.json").write_text("{payload")
    (tmp_path / "fields.json").write_text('{"signature": "AAAA"}')
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(
        rsa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    cases = {
        "missing model": (
            [*offline, "--manifest", str(manifest), "--model", str(tmp_path / "nope.tflite")],
            "nope.tflite: cannot read the model",
        ),
        "not JSON": (
            [*offline, "--manifest", str(tmp_path / "not.json"), "--model", str(model)],
            "the manifest is not JSON",
        ),
        "lacks fields": (
            [*offline, "--manifest", str(tmp_path / "fields.json"), "--model", str(model)],
            "must have exactly the fields payload and signature (found: signature)",
        ),
        "RSA public key": (
            [
                "verify",
                "--channel",
                "canary",
                "--public-key",
                str(tmp_path / "rsa.pub"),
                "--manifest",
                str(manifest),
                "--model",
                str(model),
            ],
            "holds an RSA public key; manifests are verified with Ed25519",
        ),
        "another channel": (
            [*offline, "--manifest", str(manifest), "--model", str(model), "--channel", "stable"],
            "the manifest is for channel canary, this device is on stable",
        ),
    }
    before = {p.name: p.read_bytes() for p in into.iterdir()}
    for name, (args, message) in cases.items():
        result = run_cli([*args, *params], cwd=project, env=cli_env)
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert result.stderr.count("\n") == 1 and message in result.stderr, (name, result.stderr)
        assert {p.name: p.read_bytes() for p in into.iterdir()} == before, name
    assert run_cli([*offline, "--manifest", str(manifest), "--model", str(model), *params], cwd=project).returncode == 0


def test_signing_rejects_rsa_keys_and_keys_inside_the_project(tmp_path, monkeypatch, project):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tinyopt.errors import UserError
    from tinyopt.release.signing import load_private_key

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "rsa.key").write_bytes(pem)
    monkeypatch.delenv("TINYOPT_SIGNING_KEY", raising=False)
    monkeypatch.setenv("TINYOPT_SIGNING_KEY_FILE", str(tmp_path / "rsa.key"))
    with pytest.raises(UserError, match="holds an RSA key; manifests are signed with Ed25519"):
        load_private_key(project)  # tmp_path is outside the project
    monkeypatch.setenv("TINYOPT_SIGNING_KEY_FILE", str(project / "keys" / "signing.key"))
    with pytest.raises(UserError, match="must live outside the project"):
        load_private_key(project)


def test_keygen_refuses_to_overwrite_and_checks_the_project_not_the_current_directory(tmp_path, project):
    keys = tmp_path / "keys"
    first = run_cli(["keygen", "--out", str(keys), "--params", str(project / "params.yaml")], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    private = (keys / "signing.key").read_bytes()
    assert oct((keys / "signing.key").stat().st_mode & 0o777) == "0o600"
    again = run_cli(["keygen", "--out", str(keys), "--params", str(project / "params.yaml")], cwd=tmp_path)
    assert again.returncode == 2 and "signing.key and signing.pub exist already" in again.stderr
    assert (keys / "signing.key").read_bytes() == private
    forced = run_cli(["keygen", "--out", str(keys), "--force", "--params", str(project / "params.yaml")], cwd=tmp_path)
    assert forced.returncode == 0 and (keys / "signing.key").read_bytes() != private
    # Run from elsewhere, a directory inside the project (the params file's) is still refused.
    inside = run_cli(["keygen", "--out", str(project / "keys"), "--params", str(project / "params.yaml")], cwd=tmp_path)
    assert inside.returncode == 2 and "inside the project" in inside.stderr and not (project / "keys").exists()


@pytest.mark.parametrize("name", ["a/b", "..", "x..y", "has space", ".hidden"])
def test_unsafe_channel_and_model_names_are_refused(tmp_path, name):
    from tinyopt.errors import UserError
    from tinyopt.params import check_name, parse_params

    with pytest.raises(UserError, match="fleet.channels: channel"):
        parse_params({"fleet": {"channels": {name: {}}}, "schedule": {"channel": None}})
    with pytest.raises(UserError, match="use letters, digits"):
        check_name("model", name)
    result = run_cli(["promote", name, "--version", "1", "--channel", "canary"], cwd=tmp_path)
    assert result.returncode == 2 and f"model {name!r}: use letters, digits" in result.stderr
