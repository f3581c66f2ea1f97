"""infra/: the compose file's wiring, checked statically (Docker does not run here): every variable is
documented and resolves, the services and their dependencies, the clients' URLs and ports, the images'
pins against requirements.lock, and the bucket policies of each role. tests/test_infra_loopback.py
runs the same commands and variables for real."""

from __future__ import annotations

import json
import re
from fnmatch import fnmatchcase

import pytest

from tests.conftest import REPO
from tests.infra_helpers import COMPOSE, INFRA, SERVICES, dotenv, interpolate


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
