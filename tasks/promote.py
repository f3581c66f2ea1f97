"""Promotion: publish a registered model version to a fleet channel, safely; roll back; what a device checks.

Order of writes: the model object (content-addressed, then read back and checked), then the signed
manifest into the channel's history (history/<sequence>.json), then the channel's current manifest,
then the registry alias. A failure anywhere leaves the previous manifest in place and valid; running
the same promotion again completes it (and moves the alias), then changes nothing.

The signer trusts nothing in the bucket it has not verified with the public half of its own key: the
next sequence number is one more than the highest verified one in the history (or current), the
gate's score and a manifest's `previous` come only from a verified manifest. See tinyopt.manifest for
what a device checks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import tempfile
from pathlib import Path

from tasks.registry import download_model, model_version, move_alias
from tinyopt import manifest as manifests
from tinyopt import signing
from tinyopt.errors import UserError
from tinyopt.files import write_bytes
from tinyopt.fleet import FleetStore
from tinyopt.metrics import better
from tinyopt.params import Params, check_name


def gate(channel: str, record: dict, profile: str, current: dict | None) -> str | None:
    """Why a gated channel refuses this model, or None."""
    if not record["fits"].get(profile, False):
        return f"it does not fit {profile} (TFLM must run it within the profile's flash and SRAM)"
    if (
        current
        and current.get("metric") == record["metric"]
        and better(record["metric"], current["score"], record["score"])
    ):
        return (
            f"{channel} serves {current['model_name']} v{current['version']} with {record['metric']} "
            f"{current['score']:.4f}; this one scores {record['score']:.4f}"
        )
    return None


def replaces_production(candidate: dict, production: dict | None, profile: str) -> tuple[bool, str]:
    """Should the new pick `candidate` (a variant record with its sha256) replace what production
    serves? Only if it fits `profile` and scores strictly better; returns (yes or no, why)."""
    label = f"{candidate['name']} ({candidate['metric']} {candidate['score']:.4f})"
    if not candidate["fits"].get(profile, False):
        return False, f"the new pick {label} does not fit {profile}"
    if production is None:
        return True, f"nothing in production yet; {label} fits {profile}"
    serving = (
        f"production serves {production['model_name']} v{production['version']} ({production['name']}, "
        f"{production['metric']} {production['score']:.4f})"
    )
    if production["sha256"] == candidate["sha256"]:
        return False, f"{serving}: the same model as the new pick"
    if production["metric"] != candidate["metric"]:
        return False, f"{serving}: another metric than the new pick's; compare them by hand"
    if not better(candidate["metric"], candidate["score"], production["score"]):
        return False, f"{serving}: the new pick {label} is not better"
    return True, f"the new pick {label} beats what {serving}"


def trusted(store: FleetStore, key: str, channel: str, public_key, sequence: int | None = None) -> dict | None:
    """The manifest stored at `key` if it verifies, is schema 2, is for `channel` (and has `sequence`,
    when given); None for anything else (missing, tampered, foreign)."""
    body = store.get(key)
    if body is None:
        return None
    try:
        found, _ = signing.open_envelope(body, public_key)
        manifests.check_fields(found)
    except UserError:
        return None
    ok = found["channel"] == channel and (sequence is None or found["sequence"] == sequence)
    return found if ok else None


def latest_signed(store: FleetStore, channel: str, public_key) -> dict | None:
    """The highest-numbered history entry that verifies and carries its file's number as its sequence
    (an entry copied under another number does not count)."""
    for key in reversed(store.history(channel)):
        stem = key.rsplit("/", 1)[-1].removesuffix(".json")
        found = trusted(store, key, channel, public_key, int(stem)) if stem.isdigit() else None
        if found:
            return found
    return None


def channel_state(store: FleetStore, channel: str, public_key) -> dict:
    """What the signer may believe about a channel: the current manifest if it verifies, the latest
    verified history entry, and the next sequence number."""
    current = trusted(store, store.manifest_key(channel), channel, public_key)
    latest = latest_signed(store, channel, public_key)
    highest = max([m["sequence"] for m in (current, latest) if m] or [0])
    if current and latest and latest["sequence"] > current["sequence"]:
        # A later entry that did not replace this one means this one is an old manifest copied back;
        # one that did is an interrupted promote's (it never became current), and this one stands.
        if (latest.get("replaces") or {}).get("sequence") != current["sequence"]:
            current = None
    return {
        "current": current,
        "latest": latest,
        "next": highest + 1,
        "tampered": current is None and store.exists(store.manifest_key(channel)),
    }


def publish(store: FleetStore, channel: str, manifest: dict, private_key) -> None:
    """History entry first, then current: a failure between the two leaves the old current valid."""
    body = signing.sign(manifest, private_key)
    store.put(store.key("channels", channel, "history", f"{manifest['sequence']:06d}.json"), body, "application/json")
    store.put(store.manifest_key(channel), body, "application/json")


def stamp(channel: str, sequence: int, params: Params, private_key) -> dict:
    """The signed fields every new manifest starts with: schema, channel, sequence, creation, expiry, key id."""
    created = manifests.now()
    expiry = created + dt.timedelta(days=params.fleet.ttl_days(channel))
    return {
        "schema": manifests.SCHEMA,
        "channel": channel,
        "sequence": sequence,
        "created": manifests.timestamp(created),
        "expires": manifests.timestamp(expiry),
        "key_id": signing.public_key_id(private_key.public_key()),
    }


def alias_for(channel: str) -> str:
    return "production" if channel == "stable" else channel


def _fresh(current: dict, params: Params) -> bool:
    """More than half of the channel's time to live left: no need to re-sign yet."""
    left = manifests.expires(current) - manifests.now()
    return left > dt.timedelta(days=params.fleet.ttl_days(current["channel"])) / 2


def promote(
    name: str,
    version: int,
    channel: str,
    params: Params,
    force_reason: str | None = None,
    project: Path | None = None,
) -> dict:
    """Publish version `version` of registered model `name` to `channel`; returns what was done.
    Promoting what the channel serves again re-signs it when its manifest is tampered with, is not the
    latest signed one, or has less than half its time to live left; otherwise it only makes sure the
    registry alias points at it ("unchanged")."""
    check_name("model", name)
    if channel not in params.fleet.channels:
        raise UserError(f"no channel '{channel}' (channels: {', '.join(params.fleet.channels)}; see fleet.channels)")
    settings = params.fleet.channels[channel]
    tags, record = model_version(name, version)
    private_key = signing.load_private_key(project)  # a missing signing key fails before anything is written
    store = FleetStore(params.fleet)
    state = channel_state(store, channel, private_key.public_key())
    current = state["current"]
    # What the channel is known to serve: its current manifest if genuine, else the last one we signed.
    known = current or state["latest"]
    same = current and (current["model_name"], current["version"], current["sha256"]) == (name, version, tags["sha256"])
    if same and current["sequence"] == state["next"] - 1 and _fresh(current, params):
        moved = move_alias(name, version, alias_for(channel), channel, None)
        return {
            "status": "alias moved" if moved else "unchanged",
            "channel": channel,
            "version": version,
            "sha256": tags["sha256"],
            "sequence": current["sequence"],
        }
    refusal = None
    if settings.gated:
        if state["tampered"] and known is None:
            refusal = "its current manifest does not verify and no signed history does: nothing to compare with"
        else:
            refusal = gate(channel, record, settings.profile, known)
    if refusal and not force_reason:
        raise UserError(f"{channel} refuses {name} v{version}: {refusal}; to override, pass --force --reason '...'")

    with tempfile.TemporaryDirectory() as scratch:
        blob = download_model(name, version, Path(scratch)).read_bytes()
    sha = hashlib.sha256(blob).hexdigest()
    model_key = store.model_key(sha)
    if not store.exists(model_key):
        store.put(model_key, blob)
    if hashlib.sha256(store.get(model_key) or b"").hexdigest() != sha:  # read back: never point at a bad object
        raise UserError(
            f"s3://{store.bucket}/{model_key}: the uploaded model does not match its sha256; nothing was published"
        )

    # Re-signing the model already served keeps its predecessor, so a rollback still goes back past it.
    previous = (known or {}).get("previous") if known and known["sha256"] == sha else manifests.summary(known)
    manifest = {
        **stamp(channel, state["next"], params, private_key),
        "model_name": name,
        "version": version,
        "sha256": sha,
        "size": len(blob),
        "model_key": model_key,
        "metric": record["metric"],
        "score": record["score"],
        "metrics": {
            k: record.get(k) for k in ("raw_bytes", "gzip_bytes", "latency_us_p50", "arena_bytes", "params", "macs")
        },
        "profile": settings.profile,
        "fits": record["fits"].get(settings.profile, False),
        "variant": tags["variant"],
        "lineage": {
            k: tags.get(k) for k in ("pipeline_run", "git_commit", "dataset", "dataset_version", "params_hash")
        },
        "previous": previous,
        "replaces": manifests.summary(known),
        "rollback_from": None,
        "forced": {"reason": force_reason, "refusal": refusal} if refusal else None,
    }
    publish(store, channel, manifest, private_key)
    replaced = known["model_name"] if known and known["model_name"] != name else None
    move_alias(
        name,
        version,
        alias_for(channel),
        channel,
        replaced,
        published=manifest["created"],
        forced=f"{force_reason} (gate said: {refusal})" if refusal else None,
    )
    return {
        "status": "repaired" if state["tampered"] else "published",
        "channel": channel,
        "version": version,
        "sha256": sha,
        "sequence": manifest["sequence"],
        "forced": bool(refusal),
    }


def rollback(channel: str, params: Params, project: Path | None = None) -> dict:
    """Publish a NEW manifest (the next sequence number, so devices accept it) that serves what the
    channel served before its current model: the current manifest's `previous`, not the history entry
    before it (an interrupted promote can leave an entry that never became current)."""
    if channel not in params.fleet.channels:
        raise UserError(f"no channel '{channel}' (channels: {', '.join(params.fleet.channels)}; see fleet.channels)")
    private_key = signing.load_private_key(project)
    store = FleetStore(params.fleet)
    state = channel_state(store, channel, private_key.public_key())
    current = state["current"]
    if current is None:
        if state["tampered"]:
            raise UserError(
                f"channel '{channel}': its current manifest does not verify, so there is nothing "
                "trustworthy to roll back from; promote the version it should serve (that re-signs it)"
            )
        raise UserError(f"channel '{channel}' serves nothing yet: nothing to roll back")
    before = current.get("previous")
    if not before:
        raise UserError(f"channel '{channel}' has no earlier manifest to roll back to")
    restored = trusted(
        store,
        store.key("channels", channel, "history", f"{before['sequence']:06d}.json"),
        channel,
        private_key.public_key(),
        before["sequence"],
    )
    if restored is None or restored["sha256"] != before["sha256"]:
        raise UserError(
            f"channel '{channel}': history entry {before['sequence']} ({before['model_name']} "
            f"v{before['version']}) is missing or does not verify; promote the version to serve instead"
        )
    if not store.exists(restored["model_key"]):
        raise UserError(
            f"s3://{store.bucket}/{restored['model_key']}: the earlier model is gone; promote a version instead"
        )
    manifest = {
        **restored,
        **stamp(channel, state["next"], params, private_key),
        "replaces": manifests.summary(current),
        "rollback_from": manifests.summary(current),
    }
    publish(store, channel, manifest, private_key)
    replaced = current["model_name"] if current["model_name"] != restored["model_name"] else None
    move_alias(restored["model_name"], restored["version"], alias_for(channel), channel, replaced)
    return {
        "channel": channel,
        "version": restored["version"],
        "sha256": restored["sha256"],
        "model_name": restored["model_name"],
        "sequence": manifest["sequence"],
    }


def status(params: Params, public_key=None) -> list[dict]:
    """What each channel serves now (and, given the public key, whether its manifest verifies)."""
    store = FleetStore(params.fleet)
    rows = []
    for channel in sorted(set(store.channels()) | set(params.fleet.channels)):
        body = store.get(store.manifest_key(channel))
        shown = body and signing.peek(body)
        check = None
        if body is not None and public_key is not None:
            try:
                manifests.check_manifest(body, public_key, channel, {})
                check = "verified"
            except UserError as exc:
                check = f"DOES NOT VERIFY: {exc}"
        rows.append(
            {
                "channel": channel,
                "published": body is not None,
                "manifest": shown,
                "check": check,
                "history": len(store.history(channel)),
            }
        )
    return rows


def verify(
    published: bytes | dict,
    model: bytes,
    public_key,
    channel: str,
    state_path: Path,
    clock: dt.datetime | None = None,
) -> dict:
    """What a device does with a manifest and a model it has (files): every check of
    tinyopt.manifest, then the sequence is recorded in `state_path`; nothing is written on failure."""
    accepted = manifests.read_state(state_path)
    manifest, payload = manifests.check_manifest(published, public_key, channel, accepted, clock)
    manifests.check_model(manifest, model)
    manifests.accept(state_path, manifest, payload, accepted)
    return manifest


def download_and_verify(channel: str, params: Params, public_key, into: Path, clock: dt.datetime | None = None) -> dict:
    """Fetch the channel's manifest and model as a device would, verify both, keep them in `into`
    with the device's state file (`into`/state.json) written last."""
    store = FleetStore(params.fleet)
    published = store.get(store.manifest_key(channel))
    if published is None:
        raise UserError(f"channel '{channel}' serves nothing yet")
    state_path = into / "state.json"
    accepted = manifests.read_state(state_path)
    # The model's key comes from the verified payload only.
    manifest, payload = manifests.check_manifest(published, public_key, channel, accepted, clock)
    model = store.get(manifest["model_key"]) or b""
    manifests.check_model(manifest, model)
    write_bytes(into / f"{manifest['sha256']}.tflite", model)
    write_bytes(into / "manifest.json", published)
    manifests.accept(state_path, manifest, payload, accepted)
    return manifest
