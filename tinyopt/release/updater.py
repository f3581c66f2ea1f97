"""What a device's updater does with a channel's manifest and model: every check of
tinyopt.release.manifest, then it records the sequence it accepted (`tinyopt verify` runs it). Named
`updater`, not `device`: in tinyopt, a device is a board profile (tinyopt.mcu, params' devices)."""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.core.files import atomic_path, sha256_file, write_bytes
from tinyopt.params import Params
from tinyopt.release import manifest as manifests
from tinyopt.release.fleet import FleetStore
from tinyopt.release.manifest import Manifest


def verify(
    published: bytes | dict,
    model: Path,
    public_key,
    channel: str,
    state_path: Path,
    clock: dt.datetime | None = None,
) -> Manifest:
    """What a device does with a manifest and a model it has (files): every check of
    tinyopt.release.manifest, then the sequence is recorded in `state_path`; nothing is written on failure."""
    _require_writable(state_path.parent, "its state file")
    state = manifests.read_state(state_path)
    manifest, payload = manifests.check_manifest(published, public_key, channel, state, clock)
    try:
        manifests.check_model_size(manifest, model.stat().st_size)
        manifests.check_model_sha256(manifest, sha256_file(model))
    except OSError as exc:
        raise UserError(f"{model}: cannot read the model ({exc.strerror or exc})") from None
    manifests.accept(state_path, manifest, payload, state)
    return manifest


def download_and_verify(
    channel: str, params: Params, public_key, into: Path, clock: dt.datetime | None = None
) -> Manifest:
    """Fetch the channel's manifest and model as a device would, verify both, keep them in `into`
    with the device's state file (`into`/state.json) written last."""
    _require_writable(into, "the model, the manifest and its state file")
    store = FleetStore(params.fleet)
    store.require_reachable()  # one line within seconds when the endpoint does not answer
    published = store.get(store.manifest_key(channel))
    if published is None:
        raise UserError(f"channel '{channel}' serves nothing yet")
    state_path = into / "state.json"
    state = manifests.read_state(state_path)
    # The model's key comes from the verified payload only.
    manifest, payload = manifests.check_manifest(published, public_key, channel, state, clock)
    manifests.check_model_size(manifest, store.size(manifest.model_key))
    # Staged outside `into`: a model that fails its checks leaves nothing there, not even the directory.
    with tempfile.TemporaryDirectory() as scratch:
        staged = Path(scratch) / "model.tflite"
        with staged.open("wb") as sink:
            sha256, read = store.stream(manifest.model_key, manifest.size, sink) or ("", None)
        manifests.check_model_size(manifest, read)  # swapped between the size check and the read
        manifests.check_model_sha256(manifest, sha256)
        with atomic_path(into / f"{manifest.sha256}.tflite") as partial:
            shutil.copyfile(staged, partial)
    write_bytes(into / "manifest.json", published)
    manifests.accept(state_path, manifest, payload, state)
    return manifest


def _require_writable(directory: Path, what: str) -> None:
    """Before any check: the device can keep what it accepts (else it would verify, then fail with a traceback)."""
    layout.require_writable([directory], f"the device keeps {what} there")
