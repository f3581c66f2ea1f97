"""Scheduled re-optimization on a real Prefect server (`prefect server start` on loopback): `tinyopt
serve` creates the nightly and on-demand deployments and runs what the scheduler creates; then the
same deployments on a work pool, run by a real `prefect worker` process."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BUCKET, SMALL, TINYOPT, free_port, make_project, needs_fashion, wait_for_port

pytestmark = [pytest.mark.slow, needs_fashion]
PREFECT = [sys.executable, "-m", "prefect"]


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """A real Prefect server (API, scheduler and the other services) on loopback, with its own database."""
    port = free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path_factory.mktemp("prefect-server")),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PREFECT_API_URL", None)
    log = tmp_path_factory.mktemp("logs") / "prefect-server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [*PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    wait_for_port(port, timeout=120)
    yield f"http://127.0.0.1:{port}/api"
    server.send_signal(signal.SIGINT)
    server.wait(timeout=30)


def stop(process: subprocess.Popen, grace: float = 60) -> None:
    """Ctrl-C, as a person stops `tinyopt serve` or a worker; killed if it is not gone after `grace` seconds
    (under the parallel suite both have taken longer than a minute to stop: what they test is done by then)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def next_minute_cron(margin_seconds: int = 25) -> tuple[str, dt.datetime]:
    """A daily cron (a nightly schedule's shape) for the first whole minute at least `margin_seconds` away."""
    now = dt.datetime.now(dt.UTC)
    slot = (now + dt.timedelta(seconds=margin_seconds + 60)).replace(second=0, microsecond=0)
    return f"{slot.minute} {slot.hour} * * *", slot


@pytest.fixture(scope="module")
def project(tmp_path_factory, s3_endpoint, keys, prefect_api) -> tuple[Path, dict]:
    cron, slot = next_minute_cron()
    root = make_project(
        tmp_path_factory.mktemp("project"),
        seed=5,
        data={"train_limit": 1000, "test_limit": 300},
        train={"epochs": 1},
        conversion={"calibration_samples": 64},
        plan=[["float32"], ["int8"]],
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20},
        fleet={"bucket": BUCKET, "endpoint_url": s3_endpoint},
        schedule={"cron": cron, "timezone": "UTC", "objective": "best-on-nano33ble", "channel": "stable"},
    )
    env = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "TINYOPT_SIGNING_KEY_FILE": str(keys[0]),
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
    }
    return root, {"env": env, "slot": slot, "cron": cron, "s3": s3_endpoint}


def flow_runs(api_url: str, deployment: str) -> list[dict]:
    """The flow runs of a deployment (`flow/name`), from the server's REST API."""
    import httpx

    body = {
        "deployments": {"name": {"any_": [deployment.split("/")[1]]}},
        "sort": "EXPECTED_START_TIME_ASC",
        "limit": 50,
    }
    response = httpx.post(f"{api_url}/flow_runs/filter", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def read_deployment(api_url: str, deployment: str) -> dict:
    import httpx

    response = httpx.get(f"{api_url}/deployments/name/{deployment}", timeout=30)
    response.raise_for_status()
    return response.json()


def wait_for_run(api_url: str, deployment: str, timeout: float, runner: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert runner.poll() is None, f"the serve process exited: {log.read_text()[-3000:]}"
        runs = flow_runs(api_url, deployment)
        finished = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
        if finished:
            return finished[0]
        time.sleep(5)
    raise AssertionError(f"no run of {deployment} finished in {timeout:.0f} s: {runs}")


def run_on_demand(env: dict, log: Path) -> None:
    """Start the on-demand deployment through Prefect's CLI and wait for it to finish."""
    done = subprocess.run(
        [*PREFECT, "deployment", "run", "reoptimize/on-demand", "--watch", "--watch-timeout", "300"],
        env=env,
        capture_output=True,
        text=True,
        timeout=360,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:] + log.read_text()[-3000:]


def decisions(root: Path) -> list[dict]:
    files = sorted((root / "reports").glob("*/reoptimize.json"), key=lambda p: p.stat().st_mtime)
    return [json.loads(p.read_text()) for p in files]


def test_serve_runs_the_nightly_schedule_then_an_on_demand_run(project):
    root, ctx = project
    env = ctx["env"]
    log = root / "serve.log"
    with log.open("w") as out:
        serve = subprocess.Popen([*TINYOPT, "serve"], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        # The server's scheduler creates the nightly run; the serve process runs it.
        api_url = env["PREFECT_API_URL"]
        run = wait_for_run(
            api_url,
            "reoptimize/nightly",
            timeout=(ctx["slot"] - dt.datetime.now(dt.UTC)).seconds + 300,
            runner=serve,
            log=log,
        )
        assert run["state_type"] == "COMPLETED", log.read_text()[-4000:]
        assert run["auto_scheduled"] and dt.datetime.fromisoformat(run["expected_start_time"]) == ctx["slot"]
        assert run["parameters"] == {"params_path": str((root / "params.yaml").resolve())}
        schedules = [s["schedule"] for s in read_deployment(api_url, "reoptimize/nightly")["schedules"]]
        assert [(s["cron"], s["timezone"]) for s in schedules] == [(ctx["cron"], "UTC")]

        (first,) = decisions(root)
        assert first["replace"] and first["why"].startswith("nothing in production yet"), first
        assert first["published"]["status"] == "published" and first["registered"]["version"] == 1
        from mlflow.tracking import MlflowClient

        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        production = client.get_model_version_by_alias(first["model_name"], "production")
        assert int(production.version) == 1 and production.tags["variant"] == first["pick"]
        import boto3

        s3 = boto3.client("s3", endpoint_url=ctx["s3"], region_name="us-east-1")
        from tinyopt.release.signing import peek

        manifest = peek(s3.get_object(Bucket=BUCKET, Key="fleet/channels/stable/manifest.json")["Body"].read())
        assert (manifest["sha256"], manifest["channel"], manifest["sequence"]) == (
            production.tags["sha256"],
            "stable",
            1,
        )

        # On demand: the same data and params, so every step comes from the cache and the pick is what
        # production serves already: nothing is registered or published.
        started = time.monotonic()
        run_on_demand(env, log)
        second = decisions(root)[-1]
        assert not second["replace"] and "the same model as the new pick" in second["why"], second
        assert second["registered"] is None and second["published"] is None
        assert second["production"]["version"] == 1
        # Keeping production re-checks its channel: the manifest verifies and is fresh, so nothing is re-signed.
        assert second["refreshed"]["status"] == "unchanged" and second["refreshed"]["sequence"] == 1, second
        print(f"on-demand run (every step cached): {time.monotonic() - started:.1f} s")
    finally:
        stop(serve)


def test_deploy_to_a_work_pool_run_by_a_worker(project):
    root, ctx = project
    env = ctx["env"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["schedule"]["cron"] = None  # on demand only: no nightly deployment is (re)created
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = subprocess.run(
        [*TINYOPT, "deploy", "--pool", "tinyopt-test"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "deployed reoptimize/on-demand to pool tinyopt-test" in done.stdout
    deployment = read_deployment(env["PREFECT_API_URL"], "reoptimize/on-demand")
    pool = [deployment[k] for k in ("work_pool_name", "job_variables", "entrypoint")] + [len(deployment["schedules"])]
    assert pool == [
        "tinyopt-test",
        {
            "working_dir": str(root.resolve()),
            "env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(root.resolve() / ".tinyopt" / "prefect-results")},
        },
        "flows.reoptimize.reoptimize",
        0,
    ]

    log = root / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(
            [*PREFECT, "worker", "start", "--pool", "tinyopt-test", "--type", "process"],
            cwd="/",
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        before = len(decisions(root))
        run_on_demand(env, log)
        assert len(decisions(root)) == before + 1  # it ran in the project (working_dir), though the worker is in /
        assert not decisions(root)[-1]["replace"]
    finally:
        stop(worker)


def test_serve_without_a_server_says_so_in_one_line(tmp_path):
    # Compare only (no channel): `serve` would check the fleet's S3 endpoint before the Prefect server.
    root = make_project(tmp_path, **SMALL, schedule={"channel": None})
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api"}
    done = subprocess.run([*TINYOPT, "serve"], cwd=root, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is unreachable" in done.stderr and "PREFECT_API_URL" in done.stderr
    env.pop("PREFECT_API_URL")
    done = subprocess.run(
        [*TINYOPT, "deploy", "--pool", "p"],
        cwd=root,
        env={**env, "PREFECT_HOME": str(tmp_path / "ph")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "need a Prefect server" in done.stderr and done.stderr.count("\n") == 1, done.stderr
