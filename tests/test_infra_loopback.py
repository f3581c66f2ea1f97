"""infra/'s compose wiring run for real on loopback (Docker does not run here): the compose file's
commands and variables with PostgreSQL from Debian as the backend of MLflow and of Prefect, an S3 HTTP
endpoint (moto) for MLflow's artifacts, and the pipeline against them. tests/test_infra_compose.py
checks the same files statically."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port, make_project, needs_fashion, run_cli, wait_for_port
from tests.infra_helpers import COMPOSE, INFRA, dotenv, interpolate

POSTGRES_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if Path("/usr/lib/postgresql").is_dir()
    else None
)
needs_postgres = pytest.mark.skipif(POSTGRES_BIN is None, reason="needs Debian's postgresql (make setup installs it)")


def as_postgres_user(command: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package brings the `postgres` user.
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def loopback(tmp_path_factory, s3_endpoint):
    """Every compose service that serves something, started on loopback from the compose file's own
    commands and variables, with service host names mapped to 127.0.0.1 ports."""
    import boto3

    base = tmp_path_factory.mktemp("infra")
    env_file = dotenv()
    ports = {"postgres": free_port(), "mlflow": free_port(), "prefect-server": free_port()}
    env_file["MLFLOW_PORT"] = str(ports["mlflow"])
    services = interpolate(COMPOSE, env_file)["services"]

    def on_loopback(text: str) -> str:
        text = text.replace("http://minio:9000", s3_endpoint)
        for service, port in ports.items():
            text = re.sub(rf"(?<=[/@]){service}:\d+", f"127.0.0.1:{port}", text)
        return text

    processes = []
    data = Path(tempfile.mkdtemp(prefix="tinyopt-pgdata-"))  # not under pytest's root-only base directory
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    user = env_file["POSTGRES_USER"]
    subprocess.run(
        as_postgres_user([str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", user, "--auth=trust"]),
        check=True,
        capture_output=True,
    )
    postgres = subprocess.Popen(
        as_postgres_user(
            [
                str(POSTGRES_BIN / "postgres"),
                "-D",
                str(data),
                "-h",
                "127.0.0.1",
                "-p",
                str(ports["postgres"]),
                "-k",
                str(data),
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    processes.append(postgres)
    wait_for_port(ports["postgres"])
    pg_env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(ports["postgres"]),
        "PGUSER": user,
        **services["postgres"]["environment"],
        "PATH": f"{POSTGRES_BIN}:{os.environ['PATH']}",
    }
    # What the postgres image's entrypoint does on a new volume: POSTGRES_DB, then the init scripts.
    subprocess.run(["createdb", pg_env["POSTGRES_DB"]], env=pg_env, check=True)
    init = subprocess.run(["sh", str(INFRA / "postgres" / "init.sh")], env=pg_env, capture_output=True, text=True)
    assert init.returncode == 0, init.stderr
    # The MinIO setup's buckets (moto does not enforce IAM policies; their content is checked statically).
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1")
    for bucket in (env_file["MLFLOW_BUCKET"], env_file["FLEET_BUCKET"]):
        if bucket != "tinyopt-fleet-test":
            s3.create_bucket(Bucket=bucket)

    logs = {}
    for name, port in (("mlflow", 5000), ("prefect-server", 4200)):
        service = services[name]
        command = on_loopback(service["command"]).replace("--host 0.0.0.0", "--host 127.0.0.1")
        command = command.replace(f"--port {port}", f"--port {ports[name]}")
        env = {
            **os.environ,
            **{k: on_loopback(str(v)) for k, v in service["environment"].items()},
            "PREFECT_HOME": str(base / "prefect-home"),
        }
        env.pop("PREFECT_API_URL", None)
        logs[name] = base / f"{name}.log"
        argv = shlex.split(command)
        argv = [str(Path(sys.executable).parent / argv[0]), *argv[1:]]  # the venv's mlflow / prefect
        with logs[name].open("w") as out:
            processes.append(subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT))
    for name in ("mlflow", "prefect-server"):
        try:
            wait_for_port(ports[name], timeout=120)
        except TimeoutError:
            raise AssertionError(logs[name].read_text()[-3000:]) from None
    pipeline_env = {k: on_loopback(str(v)) for k, v in services["worker"]["environment"].items()}
    yield {"s3": s3, "env_file": env_file, "pg_env": pg_env, "pipeline_env": pipeline_env, "logs": logs}
    for process in reversed(processes):
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    shutil.rmtree(data, ignore_errors=True)


@pytest.mark.slow
@needs_fashion
@needs_postgres
def test_the_compose_wiring_runs_the_pipeline_on_postgres_and_s3(loopback, tmp_path, keys):
    env = {**loopback["pipeline_env"], "TINYOPT_SIGNING_KEY_FILE": str(keys[0])}
    root = make_project(
        tmp_path / "project",
        seed=9,
        data={"train_limit": 600, "test_limit": 200},
        train={"epochs": 1},
        conversion={"calibration_samples": 32},
        plan=[["float32"], ["int8"]],
        reference={"dir": None},
        benchmark={"latency_warmup": 2, "latency_repeats": 20},
    )
    # The `deploy` one-shot: deployments on the Prefect server, whose database is PostgreSQL.
    done = run_cli(
        ["deploy", "--pool", loopback["env_file"]["PREFECT_WORK_POOL"], "--params", str(root / "params.yaml")],
        cwd=root,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:] + loopback["logs"]["prefect-server"].read_text()[-2000:]
    # What the worker runs, with the worker's variables: tracking to MLflow on PostgreSQL, artifacts to S3.
    done = run_cli(["run"], cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:] + loopback["logs"]["mlflow"].read_text()[-2000:]
    summary = json.loads((root / "reports" / "latest" / "summary.json").read_text())
    assert summary["mlflow_tracking_uri"] == env["MLFLOW_TRACKING_URI"]

    def sql(database: str, query: str) -> list[str]:
        out = subprocess.run(
            ["psql", "-At", "-d", database, "-c", query],
            env=loopback["pg_env"],
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.split()

    env_file = loopback["env_file"]
    assert sql(env_file["MLFLOW_DB"], "select count(*) from runs") == [str(1 + len(summary["variants"]))]
    assert set(sql(env_file["PREFECT_DB"], "select name from deployment")) == {"on-demand", "nightly"}
    keys = [o["Key"] for o in loopback["s3"].list_objects_v2(Bucket=env_file["MLFLOW_BUCKET"]).get("Contents", [])]
    assert all(k.startswith("artifacts/") for k in keys)
    assert {"base-float32.tflite", "base-int8.tflite", "summary.json", "model.keras"} <= {
        k.rsplit("/", 1)[1] for k in keys
    }
    int8 = next(v for v in summary["variants"] if v["name"] == "base-int8")
    # The variant's files are its MLflow logged model's artifacts.
    stored = next(k for k in keys if k.endswith(f"/{int8['mlflow_model_id']}/artifacts/base-int8.tflite"))
    body = loopback["s3"].get_object(Bucket=env_file["MLFLOW_BUCKET"], Key=stored)["Body"].read()
    assert body == (root / int8["tflite"]).read_bytes()
