"""Promotion: publish a registered model version to a fleet channel, safely.

Order of writes: the model object (content-addressed, then read back and checked), then the signed
manifest into the channel's history, then the channel's current manifest. A failure anywhere leaves
the previous manifest in place and valid; running the same promotion again is a no-op.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from pathlib import Path
from typing import Optional

from tasks.registry import download_model, model_version
from tinyopt import signing, tracking
from tinyopt.errors import UserError
from tinyopt.fleet import FleetStore
from tinyopt.metrics import better
from tinyopt.params import Params


def gate(channel: str, record: dict, profile: str, current: Optional[dict]) -> Optional[str]:
    """Why a gated channel refuses this model, or None."""
    if not record["fits"].get(profile, False):
        return f"it does not fit {profile} (TFLM must run it within the profile's flash and SRAM)"
    if current and current.get("metric") == record["metric"] and better(record["metric"], current["score"], record["score"]):
        return (f"{channel} serves {current['model_name']} v{current['version']} with {record['metric']} "
                f"{current['score']:.4f}; this one scores {record['score']:.4f}")  # fmt: skip
    return None


def replaces_production(candidate: dict, production: Optional[dict], profile: str) -> tuple[bool, str]:
    """Should the new pick `candidate` (a variant record with its sha256) replace what production
    serves? Only if it fits `profile` and scores strictly better; returns (yes or no, why)."""
    label = f"{candidate['name']} ({candidate['metric']} {candidate['score']:.4f})"
    if not candidate["fits"].get(profile, False):
        return False, f"the new pick {label} does not fit {profile}"
    if production is None:
        return True, f"nothing in production yet; {label} fits {profile}"
    serving = f"production serves {production['model_name']} v{production['version']} ({production['name']}, " \
              f"{production['metric']} {production['score']:.4f})"  # fmt: skip
    if production["sha256"] == candidate["sha256"]:
        return False, f"{serving}: the same model as the new pick"
    if production["metric"] != candidate["metric"]:
        return False, f"{serving}: another metric than the new pick's; compare them by hand"
    if not better(candidate["metric"], candidate["score"], production["score"]):
        return False, f"{serving}: the new pick {label} is not better"
    return True, f"the new pick {label} beats what {serving}"


def promote(name: str, version: int, channel: str, params: Params, force_reason: Optional[str] = None) -> dict:
    """Publish version `version` of registered model `name` to `channel`; returns what was done."""
    if channel not in params.fleet.channels:
        raise UserError(f"no channel '{channel}' (channels: {', '.join(params.fleet.channels)}; see fleet.channels)")
    settings = params.fleet.channels[channel]
    tags, record = model_version(name, version)
    signing.load_private_key()  # a missing signing key fails before anything is written
    store = FleetStore(params.fleet)
    current_document = store.get_json(store.manifest_key(channel))
    current = current_document["manifest"] if current_document else None
    if current and current["sha256"] == tags["sha256"] and current["version"] == version and current["model_name"] == name:
        return {"status": "unchanged", "channel": channel, "version": version, "sha256": tags["sha256"]}
    refusal = gate(channel, record, settings.profile, current) if settings.gated else None
    if refusal and not force_reason:
        raise UserError(f"{channel} refuses {name} v{version}: {refusal}; to override, pass --force --reason '...'")

    with tempfile.TemporaryDirectory() as scratch:
        blob = download_model(name, version, Path(scratch)).read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    model_key = store.model_key(sha)
    if not store.exists(model_key):
        store.put(model_key, blob)
    if hashlib.sha256(store.get(model_key) or b"").hexdigest() != sha:  # read back: never point at a bad object
        raise UserError(f"s3://{store.bucket}/{model_key}: the uploaded model does not match its sha256; nothing was published")

    manifest = {
        "schema": 1, "channel": channel, "model_name": name, "version": version, "sha256": sha, "size": len(blob),
        "model_key": model_key, "metric": record["metric"], "score": record["score"],
        "metrics": {k: record.get(k) for k in ("raw_bytes", "gzip_bytes", "latency_us_p50", "arena_bytes", "params", "macs")},
        "profile": settings.profile, "fits": record["fits"].get(settings.profile, False), "variant": tags["variant"],
        "lineage": {k: tags.get(k) for k in ("pipeline_run", "git_commit", "dataset", "dataset_version", "params_hash")},
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "previous": {"version": current["version"], "sha256": current["sha256"]} if current else None,
        "forced": {"reason": force_reason, "refusal": refusal} if refusal else None,
    }  # fmt: skip
    signed = signing.sign(manifest)
    number = len(store.history(channel)) + 1
    store.put_json(store.key("channels", channel, "history", f"{number:06d}.json"), signed)
    store.put_json(store.manifest_key(channel), signed)

    client = tracking.client()
    client.set_registered_model_alias(name, "production" if channel == "stable" else channel, str(version))
    client.set_model_version_tag(name, str(version), f"published.{channel}", manifest["created"])
    if refusal:
        client.set_model_version_tag(name, str(version), f"forced.{channel}", f"{force_reason} (gate said: {refusal})"[:5000])
    return {"status": "published", "channel": channel, "version": version, "sha256": sha, "history": number,
            "forced": bool(refusal)}  # fmt: skip


def rollback(channel: str, params: Params) -> dict:
    """Serve the manifest published before the current one again (it keeps its original signature)."""
    store = FleetStore(params.fleet)
    current = store.get(store.manifest_key(channel))
    if current is None:
        raise UserError(f"channel '{channel}' serves nothing yet: nothing to roll back")
    history = store.history(channel)
    bodies = [store.get(key) for key in history]
    position = next((i for i in range(len(bodies) - 1, -1, -1) if json.loads(bodies[i]) == json.loads(current)), None)
    if not position:  # None (not in history) or 0 (the first ever published)
        raise UserError(f"channel '{channel}' has no earlier manifest to roll back to")
    previous = bodies[position - 1]
    store.put(store.manifest_key(channel), previous, "application/json")
    restored = json.loads(previous)["manifest"]
    return {"channel": channel, "version": restored["version"], "sha256": restored["sha256"], "model_name": restored["model_name"]}


def status(params: Params) -> list[dict]:
    """What each channel serves now."""
    store = FleetStore(params.fleet)
    rows = []
    for channel in sorted(set(store.channels()) | set(params.fleet.channels)):
        document = store.get_json(store.manifest_key(channel))
        manifest = document["manifest"] if document else None
        rows.append({"channel": channel, "serves": manifest and f"{manifest['model_name']} v{manifest['version']}",
                     "sha256": manifest and manifest["sha256"], "created": manifest and manifest["created"],
                     "score": manifest and f"{manifest['metric']} {manifest['score']:.4f}",
                     "history": len(store.history(channel))})  # fmt: skip
    return rows


def verify(document: dict, model: bytes, public_key) -> dict:
    """What a device does: the signature must verify, and the model must match its size and hash."""
    manifest = signing.check(document, public_key)
    if len(model) != manifest["size"] or hashlib.sha256(model).hexdigest() != manifest["sha256"]:
        raise UserError("the model does not match the manifest (size or sha256): it was altered or is another file")
    return manifest


def download_and_verify(channel: str, params: Params, public_key, into: Path) -> dict:
    """Fetch the channel's manifest and model as a device would, verify both, keep them in `into`."""
    store = FleetStore(params.fleet)
    document = store.get_json(store.manifest_key(channel))
    if document is None:
        raise UserError(f"channel '{channel}' serves nothing yet")
    model = store.get(document["manifest"]["model_key"]) or b""
    manifest = verify(document, model, public_key)
    into.mkdir(parents=True, exist_ok=True)
    (into / "manifest.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    (into / f"{manifest['sha256']}.tflite").write_bytes(model)
    return manifest
