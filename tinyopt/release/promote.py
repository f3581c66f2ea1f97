"""Promotion: publish a registered model version to a fleet channel, safely; roll back.

Order of writes: the model object (content-addressed, then read back and checked), then the signed
manifest into the channel's history (history/<sequence>.json), then the channel's current manifest,
then the registry alias. A failure anywhere leaves the previous manifest in place and valid; running
the same promotion again completes it (and moves the alias), then changes nothing. What the signer
trusts of the bucket: tinyopt.release.channel. Nor does it trust a model object: promote (also of
what the channel serves already) and rollback check the object they point at by size and sha256,
and upload it again from the registry when it is missing or was swapped.
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
from tinyopt.release.fleet import MISSING, FleetStore
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
        note = ensure_model_object(store, current.model_key, name, version, current.sha256, current.size)
        moved = move_alias(name, version, alias_for(channel), channel, None)
        return {
            "status": "alias moved" if moved else "repaired" if note else "unchanged",
            "model_object": note,
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

    blob = registry_copy(name, version)
    sha = hashlib.sha256(blob).hexdigest()
    model_key = store.model_key(sha)
    # The first upload of a model the channel does not serve yet is no news; any other is a repair.
    served = known is not None and known.sha256 == sha
    note = ensure_model_object(store, model_key, name, version, sha, len(blob), blob, first_upload=not served)

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
        "model_object": note,
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
    note = ensure_model_object(
        store, restored.model_key, restored.model_name, restored.version, restored.sha256, restored.size
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
        "model_object": note,
    }


def registry_copy(name: str, version: int) -> bytes:
    """The registered version's model bytes (checked against its registered sha256): the trusted source."""
    with tempfile.TemporaryDirectory() as scratch:
        return download_model(name, version, Path(scratch)).read_bytes()


def ensure_model_object(
    store: FleetStore,
    key: str,
    name: str,
    version: int,
    sha: str,
    size: int,
    blob: bytes | None = None,
    first_upload: bool = False,
) -> str | None:
    """Make the object at `key` hold exactly `name` v`version` (`size` bytes, `sha`): anyone who can
    write to the bucket can swap or delete it, and devices then reject the channel. A missing or
    different object is uploaded again from the registry (`blob`, when already fetched from it) and
    read back. Returns one line saying what was repaired, or None (nothing was, or this is a
    `first_upload` of a missing object)."""
    problem = store.mismatch(key, sha, size)
    if problem is None:
        return None
    store.put(key, registry_copy(name, version) if blob is None else blob)
    if store.mismatch(key, sha, size) is not None:  # read back: never point at a bad object
        raise UserError(
            f"s3://{store.bucket}/{key}: the uploaded model does not match its sha256; nothing was published"
        )
    if first_upload and problem == MISSING:
        return None
    return f"s3://{store.bucket}/{key} {problem}; uploaded {name} v{version} again from the registry"
