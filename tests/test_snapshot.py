"""A run's outputs are immutable: its summary names a read-only snapshot of every file, with each file's
sha256, and readers refuse bytes that changed (tinyopt.run.snapshot)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import make_project, run_cli
from tests.record_helpers import variant
from tests.test_report import run_summary
from tinyopt.core.errors import UserError
from tinyopt.core.files import sha256_file, write_bytes
from tinyopt.records.run import Summary, load_summary
from tinyopt.run.snapshot import freeze, verified

VARIANT = Path("artifacts/variants/base-int8")
LIBRARY = Path("artifacts/c/base-int8")


def working_files(root: Path) -> dict[str, Path]:
    """A variant's working files under artifacts/, as a run leaves them, and a reference model outside."""
    files = {
        "tflite": VARIANT / "base-int8.tflite",
        "c_source": VARIANT / "base-int8.cc",
        "header": VARIANT / "base-int8.h",
        "model": Path("artifacts/baseline/model.keras"),
        "library_c": LIBRARY / "base_int8.c",
        "library_json": LIBRARY / "library.json",
        "reference": root / "shared" / "ref.tflite",
    }
    for name, path in files.items():
        write_bytes(path, f"first run's {name}".encode())
    return files


def summary_of(files: dict[str, Path], run_id: str = "r1") -> Summary:
    ours = variant(
        "base-int8",
        0.9,
        100,
        tflite=str(files["tflite"]),
        model=str(files["model"]),
        c_source=str(files["c_source"]),
        c_library=str(LIBRARY),
    )
    theirs = variant("ref", 0.8, 100, tflite=str(files["reference"]), c_library=None)
    return run_summary([ours], [theirs]).model_copy(update={"run_id": run_id})


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_freeze_links_every_named_file_read_only_and_records_its_sha256(project):
    files = working_files(project)
    summary = freeze(summary_of(files))
    run = Path("artifacts/runs/r1")
    frozen = summary.variant("base-int8")
    assert frozen.tflite == str(run / "variants/base-int8/base-int8.tflite")
    assert frozen.model == str(run / "baseline/model.keras") == summary.baseline.model
    assert frozen.c_source == str(run / "variants/base-int8/base-int8.cc")
    assert frozen.c_library == str(run / "c/base-int8")
    assert summary.reference[0].tflite == str(files["reference"])  # a reference model stays where it is
    expected = {
        run / "variants/base-int8/base-int8.tflite": files["tflite"],
        run / "variants/base-int8/base-int8.cc": files["c_source"],
        run / "variants/base-int8/base-int8.h": files["header"],
        run / "baseline/model.keras": files["model"],
        run / "c/base-int8/base_int8.c": files["library_c"],
        run / "c/base-int8/library.json": files["library_json"],
        files["reference"]: files["reference"],
    }
    assert summary.files == {str(k): sha256_file(v) for k, v in sorted(expected.items(), key=lambda kv: str(kv[0]))}
    for snapshot, working in expected.items():
        if snapshot != working:
            assert os.path.samefile(snapshot, working)  # a hard link: no bytes copied
            assert stat.S_IMODE(snapshot.stat().st_mode) == 0o444
    assert freeze(summary).files == summary.files  # freezing a frozen summary changes nothing
    assert load_summary(write_json_summary(summary)).files == summary.files


def write_json_summary(summary: Summary) -> Path:
    path = Path("reports") / summary.run_id / "summary.json"
    write_bytes(path, summary.model_dump_json().encode())
    return path


def test_a_later_run_replacing_the_working_file_leaves_the_snapshot_intact(project):
    files = working_files(project)
    first = freeze(summary_of(files))
    for path in (files["tflite"], files["library_c"]):  # the next run's steps: a new file renamed over the old
        write_bytes(path, b"second run's bytes")
    second = freeze(summary_of(files, run_id="r2"))
    kept = verified(first, first.variant("base-int8").tflite)
    assert kept.read_bytes() == b"first run's tflite"
    assert verified(first, first.variant("base-int8").c_library) == Path("artifacts/runs/r1/c/base-int8")
    assert Path(second.variant("base-int8").tflite).read_bytes() == b"second run's bytes"
    assert not os.path.samefile(kept, files["tflite"])
    # A file the later run did not rewrite is shared by both snapshots, still one inode.
    assert os.path.samefile(first.baseline.model, second.baseline.model)


@pytest.mark.parametrize(
    ("field", "tamper", "said"),
    [
        ("tflite", lambda p: _rewrite(p, b"other bytes"), "changed since run r1 recorded it"),
        ("tflite", lambda p: p.unlink(), "missing, run r1 recorded it"),
        ("c_library", lambda p: _rewrite(p / "library.json", b"{}"), "changed since run r1 recorded it"),
        ("c_library", lambda p: (p / "extra.c").write_text("x"), "not among the files run r1 recorded"),
    ],
)
def test_a_changed_file_is_refused_in_one_line_naming_it_the_run_and_the_fix(project, field, tamper, said):
    summary = freeze(summary_of(working_files(project)))
    named = Path(getattr(summary.variant("base-int8"), field))
    tamper(named)
    with pytest.raises(UserError) as refused:
        verified(summary, named)
    message = str(refused.value)
    assert "\n" not in message and said in message and "r1" in message
    assert message.startswith(str(named)) and "tinyopt run` again" in message


def _rewrite(path: Path, data: bytes) -> None:
    """In place, as someone editing the file would (the snapshot is read-only: make it writable first)."""
    path.chmod(0o644)
    with open(path, "r+b") as handle:
        handle.write(data)


def test_a_summary_without_hashes_still_loads_and_its_files_are_read_unchecked(project):
    files = working_files(project)
    old = summary_of(files)
    as_json = old.model_dump(mode="json")
    as_json.pop("files")  # written before runs recorded hashes
    path = write_json_summary(Summary.model_validate(as_json))
    loaded = load_summary(path)
    assert loaded.files == {}
    _rewrite(files["tflite"], b"anything")
    assert verified(loaded, files["tflite"]) == files["tflite"]


def test_register_refuses_a_changed_tflite_before_reaching_the_registry(project):
    from tinyopt.release.registry import register_variant

    summary = freeze(summary_of(working_files(project)))
    _rewrite(Path(summary.variant("base-int8").tflite), b"tampered")
    with pytest.raises(UserError, match="changed since run r1 recorded it"):
        register_variant(summary, "base-int8", "nano33ble")


def test_bench_summary_refuses_a_changed_tflite_in_one_line(project):
    make_project(project)
    summary = freeze(summary_of(working_files(project)))
    path = write_json_summary(summary)
    _rewrite(Path(summary.variant("base-int8").tflite), b"tampered")
    result = run_cli(["bench", "--summary", str(path)], cwd=project)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "artifacts/runs/r1/variants/base-int8/base-int8.tflite" in lines[0] and "run r1" in lines[0]
