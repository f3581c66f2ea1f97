"""Channel manifests (schema 2) and the checks a device makes before it trusts one.

A manifest names the channel it is for, a per-channel sequence number that only grows, and an
expiry; all of it is inside the signed payload (see tinyopt.release.signing). A device keeps two things: the
public key, and a state file holding the last sequence it accepted on each channel (written only
after a manifest and its model passed every check). It rejects, each with its own one line:
  - an envelope with any field besides payload and signature (nothing unsigned can be read),
  - a bad signature (altered, or signed by another key),
  - another schema, or a payload without the fields below,
  - a manifest for another channel (canary's copied over stable's),
  - an expired manifest (an old one replayed long after, or a channel nobody re-signed),
  - a sequence lower than the last accepted one (an old history entry copied over the current one),
    or equal to it with other contents; the very same manifest again is fine (a device polls),
  - a model whose size or sha256 is not the manifest's.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

from tinyopt.core.errors import UserError
from tinyopt.core.files import write_json
from tinyopt.release import signing

SCHEMA = 2
FIELDS = {
    "schema": int,
    "channel": str,
    "sequence": int,
    "created": str,
    "expires": str,
    "key_id": str,
    "model_name": str,
    "version": int,
    "sha256": str,
    "size": int,
    "model_key": str,
}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def expires(manifest: dict) -> dt.datetime:
    return dt.datetime.fromisoformat(manifest["expires"])


def summary(manifest: dict | None) -> dict | None:
    """What a later manifest records of this one: `previous` (what the channel served before this
    model: a rollback's target), `replaces` (the manifest that was current when it was published)."""
    if manifest is None:
        return None
    return {k: manifest[k] for k in ("sequence", "model_name", "version", "sha256")}


def check_fields(manifest: dict) -> dict:
    if manifest.get("schema") != SCHEMA:
        raise UserError(f"the manifest has schema {manifest.get('schema')!r}; this device reads schema {SCHEMA}")
    # bool is an int to isinstance; a true/false sequence or size is as wrong as a missing one
    wrong = [
        k for k, kind in FIELDS.items() if isinstance(manifest.get(k), bool) or not isinstance(manifest.get(k), kind)
    ]
    if wrong:
        raise UserError(f"the signed manifest lacks fields or has them of the wrong type: {', '.join(wrong)}")
    try:
        expires(manifest)
    except ValueError:
        raise UserError(f"the manifest's expiry {manifest['expires']!r} is not an ISO 8601 time") from None
    return manifest


def read_state(path: Path) -> dict:
    """The device's record of what it accepted: {channel: {sequence, payload_sha256, sha256, accepted}}."""
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        channels = state["channels"]
        if not isinstance(channels, dict) or not all(isinstance(c.get("sequence"), int) for c in channels.values()):
            raise ValueError("bad channels")
        return channels
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        raise UserError(
            f"{path}: not a device state file (it holds the last accepted sequence per channel); "
            "restore it, or delete it only to trust the bucket's current manifest anew"
        ) from None


def check_manifest(
    published: bytes | dict, public_key, channel: str, accepted: dict, clock: dt.datetime | None = None
) -> tuple[dict, bytes]:
    """(manifest, payload) if `published` may be trusted by a device on `channel` that accepted
    `accepted` (read_state's record) so far; a one-line UserError naming the attack otherwise."""
    manifest, payload = signing.open_envelope(published, public_key)
    check_fields(manifest)
    if manifest["channel"] != channel:
        raise UserError(
            f"the manifest is for channel {manifest['channel']}, this device is on {channel}: "
            "a manifest copied across channels"
        )
    moment = clock or now()
    if moment >= expires(manifest):
        raise UserError(
            f"the manifest (sequence {manifest['sequence']}) expired at {manifest['expires']}: a stale or "
            f"replayed manifest; the publisher must promote again to re-sign {channel}"
        )
    last = accepted.get(channel)
    if last is not None:
        if manifest["sequence"] < last["sequence"]:
            raise UserError(
                f"sequence {manifest['sequence']} is older than the last accepted {last['sequence']} "
                f"on {channel}: a downgrade or replay"
            )
        same = hashlib.sha256(payload).hexdigest() == last.get("payload_sha256")
        if manifest["sequence"] == last["sequence"] and not same:
            raise UserError(
                f"sequence {manifest['sequence']} was accepted on {channel} already with other contents: "
                "a replay under a reused number"
            )
    return manifest, payload


def check_model(manifest: dict, model: bytes) -> None:
    if len(model) != manifest["size"] or hashlib.sha256(model).hexdigest() != manifest["sha256"]:
        raise UserError("the model does not match the manifest (size or sha256): it was altered or is another file")


def accept(path: Path, manifest: dict, payload: bytes, accepted: dict) -> None:
    """Record `manifest` as the last accepted on its channel (atomically: a crash keeps the old record)."""
    record = {
        "sequence": manifest["sequence"],
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "sha256": manifest["sha256"],
        "accepted": timestamp(now()),
    }
    write_json(path, {"channels": {**accepted, manifest["channel"]: record}})
