"""The model registry: record a picked variant as a version of a registered model in MLflow's registry.

One registered model per target (e.g. fashion-mnist-nano33ble); each version points at the variant's
run (its .tflite and C array are that run's artifacts) and carries the benchmark record and the
lineage as tags. The newest registration gets the alias `candidate`; promotion moves `canary` and
`production`.
"""

from __future__ import annotations

import json
from pathlib import Path

from tinyopt.core.errors import UserError
from tinyopt.core.files import sha256_file
from tinyopt.orchestration import tracking
from tinyopt.params import check_name
from tinyopt.records.run import Record, Summary, Variant
from tinyopt.run.snapshot import verified


class RegisteredRecord(Record):
    """The compact benchmark record a registered version carries in its `record` tag (a version
    registered by an older tinyopt may lack the optional figures)."""

    name: str
    metric: str
    score: float
    fits: dict[str, bool] = {}
    val_score: float | None = None
    raw_bytes: int | None = None
    gzip_bytes: int | None = None
    latency_us_p50: float | None = None
    arena_bytes: int | None = None
    tflm_runs: bool | None = None
    input_dtype: str | None = None
    output_dtype: str | None = None
    params: int | None = None
    macs: int | None = None
    chain: list[str] = []


class Serving(RegisteredRecord):
    """What a registry alias points at: the version's record, with its name, number and sha256."""

    model_name: str
    version: int
    sha256: str


def register_variant(summary: Summary, variant: str, profile: str, model_name: str | None = None) -> dict:
    """Register `variant` of a pipeline run for the device `profile`; returns name, version, alias."""
    from mlflow.exceptions import MlflowException

    records = {v.name: v for v in summary.variants}
    if variant not in records:
        raise UserError(f"no variant '{variant}' in run {summary.run_id} (variants: {', '.join(records)})")
    record: Variant = records[variant]
    if not Path(record.tflite).is_file():
        raise UserError(
            f"variant '{variant}' of run {summary.run_id}: its .tflite {record.tflite} is gone; run `tinyopt run` again"
        )
    verified(summary, record.tflite)  # the bytes the run measured (and logged to MLflow), or one line why not
    if profile not in record.fits:
        raise UserError(f"no device profile '{profile}' in run {summary.run_id} (profiles: {', '.join(record.fits)})")
    name = check_name("model", model_name or f"{summary.dataset['name']}-{profile}")
    try:
        return _register(summary, record, profile, name)
    except MlflowException as exc:
        raise _registry_failed(exc) from None


def _registry_failed(exc: Exception) -> UserError:
    """A registry request that failed (the server refused it, or its retries ran out), as one line."""
    reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
    return UserError(f"the model registry failed ({reason}); check MLFLOW_TRACKING_URI")


def _register(summary: Summary, record: Variant, profile: str, name: str) -> dict:
    variant = record.name
    client = tracking.client()
    if not _exists(client, name):
        client.create_registered_model(name, description=f"tinyopt models for {profile}")
    run = client.get_run(record.mlflow_run_id)
    compact = {key: getattr(record, key) for key in RegisteredRecord.model_fields}
    tags = {
        "variant": variant,
        "profile": profile,
        "tflite": Path(record.tflite).name,
        "sha256": sha256_file(record.tflite),
        "fits": str(record.fits[profile]).lower(),
        "record": json.dumps(compact, sort_keys=True)[:5000],
        "pipeline_run": summary.run_id,
        "git_commit": summary.git_commit,
        "dataset": summary.dataset["name"],
        "dataset_version": summary.dataset["version"],
        "params_hash": summary.params_hash,
    }
    # The version is the variant's MLflow logged model (the Models tab's); a run from before logged models
    # registers its run's artifacts.
    source = f"models:/{record.mlflow_model_id}" if record.mlflow_model_id else run.info.artifact_uri
    with tracking.as_process_store():  # MLflow looks the `models:/` source up in its process-wide store
        version = client.create_model_version(
            name,
            source=source,
            run_id=run.info.run_id,
            tags=tags,
            description=f"{variant} from pipeline run {summary.run_id}",
            model_id=record.mlflow_model_id,
        )
    client.set_registered_model_alias(name, "candidate", version.version)
    return {"model": name, "version": int(version.version), "alias": "candidate", "variant": variant}


def _exists(client, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return True
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise  # a server that fails is not "no such model"


def model_version(name: str, version: int) -> tuple[dict, RegisteredRecord]:
    """(tags, compact record) of a registered version; UserError when there is none."""
    from mlflow.exceptions import MlflowException

    try:
        found = tracking.client().get_model_version(name, str(version))
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise _registry_failed(exc) from None
        raise UserError(
            f"no version {version} of registered model '{name}' (register one with `tinyopt register`)"
        ) from None
    return dict(found.tags), RegisteredRecord.model_validate_json(found.tags["record"])


def serving(name: str, alias: str = "production") -> Serving | None:
    """What the alias points at, or None when nothing does."""
    from mlflow.exceptions import MlflowException

    try:
        found = tracking.client().get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # No such registered model, or no version holds the alias. Anything else (a server that does
        # not answer) must not read as "nothing in production".
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return Serving(
        **json.loads(found.tags["record"]), model_name=name, version=int(found.version), sha256=found.tags["sha256"]
    )


def move_alias(
    name: str,
    version: int,
    alias: str,
    channel: str,
    replaced: str | None = None,
    published: str | None = None,
    forced: str | None = None,
) -> bool:
    """Point `alias` of `name` at `version` (True when it moved); take it off `replaced`, the model the
    channel served before, when that is another registered model; tag the version with the
    publication. A failure is one line saying the fleet is published and how to finish."""
    from mlflow.exceptions import MlflowException

    client = tracking.client()
    try:
        current = serving(name, alias)
        moved = current is None or current.version != version
        if moved:
            client.set_registered_model_alias(name, alias, str(version))
        if replaced and serving(replaced, alias):
            client.delete_registered_model_alias(replaced, alias)
        if published:
            client.set_model_version_tag(name, str(version), f"published.{channel}", published)
        if forced:
            client.set_model_version_tag(name, str(version), f"forced.{channel}", forced[:5000])
    except (MlflowException, OSError) as exc:
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise UserError(
            f"{channel} is published, but the registry step failed (alias '{alias}' of {name} -> "
            f"v{version}: {reason}); run the same command again to finish it"
        ) from None
    return moved


def download_model(name: str, version: int, into: Path) -> Path:
    """The version's .tflite, fetched from its logged model (or its run's artifacts, for a version registered
    before logged models) and checked against the registered hash."""
    import mlflow

    tags, _ = model_version(name, version)
    client = tracking.client()
    found = client.get_model_version(name, str(version))
    # The store may leave a version's model_id empty (SQLite does); its source names the logged model then.
    model_id = getattr(found, "model_id", None) or (
        found.source.removeprefix("models:/") if found.source.startswith("models:/") else None
    )
    where = (
        {"artifact_uri": f"{client.get_logged_model(model_id).artifact_location}/{tags['tflite']}"}
        if model_id
        else {"run_id": found.run_id, "artifact_path": tags["tflite"]}
    )
    path = Path(mlflow.artifacts.download_artifacts(**where, dst_path=str(into), tracking_uri=tracking.tracking_uri()))
    if sha256_file(path) != tags["sha256"]:
        raise UserError(f"{name} version {version}: the stored model does not match its registered sha256")
    return path
