"""Bad inputs to the fleet's commands and keys: `tinyopt verify` given a missing model, a manifest
that is not JSON or lacks fields, an RSA public key or another channel (one line, status 2, the
device's files unchanged); signing keys that are RSA or inside the project; `keygen` that would
overwrite or write inside the project; unsafe channel and model names."""

from __future__ import annotations

import pytest

from tests import fleet_attack_helpers
from tests.conftest import run_cli
from tests.fleet_attack_helpers import MODEL, register

# The shared fixtures, bound in this module so that pytest finds them (one project per module).
project, env = fleet_attack_helpers.project, fleet_attack_helpers.env


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

    from tinyopt.core.errors import UserError
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
    from tinyopt.core.errors import UserError
    from tinyopt.params import check_name, parse_params

    with pytest.raises(UserError, match="fleet.channels: channel"):
        parse_params({"fleet": {"channels": {name: {}}}, "schedule": {"channel": None}})
    with pytest.raises(UserError, match="use letters, digits"):
        check_name("model", name)
    result = run_cli(["promote", name, "--version", "1", "--channel", "canary"], cwd=tmp_path)
    assert result.returncode == 2 and f"model {name!r}: use letters, digits" in result.stderr
