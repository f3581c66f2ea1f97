"""The `reoptimize` flow, what the nightly and on-demand deployments run: re-run the pipeline (steps
whose inputs did not change come from the cache; a new dataset version or new params retrain), then
compare the pick of params.yaml's `schedule.objective` with what the registry's `production` alias
serves, and publish it only if it fits the device and scores better (through the channel's gate)."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from flows.optimize import optimize, task_runner
from flows.promote import publish
from tinyopt.core import layout
from tinyopt.core.files import write_json
from tinyopt.orchestration import tracking
from tinyopt.params import load_params
from tinyopt.records.run import Summary
from tinyopt.release.channel import alias_for
from tinyopt.release.decision import Decision, decide
from tinyopt.release.registry import register_variant

register = task(name="register", retries=2, retry_delay_seconds=5)(register_variant)
# Devices refuse an expired manifest: keeping production re-signs its channel when it is stale (or
# repairs it when tampered); otherwise promoting the same version changes nothing.
refresh = publish.with_options(name="refresh")


@flow(name="reoptimize")
def reoptimize(params_path: str = "params.yaml", data: str | None = None, publish_better: bool = True) -> Decision:
    """Returns (and writes to reports/<run-id>/reoptimize.json) the decision and what was done.
    `data` takes a new dataset version (as `tinyopt run --data`); `publish_better=False` only compares."""
    logger = get_run_logger()
    params = load_params(params_path)
    channel = params.schedule.channel
    run = optimize.with_options(task_runner=task_runner(params.runner))
    summary = run(params_path=params_path, data=data)
    decision = decide(summary, params)
    logger.info("%s: %s", "replace production" if decision.replace else "keep production", decision.why)
    if decision.replace and publish_better and channel:
        registered = register(summary, decision.pick, decision.profile, decision.model_name)
        published = publish(decision.model_name, registered["version"], channel, params)
        decision = decision.model_copy(update={"registered": registered, "published": published})
        logger.info("published %s v%d to %s", decision.model_name, registered["version"], channel)
    elif decision.production and publish_better and channel and alias_for(channel) == "production":
        refreshed = refresh(decision.model_name, decision.production.version, channel, params)
        decision = decision.model_copy(update={"refreshed": refreshed})
        logger.info("%s: %s", channel, refreshed["status"])
    record(summary, decision)
    return decision


def record(summary: Summary, decision: Decision) -> None:
    """The decision on the run's MLflow parent run, in reports/<run-id>/reoptimize.json and in Prefect's UI."""
    verdict = "replace" if decision.replace else "keep"
    tracking.client().set_tag(summary.mlflow_run_id, "reoptimize.decision", f"{verdict}: {decision.why}")
    write_json(layout.REPORTS / summary.run_id / "reoptimize.json", decision.model_dump(mode="json"))
    published = decision.published and f"Published v{decision.registered['version']} to `{decision.channel}`.\n"
    create_markdown_artifact(
        key="tinyopt-reoptimize",
        description=f"reoptimize {summary.run_id}",
        markdown=f"**{verdict.capitalize()} production** ({decision.model_name}): {decision.why}\n\n"
        + (published or ""),
    )


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
