"""Servers that do not answer, through the real CLI: every command that talks to MLflow or to the fleet's
S3 bucket, with the MLflow tracking server or the S3 endpoint on a closed loopback port and a password
in its URL (and AWS_SECRET_ACCESS_KEY set). Each must fail within seconds, not after minutes of retries,
with one `tinyopt: error: ...` line, exit 2, no password anywhere and nothing written (see
tests/bad_input_helpers.py). Also: a server that answers its health check but fails every request, and the
masking of credentials in log records and in a bug's traceback.
"""

from __future__ import annotations

import http.server
import logging
import os
import threading
import time
from pathlib import Path
from unittest import mock

import pytest

from tests.bad_input_helpers import Case, check_bad_input, good, npz, set_params
from tests.conftest import free_port, make_project, run_cli

CLOSED = free_port()  # nothing listens there: connections are refused at once
MLFLOW_DOWN = {"MLFLOW_TRACKING_URI": f"http://alice:s3cret-token@127.0.0.1:{CLOSED}"}
# S3's own secret, which no message may show either (the local MLflow store: only S3 is remote).
S3_DOWN = {
    "AWS_ACCESS_KEY_ID": "fleet-user",
    "AWS_SECRET_ACCESS_KEY": "s3cret-aws-key",
    "AWS_DEFAULT_REGION": "us-east-1",
}
S3_ENDPOINT = f"http://fleet:s3cret-fleet@127.0.0.1:{CLOSED}"
MLFLOW_SAYS = f"MLflow tracking server http://alice:***@127.0.0.1:{CLOSED} is unreachable"
S3_SAYS = f"S3 endpoint http://fleet:***@127.0.0.1:{CLOSED} is unreachable"
QUICK = 60  # seconds: generous for a slow machine; retrying clients took 280 to 500 s


def fleet_down(args: list[str]):
    """The command, in a project whose fleet bucket is on the closed port (`serve` publishes to
    schedule.channel, stable, so it needs the bucket too)."""

    def build(root: Path) -> list[str]:
        set_params(root, fleet={"endpoint_url": S3_ENDPOINT})
        return args

    return build


def with_public_key(args: list[str]):
    def build(root: Path) -> list[str]:
        from tinyopt.release.signing import generate_keys

        _, public = generate_keys(root / "keys")
        return fleet_down([*args, "--public-key", str(public), "--into", str(root / "device")])(root)

    return build


def register_args(root: Path) -> list[str]:
    """A valid run summary of one variant: `register` gets as far as the registry."""
    from tests.fleet_attack_helpers import toy_summary

    tflite = root / "pick.tflite"
    tflite.write_bytes(b"TFL3" * 64)
    with mock.patch.dict(os.environ, {"MLFLOW_TRACKING_URI": "sqlite:///unused.db"}):
        summary = toy_summary("pick", tflite, 0.9, "0" * 32)
    (root / "summary.json").write_text(summary.model_dump_json())
    return ["register", "--summary", str(root / "summary.json"), "--variant", "pick"]


def run_args(command: str):
    return lambda root: [command, "--data", str(npz(root, good()))]


PROMOTE = ["promote", "some-model", "--version", "1", "--channel", "canary"]
CASES = [
    # MLflow's server does not answer (the fleet's endpoint does not either: MLflow is checked first).
    Case("mlflow-run", run_args("run"), MLFLOW_SAYS, env=MLFLOW_DOWN),
    Case("mlflow-search", run_args("search"), MLFLOW_SAYS, env=MLFLOW_DOWN),
    Case("mlflow-serve", fleet_down(["serve"]), MLFLOW_SAYS, env=MLFLOW_DOWN),
    Case("mlflow-register", register_args, MLFLOW_SAYS, env=MLFLOW_DOWN),
    Case("mlflow-promote", fleet_down(PROMOTE), MLFLOW_SAYS, env=MLFLOW_DOWN),
    Case("mlflow-rollback", fleet_down(["rollback", "canary"]), MLFLOW_SAYS, env=MLFLOW_DOWN),
    # The fleet's S3 endpoint does not answer (MLflow is the local store).
    Case("s3-serve", fleet_down(["serve"]), S3_SAYS, env=S3_DOWN),
    Case("s3-promote", fleet_down(PROMOTE), S3_SAYS, env=S3_DOWN),
    Case("s3-rollback", fleet_down(["rollback", "canary"]), S3_SAYS, env=S3_DOWN),
    Case("s3-status", fleet_down(["status"]), S3_SAYS, env=S3_DOWN),
    Case("s3-verify", with_public_key(["verify", "--channel", "canary"]), S3_SAYS, env=S3_DOWN),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_unreachable_server_is_one_line_within_seconds(case: Case, tmp_path: Path, request):
    started = time.monotonic()
    check_bad_input(case, tmp_path, request)  # exit 2, one line, no traceback, no "s3cret", nothing written
    assert time.monotonic() - started < QUICK


class _HealthyButFailing(http.server.BaseHTTPRequestHandler):
    """An MLflow server that answers its health check and fails every API request (503)."""

    def do_GET(self):
        self._answer(200 if self.path == "/health" else 503)

    def do_POST(self):
        self._answer(503)

    def _answer(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"no")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def failing_mlflow():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthyButFailing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://alice:s3cret-token@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_register_on_a_failing_server_is_one_line_with_bounded_retries(failing_mlflow, tmp_path):
    """MLflow would retry each request 7 times over minutes; bounded, the failure is one line in seconds."""
    make_project(tmp_path / "project")
    args = register_args(tmp_path)
    started = time.monotonic()
    result = run_cli(args, cwd=tmp_path / "project", env={"MLFLOW_TRACKING_URI": failing_mlflow}, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 2, output[-3000:]
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("tinyopt: error: the model registry"), output
    assert "s3cret" not in output and "Traceback" not in output
    assert time.monotonic() - started < QUICK


def test_shown_masks_passwords_in_urls_and_secret_values(monkeypatch):
    from tinyopt.core.masking import shown

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://admin:hunter%402@mlflow.example")
    text = (
        "HTTPConnectionPool: Max retries exceeded with url http://admin:hunter@2@mlflow:5000/api/2.0 "
        "(caused by 'http://tok@s3.local/b'); signature wJalrXUtnFEMI/K7MDENG; login hunter%402; "
        "contact ops@example.com at https://example.com/a@b"
    )
    assert shown(text) == (
        "HTTPConnectionPool: Max retries exceeded with url http://admin:***@mlflow:5000/api/2.0 "
        "(caused by 'http://***@s3.local/b'); signature ***; login ***; "
        "contact ops@example.com at https://example.com/a@b"
    )


def test_every_log_record_is_masked_once_installed(tmp_path):
    """A library's record (message, arguments and traceback), through a handler on the root logger."""
    from tinyopt.core import masking

    before = logging.getLogRecordFactory()
    stream = tmp_path / "log.txt"
    handler = logging.FileHandler(stream)
    logging.getLogger().addHandler(handler)
    try:
        masking.install()
        masking.install()  # idempotent: one mask, not a mask of a mask
        logger = logging.getLogger("urllib3.connectionpool")
        logger.warning("Retrying %s", "http://alice:s3cret-token@127.0.0.1:9/api")
        try:
            raise ConnectionError("Max retries exceeded: http://alice:s3cret-token@127.0.0.1:9/api")
        except ConnectionError:
            logger.exception("request failed")
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
        logging.setLogRecordFactory(before)
    logged = stream.read_text()
    assert "Retrying http://alice:***@127.0.0.1:9/api" in logged
    assert "ConnectionError: Max retries exceeded: http://alice:***@127.0.0.1:9/api" in logged
    assert "s3cret" not in logged
