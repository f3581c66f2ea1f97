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


def tabular_models(directory: Path) -> tuple[Path, Path, Path]:
    """A small classification .npz and two different MLPs trained briefly on it."""
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (3, 8))
    labels = rng.integers(0, 3, 600)
    x = (centres[labels] + rng.normal(0, 1.0, (600, 8))).astype(np.float32)
    data = directory / "tabular.npz"
    np.savez(data, x_train=x[:500], y_train=labels[:500], x_test=x[500:], y_test=labels[500:])
    models = []
    for units in (8, 16):
        tf.keras.utils.set_random_seed(units)
        model = tf.keras.Sequential(
            [
                tf.keras.layers.InputLayer((8,)),
                tf.keras.layers.Dense(units, activation="relu"),
                tf.keras.layers.Dense(3),
            ]
        )
        model.compile("adam", tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x[:500], labels[:500], epochs=3, verbose=0)
        model.save(directory / f"mlp{units}.keras")
        models.append(directory / f"mlp{units}.keras")
    return data, *models


@pytest.mark.slow
def test_a_second_run_in_the_project_leaves_the_first_runs_outputs_as_they_were(tmp_path, monkeypatch):
    """The issue's acceptance test: two runs with different models in one project; the first run's summary,
    report and registered model still resolve to its own bytes; a tampered snapshot file is refused."""
    data, first_model, second_model = tabular_models(tmp_path)
    root = make_project(
        tmp_path / "project",
        task={"kind": "classification"},
        plan=[["float32"], ["int8"]],
        conversion={"calibration_samples": 32},
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20, "devices": ["nano33ble"]},
    )
    first = run_cli(["run", "--model", str(first_model), "--data", str(data)], cwd=root)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    latest = load_summary(root / "reports" / "latest" / "summary.json")
    summary_path = root / "reports" / latest.run_id / "summary.json"
    report = (summary_path.parent / "report.md").read_text()
    kept = {name: (root / name).read_bytes() for name in latest.files}
    run = f"artifacts/runs/{latest.run_id}"
    for record in [latest.baseline, *latest.variants]:
        named = [record.tflite, record.model, record.c_source, record.c_library]
        assert all(path is None or path.startswith(run + "/") for path in named), named
    assert latest.variant("base-int8").c_library, "the int8 variant's C library is part of the snapshot"
    assert f"{run}/" in report

    second = run_cli(["run", "--model", str(second_model), "--data", str(data)], cwd=root)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    working = root / "artifacts/variants/base-int8/base-int8.tflite"
    assert working.read_bytes() != kept[f"{run}/variants/base-int8/base-int8.tflite"]  # the second run replaced it

    summary = load_summary(summary_path)
    assert summary == latest
    for name, digest in summary.files.items():
        assert sha256_file(root / name) == digest and (root / name).read_bytes() == kept[name], name
    assert (summary_path.parent / "report.md").read_text() == report

    done = run_cli(["register", "--variant", "base-int8", "--summary", str(summary_path), "--name", "first"], cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    monkeypatch.chdir(root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    from tinyopt.release.registry import download_model, model_version

    tflite = summary.variant("base-int8").tflite
    assert model_version("first", 1)[0]["sha256"] == summary.files[tflite]
    assert download_model("first", 1, tmp_path / "download").read_bytes() == kept[tflite]

    _rewrite(root / tflite, b"\x00")  # one byte changed in the first run's snapshot
    for args in (
        ["register", "--variant", "base-int8", "--summary", str(summary_path)],
        ["bench", "--summary", str(summary_path)],
    ):
        refused = run_cli(args, cwd=root)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
        assert tflite in lines[0] and f"run {summary.run_id}" in lines[0] and "tinyopt run` again" in lines[0]


def test_a_savedmodel_directory_is_frozen_whole_empty_directories_included(project):
    files = working_files(project)
    saved = Path("artifacts/models/qat/model")
    write_bytes(saved / "saved_model.pb", b"graph")
    write_bytes(saved / "variables" / "variables.index", b"index")
    (saved / "assets").mkdir()
    summary = summary_of(files)
    summary.variants[0].model = str(saved)
    frozen = freeze(summary)
    kept = Path(frozen.variant("base-int8").model)
    assert kept == Path("artifacts/runs/r1/models/qat/model") and (kept / "assets").is_dir()
    assert {name for name in frozen.files if name.startswith(str(kept))} == {
        str(kept / "saved_model.pb"),
        str(kept / "variables" / "variables.index"),
    }
    assert verified(frozen, kept) == kept
