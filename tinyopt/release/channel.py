"""What the signer may believe about a fleet channel, and how it writes one.

The signer trusts nothing in the bucket it has not verified with the public half of its own key: the
next sequence number is one more than the highest verified one in the history (or current), the
score a gated channel compares with (tinyopt.release.decision.gate) and a manifest's `previous` come
only from a verified manifest. See tinyopt.release.manifest for what a device checks.
"""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, ConfigDict

from tinyopt.core.errors import UserError
from tinyopt.params import Params
from tinyopt.release import manifest as manifests
from tinyopt.release import signing
from tinyopt.release.fleet import FleetStore
from tinyopt.release.manifest import Manifest


class ChannelState(BaseModel):
    """What the signer may believe about a channel: the current manifest if it verifies, the latest
    verified history entry, the next sequence number, and whether the current manifest is tampered with."""

    model_config = ConfigDict(frozen=True)
    current: Manifest | None
    latest: Manifest | None
    next_sequence: int
    tampered: bool


class ChannelStatus(BaseModel):
    """One line of `tinyopt status`: `manifest` is the published payload, unverified (for display only)."""

    model_config = ConfigDict(frozen=True)
    channel: str
    published: bool
    manifest: dict | None
    check: str | None
    history: int


def check_channel(channel: str, params: Params) -> None:
    if channel not in params.fleet.channels:
        raise UserError(f"no channel '{channel}' (channels: {', '.join(params.fleet.channels)}; see fleet.channels)")


def trusted(store: FleetStore, key: str, channel: str, public_key, sequence: int | None = None) -> Manifest | None:
    """The manifest stored at `key` if it verifies, is schema 2, is for `channel` (and has `sequence`,
    when given); None for anything else (missing, tampered, foreign)."""
    body = store.get(key)
    if body is None:
        return None
    try:
        found, _ = manifests.open_signed(body, public_key)
    except UserError:
        return None
    ok = found.channel == channel and (sequence is None or found.sequence == sequence)
    return found if ok else None


def latest_signed(store: FleetStore, channel: str, public_key) -> Manifest | None:
    """The highest-numbered history entry that verifies and carries its file's number as its sequence
    (an entry copied under another number does not count)."""
    for key in reversed(store.history(channel)):
        stem = key.rsplit("/", 1)[-1].removesuffix(".json")
        found = trusted(store, key, channel, public_key, int(stem)) if stem.isdigit() else None
        if found:
            return found
    return None


def channel_state(store: FleetStore, channel: str, public_key) -> ChannelState:
    """What the signer may believe about `channel` now (see ChannelState)."""
    current = trusted(store, store.manifest_key(channel), channel, public_key)
    latest = latest_signed(store, channel, public_key)
    highest = max([m.sequence for m in (current, latest) if m] or [0])
    if current and latest and latest.sequence > current.sequence:
        # A later entry that did not replace this one means this one is an old manifest copied back;
        # one that did is an interrupted promote's (it never became current), and this one stands.
        if not (latest.replaces and latest.replaces.sequence == current.sequence):
            current = None
    return ChannelState(
        current=current,
        latest=latest,
        next_sequence=highest + 1,
        tampered=current is None and store.exists(store.manifest_key(channel)),
    )


def write_signed(store: FleetStore, manifest: Manifest, private_key) -> None:
    """History entry first, then current: a failure between the two leaves the old current valid."""
    body = signing.sign(manifest.document(), private_key)
    history = store.key("channels", manifest.channel, "history", f"{manifest.sequence:06d}.json")
    store.put(history, body, "application/json")
    store.put(store.manifest_key(manifest.channel), body, "application/json")


def stamp(channel: str, sequence: int, params: Params, private_key) -> dict:
    """The signed fields every new manifest starts with (as keyword arguments of Manifest): channel,
    sequence, creation, expiry, key id."""
    created = manifests.now()
    expiry = created + dt.timedelta(days=params.fleet.ttl_days(channel))
    return {
        "channel": channel,
        "sequence": sequence,
        "created": manifests.timestamp(created),
        "expires": manifests.timestamp(expiry),
        "key_id": signing.public_key_id(private_key.public_key()),
    }


def alias_for(channel: str) -> str:
    return "production" if channel == "stable" else channel


def fresh(current: Manifest, params: Params) -> bool:
    """More than half of the channel's time to live left: no need to re-sign yet."""
    left = current.expires_at - manifests.now()
    return left > dt.timedelta(days=params.fleet.ttl_days(current.channel)) / 2


def status(params: Params, public_key=None) -> list[ChannelStatus]:
    """What each channel serves now (and, given the public key, whether a device would take it: served_check)."""
    store = FleetStore(params.fleet)
    rows = []
    for channel in sorted(set(store.channels()) | set(params.fleet.channels)):
        body = store.get(store.manifest_key(channel))
        check = None if body is None or public_key is None else served_check(store, channel, body, public_key)
        rows.append(
            ChannelStatus(
                channel=channel,
                published=body is not None,
                manifest=None if body is None else signing.peek(body),
                check=check,
                history=len(store.history(channel)),
            )
        )
    return rows


def served_check(store: FleetStore, channel: str, body: bytes, public_key) -> str:
    """What `status --public-key` says of the manifest `channel` serves: "verified: <what was checked>"
    or "DOES NOT VERIFY: <why>". The checks: a device's (signature, schema, channel, expiry), its
    sequence against the signed history (an older manifest copied back is what a device that saw
    the latest rejects), and the model object's size and sha256 (streamed)."""
    try:
        manifest, _ = manifests.check_manifest(body, public_key, channel, manifests.DeviceState(channels={}))
    except UserError as exc:
        return f"DOES NOT VERIFY: {exc}"
    latest = channel_state(store, channel, public_key).next_sequence - 1
    if manifest.sequence < latest:
        # Stricter than the signer (which cannot tell a copy from an interrupted promote): either way a
        # device that took the latest rejects this one, and promoting again is the fix.
        return (
            f"DOES NOT VERIFY: sequence {manifest.sequence} is older than {latest} in the channel's signed "
            f"history, so devices that took {latest} reject it (a downgrade or replay, or an interrupted "
            f"promote); promote the version {channel} should serve"
        )
    problem = store.mismatch(manifest.model_key, manifest.sha256, manifest.size)
    if problem:
        return (
            f"DOES NOT VERIFY: the model object s3://{store.bucket}/{manifest.model_key} {problem}, so devices "
            f"reject it; promote {manifest.model_name} v{manifest.version} to {channel} again to upload it again"
        )
    return (
        f"verified: signature, schema, channel, expiry, sequence {manifest.sequence} (the latest signed), "
        f"model object ({manifest.size} bytes, sha256)"
    )
