"""Lineage facts recorded on every run and artifact: code version and data version."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of tinyopt's own code (the code version), with '-dirty' when tracked files differ from
    it; 'unknown' when the code is not in a git checkout."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def dvc_hash(path: str | Path) -> str:
    """The md5 DVC itself records for a file or directory (as in dvc.lock), computed by DVC's library."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db.local import LocalHashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    fs = LocalFileSystem()
    with tempfile.TemporaryDirectory() as scratch:
        odb = LocalHashFileDB(fs, scratch)
        _, _, obj = build(odb, str(Path(path).resolve()), fs, "md5", dry_run=True)
    return obj.hash_info.value
