"""The `reoptimize` flow, what the nightly and on-demand deployments run: re-run the pipeline (steps
whose inputs did not change come from the cache; a new dataset version or new params retrain), then
compare the pick of params.yaml's `schedule.objective` with what the registry's `production` alias
serves, and publish it only if it fits the device and scores better (through the channel's gate)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.optimize import optimize, task_runner
from tasks import promote as promotion
from tasks import registry
from tinyopt import layout, tracking
from tinyopt.files import sha256_file, write_json
from tinyopt.params import load_params


@flow(name="reoptimize")
def reoptimize(params_path: str = "params.yaml", data: str | None = None, promote: bool = True) -> dict:
    """Returns (and writes to reports/<run-id>/reoptimize.json) the decision and what was done.
    `data` takes a new dataset version (as `tinyopt run --data`); `promote=False` only compares."""
    logger = get_run_logger()
    params = load_params(params_path)
    settings = params.schedule
    summary = optimize.with_options(task_runner=task_runner(params.runner))(params_path=params_path, data=data)

    pick = summary["picks"][settings.objective]
    # The device the pick must fit: the objective's, else the channel's, else the default profile.
    channel_profile = params.fleet.channels[settings.channel].profile if settings.channel else "nano33ble"
    profile = params.objectives[settings.objective].profile or channel_profile
    model_name = f"{summary['dataset']['name']}-{profile}"
    decision = {
        "run_id": summary["run_id"],
        "objective": settings.objective,
        "profile": profile,
        "model_name": model_name,
        "pick": pick["variant"],
        "channel": settings.channel,
    }
    production = registry.serving(model_name, "production")
    decision["production"] = production and {k: production[k] for k in ("version", "name", "metric", "score", "sha256")}
    if pick["variant"] is None:
        replace, why = False, f"objective {settings.objective} picked nothing: {pick['why']}"
    else:
        candidate = next(v for v in summary["variants"] if v["name"] == pick["variant"])
        candidate = {**candidate, "sha256": sha256_file(candidate["tflite"])}
        replace, why = promotion.replaces_production(candidate, production, profile)
    decision.update(replace=replace, why=why, registered=None, published=None, refreshed=None)
    logger.info("%s: %s", "replace production" if replace else "keep production", why)

    if replace and promote and settings.channel:
        registered = task(name="register", retries=2, retry_delay_seconds=5)(registry.register_variant)(
            summary, pick["variant"], profile, model_name
        )
        decision["registered"] = registered
        publish = task(name="publish", retries=1, retry_delay_seconds=5)(promotion.promote)
        decision["published"] = publish(model_name, registered["version"], settings.channel, params)
        logger.info("published %s v%d to %s", model_name, registered["version"], settings.channel)
    elif production and promote and settings.channel and promotion.alias_for(settings.channel) == "production":
        # Devices refuse an expired manifest: keeping production re-signs its channel when it is stale
        # (or repairs it when tampered); otherwise promoting the same version changes nothing.
        refresh = task(name="refresh", retries=1, retry_delay_seconds=5)(promotion.promote)
        decision["refreshed"] = refresh(model_name, production["version"], settings.channel, params)
        logger.info("%s: %s", settings.channel, decision["refreshed"]["status"])

    tracking.client().set_tag(
        summary["mlflow_run_id"], "reoptimize.decision", ("replace: " if replace else "keep: ") + why
    )
    write_json(layout.REPORTS / summary["run_id"] / "reoptimize.json", decision)
    create_markdown_artifact(
        key="tinyopt-reoptimize",
        description=f"reoptimize {summary['run_id']}",
        markdown=(
            f"**{'Replace' if replace else 'Keep'} production** ({model_name}): {why}\n\n"
            + (
                f"Published v{decision['registered']['version']} to `{settings.channel}`.\n"
                if decision["published"]
                else ""
            )
        ),
    )
    return decision


def deployments(params_path: str = "params.yaml", for_worker: bool = False) -> list:
    """The nightly deployment (cron from params.yaml's schedule; none when cron is null) and the
    on-demand one, both of `reoptimize` on this params file, run in its directory (the project):
    `tinyopt serve` runs them from there; for a work pool (`for_worker`), the job says so."""
    from prefect.deployments.runner import EntrypointType
    from prefect.schedules import Cron

    params = load_params(params_path)
    params_file = Path(params_path).resolve()
    common = dict(
        parameters={"params_path": str(params_file)},
        tags=["tinyopt"],
        concurrency_limit=1,
        # flows.reoptimize.reoptimize: the installed package, from any directory
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
    if for_worker:  # a process worker runs it in the project, with the project's task cache (as `tinyopt run` has it)
        common["job_variables"] = {
            "working_dir": str(params_file.parent),
            "env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(params_file.parent / layout.PREFECT_STORAGE)},
        }
    made = [
        reoptimize.to_deployment(
            name="on-demand",
            description="re-optimize now: prefect deployment run reoptimize/on-demand, or Run in the Prefect UI",
            **common,
        )
    ]
    if params.schedule.cron:
        made.append(
            reoptimize.to_deployment(
                name="nightly",
                schedule=Cron(params.schedule.cron, timezone=params.schedule.timezone),
                description=f"re-optimize on schedule ({params.schedule.cron}, {params.schedule.timezone})",
                **common,
            )
        )
    return made
