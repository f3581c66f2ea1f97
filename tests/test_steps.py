"""What a step's cache key sees: input files by content, including the user's files a params section names."""

from __future__ import annotations

import numpy as np

from tests.flow_helpers import run_flow_script
from tinyopt.orchestration.cache import _fingerprint
from tinyopt.params import DataParams, ModelParams


def test_a_params_section_naming_a_file_changes_key_when_the_file_changes(tmp_path):
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=np.zeros((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)), y_test=np.zeros(2))
    params = DataParams(dataset="npz", path=str(data))
    before = _fingerprint(params)
    assert _fingerprint(params) == before  # same file, same key
    np.savez(data, x_train=np.ones((4, 2)), y_train=np.zeros(4), x_test=np.zeros((2, 2)), y_test=np.zeros(2))
    assert _fingerprint(params) != before  # new data at the same path: the steps run again

    model = tmp_path / "model.h5"
    model.write_bytes(b"v1")
    first = _fingerprint(ModelParams(path=str(model)))
    model.write_bytes(b"v2")
    assert _fingerprint(ModelParams(path=str(model))) != first
    assert _fingerprint(DataParams()) == DataParams().model_dump_json()  # no path: the settings alone


CACHED_STEP = """
import sys
from pathlib import Path

from prefect import flow

from tinyopt.orchestration.steps import step
from tinyopt.records.steps import StepRecord, outputs_of

root = Path(sys.argv[1])


@step()
def shout(source: Path, out: Path) -> StepRecord:
    out.write_text(source.read_text().upper())
    with (root / "runs.log").open("a") as log:
        log.write("ran\\n")
    return StepRecord(outputs=outputs_of(out))


@flow
def once():
    shout.task(source=root / "in.txt", out=root / "out.txt")


def runs():
    once()
    return len((root / "runs.log").read_text().splitlines())


(root / "in.txt").write_text("hello")
seen = [runs(), runs()]  # the first runs, the second is cached
(root / "out.txt").unlink()
seen.append(runs())  # a deleted output: runs again
(root / "out.txt").write_text("tampered")
seen += [runs(), runs()]  # a changed output: runs again, then cached
(root / "in.txt").write_text("bye")
seen.append(runs())  # a changed input file: runs again
(root / "out.txt").unlink()
seen += [runs(), runs()]  # deleted a second time: runs again, then cached
print(seen, (root / "out.txt").read_text())
"""


def test_the_step_cache_reruns_a_step_whose_output_or_input_file_changed(tmp_path):
    """A real Prefect flow, run in a fresh process with its own Prefect home."""
    assert run_flow_script(CACHED_STEP, tmp_path) == "[1, 1, 2, 3, 3, 4, 5, 5] BYE"
