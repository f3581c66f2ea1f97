"""What the release decides: may a gated channel take this model (`gate`), and should the scheduled
re-optimization's pick replace what production serves (`replaces_production`, `decide`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_serializer

from tinyopt.core.files import sha256_file
from tinyopt.ml.metrics import better
from tinyopt.params import DEFAULT_PROFILE, Params
from tinyopt.records.run import Measured, Summary
from tinyopt.release import registry
from tinyopt.release.manifest import Manifest
from tinyopt.release.registry import RegisteredRecord, Serving


class Decision(BaseModel):
    """The scheduled run's decision (reports/<run-id>/reoptimize.json): its pick against what the
    registry's `production` alias serves (`replace`, `why`), then what was done about it: the
    registration, the publication, or the refresh of production's channel (promote's results)."""

    model_config = ConfigDict(frozen=True)
    run_id: str
    objective: str
    profile: str
    model_name: str
    pick: str | None
    channel: str | None
    production: Serving | None
    replace: bool
    why: str
    registered: dict | None = None
    published: dict | None = None
    refreshed: dict | None = None

    @field_serializer("production")
    def _serving_in_brief(self, production: Serving | None) -> dict | None:
        return production and production.model_dump(include={"version", "name", "metric", "score", "sha256"})


def gate(channel: str, record: RegisteredRecord, profile: str, current: Manifest | None) -> str | None:
    """Why a gated channel refuses this registered model, or None; `current` is the manifest the
    channel is known to serve."""
    if not record.fits.get(profile, False):
        return f"it does not fit {profile} (TFLM must run it within the profile's flash and SRAM)"
    if current and current.metric == record.metric and better(record.metric, current.score, record.score):
        return (
            f"{channel} serves {current.model_name} v{current.version} with {record.metric} "
            f"{current.score:.4f}; this one scores {record.score:.4f}"
        )
    return None


def replaces_production(
    candidate: Measured | RegisteredRecord, sha256: str, production: Serving | None, profile: str
) -> tuple[bool, str]:
    """Should the new pick `candidate` (whose .tflite has `sha256`) replace what production serves?
    Only if it fits `profile` and scores strictly better; returns (yes or no, why)."""
    label = f"{candidate.name} ({candidate.metric} {candidate.score:.4f})"
    if not candidate.fits.get(profile, False):
        return False, f"the new pick {label} does not fit {profile}"
    if production is None:
        return True, f"nothing in production yet; {label} fits {profile}"
    serving = (
        f"production serves {production.model_name} v{production.version} ({production.name}, "
        f"{production.metric} {production.score:.4f})"
    )
    if production.sha256 == sha256:
        return False, f"{serving}: the same model as the new pick"
    if production.metric != candidate.metric:
        return False, f"{serving}: another metric than the new pick's; compare them by hand"
    if not better(candidate.metric, candidate.score, production.score):
        return False, f"{serving}: the new pick {label} is not better"
    return True, f"the new pick {label} beats what {serving}"


def target(summary: Summary, params: Params) -> tuple[str, str]:
    """(profile, registered model name) the scheduled pick is for: the objective's profile, else the
    schedule channel's, else the default profile."""
    settings = params.schedule
    channel_profile = params.fleet.channels[settings.channel].profile if settings.channel else DEFAULT_PROFILE
    profile = params.objectives[settings.objective].profile or channel_profile
    return profile, f"{summary.dataset['name']}-{profile}"


def decide(summary: Summary, params: Params) -> Decision:
    """The scheduled run's decision, before anything is done about it."""
    settings = params.schedule
    profile, model_name = target(summary, params)
    pick = summary.picks[settings.objective]
    production = registry.serving(model_name, "production")
    if pick.variant is None:
        replace, why = False, f"objective {settings.objective} picked nothing: {pick.why}"
    else:
        candidate = summary.variant(pick.variant)
        replace, why = replaces_production(candidate, sha256_file(candidate.tflite), production, profile)
    return Decision(
        run_id=summary.run_id,
        objective=settings.objective,
        profile=profile,
        model_name=model_name,
        pick=pick.variant,
        channel=settings.channel,
        production=production,
        replace=replace,
        why=why,
    )
