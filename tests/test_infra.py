"""infra/: the compose file's wiring, checked statically (Docker does not run here), then the same
commands and variables run for real on loopback: PostgreSQL from Debian as the backend of MLflow and
of Prefect, an S3 HTTP endpoint (moto) for MLflow's artifacts, and the pipeline against them."""

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
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, free_port, make_project, needs_fashion, run_cli, wait_for_port

INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def dotenv(path: Path = INFRA / ".env.example") -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:?message} and ${VAR:-default}, over a parsed compose value."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"${{{name}}} is not set" + (f": {arg}" if op == ":?" else ""))

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)


def variables_used() -> set[str]:
    return set(re.findall(r"\$\{(\w+)", (INFRA / "docker-compose.yml").read_text()))


# --- static checks -------------------------------------------------------------------------------


def test_every_variable_is_documented_and_every_reference_resolves():
    assert variables_used() <= set(dotenv()), variables_used() - set(dotenv())
    resolved = interpolate(COMPOSE, dotenv())  # raises on a variable without a value
    assert "${" not in json.dumps(resolved)
    with pytest.raises(KeyError, match="set POSTGRES_PASSWORD in infra/.env"):
        interpolate(COMPOSE, {k: v for k, v in dotenv().items() if k != "POSTGRES_PASSWORD"})


def test_services_and_their_dependencies():
    assert set(SERVICES) == {"postgres", "minio", "minio-setup", "mlflow", "prefect-server", "deploy", "worker"}
    for name, service in SERVICES.items():
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in SERVICES, f"{name} depends on unknown {dependency}"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[dependency], (
                    f"{name} waits for {dependency}'s health, which has no check"
                )
            if condition["condition"] == "service_completed_successfully":
                assert SERVICES[dependency].get("restart") is None, f"{dependency} is a one-shot: it must not restart"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{name} mounts {source}, which is not in infra/"
            else:
                assert source in COMPOSE["volumes"], f"{name} mounts undeclared volume {source}"
        build = service.get("build")
        if build:
            assert (INFRA / build["context"] / build["dockerfile"]).is_file()


def urls_to_services(text: str) -> list[tuple[str, int]]:
    """(service, port) of every scheme://[user:pass@]host:port in text whose host is a compose service."""
    return [
        (host, int(port)) for host, port in re.findall(r"://(?:[^@/\s]+@)?([\w-]+):(\d+)", text) if host in SERVICES
    ]


def test_clients_point_at_the_services_and_ports_that_serve_them():
    resolved = interpolate(COMPOSE, dotenv())
    services = resolved["services"]
    listens = {"postgres": 5432, "minio": 9000, "mlflow": 5000, "prefect-server": 4200}
    mlflow_command = services["mlflow"]["command"]
    assert "--port 5000" in mlflow_command and "--port 4200" in services["prefect-server"]["command"]
    pipeline = services["worker"]["environment"]
    assert pipeline == services["deploy"]["environment"]  # one definition (a YAML anchor)
    wiring = {
        "mlflow backend": (mlflow_command, "postgres"),
        "mlflow artifacts": (services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"], "minio"),
        "prefect database": (
            services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"],
            "postgres",
        ),
        "worker -> prefect": (pipeline["PREFECT_API_URL"], "prefect-server"),
        "worker -> mlflow": (pipeline["MLFLOW_TRACKING_URI"], "mlflow"),
        "worker -> s3": (pipeline["AWS_ENDPOINT_URL"], "minio"),
    }
    for what, (text, service) in wiring.items():
        found = urls_to_services(text)
        assert found == [(service, listens[service])], f"{what}: {found}"
    assert "--backend-store-uri postgresql://" in mlflow_command
    assert f"--artifacts-destination s3://{dotenv()['MLFLOW_BUCKET']}/" in mlflow_command
    assert services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"].endswith(
        "/" + dotenv()["PREFECT_DB"]
    )
    assert "tinyopt deploy --pool tinyopt" in " ".join(services["deploy"]["command"])
    assert services["worker"]["command"][:5] == ["prefect", "worker", "start", "--pool", "tinyopt"]
    # The pipeline reaches S3 with its own keys, MLflow with others; the signing key is a secret, not a variable.
    assert pipeline["AWS_ACCESS_KEY_ID"] == "tinyopt-pipeline" != services["mlflow"]["environment"]["AWS_ACCESS_KEY_ID"]
    assert (
        pipeline["TINYOPT_SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
        and "signing_key" in services["worker"]["secrets"]
    )


def test_images_pin_what_requirements_lock_pins():
    lock = dict(line.split("==") for line in (REPO / "requirements.lock").read_text().split() if "==" in line)
    lock = {k.lower(): v for k, v in lock.items()}
    mlflow_image = (INFRA / "mlflow.Dockerfile").read_text()
    for package in ("mlflow", "psycopg2-binary", "boto3"):
        assert f'"{package}=={lock[package]}"' in mlflow_image, package
    assert f"prefecthq/prefect:{lock['prefect']}-python3.11" == SERVICES["prefect-server"]["image"]
    pipeline_image = (INFRA / "Dockerfile").read_text()
    assert "-c requirements.lock" in pipeline_image and "dataset-fashion-mnist" in pipeline_image
    assert "USER tinyopt" in pipeline_image  # not root
    for copied in re.findall(r"^COPY (.+) \S+$", pipeline_image, re.M):
        for name in copied.split():
            assert (REPO / name).exists(), name


def statements(role: str) -> list[dict]:
    policy = json.loads((INFRA / "policies" / f"{role}.json").read_text())
    assert policy["Version"] == "2012-10-17"
    assert all(s["Effect"] == "Allow" and "*" not in "".join(s["Action"]) for s in policy["Statement"])
    return policy["Statement"]


def test_bucket_policies_grant_each_role_only_what_it_does():
    from tinyopt.params import load_params
    from tinyopt.release.fleet import FleetStore

    fleet = load_params(REPO / "params.yaml").fleet
    assert fleet.bucket == dotenv()["FLEET_BUCKET"]
    store = FleetStore.__new__(FleetStore)  # only its key layout: no client needed
    store.prefix = fleet.prefix
    manifest, model = store.manifest_key("stable"), store.model_key("0" * 64)
    # Devices: GetObject on channel manifests and models; no list, no write, no history.
    (device,) = statements("device")
    assert device["Action"] == ["s3:GetObject"]
    patterns = [r.removeprefix(f"arn:aws:s3:::{fleet.bucket}/") for r in device["Resource"]]
    assert patterns == [store.key("channels", "*", "manifest.json"), store.key("models", "*")]
    allowed = lambda key: any(fnmatchcase(key, rule) for rule in patterns)  # noqa: E731  (IAM's * spans slashes too)
    assert allowed(manifest) and allowed(model)
    assert not allowed(store.key("channels", "stable", "history", "000001.json")) and not allowed("dvc/files/md5/00/11")
    # The pipeline: read and write under fleet/ and dvc/, list only those prefixes; never delete.
    listing, objects = statements("pipeline")
    assert set(objects["Action"]) == {"s3:GetObject", "s3:PutObject"}
    assert objects["Resource"] == [
        f"arn:aws:s3:::{fleet.bucket}/{fleet.prefix}/*",
        f"arn:aws:s3:::{fleet.bucket}/dvc/*",
    ]
    assert listing["Condition"]["StringLike"]["s3:prefix"] == [f"{fleet.prefix}/*", "dvc/*"]
    dvc_remote = (REPO / ".dvc" / "config").read_text()
    assert f"s3://{fleet.bucket}/dvc" in dvc_remote
    # MLflow: its own bucket's artifacts only (clients upload through the server, never to S3 directly).
    bucket = dotenv()["MLFLOW_BUCKET"]
    assert all(r.startswith(f"arn:aws:s3:::{bucket}") for s in statements("mlflow") for r in s["Resource"])
    assert "--serve-artifacts" in SERVICES["mlflow"]["command"]


# --- the same wiring, for real, on loopback ---------------------------------------------------------

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
    stored = next(k for k in keys if k.endswith(f"/{int8['mlflow_run_id']}/artifacts/base-int8.tflite"))
    body = loopback["s3"].get_object(Bucket=env_file["MLFLOW_BUCKET"], Key=stored)["Body"].read()
    assert body == (root / int8["tflite"]).read_bytes()
