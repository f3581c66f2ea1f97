"""The `promote` flow: publish a registered model version to a fleet channel (the same function the
`tinyopt promote` command runs), as a Prefect flow so that releases show up beside the runs."""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task

from tinyopt.orchestration.steps import retry_unless_user_error
from tinyopt.params import load_params
from tinyopt.release.promote import promote as promote_version

# S3 calls retry inside boto3 with backoff; the task retries once more on anything else transient.
# The one publish task: this flow's, and reoptimize's (which also runs it as `refresh`).
publish = task(name="publish", retries=1, retry_delay_seconds=5, retry_condition_fn=retry_unless_user_error)(
    promote_version
)


@flow(name="promote")
def promote(
    model: str, version: int, channel: str, params_path: str = "params.yaml", force_reason: str | None = None
) -> dict:
    params = load_params(params_path)
    return publish(model, version, channel, params, force_reason, Path(params_path).resolve().parent)
