"""The fleet's publisher recovering from attacks and failures: a rollback publishes a higher sequence
and moves the registry alias, a rollback after an interrupted promote goes to the model served
before, promoting again repairs a tampered current manifest, and a failed registry step is an error
that running again fixes. On a real S3 HTTP server (moto) and a real MLflow registry, one per module:
the registry test relies on this module's earlier stable promotions (run in file order)."""

from __future__ import annotations

import json

import pytest

from tests import fleet_attack_helpers
from tests.conftest import BUCKET
from tests.fleet_attack_helpers import (
    MODEL,
    current,
    device,
    drop_manifest_writes,
    put_current,
    put_object,
    register,
    status_of,
)

# The shared fixtures, bound in this module so that pytest finds them (one project per module).
project, env, public = fleet_attack_helpers.project, fleet_attack_helpers.env, fleet_attack_helpers.public


def test_rollback_publishes_a_higher_sequence_and_moves_the_alias(env, project, tmp_path, public):
    from tinyopt.release.promote import promote, rollback
    from tinyopt.release.registry import serving

    one, two = register(project, tmp_path, 0.80, "one"), register(project, tmp_path, 0.81, "two")
    promote(MODEL, one, "stable", env)
    promote(MODEL, two, "stable", env)
    into = tmp_path / "device"
    assert device(env, public, into, "stable").version == two
    assert serving(MODEL, "production").version == two
    back = rollback("stable", env)
    assert (back["version"], back["sequence"]) == (one, 3)
    seen = device(env, public, into, "stable")  # the device, which accepted 2, takes 3
    assert (seen.version, seen.rollback_from.version, seen.previous) == (one, two, None)
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
    real_put = drop_manifest_writes(monkeypatch)
    with pytest.raises(ConnectionError):
        promote(MODEL, v3, "canary", env)  # history/000003.json exists, never became current
    monkeypatch.setattr(FleetStore, "put", real_put)
    assert device(env, public, tmp_path / "device").version == v2
    done = promote(MODEL, v3, "canary", env)
    assert done["sequence"] == 4  # past the orphan's number: sequence numbers are never reused
    back = rollback("canary", env)
    assert (back["version"], back["sequence"]) == (v2, 5)  # not v3 again (the orphan before current)
    assert device(env, public, tmp_path / "device").version == v2
    # An older manifest copied back (5 replaced 4, not 1) is seen by the signer as tampered with.
    store = FleetStore(env.fleet)
    put_current(env, "canary", store.get(store.history("canary")[0]))
    repaired = promote(MODEL, v2, "canary", env)
    assert (repaired["status"], repaired["sequence"]) == ("repaired", 6)
    assert peek(current(env))["previous"]["version"] == v1


def test_promoting_again_repairs_a_tampered_current_manifest(env, project, tmp_path, public):
    from tinyopt.core.errors import UserError
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
    assert device(env, public, tmp_path / "device", "stable").version == version


def test_a_swapped_model_object_is_uploaded_again_by_promote_and_rollback(env, project, tmp_path, public):
    from tinyopt.core.errors import UserError
    from tinyopt.release.promote import promote, rollback
    from tinyopt.release.signing import peek

    one, two = register(project, tmp_path, 0.80, "swap1"), register(project, tmp_path, 0.81, "swap2")
    promote(MODEL, one, "canary", env)
    first = peek(current(env))
    promote(MODEL, two, "canary", env)
    served = peek(current(env))
    size, url = served["size"], f"s3://{BUCKET}/{served['model_key']}"
    put_object(env, served["model_key"], b"X" * size)  # the same size: only the hash tells
    with pytest.raises(UserError, match=r"^the model does not match the manifest \(its sha256\)"):
        device(env, public, tmp_path / "device")
    assert not (tmp_path / "device").exists()
    assert status_of(env, public, "canary") == (
        f"DOES NOT VERIFY: the model object {url} does not match its sha256, so devices reject it; "
        f"promote {MODEL} v{two} to canary again to upload it again"
    )
    # Promoting what the channel serves checks its object and uploads it again (no new manifest needed).
    done = promote(MODEL, two, "canary", env)
    assert (done["status"], done["sequence"]) == ("repaired", 2)
    assert done["model_object"] == f"{url} does not match its sha256; uploaded {MODEL} v{two} again from the registry"
    assert device(env, public, tmp_path / "device").version == two
    unchanged = promote(MODEL, two, "canary", env)
    assert (unchanged["status"], unchanged["sequence"], unchanged["model_object"]) == ("unchanged", 2, None)
    # A rollback checks the object it goes back to.
    put_object(env, first["model_key"], b"larger" * size)
    back = rollback("canary", env)
    assert (back["version"], back["sequence"]) == (one, 3)
    assert back["model_object"] == (
        f"s3://{BUCKET}/{first['model_key']} is {6 * size} bytes, not {first['size']}; "
        f"uploaded {MODEL} v{one} again from the registry"
    )
    assert device(env, public, tmp_path / "device").version == one
    # Promoting a version whose object was swapped while another was served publishes it (it used to
    # fail every time: the object was never uploaded again).
    put_object(env, served["model_key"], b"")
    again = promote(MODEL, two, "canary", env)
    assert (again["status"], again["sequence"]) == ("published", 4)
    assert again["model_object"] == f"{url} is 0 bytes, not {size}; uploaded {MODEL} v{two} again from the registry"
    assert device(env, public, tmp_path / "device").version == two
    assert status_of(env, public, "canary") == (
        "verified: signature, schema, channel, expiry, sequence 4 (the latest signed), "
        f"model object ({size} bytes, sha256)"
    )


def test_a_failed_registry_step_is_an_error_and_running_again_moves_the_alias(env, project, tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from tinyopt.core.errors import UserError
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
