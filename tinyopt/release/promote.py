"""Promotion: publish a registered model version to a fleet channel, safely; roll back.

Order of writes: the model object (content-addressed, then read back and checked), then the signed
manifest into the channel's history (history/<sequence>.json), then the channel's current manifest,
then the registry alias. A failure anywhere leaves the previous manifest in place and valid; running
the same promotion again completes it (and moves the alias), then changes nothing. What the signer
trusts of the bucket: tinyopt.release.channel.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from tinyopt.core.errors import UserError
from tinyopt.params import Params, check_name
from tinyopt.release import signing
from tinyopt.release.channel import alias_for, channel_state, check_channel, fresh, stamp, trusted, write_signed
from tinyopt.release.decision import gate
from tinyopt.release.fleet import FleetStore
from tinyopt.release.manifest import Figures, Lineage, Manifest, Override
from tinyopt.release.registry import download_model, model_version, move_alias


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
    check_channel(channel, params)
    settings = params.fleet.channels[channel]
    tags, record = model_version(name, version)
    private_key = signing.load_private_key(project)  # a missing signing key fails before anything is written
    store = FleetStore(params.fleet)
    state = channel_state(store, channel, private_key.public_key())
    current = state.current
    # What the channel is known to serve: its current manifest if genuine, else the last one we signed.
    known = current or state.latest
    same = current and (current.model_name, current.version, current.sha256) == (name, version, tags["sha256"])
    if same and current.sequence == state.next_sequence - 1 and fresh(current, params):
        moved = move_alias(name, version, alias_for(channel), channel, None)
        return {
            "status": "alias moved" if moved else "unchanged",
            "channel": channel,
            "version": version,
            "sha256": tags["sha256"],
            "sequence": current.sequence,
        }
    refusal = None
    if settings.gated:
        if state.tampered and known is None:
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

    replaces = known.ref() if known else None
    # Re-signing the model already served keeps its predecessor, so a rollback still goes back past it.
    previous = known.previous if known and known.sha256 == sha else replaces
    manifest = Manifest(
        **stamp(channel, state.next_sequence, params, private_key),
        model_name=name,
        version=version,
        sha256=sha,
        size=len(blob),
        model_key=model_key,
        metric=record.metric,
        score=record.score,
        metrics=Figures(**record.model_dump(include=set(Figures.model_fields))),
        profile=settings.profile,
        fits=record.fits.get(settings.profile, False),
        variant=tags["variant"],
        lineage=Lineage(**{k: tags.get(k) for k in Lineage.model_fields}),
        previous=previous,
        replaces=replaces,
        rollback_from=None,
        forced=Override(reason=force_reason, refusal=refusal) if refusal else None,
    )
    write_signed(store, manifest, private_key)
    replaced = known.model_name if known and known.model_name != name else None
    move_alias(
        name,
        version,
        alias_for(channel),
        channel,
        replaced,
        published=manifest.created,
        forced=f"{force_reason} (gate said: {refusal})" if refusal else None,
    )
    return {
        "status": "repaired" if state.tampered else "published",
        "channel": channel,
        "version": version,
        "sha256": sha,
        "sequence": manifest.sequence,
        "forced": bool(refusal),
    }


def rollback(channel: str, params: Params, project: Path | None = None) -> dict:
    """Publish a NEW manifest (the next sequence number, so devices accept it) that serves what the
    channel served before its current model: the current manifest's `previous`, not the history entry
    before it (an interrupted promote can leave an entry that never became current)."""
    check_channel(channel, params)
    private_key = signing.load_private_key(project)
    store = FleetStore(params.fleet)
    state = channel_state(store, channel, private_key.public_key())
    current = state.current
    if current is None:
        if state.tampered:
            raise UserError(
                f"channel '{channel}': its current manifest does not verify, so there is nothing "
                "trustworthy to roll back from; promote the version it should serve (that re-signs it)"
            )
        raise UserError(f"channel '{channel}' serves nothing yet: nothing to roll back")
    before = current.previous
    if not before:
        raise UserError(f"channel '{channel}' has no earlier manifest to roll back to")
    restored = trusted(
        store,
        store.key("channels", channel, "history", f"{before.sequence:06d}.json"),
        channel,
        private_key.public_key(),
        before.sequence,
    )
    if restored is None or restored.sha256 != before.sha256:
        raise UserError(
            f"channel '{channel}': history entry {before.sequence} ({before.model_name} "
            f"v{before.version}) is missing or does not verify; promote the version to serve instead"
        )
    if not store.exists(restored.model_key):
        raise UserError(
            f"s3://{store.bucket}/{restored.model_key}: the earlier model is gone; promote a version instead"
        )
    stamped = stamp(channel, state.next_sequence, params, private_key)
    manifest = restored.model_copy(update={**stamped, "replaces": current.ref(), "rollback_from": current.ref()})
    write_signed(store, manifest, private_key)
    replaced = current.model_name if current.model_name != restored.model_name else None
    move_alias(restored.model_name, restored.version, alias_for(channel), channel, replaced)
    return {
        "channel": channel,
        "version": restored.version,
        "sha256": restored.sha256,
        "model_name": restored.model_name,
        "sequence": manifest.sequence,
    }
