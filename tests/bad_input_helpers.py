"""What the bad-input test modules (tests/test_bad_*.py) share: small valid datasets to spoil, the
project's params.yaml to change, the `Case` each module lists, and the check every case must pass.

Every case must end the same way: exit status 2, exactly one line on stderr (`tinyopt: error: ...`)
that names the problem, no traceback, and nothing written or changed anywhere in the case's directory
(the project's reports/, artifacts/, data/ copies, mlflow.db, and the user's own input files). The
checks run before Prefect, MLflow or any training start, so each case costs seconds.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from tests.conftest import SMALL, make_project, run_cli

RNG = np.random.default_rng(0)
N_TRAIN, N_TEST, CLASSES = 60, 20, 3


def images(n: int, side: int = 6) -> np.ndarray:
    return RNG.integers(0, 256, (n, side, side)).astype(np.uint8)


def good(**overrides) -> dict:
    """A small valid image dataset (6x6, three classes, every class in every split), with overrides."""
    arrays = dict(
        x_train=images(N_TRAIN),
        y_train=np.arange(N_TRAIN) % CLASSES,
        x_test=images(N_TEST),
        y_test=np.arange(N_TEST) % CLASSES,
    )
    return {**arrays, **overrides}


def tabular(**overrides) -> dict:
    """Eight features per example, three classes: what the small test models take."""
    arrays = dict(
        x_train=RNG.random((N_TRAIN, 8)).astype(np.float32),
        y_train=np.arange(N_TRAIN) % CLASSES,
        x_test=RNG.random((N_TEST, 8)).astype(np.float32),
        y_test=np.arange(N_TEST) % CLASSES,
    )
    return {**arrays, **overrides}


def with_nan(array: np.ndarray, value: float = np.nan) -> np.ndarray:
    array = array.astype(np.float32)
    array.flat[17] = value
    return array


def npz(root: Path, arrays: dict, name: str = "data.npz") -> Path:
    np.savez(root / name, **arrays)
    return root / name


def set_params(root: Path, **sections) -> None:
    """Change keys of the project's params.yaml (the SMALL one make_project wrote)."""
    path = root / "project" / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for section, values in sections.items():
        params[section].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run_data(root: Path, arrays: dict, **sections) -> list[str]:
    set_params(root, **sections)
    return ["run", "--data", str(npz(root, arrays))]


@dataclass
class Case:
    id: str
    build: Callable  # (case dir) -> CLI args, or (case dir, models dir) -> CLI args when needs_models
    expect: str  # a distinctive piece of the one error line
    env: dict | None = None
    needs_models: bool = False


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root (files, folders, links) with the sha256 of each file's content."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            relative = str(path.relative_to(root))
            if path.is_symlink():
                found[relative] = "link:" + os.readlink(path)
            elif path.is_file():
                found[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[relative] = "dir"
    return found


def check_bad_input(case: Case, tmp_path: Path, request) -> None:
    """Run the case's command in a fresh SMALL project: one error line, exit 2, nothing written."""
    make_project(tmp_path / "project", reference={"dir": None}, **{k: v for k, v in SMALL.items() if k != "reference"})
    args = case.build(tmp_path, request.getfixturevalue("models")) if case.needs_models else case.build(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli(args, cwd=tmp_path / "project", env=case.env, timeout=300)
    output = result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, output[-3000:]
    assert len(lines) == 1 and lines[0].startswith("tinyopt: error: "), output[-3000:]
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in output
    assert "s3cret" not in output
    assert snapshot(tmp_path) == before  # nothing written, changed or removed
