"""Reading what a pipeline run left behind: its progress lines, its summary, its MLflow store."""

from __future__ import annotations

import json
import re
from pathlib import Path


def finished_steps(log: str) -> list[tuple[str, str]]:
    """(task run name, outcome) for each progress line of a run: `[12/57 1m32s] convert qat-int8 cached`."""
    return re.findall(r"\[\d+/\d+ \d+m\d\ds\] (.+?) (done|cached|failed)(?: \(running: .*\))?$", log, re.M)


def progress_counts(log: str) -> list[tuple[int, int]]:
    """(steps done, total) of each progress line, in order."""
    return [(int(done), int(total)) for done, total in re.findall(r"^.*?\[(\d+)/(\d+) \d+m\d\ds\] ", log, re.M)]


def summary_of(root: Path) -> dict:
    return json.loads((root / "reports" / "latest" / "summary.json").read_text())


def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
