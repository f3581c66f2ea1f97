"""The typed release records keep their bytes: a manifest built by `Manifest` signs the same canonical
JSON as the dict promote used to build, a stored payload parses and dumps back to itself, a device's
state file and the reoptimize decision are written as before; a bad payload is one line."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import pytest

from tinyopt.core.errors import UserError
from tinyopt.release import manifest as manifests
from tinyopt.release.manifest import Figures, Lineage, Manifest, ManifestRef, Override
from tinyopt.release.signing import canonical

# The dict promote built before Manifest, for a forced promotion over an earlier model.
OLD_FORM = {
    "schema": 2,
    "channel": "stable",
    "sequence": 7,
    "created": "2026-12-01T00:00:00+00:00",
    "expires": "2026-12-31T00:00:00+00:00",
    "key_id": "0123456789abcdef",
    "model_name": "fashion-mnist-nano33ble",
    "version": 3,
    "sha256": "ab" * 32,
    "size": 20410,
    "model_key": f"fleet/models/{'ab' * 32}.tflite",
    "metric": "accuracy",
    "score": 0.8994,
    "metrics": {
        "raw_bytes": 22632,
        "gzip_bytes": 19824,
        "latency_us_p50": 41.5,
        "arena_bytes": 9216,
        "params": 20410,
        "macs": None,
    },
    "profile": "nano33ble",
    "fits": True,
    "variant": "qat-int8",
    "lineage": {
        "pipeline_run": "20261201-000000",
        "git_commit": "c0ffee",
        "dataset": "fashion-mnist",
        "dataset_version": None,
        "params_hash": "p",
    },
    "previous": {"sequence": 6, "model_name": "fashion-mnist-nano33ble", "version": 2, "sha256": "cd" * 32},
    "replaces": {"sequence": 6, "model_name": "fashion-mnist-nano33ble", "version": 2, "sha256": "cd" * 32},
    "rollback_from": None,
    "forced": {"reason": "bench demo board", "refusal": "it does not fit uno"},
}


def example(**changes) -> Manifest:
    """OLD_FORM built field by field, as promote builds a manifest."""
    before = ManifestRef(sequence=6, model_name="fashion-mnist-nano33ble", version=2, sha256="cd" * 32)
    fields = dict(
        channel="stable",
        sequence=7,
        created="2026-12-01T00:00:00+00:00",
        expires="2026-12-31T00:00:00+00:00",
        key_id="0123456789abcdef",
        model_name="fashion-mnist-nano33ble",
        version=3,
        sha256="ab" * 32,
        size=20410,
        model_key=f"fleet/models/{'ab' * 32}.tflite",
        metric="accuracy",
        score=0.8994,
        metrics=Figures(
            raw_bytes=22632, gzip_bytes=19824, latency_us_p50=41.5, arena_bytes=9216, params=20410, macs=None
        ),
        profile="nano33ble",
        fits=True,
        variant="qat-int8",
        lineage=Lineage(
            pipeline_run="20261201-000000",
            git_commit="c0ffee",
            dataset="fashion-mnist",
            dataset_version=None,
            params_hash="p",
        ),  # fmt: skip
        previous=before,
        replaces=before,
        rollback_from=None,
        forced=Override(reason="bench demo board", refusal="it does not fit uno"),
    )
    return Manifest(**{**fields, **changes})


def test_a_built_manifest_signs_the_old_dicts_canonical_bytes():
    assert canonical(example().document()) == canonical(OLD_FORM)


def test_a_stored_payload_parses_and_dumps_back_to_its_own_bytes():
    payload = canonical(OLD_FORM)
    manifest = manifests.parse(json.loads(payload))
    assert manifest == example() and canonical(manifest.document()) == payload
    unforced = dict(OLD_FORM, forced=None, previous=None, rollback_from=OLD_FORM["replaces"], score=1.0)
    assert canonical(manifests.parse(unforced).document()) == canonical(unforced)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": 1}, "the manifest has schema 1; this device reads schema 2"),
        ({"schema": None}, "the manifest has schema None; this device reads schema 2"),
        ({"sequence": True, "size": "1"}, "lacks fields or has them of the wrong type: sequence, size$"),
        ({"channel": None, "model_key": None}, "lacks fields or has them of the wrong type: channel, model_key$"),
        ({"metrics": {"raw_bytes": 1}}, "lacks fields or has them of the wrong type: metrics$"),
        ({"expires": "next week"}, "the manifest's expiry 'next week' is not an ISO 8601 time"),
    ],
)
def test_a_bad_payload_is_one_line(change, message):
    with pytest.raises(UserError, match=message):
        manifests.parse({**OLD_FORM, **change})


def test_a_missing_field_is_named():
    without = {k: v for k, v in OLD_FORM.items() if k not in ("key_id", "version")}
    with pytest.raises(UserError, match="wrong type: key_id, version$"):
        manifests.parse(without)


def test_a_device_state_file_is_read_and_written_as_before(tmp_path, monkeypatch):
    def entry(sequence: int, payload: str, model: str, day: int) -> dict:
        accepted = f"2026-12-0{day}T00:00:00+00:00"
        return {"sequence": sequence, "payload_sha256": payload * 32, "sha256": model * 32, "accepted": accepted}

    stored = {"channels": {"canary": entry(2, "ee", "ab", 1), "stable": entry(6, "ff", "cd", 2)}}
    path = tmp_path / "state.json"
    path.write_text(json.dumps(stored, indent=2) + "\n")
    state = manifests.read_state(path)
    assert state.channels["stable"].sequence == 6
    monkeypatch.setattr(manifests, "now", lambda: dt.datetime(2026, 12, 3, tzinfo=dt.UTC))
    payload = canonical(OLD_FORM)
    manifests.accept(path, example(), payload, state)
    stored["channels"]["stable"] = {
        "sequence": 7,
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "sha256": "ab" * 32,
        "accepted": "2026-12-03T00:00:00+00:00",
    }
    assert path.read_text() == json.dumps(stored, indent=2) + "\n"
    path.write_text('{"channels": {"canary": {"sequence": "2"}}}')
    with pytest.raises(UserError, match="not a device state file"):
        manifests.read_state(path)


def test_the_reoptimize_decision_is_written_as_before():
    from tinyopt.release.decision import Decision
    from tinyopt.release.registry import Serving

    production = Serving(
        model_name="fashion-mnist-nano33ble", version=4, name="base-int8", metric="accuracy", score=0.8971, sha256="bb"
    )
    decision = Decision(
        run_id="r1",
        objective="smallest",
        profile="nano33ble",
        model_name="fashion-mnist-nano33ble",
        pick="qat-int8",
        channel="stable",
        production=production,
        replace=False,
        why="production serves ...: the new pick qat-int8 (accuracy 0.8994) is not better",
    ).model_copy(update={"refreshed": {"status": "unchanged", "sequence": 1}})
    assert json.dumps(decision.model_dump(mode="json")) == json.dumps(
        {
            "run_id": "r1",
            "objective": "smallest",
            "profile": "nano33ble",
            "model_name": "fashion-mnist-nano33ble",
            "pick": "qat-int8",
            "channel": "stable",
            "production": {"name": "base-int8", "metric": "accuracy", "score": 0.8971, "version": 4, "sha256": "bb"},
            "replace": False,
            "why": "production serves ...: the new pick qat-int8 (accuracy 0.8994) is not better",
            "registered": None,
            "published": None,
            "refreshed": {"status": "unchanged", "sequence": 1},
        }
    )
