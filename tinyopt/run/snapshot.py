"""A run's outputs, frozen: every file its summary names, kept as that run wrote it.

The working paths under artifacts/ belong to the newest run (the Prefect cache and DVC use them; a later run
replaces them). `freeze` hard-links each file a summary names under artifacts/ into artifacts/runs/<run-id>/, at
the same path relative to artifacts/ (a copy where a hard link cannot be made), read-only, and records the
sha256 of every file the summary then names (a directory's: each file in it; reference models stay where they
are, hashed). Every step writes its outputs atomically (tinyopt.core.files: a new file renamed over the old),
so a later run gives the working path a new inode and the linked bytes stay as they were.

`verified` is how a reader takes a file from a summary: the path, if its bytes still hash to what the run
recorded, else one line naming the file, the run and the fix. A summary written before runs recorded hashes
has none: its files are used unchecked.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.core.files import sha256_file
from tinyopt.records.run import Measured, Summary

RUNS = layout.ARTIFACTS / "runs"
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH  # 0o444
# The file-valued fields of a record: each variant's (and the baseline's), and each reference model's.
VARIANT_FILES = ("tflite", "model", "c_source", "c_library")
REFERENCE_FILES = ("tflite", "c_library")
NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def freeze(summary: Summary, artifacts: Path = layout.ARTIFACTS) -> Summary:
    """The summary naming its run's snapshot (artifacts/runs/<run-id>/...) and recording the sha256 of every
    file it names; the snapshot is made here. A file outside `artifacts` (a reference model) stays in place."""
    files: dict[str, str] = {}
    snapshot = artifacts / "runs" / summary.run_id

    def frozen(record: Measured, fields: tuple[str, ...]) -> Measured:
        update = {}
        for field in fields:
            named = getattr(record, field)
            if named is None:
                continue
            path = _snapshot(Path(named), artifacts, snapshot)
            header = Path(named).with_suffix(".h")  # the C array's header, beside its source
            if field == "c_source" and header.is_file():
                _record(_snapshot(header, artifacts, snapshot), files)
            _record(path, files)
            update[field] = str(path)
        return record.model_copy(update=update)

    baseline = frozen(summary.baseline, VARIANT_FILES)
    variants = [frozen(v, VARIANT_FILES) for v in summary.variants]
    reference = [frozen(r, REFERENCE_FILES) for r in summary.reference]
    return summary.model_copy(
        update={
            "baseline": baseline,
            "variants": variants,
            "reference": reference,
            "files": dict(sorted(files.items())),
        }
    )


def verified(summary: Summary, path: str | Path) -> Path:
    """`path`, one the summary names, when its bytes (each file's, for a directory) are the ones the run
    recorded; UserError in one line naming the file, the run and the fix when they are not. Unchecked when the
    summary records no hashes (written before tinyopt recorded them)."""
    path = Path(path)
    if not summary.files:
        return path
    key = str(path)
    recorded = {name: digest for name, digest in summary.files.items() if name == key or name.startswith(key + "/")}
    if not recorded:
        raise UserError(f"{path}: run {summary.run_id} recorded no sha256 for it; use the paths its summary.json names")
    for name, digest in recorded.items():
        _check(Path(name), digest, summary.run_id)
    if path.is_dir():
        extra = sorted(str(f) for f in path.rglob("*") if f.is_file() and str(f) not in recorded)
        if extra:
            raise UserError(
                f"{extra[0]}: not among the files run {summary.run_id} recorded in {path}; remove it, "
                "or run `tinyopt run` again for new outputs"
            )
    return path


def _check(file: Path, sha256: str, run_id: str) -> None:
    if not file.is_file():
        raise UserError(
            f"{file}: missing, run {run_id} recorded it (sha256 {sha256[:12]}); restore it, or run `tinyopt run` "
            "again for new outputs"
        )
    found = sha256_file(file)
    if found != sha256:
        raise UserError(
            f"{file}: changed since run {run_id} recorded it (sha256 {found[:12]}, recorded {sha256[:12]}); "
            "restore it, or run `tinyopt run` again for new outputs"
        )


def _record(path: Path, files: dict[str, str]) -> None:
    """The sha256 of `path`, or of each file in it when it is a directory, into `files` (nothing for a path
    that is not there: a reader then finds no hash for it, and says so)."""
    found = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path] if path.is_file() else []
    for file in found:
        files[str(file)] = sha256_file(file)


def _snapshot(source: Path, artifacts: Path, snapshot: Path) -> Path:
    """Where `source` is kept for the run: hard-linked into the snapshot when it lies under artifacts/ (and
    not in a snapshot already), else where it is."""
    try:
        inner = Path(os.path.abspath(source)).relative_to(os.path.abspath(artifacts))
    except ValueError:
        return source
    if inner.parts[:1] == ("runs",) or not source.exists():
        return source
    target = snapshot / inner
    if source.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        for inside in sorted(source.rglob("*")):  # empty directories too (a SavedModel's assets/)
            if inside.is_dir():
                (target / inside.relative_to(source)).mkdir(parents=True, exist_ok=True)
            elif inside.is_file():
                _link(inside, target / inside.relative_to(source))
    else:
        _link(source, target)
    return target


def _link(source: Path, target: Path) -> None:
    """`target` holds `source`'s bytes, read-only: a hard link (a copy across devices), replacing atomically
    whatever `target` held."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and os.path.samefile(source, target):
        os.chmod(target, READ_ONLY)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError as exc:
            if exc.errno not in NO_LINK:
                raise
            shutil.copy2(source, tmp)
        os.chmod(tmp, READ_ONLY)
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
