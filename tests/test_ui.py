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

from tests.conftest import TINYOPT, free_port, make_project, needs_fashion

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
        train={"epochs": 2, "early_stopping_patience": 0},  # two epochs: a curve, not a bar
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


def launch(playwright):
    return playwright.chromium.launch(
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


def running_parent(client, experiment_name: str, pipeline, timeout: float = 300):
    """The pipeline's parent run, once it is there and RUNNING (its flow has started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pipeline.poll() is None:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is not None:
            runs = client.search_runs([experiment.experiment_id], "tags.kind = 'pipeline'")
            if runs and runs[0].info.status == "RUNNING":
                return experiment.experiment_id, runs[0]
        time.sleep(0.5)
    pytest.fail("the pipeline's MLflow run was not RUNNING while the pipeline ran")


def test_parent_and_variant_runs_are_visible_in_the_browser(ui):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    root, url, runs_url = ui
    client = MlflowClient(url)
    # The pipeline runs in the background: its run is watched in the browser while it is RUNNING.
    log = (root / "pipeline.log").open("w")
    pipeline = subprocess.Popen(
        TINYOPT + ["run"],
        cwd=root,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "MLFLOW_TRACKING_URI": url},
    )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = launch(playwright)
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            experiment, parent_run = running_parent(client, "tinyopt", pipeline)
            page.goto(f"{url}/#/experiments/{experiment}/runs/{parent_run.info.run_id}?workflowType=machine_learning")
            page.get_by_text(parent_run.info.run_name).first.wait_for(timeout=60_000)
            page.get_by_text("Running", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "mlflow-running.png"), full_page=True)
            assert pipeline.wait(timeout=600) == 0, (root / "pipeline.log").read_text()[-3000:]
        finally:
            if pipeline.poll() is None:
                pipeline.kill()
            log.close()
        summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
        assert summary["mlflow_run_id"] == parent_run.info.run_id
        assert runs_url == f"{url}/#/experiments/{experiment}/runs?workflowType=machine_learning"
        # The server tells the UI it serves not to send usage data (an offline tool).
        telemetry = urllib.request.urlopen(f"{url}/ajax-api/3.0/mlflow/ui-telemetry").read()
        assert json.loads(telemetry)["disable_ui_telemetry"]

        page.goto(runs_url)  # what `tinyopt ui` printed
        parent = page.get_by_role("row").filter(has_text=f"pipeline {summary['run_id']}")
        parent.first.wait_for(timeout=60_000)
        # The runs table of the model-training view, not the GenAI overview's traces; no telemetry notice.
        assert "workflowType=machine_learning" in page.url  # still, after the app's own redirects
        assert page.get_by_text("Information about UI telemetry").count() == 0
        assert page.get_by_text("Overview", exact=True).count() == 0
        page.get_by_text("fashion-mnist").first.wait_for(timeout=60_000)  # the Dataset column
        page.screenshot(path=str(SCREENSHOTS / "mlflow-runs-first-view.png"), full_page=True)
        parent.first.locator("button").first.click()  # expand the parent: its variant runs are nested in it
        for variant in summary["variants"]:
            page.get_by_role("row").filter(has_text=variant["name"]).first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-experiment.png"), full_page=True)
        for variant in summary["variants"]:
            page.goto(f"{url}/#/experiments/{experiment}/runs/{variant['mlflow_run_id']}?workflowType=machine_learning")
            page.get_by_text(variant["name"]).first.wait_for(timeout=60_000)
            for metric in ("gzip_bytes", "arena_bytes", "accuracy"):  # its metrics are shown
                page.get_by_text(metric, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / f"mlflow-{variant['name']}.png"), full_page=True)
        # The baseline's chart view: a per-epoch curve of its training.
        baseline_run = summary["baseline"]["mlflow_run_id"]
        page.goto(f"{url}/#/experiments/{experiment}/runs/{baseline_run}/model-metrics?workflowType=machine_learning")
        page.get_by_placeholder("Search metric charts").fill("train.loss")
        page.get_by_text("train.loss", exact=True).first.wait_for(timeout=60_000)
        page.locator(".js-line").first.wait_for(timeout=60_000)  # a line over the epochs (one point draws a bar)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-chart-view.png"), full_page=True)
        # The Models tab: every variant as a logged model.
        page.goto(f"{url}/#/experiments/{experiment}/models?workflowType=machine_learning")
        for variant in summary["variants"]:
            page.get_by_text(variant["name"], exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=str(SCREENSHOTS / "mlflow-models.png"), full_page=True)
        browser.close()
    assert (SCREENSHOTS / "mlflow-experiment.png").stat().st_size > 10_000
