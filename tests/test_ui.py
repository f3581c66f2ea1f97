"""The MLflow UI in a real browser: `tinyopt ui` serves the project's store and prints where its runs
are, a pipeline logs to it over HTTP, and headless Chromium opens that URL as a new user would: the
runs table in the model-training view (not MLflow 3's GenAI overview), no telemetry banner, the parent
run and its variant child runs with their metrics."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port, make_project, needs_fashion, run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    needs_fashion,
    pytest.mark.skipif(not CHROMIUM, reason="needs Debian's chromium (make setup installs it as root)"),
]
SCREENSHOTS = Path(os.environ.get("TINYOPT_TEST_ARTIFACTS", "test-artifacts"))


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """`tinyopt ui` on loopback, in its own process group (MLflow starts helper processes)."""
    root = make_project(
        tmp_path_factory.mktemp("ui-project"),
        seed=5,
        data={"train_limit": 600, "test_limit": 200},
        train={"epochs": 1},
        plan=[["float32"], ["int8"]],
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20},
    )
    port = free_port()
    printed = root / "ui.out"
    with printed.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "tinyopt", "ui", "--port", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300  # MLflow starts four workers and its job runner: minutes on a busy 2-core machine
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            break
        except OSError:
            time.sleep(0.5)
    else:
        os.killpg(server.pid, signal.SIGTERM)
        pytest.fail("the MLflow UI did not start in 300 s")
    runs_url = printed.read_text().splitlines()[1]
    yield root, url, runs_url
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=30)


def test_parent_and_variant_runs_are_visible_in_the_browser(ui):
    from playwright.sync_api import sync_playwright

    root, url, runs_url = ui
    result = run_cli(["run"], cwd=root, env={"MLFLOW_TRACKING_URI": url})
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
    from mlflow.tracking import MlflowClient

    experiment = MlflowClient(url).get_experiment_by_name(summary["mlflow_experiment"]).experiment_id
    assert runs_url == f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
    # The server tells the UI it serves not to send usage data (an offline tool).
    assert json.loads(urllib.request.urlopen(f"{url}/ajax-api/3.0/mlflow/ui-telemetry").read())["disable_ui_telemetry"]
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--disable-sync",
            ],
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(runs_url)  # what `tinyopt ui` printed
        parent = page.get_by_role("row").filter(has_text=f"pipeline {summary['run_id']}")
        parent.first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-runs-first-view.png"), full_page=True)
        # The runs table of the model-training view, not the GenAI overview's traces; no telemetry notice.
        assert "workflowType=machine_learning" in page.url  # still, after the app's own redirects
        assert page.get_by_text("Information about UI telemetry").count() == 0
        assert page.get_by_text("Overview", exact=True).count() == 0
        parent.first.locator("button").first.click()  # expand the parent: its variant runs are nested in it
        for variant in summary["variants"]:
            page.get_by_role("row").filter(has_text=variant["name"]).first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-experiment.png"), full_page=True)
        for variant in summary["variants"]:
            page.goto(f"{url}/#/experiments/{experiment}/runs/{variant['mlflow_run_id']}")
            page.get_by_text(variant["name"]).first.wait_for(timeout=60_000)
            for metric in ("gzip_bytes", "arena_bytes", "accuracy"):  # its metrics are shown
                page.get_by_text(metric, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / f"mlflow-{variant['name']}.png"), full_page=True)
        browser.close()
    assert (SCREENSHOTS / "mlflow-experiment.png").stat().st_size > 10_000
