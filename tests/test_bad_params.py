"""Bad params.yaml files through `run`: wrong types (booleans for numbers, text for integers), keys
given twice, unknown keys, values out of range, a top level that is not a mapping, invalid YAML,
an empty file, and bytes that are not UTF-8.

Each case must exit 2 with one `tinyopt: error: ...` line and write nothing (see
tests/bad_input_helpers.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_input_helpers import Case, check_bad_input


def params_text(root: Path, text: str) -> list[str]:
    (root / "project" / "params.yaml").write_text(text)
    return ["run"]


def params(id: str, text: str, expect: str) -> Case:
    return Case(id, lambda root: params_text(root, text), expect)


CASES = [
    # params.yaml.
    params("epochs-true", "train: {epochs: true}\n", "'train.epochs': Input should be a number, not true/false"),
    params("learning-rate-false", "train: {learning_rate: false}\n", "'train.learning_rate': Input should be a number"),
    params(
        "fraction-true", "data: {validation_fraction: true}\n", "'data.validation_fraction': Input should be a number"
    ),
    params("key-twice", "train:\n  epochs: 3\n  epochs: 30\n", "the key 'epochs' is given twice in one mapping"),
    params("section-twice", "seed: 1\ntrain: {epochs: 2}\ntrain: {epochs: 3}\n", "the key 'train' is given twice"),
    params("a-list", "- seed\n- data\n", "the top level must be a mapping"),
    params("a-string", "just some text\n", "the top level must be a mapping"),
    params("wrong-type", "train: {batch_size: big}\n", "'train.batch_size': Input should be a valid integer"),
    params("fractional-seed", "seed: 1.5\n", "'seed': Input should be a valid integer, got a number with a fractional"),
    params("unknown-key", "train: {epoch: 3}\n", "unknown key 'train.epoch'"),
    params(
        "negative-fraction",
        "data: {validation_fraction: -0.1}\n",
        "'data.validation_fraction': Input should be greater than 0",
    ),
    params("section-not-a-mapping", "train: 5\n", "'train': Input should be a valid dictionary"),
    params("bad-yaml", "train:\n  epochs: [1,\n", "not valid YAML at line"),
    params("empty-file", "", "params.yaml: empty file"),
    Case(
        "not-utf8",
        lambda root: (root / "project" / "params.yaml").write_bytes(b"seed: \xff\xfe\n") and ["run"],
        "cannot be read as text",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    check_bad_input(case, tmp_path, request)
