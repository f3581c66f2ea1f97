"""The operations commands: serving and deploying the scheduled `reoptimize` flow, and the MLflow UI."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import click

from cli.group import configure_prefect, main, params_option, reach_fleet, reach_mlflow
from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.core.masking import shown


def _prefect_server() -> str:
    """The Prefect server's API URL; one line when none is configured or it does not answer
    (deployments and schedules live on a server, not on the ephemeral API `tinyopt run` uses)."""
    from prefect.settings import get_current_settings

    from tinyopt.core.health import require_healthy

    api = get_current_settings().api.url
    if not api:
        raise UserError(
            "deployments need a Prefect server: start one (`prefect server start`) and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    require_healthy(api, "Prefect server", "start it, or fix PREFECT_API_URL")
    return api


@main.command()
@params_option
def serve(params_path: str) -> None:
    """Serve the `reoptimize` deployments (nightly per schedule.cron, and on demand) from this
    process: it creates them on the Prefect server and runs their flow runs, until stopped."""
    from tinyopt.params import load_params

    params = load_params(params_path)
    reach_mlflow(bound_retries=False)
    if params.schedule.channel:  # the flow publishes a better model there
        reach_fleet(params)
    api = _prefect_server()
    configure_prefect()
    from prefect import serve as prefect_serve

    from flows.reoptimize import deployments

    made = deployments(params_path)
    click.echo(f"serving {', '.join('reoptimize/' + d.name for d in made)} on {api} (Ctrl-C stops)")
    prefect_serve(*made, print_starting_message=False)


@main.command()
@click.option("--pool", required=True, help="a Prefect work pool (created as a process pool if missing)")
@params_option
def deploy(pool: str, params_path: str) -> None:
    """Create the `reoptimize` deployments on a work pool; `prefect worker start --pool POOL` runs them."""
    from tinyopt.params import load_params

    load_params(params_path)
    api = _prefect_server()
    from prefect import deploy as prefect_deploy
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    from flows.reoptimize import deployments

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass
    made = deployments(params_path, for_worker=True)
    prefect_deploy(*made, work_pool_name=pool, build=False, push=False, print_next_steps_message=False)
    click.echo(f"deployed {', '.join('reoptimize/' + d.name for d in made)} to pool {pool} on {api}")


@main.command()
@click.option("--port", default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@params_option
def ui(port: int, host: str, params_path: str) -> None:
    """Start the MLflow UI on the project's tracking store, and print where its runs are."""
    from tinyopt.orchestration import tracking
    from tinyopt.params import TrackingParams, load_params

    uri = tracking.tracking_uri()
    if uri.startswith(("http://", "https://")):
        raise UserError(f"MLFLOW_TRACKING_URI points at a server already ({shown(uri)}): open it in a browser")
    _require_free_port(host, port)
    experiment = (
        load_params(params_path).tracking.experiment if Path(params_path).is_file() else TrackingParams().experiment
    )
    # An offline tool: no usage data leaves the machine, from the server or from the UI it serves (its
    # UI telemetry follows the server's setting).
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "MLFLOW_LOGGING_LEVEL": "WARNING"}
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        uri,
        "--default-artifact-root",
        layout.MLFLOW_ARTIFACTS.resolve().as_uri(),
        "--host",
        host,
        "--port",
        str(port),
    ]
    runs = ui_runs_url(f"http://{host}:{port}", experiment)
    click.echo(f"MLflow UI on http://{host}:{port} (Ctrl-C stops it); the runs of experiment '{experiment}':\n{runs}")
    raise SystemExit(subprocess.call(command, env=env))


def _require_free_port(host: str, port: int) -> None:
    """The UI's address can be listened on, before anything is printed or written: MLflow's server, finding
    the port taken, exits 0, and the URL printed before it would lead to another server."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does: TIME_WAIT is no obstacle
            probe.bind(address)
    except OSError as exc:
        in_use = exc.errno == errno.EADDRINUSE
        fix = "another server listens there: stop it, or pass another --port" if in_use else "fix --host or --port"
        raise UserError(f"cannot serve the UI on {host}:{port} ({exc.strerror or exc}); {fix}") from None


def ui_runs_url(base: str, experiment: str) -> str:
    """Where a person sees the pipeline's runs: the experiment's runs table in MLflow 3's model-training
    view (its home page and an experiment's plain URL open the GenAI view: traces, no runs). The
    experiment is made now if no run has made it yet, as a run would, so the URL holds from the start."""
    from tinyopt.orchestration import tracking

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    return f"{base}/#/experiments/{tracking.experiment_id(experiment)}/runs?workflowType=machine_learning"
