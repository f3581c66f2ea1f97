"""Reading what a pipeline run left behind: its progress lines, its summary, its MLflow store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path


def finished_steps(log: str) -> list[tuple[str, str]]:
    """(task run name, outcome) for each progress line of a run: `[12/57 1m32s] convert qat-int8 cached`."""
    return re.findall(r"\[\d+/\d+ \d+m\d\ds\] (.+?) (done|cached|failed)(?: \(running: .*\))?$", log, re.M)


def progress_counts(log: str) -> list[tuple[int, int]]:
    """(steps done, total) of each progress line, in order."""
    return [(int(done), int(total)) for done, total in re.findall(r"^.*?\[(\d+)/(\d+) \d+m\d\ds\] ", log, re.M)]


def skipped_steps(log: str) -> int:
    """The steps the progress lines counted as skipped (`[7/57 0m12s] prune skipped (3 steps)`)."""
    found = re.findall(r"\[\d+/\d+ \d+m\d\ds\] .+? skipped(?: \((\d+) steps\))?$", log, re.M)
    return sum(int(steps or 1) for steps in found)


def summary_of(root: Path) -> dict:
    return json.loads((root / "reports" / "latest" / "summary.json").read_text())


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")


def run_flow_script(source: str, tmp_path: Path) -> str:
    """Run a Python script holding a Prefect flow in a fresh process with its own Prefect home and result store
    under tmp_path (its one argument); the last line it printed."""
    script = tmp_path / "flow_script.py"
    script.write_text(source)
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "300",  # a busy 2-core machine
    }
    env.pop("PREFECT_API_URL", None)
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip().splitlines()[-1]
