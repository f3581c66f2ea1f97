"""The fleet's trust model against someone with write access to the bucket: what the device rejects.
An old history manifest copied over the current one (a downgrade), canary's manifest copied to
stable, fields outside the signed payload, a changed payload or another key's signature, and an
expired manifest (which promoting again re-signs); `status --public-key` applying the same rules (and
the signed history's sequence), and a swapped model object that the device rejects before reading
more than its size. On a real S3 HTTP server (moto) and a real MLflow
registry; the registered "models" are small byte files: what is checked is the signing, not the model."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest

from tests import fleet_attack_helpers
from tests.conftest import BUCKET, run_cli
from tests.fleet_attack_helpers import MODEL, current, device, put_current, put_object, register, status_of

# The shared fixtures, bound in this module so that pytest finds them (one project per module).
project, env, public = fleet_attack_helpers.project, fleet_attack_helpers.env, fleet_attack_helpers.public


def test_downgrade_an_old_history_manifest_copied_over_current_is_rejected(env, project, tmp_path, public):
    from tinyopt.core.errors import UserError
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote

    old, new = register(project, tmp_path, 0.80, "old"), register(project, tmp_path, 0.85, "new")
    promote(MODEL, old, "canary", env)
    promote(MODEL, new, "canary", env)
    into = tmp_path / "device"
    assert device(env, public, into).sequence == 2
    state = (into / "state.json").read_bytes()
    store = FleetStore(env.fleet)
    put_current(env, "canary", store.get(store.history("canary")[0]))  # sequence 1, validly signed, but old
    with pytest.raises(UserError, match="sequence 1 is older than the last accepted 2 on canary: a downgrade"):
        device(env, public, into)
    assert (into / "state.json").read_bytes() == state
    assert json.loads(state)["channels"]["canary"]["sequence"] == 2
    # Polling the very same manifest again is fine (and a device that never saw 2 would take 1).
    put_current(env, "canary", store.get(store.history("canary")[1]))
    assert device(env, public, into).version == new
    # Promoting again publishes a newer one (sequence 3). The signer cannot tell this copy from an
    # interrupted promote of 2 (which names 1 as what it replaces), so it keeps 1 as what was served.
    put_current(env, "canary", store.get(store.history("canary")[0]))
    again = promote(MODEL, new, "canary", env)
    assert (again["status"], again["sequence"]) == ("published", 3)
    assert device(env, public, into).sequence == 3


def test_cross_channel_canary_manifest_copied_to_stable_is_rejected(env, project, tmp_path, public):
    from tinyopt.core.errors import UserError
    from tinyopt.release.promote import promote

    promote(MODEL, register(project, tmp_path, 0.80, "canary-only"), "canary", env)
    put_current(env, "stable", current(env))
    with pytest.raises(UserError, match="the manifest is for channel canary, this device is on stable"):
        device(env, public, tmp_path / "device", channel="stable")
    assert not (tmp_path / "device").exists()


@pytest.mark.parametrize("change", ["extra field", "key_id outside", "old schema-1 envelope"])
def test_unsigned_fields_are_rejected(env, project, tmp_path, public, change):
    from tinyopt.core.errors import UserError
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

    from tinyopt.core.errors import UserError
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
    from tinyopt.core.errors import UserError
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
    assert device(env, public, tmp_path / "device", "stable", clock=expires + dt.timedelta(days=1)).sequence == 2


def current_of(env, channel: str) -> bytes:
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    return store.get(store.manifest_key(channel))


def test_status_applies_the_devices_rules_and_says_why_not(env, project, tmp_path, public):
    from tinyopt.release import signing
    from tinyopt.release.fleet import FleetStore
    from tinyopt.release.promote import promote

    old, new = register(project, tmp_path, 0.80, "status-old"), register(project, tmp_path, 0.85, "status-new")
    promote(MODEL, old, "canary", env)
    promote(MODEL, new, "canary", env)
    store = FleetStore(env.fleet)
    first, second = (store.get(key) for key in store.history("canary"))
    put_current(env, "canary", first)  # validly signed, but older than what the history says is current
    assert status_of(env, public, "canary") == (
        "DOES NOT VERIFY: sequence 1 is older than 2 in the channel's signed history, so devices that took 2 "
        "reject it (a downgrade or replay, or an interrupted promote); promote the version canary should serve"
    )
    put_current(env, "stable", second)
    assert status_of(env, public, "stable") == (
        "DOES NOT VERIFY: the manifest is for channel canary, this device is on stable: "
        "a manifest copied across channels"
    )
    expired = dict(signing.peek(second), expires="2026-01-01T00:00:00+00:00")
    put_current(env, "canary", signing.sign(expired, signing.load_private_key(project)))
    assert status_of(env, public, "canary") == (
        "DOES NOT VERIFY: the manifest (sequence 2) expired at 2026-01-01T00:00:00+00:00: a stale or "
        "replayed manifest; the publisher must promote again to re-sign canary"
    )
    put_current(env, "canary", second)
    assert status_of(env, public, "canary").startswith(
        "verified: signature, schema, channel, expiry, sequence 2 (the latest signed)"
    )


def test_verify_checks_the_size_before_reading_and_streams_the_model(env, project, tmp_path, public):
    import tracemalloc

    from tinyopt.core.errors import UserError
    from tinyopt.release.promote import promote
    from tinyopt.release.signing import peek

    version = register(project, tmp_path, 0.80, "big", repeat=1_000_000)  # 14 MB
    promote(MODEL, version, "canary", env)
    served = peek(current(env))
    put_object(env, served["model_key"], b"Y" * (3 * served["size"]))
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=rf"\({3 * served['size']} bytes, not {served['size']} bytes\)"):
            device(env, public, tmp_path / "device")
        assert tracemalloc.get_traced_memory()[1] < 4 << 20  # the object was never read
        assert not (tmp_path / "device").exists()
        assert promote(MODEL, version, "canary", env)["status"] == "repaired"
        tracemalloc.reset_peak()
        assert device(env, public, tmp_path / "device").size == served["size"]
        assert tracemalloc.get_traced_memory()[1] < 4 << 20  # streamed a chunk at a time, never held whole
    finally:
        tracemalloc.stop()
    assert (tmp_path / "device" / f"{served['sha256']}.tflite").stat().st_size == served["size"]


def test_cli_says_in_one_line_what_it_found_of_a_swapped_model_object(env, project, tmp_path, keys):
    from tinyopt.release.promote import promote
    from tinyopt.release.signing import peek

    one, two = register(project, tmp_path, 0.80, "cli-swap1"), register(project, tmp_path, 0.81, "cli-swap2")
    promote(MODEL, one, "canary", env)
    promote(MODEL, two, "canary", env)
    first, served = peek(env_history(env, 0)), peek(current(env))
    for manifest in (first, served):
        put_object(env, manifest["model_key"], b"Z" * 10)
    cli_env, params = {"TINYOPT_SIGNING_KEY_FILE": str(keys[0])}, ["--params", str(tmp_path / "params.yaml")]
    urls = [f"s3://{BUCKET}/{manifest['model_key']}" for manifest in (first, served)]
    into = tmp_path / "device"
    rejected = run_cli(
        ["verify", "--channel", "canary", "--public-key", str(keys[1]), "--into", str(into), *params], cwd=project
    )
    assert (rejected.returncode, rejected.stdout, rejected.stderr) == (
        2,
        "",
        f"tinyopt: error: the model does not match the manifest (10 bytes, not {served['size']} bytes): "
        "it was altered or is another file\n",
    )
    assert not into.exists()
    status = run_cli(["status", "--public-key", str(keys[1]), *params], cwd=project)
    assert status.returncode == 0, status.stderr
    assert (
        f"[DOES NOT VERIFY: the model object {urls[1]} is 10 bytes, not {served['size']}, so devices reject it; "
        f"promote {MODEL} v{two} to canary again to upload it again]; 2 manifests published\n"
    ) in status.stdout
    back = run_cli(["rollback", "canary", *params], cwd=project, env=cli_env)
    assert back.returncode == 0 and "rror" not in back.stderr, back.stderr  # stderr: MLflow's download bar
    assert back.stdout == (
        f"canary: {urls[0]} is 10 bytes, not {first['size']}; uploaded {MODEL} v{one} again from the registry\n"
        f"canary: back to {MODEL} v{one} (sha256 {first['sha256'][:12]}, sequence 3)\n"
    )
    promoted = run_cli(
        ["promote", MODEL, "--version", str(two), "--channel", "canary", *params], cwd=project, env=cli_env
    )
    assert promoted.returncode == 0, promoted.stderr[-2000:]
    assert promoted.stdout == (
        f"canary: {urls[1]} is 10 bytes, not {served['size']}; uploaded {MODEL} v{two} again from the registry\n"
        f"canary: published {MODEL} v{two} (sha256 {served['sha256'][:12]}, sequence 4)\n"
    )


def env_history(env, index: int) -> bytes:
    from tinyopt.release.fleet import FleetStore

    store = FleetStore(env.fleet)
    return store.get(store.history("canary")[index])
