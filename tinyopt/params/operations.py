"""params.yaml's sections for operating the pipeline: fleet channels, the task runner, schedules, tracking."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, model_validator

from tinyopt.core.errors import UserError
from tinyopt.params.devices import DEFAULT_OBJECTIVE, DEFAULT_PROFILE
from tinyopt.params.section import Section

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


def check_name(kind: str, name: str) -> str:
    """`name` if it is safe as one S3 key or registry path segment: letters, digits, '.', '_', '-'
    (no '/', no '..', no spaces); a one-line UserError otherwise."""
    import re

    if not isinstance(name, str) or not re.match(NAME_PATTERN, name) or ".." in name:
        raise UserError(
            f"{kind} {name!r}: use letters, digits, '.', '_' and '-' only, starting with a letter or "
            "digit (no '/', '..' or spaces)"
        )
    return name


class ChannelParams(Section):
    """A release channel devices poll: the device profile its models must fit, and whether it is gated."""

    profile: str = DEFAULT_PROFILE
    gated: bool = Field(
        default=False,
        description="refuse a model that does not fit, or that scores worse (the task's metric) than what it serves",
    )
    manifest_ttl_days: int | None = Field(
        default=None, ge=1, le=3650, description="how long devices accept a manifest (null: fleet.manifest_ttl_days)"
    )


class FleetParams(Section):
    """Where promoted models go (tinyopt promote): an S3 bucket; credentials come from the standard AWS
    configuration (AWS_* variables, profiles). A gated channel refuses a model that does not fit its profile or
    scores worse than what it serves, unless forced with a recorded reason."""

    bucket: str = Field(default="tinyopt-fleet", min_length=3)
    prefix: str = Field(default="fleet", description="key prefix inside the bucket")
    endpoint_url: str | None = Field(
        default=None, description="null: AWS (or AWS_ENDPOINT_URL); set it for MinIO and other S3-compatible stores"
    )
    region: str = "us-east-1"
    manifest_ttl_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="devices reject a manifest older than this (a channel may set its own): promote the served "
        "version again to re-sign it before then (it re-publishes once less than half the time is left)",
    )
    channels: dict[str, ChannelParams] = Field(
        default_factory=lambda: {
            "canary": ChannelParams(profile=DEFAULT_PROFILE, gated=False),
            "stable": ChannelParams(profile=DEFAULT_PROFILE, gated=True),
        },
        description="the release channels devices poll: the device profile a channel's models must fit, and "
        "whether it is gated",
    )

    @model_validator(mode="after")
    def _valid_channel_names(self) -> FleetParams:
        for name in self.channels:
            try:
                check_name("fleet.channels: channel", name)
            except UserError as exc:
                raise ValueError(str(exc)) from None
        return self

    def ttl_days(self, channel: str) -> int:
        return self.channels[channel].manifest_ttl_days or self.manifest_ttl_days


class RunnerParams(Section):
    """Where a run's tasks execute: threads (default) or Dask (a local cluster of `workers` processes, or the
    scheduler at `address`). Results are the same either way; models move between tasks as files."""

    kind: Literal["threads", "dask"] = "threads"
    workers: int = Field(default=4, ge=1, le=256, description="threads, or the processes of a local Dask cluster")
    address: str | None = Field(
        default=None, description="dask: a scheduler to use (tcp://host:8786); null starts a local cluster"
    )


class ScheduleParams(Section):
    """The `reoptimize` deployments (`tinyopt serve`, or `tinyopt deploy` for a worker pool): nightly at `cron`
    and on demand. Each run re-runs the pipeline (cached steps are reused; a new dataset version retrains),
    compares the pick of `objective` with what the registry's `production` alias serves, and publishes it to
    `channel` (through its gate) only if it is better and fits."""

    cron: str | None = Field(default="0 2 * * *", description="the nightly run; null: on-demand only")
    timezone: str = "UTC"
    objective: str = Field(default=DEFAULT_OBJECTIVE, description="the objective whose pick may replace production")
    channel: str | None = Field(
        default="stable",
        description="where a better pick is published (through its gate); null: report only, promote nothing",
    )

    @model_validator(mode="after")
    def _valid_schedule(self) -> ScheduleParams:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        from cronsim import CronSim, CronSimError

        if self.cron is not None:
            try:
                CronSim(self.cron, dt.datetime.now())
            except CronSimError as exc:
                raise ValueError(
                    f"schedule.cron: {self.cron!r} is not a cron expression ({exc}); e.g. '0 2 * * *'"
                ) from None
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"schedule.timezone: unknown time zone {self.timezone!r} (e.g. UTC, Europe/Berlin)"
            ) from None
        return self


class TrackingParams(Section):
    experiment: str = Field(default="tinyopt", min_length=1, description="the MLflow experiment runs are logged to")
