"""Bad inputs on tinyopt's MLflow side through the real CLI: run summaries given to `register` that
are empty, corrupt, binary or not tinyopt's, and an MLFLOW_TRACKING_URI with credentials (never
printed, for `run` and `ui`) or a port that is not a number.

Each case must exit 2 with one `tinyopt: error: ...` line and write nothing (see
tests/bad_input_helpers.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bad_input_helpers import Case, check_bad_input, good, npz


def summary_file(content: bytes) -> Callable[[Path], list[str]]:
    def build(root: Path) -> list[str]:
        (root / "summary.json").write_bytes(content)
        return ["register", "--summary", str(root / "summary.json")]

    return build


SECRET_URI = "http://alice:s3cret-token@127.0.0.1:9"

CASES = [
    # register.
    Case("register-empty-summary", summary_file(b""), "not a readable run summary (empty file)"),
    Case(
        "register-corrupt-summary",
        summary_file(b'{"run_id": "x", "variants": ['),
        "not a readable run summary (not JSON",
    ),
    Case("register-summary-a-list", summary_file(b"[1, 2]"), "not a tinyopt run summary"),
    Case(
        "register-summary-missing-keys",
        summary_file(json.dumps({"run_id": "x"}).encode()),
        "not a tinyopt run summary (missing or malformed: variants, picks",
    ),
    Case("register-summary-binary", summary_file(b"\x89PNG\r\n\x1a\n" + os.urandom(64)), "not a readable run summary"),
    # Credentials in MLFLOW_TRACKING_URI are never printed (the server does not answer: one line).
    Case(
        "tracking-uri-credentials",
        lambda root: ["run", "--data", str(npz(root, good()))],
        "MLflow tracking server http://alice:***@127.0.0.1:9 is unreachable",
        env={"MLFLOW_TRACKING_URI": SECRET_URI},
    ),
    Case(
        "tracking-uri-credentials-ui",
        lambda root: ["ui"],
        "points at a server already (http://alice:***@127.0.0.1:9)",
        env={"MLFLOW_TRACKING_URI": SECRET_URI},
    ),
    Case(
        "tracking-uri-bad-port",
        lambda root: ["run", "--data", str(npz(root, good()))],
        "MLFLOW_TRACKING_URI http://alice:***@host:port is not a valid URL",
        env={"MLFLOW_TRACKING_URI": "http://alice:s3cret-token@host:port"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case: Case, tmp_path: Path, request):
    check_bad_input(case, tmp_path, request)
