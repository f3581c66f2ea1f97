"""Channel manifests (schema 2) and the checks a device makes before it trusts one.

A manifest names the channel it is for, a per-channel sequence number that only grows, and an
expiry; all of it is inside the signed payload (see tinyopt.release.signing). A device keeps two things: the
public key, and a state file holding the last sequence it accepted on each channel (written only
after a manifest and its model passed every check). It rejects, each with its own one line:
  - an envelope with any field besides payload and signature (nothing unsigned can be read),
  - a bad signature (altered, or signed by another key),
  - another schema, or a payload without the fields of `Manifest` (or one of another type),
  - a manifest for another channel (canary's copied over stable's),
  - an expired manifest (an old one replayed long after, or a channel nobody re-signed),
  - a sequence lower than the last accepted one (an old history entry copied over the current one),
    or equal to it with other contents; the very same manifest again is fine (a device polls),
  - a model whose size or sha256 is not the manifest's (the size is checked before the model is read,
    and the model is hashed as it streams: whatever sits in the bucket is never held whole).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tinyopt.core.errors import UserError
from tinyopt.core.files import write_json
from tinyopt.release import signing

SCHEMA = 2
# Read from bytes nobody vouches for (a payload, a device's state file), types are checked, never
# coerced (a true/false sequence, a "3" for 3): what a device reads is what was signed, and a stored
# manifest dumps back to its own bytes.
STRICT = ConfigDict(frozen=True, strict=True)


class ManifestRef(BaseModel):
    """What a later manifest records of an earlier one: `previous` (what the channel served before
    this model: a rollback's target), `replaces` (the manifest current when it was published),
    `rollback_from`."""

    model_config = STRICT
    sequence: int
    model_name: str
    version: int
    sha256: str


class Figures(BaseModel):
    """The registered record's size and speed figures, as published."""

    model_config = STRICT
    raw_bytes: int | None
    gzip_bytes: int | None
    latency_us_p50: float | None
    arena_bytes: int | None
    params: int | None
    macs: int | None


class Lineage(BaseModel):
    """Where the published model came from (the registered version's tags)."""

    model_config = STRICT
    pipeline_run: str | None
    git_commit: str | None
    dataset: str | None
    dataset_version: str | None
    params_hash: str | None


class Override(BaseModel):
    """A gated channel's refusal that `--force --reason` overrode."""

    model_config = STRICT
    reason: str
    refusal: str


class Manifest(BaseModel):
    """A schema-2 manifest, the signed payload. The first fields are what a device checks; the rest
    describe the model. `document()` is its JSON form, whose canonical bytes are what is signed."""

    model_config = STRICT
    schema_version: int = Field(SCHEMA, alias="schema")  # `schema` would shadow a BaseModel method
    channel: str
    sequence: int
    created: str
    expires: str
    key_id: str
    model_name: str
    version: int
    sha256: str
    size: int
    model_key: str
    metric: str
    score: float
    metrics: Figures
    profile: str
    fits: bool
    variant: str
    lineage: Lineage
    previous: ManifestRef | None
    replaces: ManifestRef | None
    rollback_from: ManifestRef | None
    forced: Override | None

    @property
    def expires_at(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.expires)

    def ref(self) -> ManifestRef:
        return ManifestRef(sequence=self.sequence, model_name=self.model_name, version=self.version, sha256=self.sha256)

    def document(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


class Accepted(BaseModel):
    """What a device records of the last manifest it accepted on a channel."""

    model_config = STRICT
    sequence: int
    payload_sha256: str
    sha256: str
    accepted: str


class DeviceState(BaseModel):
    """A device's state file: the last manifest accepted on each channel."""

    model_config = STRICT
    channels: dict[str, Accepted]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def timestamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds")


def parse(document: dict) -> Manifest:
    """The manifest in a verified payload; a one-line UserError for another schema, a missing or
    mistyped field, an expiry that is not a time."""
    if document.get("schema") != SCHEMA:
        raise UserError(f"the manifest has schema {document.get('schema')!r}; this device reads schema {SCHEMA}")
    try:
        manifest = Manifest.model_validate(document)
    except ValidationError as exc:
        wrong = dict.fromkeys(str(error["loc"][0]) for error in exc.errors())
        raise UserError(f"the signed manifest lacks fields or has them of the wrong type: {', '.join(wrong)}") from None
    try:
        manifest.expires_at  # noqa: B018 (reading it parses it)
    except ValueError:
        raise UserError(f"the manifest's expiry {manifest.expires!r} is not an ISO 8601 time") from None
    return manifest


def open_signed(published: bytes | dict, public_key) -> tuple[Manifest, bytes]:
    """(manifest, payload bytes) of an envelope whose signature verifies and whose payload is a
    schema-2 manifest; a one-line UserError otherwise."""
    document, payload = signing.open_envelope(published, public_key)
    return parse(document), payload


def read_state(path: Path) -> DeviceState:
    """The device's record of what it accepted (none yet without a state file)."""
    if not path.exists():
        return DeviceState(channels={})
    try:
        return DeviceState.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        raise UserError(
            f"{path}: not a device state file (it holds the last accepted sequence per channel); "
            "restore it, or delete it only to trust the bucket's current manifest anew"
        ) from None


def check_manifest(
    published: bytes | dict, public_key, channel: str, state: DeviceState, clock: dt.datetime | None = None
) -> tuple[Manifest, bytes]:
    """(manifest, payload) if `published` may be trusted by a device on `channel` whose state file
    holds `state`; a one-line UserError naming the attack otherwise."""
    manifest, payload = open_signed(published, public_key)
    if manifest.channel != channel:
        raise UserError(
            f"the manifest is for channel {manifest.channel}, this device is on {channel}: "
            "a manifest copied across channels"
        )
    if (clock or now()) >= manifest.expires_at:
        raise UserError(
            f"the manifest (sequence {manifest.sequence}) expired at {manifest.expires}: a stale or "
            f"replayed manifest; the publisher must promote again to re-sign {channel}"
        )
    last = state.channels.get(channel)
    if last is not None:
        if manifest.sequence < last.sequence:
            raise UserError(
                f"sequence {manifest.sequence} is older than the last accepted {last.sequence} "
                f"on {channel}: a downgrade or replay"
            )
        same = hashlib.sha256(payload).hexdigest() == last.payload_sha256
        if manifest.sequence == last.sequence and not same:
            raise UserError(
                f"sequence {manifest.sequence} was accepted on {channel} already with other contents: "
                "a replay under a reused number"
            )
    return manifest, payload


def check_model_size(manifest: Manifest, size: int | None) -> None:
    """Checked before the model is read (a swapped object may be any size); None: there is no model."""
    if size != manifest.size:
        found = "there is none" if size is None else f"{size} bytes"
        raise UserError(
            f"the model does not match the manifest ({found}, not {manifest.size} bytes): "
            "it was altered or is another file"
        )


def check_model_sha256(manifest: Manifest, sha256: str) -> None:
    if sha256 != manifest.sha256:
        raise UserError("the model does not match the manifest (its sha256): it was altered or is another file")


def accept(path: Path, manifest: Manifest, payload: bytes, state: DeviceState) -> None:
    """Record `manifest` as the last accepted on its channel (atomically: a crash keeps the old record)."""
    record = Accepted(
        sequence=manifest.sequence,
        payload_sha256=hashlib.sha256(payload).hexdigest(),
        sha256=manifest.sha256,
        accepted=timestamp(now()),
    )
    write_json(path, DeviceState(channels={**state.channels, manifest.channel: record}).model_dump())
