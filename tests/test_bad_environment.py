"""A machine that will not let tinyopt write or listen, through the real CLI: a full disk (a small tmpfs,
filled), a device-state directory that is read-only (a read-only bind mount) or under a file, and the UI's
port held by another server. Each is one `tinyopt: error: ...` line, exit 2, no traceback, and nothing
written. Mounts need root (or CAP_SYS_ADMIN); without it the full-disk cases are skipped and a read-only
directory is made by chmod, which binds every user but root.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bad_input_helpers import good, npz, set_params, snapshot
from tests.conftest import SMALL, free_port, make_project, run_cli

FULL_DISK = "tinyopt: error: no space left on device writing artifacts/prepared.npz: free space and run again"


def mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@contextlib.contextmanager
def mounted(*args: str, at: Path) -> Iterator[None]:
    if not mount(*args, str(at)):
        pytest.skip("needs mount (root or CAP_SYS_ADMIN)")
    try:
        yield
    finally:
        subprocess.run(["umount", str(at)], check=True)


@contextlib.contextmanager
def full_disk(directory: Path) -> Iterator[None]:
    """`directory` on a 64 KiB tmpfs with every block taken: any write there fails with ENOSPC."""
    directory.mkdir(parents=True, exist_ok=True)
    with mounted("-t", "tmpfs", "-o", "size=64k", "tmpfs", at=directory):
        with contextlib.suppress(OSError), (directory / "filler").open("wb") as filler:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        yield


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """`directory` read-only for this process: a read-only bind mount (chmod does not stop root)."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)
        return
    with mounted("--bind", "-o", "ro", str(directory), at=directory):
        yield


def project_with_npz(root: Path) -> Path:
    """A SMALL project whose data is a small .npz (data.path), also in raw/ for `prepare --raw`."""
    project = make_project(
        root / "project", reference={"dir": None}, **{k: v for k, v in SMALL.items() if k != "reference"}
    )
    (root / "raw").mkdir()
    npz(root / "raw", good())
    set_params(root, data={"dataset": "npz", "path": str(root / "raw" / "data.npz")})
    return project


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in result.stdout + result.stderr, result.stderr[-3000:]
    assert result.returncode == 2, result.stderr[-3000:]
    return [line for line in result.stderr.splitlines() if line.startswith("tinyopt: error: ")]


def test_prepare_on_a_full_disk_is_one_line_and_leaves_no_partial_file(tmp_path):
    project = project_with_npz(tmp_path)
    with full_disk(project / "artifacts"):
        before = snapshot(tmp_path)
        result = run_cli(["prepare", "--raw", str(tmp_path / "raw"), "--out", "artifacts/prepared.npz"], cwd=project)
        assert result.stderr.splitlines() == [FULL_DISK], result.stderr[-3000:]
        assert error_lines(result) == [FULL_DISK]
        assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_a_full_disk_in_a_flow_is_one_line_not_prefect_tracebacks(tmp_path):
    """The disk fills under a Prefect task: the task's and the flow's failures carry the OSError."""
    project = project_with_npz(tmp_path)
    with full_disk(project / "artifacts"):
        result = run_cli(["run"], cwd=project, timeout=600)
        assert error_lines(result) == [FULL_DISK]
        assert sorted(os.listdir(project / "artifacts")) == ["filler"]


def test_ui_on_a_taken_port_is_one_line_and_writes_nothing(tmp_path):
    project = make_project(tmp_path / "project")
    port = free_port()
    with socket.socket() as other_server:
        other_server.bind(("127.0.0.1", port))
        other_server.listen()
        before = snapshot(tmp_path)
        result = run_cli(["ui", "--port", str(port)], cwd=project, timeout=120)
    assert result.stdout == ""  # not the other server's URL
    assert result.stderr.splitlines() == [
        f"tinyopt: error: cannot serve the UI on 127.0.0.1:{port} (Address already in use); another server "
        "listens there: stop it, or pass another --port"
    ]
    assert error_lines(result)
    assert snapshot(tmp_path) == before


@pytest.fixture
def signed(tmp_path) -> dict[str, Path]:
    """A device's inputs that verify: a model, its manifest for channel canary signed by keys/signing.key,
    and keys/signing.pub."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from tests.test_manifest import example
    from tinyopt.release.signing import generate_keys, public_key_id, sign

    private, public = generate_keys(tmp_path / "keys")
    key = load_pem_private_key(private.read_bytes(), password=None)
    model = b"TFL3 a model"
    manifest = example(
        channel="canary",
        sequence=1,
        expires=(dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(timespec="seconds"),
        key_id=public_key_id(key.public_key()),
        sha256=hashlib.sha256(model).hexdigest(),
        size=len(model),
    )
    (tmp_path / "device").mkdir()
    (tmp_path / "device" / "model.tflite").write_bytes(model)
    (tmp_path / "device" / "manifest.json").write_bytes(sign(manifest.document(), key))
    return {
        "public": public,
        "model": tmp_path / "device" / "model.tflite",
        "manifest": tmp_path / "device" / "manifest.json",
    }


def verify(signed: dict[str, Path], *args: str) -> list[str]:
    files = ["--manifest", str(signed["manifest"]), "--model", str(signed["model"])]
    return ["verify", "--channel", "canary", "--public-key", str(signed["public"]), *files, *args]


def test_verify_with_a_read_only_state_directory_is_one_line(tmp_path, signed):
    state_dir = tmp_path / "state"
    with read_only(state_dir):
        before = snapshot(tmp_path)
        result = run_cli(verify(signed, "--state", str(state_dir / "state.json")), cwd=tmp_path)
        assert snapshot(tmp_path) == before
    reason = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert result.stderr.splitlines() == [
        f"tinyopt: error: {state_dir}: not writable ({reason}): fix its permissions; the device keeps its state "
        "file there"
    ]
    assert error_lines(result)
    # The same inputs verify once the device can write its state: only the directory was wrong.
    accepted = run_cli(verify(signed, "--state", str(state_dir / "state.json")), cwd=tmp_path)
    assert accepted.returncode == 0 and "sequence 1" in accepted.stdout, accepted.stderr[-3000:]


def test_verify_with_a_state_path_under_a_file_is_one_line(tmp_path, signed):
    before = snapshot(tmp_path)
    result = run_cli(verify(signed, "--state", str(signed["model"] / "state.json")), cwd=tmp_path)
    assert result.stderr.splitlines() == [
        f"tinyopt: error: {signed['model']}: a file, not a directory: move it aside; the device keeps its state "
        "file there"
    ]
    assert error_lines(result)
    assert snapshot(tmp_path) == before


def test_a_download_into_a_read_only_directory_is_one_line_before_any_fetch(tmp_path, signed):
    project, into = make_project(tmp_path / "project"), tmp_path / "download"
    with read_only(into):
        before = snapshot(tmp_path)
        args = ["verify", "--channel", "canary", "--public-key", str(signed["public"]), "--into", str(into)]
        result = run_cli(args, cwd=project, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})  # no bucket is reached
        assert snapshot(tmp_path) == before
    assert len(result.stderr.splitlines()) == 1, result.stderr[-3000:]
    assert error_lines(result)[0].startswith(f"tinyopt: error: {into}: not writable (")
    assert result.stderr.strip().endswith("the device keeps the model, the manifest and its state file there")
