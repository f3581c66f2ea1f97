"""MLflow tracking: one parent run per pipeline run, one child run per model variant.

The store is a local SQLite file (mlflow.db, artifacts in mlartifacts/) unless MLFLOW_TRACKING_URI
names another, e.g. a tracking server.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.core.health import require_healthy
from tinyopt.core.masking import shown, without_credentials

TAG_LIMIT = 5000  # MLflow refuses longer tag values
PARAM_LIMIT = 6000  # and longer param values


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{layout.MLFLOW_DB.resolve()}"


# MLflow retries a failed request 7 times with growing backoff, about 4 minutes (and the 2 minutes of
# timeout each): far too long for a command. A command checks the server first, so these cover a hiccup.
BOUNDED_RETRIES = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits of 1, 2 and 4 s
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # a command's output is its lines, not a download bar
}


def bound_retries() -> None:
    """MLflow's HTTP retries bounded, and its download bar off, for this process (a value the user set stays)."""
    for name, value in BOUNDED_RETRIES.items():
        os.environ.setdefault(name, value)


def check_reachable(uri: str | None = None, timeout: float = 5.0) -> None:
    """Fail fast, in one line, when a remote tracking server does not answer (MLflow itself would
    retry for minutes before giving up). Credentials in the URI never appear in the message."""
    uri = uri or tracking_uri()
    if uri.startswith(("http://", "https://")):
        try:
            urllib.parse.urlsplit(uri).port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError as exc:
            raise UserError(f"MLFLOW_TRACKING_URI {shown(uri)} is not a valid URL ({exc})") from None
        bare = without_credentials(uri)  # /health needs no login: keep credentials off the wire too
        try:
            fix = "start it, or unset MLFLOW_TRACKING_URI to use the local store"
            require_healthy(bare, "MLflow tracking server", fix, timeout)
        except UserError as exc:
            raise UserError(str(exc).replace(bare, shown(uri), 1)) from None


def client():
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        _create_sqlite_store_once(uri)
    return MlflowClient(uri)


@functools.cache
def _create_sqlite_store_once(uri: str) -> None:
    """Create (migrate) a SQLite store under a lock beside it: two runs starting at once on a new store
    would both create its tables, and the second dies ('table ... already exists')."""
    from mlflow.tracking import MlflowClient

    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        lock = open(database.with_name(database.name + ".lock"), "a")
    except OSError as exc:
        raise UserError(
            f"MLflow store {database} is not writable ({exc.strerror}); fix its directory's permissions "
            "or set MLFLOW_TRACKING_URI to another store"
        ) from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow_client = MlflowClient(uri)
        mlflow_client.search_experiments(max_results=1)  # the tracking store's tables
        mlflow_client.search_registered_models(max_results=1)  # the registry's (same database)


@contextlib.contextmanager
def as_process_store() -> Iterator[None]:
    """MLflow's process-wide store pointed at ours for the block, then back as it was. MLflow resolves some
    things there, not through the client (a registry version's `models:/<id>` source), and another library or
    a notebook may have pointed it elsewhere. set_tracking_uri also writes MLFLOW_TRACKING_URI: restored too."""
    import mlflow

    variable = os.environ.get("MLFLOW_TRACKING_URI")
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri())
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before)
        if variable is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = variable


def experiment_id(name: str) -> str:
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    artifact_location = None
    if tracking_uri().startswith("sqlite:"):
        # Keep a local store's artifacts beside its database, not wherever the process happens to run.
        artifact_location = layout.MLFLOW_ARTIFACTS.resolve().as_uri()
    from mlflow.exceptions import MlflowException

    try:
        # Open it in the UI's model-training view (MLflow 3 would otherwise show its GenAI overview).
        return mlflow_client.create_experiment(
            name, artifact_location=artifact_location, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow_client.get_experiment_by_name(name).experiment_id  # another run created it meanwhile


def log_run_data(
    run_id: str,
    params: Mapping[str, object] = {},
    metrics: Mapping[str, float] = {},
    artifacts: Iterable[Path] = (),
    directories: Mapping[str, Path] = {},
    model_id: str | None = None,
) -> None:
    """Params, metrics, files (at the artifact root) and directories (each under its name) of one run; the
    metrics are the logged model `model_id`'s too when given (its figures in the Models tab)."""
    from mlflow.entities import Metric, Param

    mlflow_client = client()
    now_ms = int(time.time() * 1000)
    # MLflow takes at most 100 params and 1,000 metrics per request.
    params_list = [Param(key, str(value)[:PARAM_LIMIT]) for key, value in params.items()]
    metric_list = [Metric(key, float(v), now_ms, 0, model_id=model_id) for key, v in metrics.items() if v is not None]
    for start in range(0, max(len(params_list), len(metric_list), 1), 100):
        batch_params, batch_metrics = params_list[start : start + 100], metric_list[start : start + 100]
        if batch_params or batch_metrics:
            mlflow_client.log_batch(run_id, params=batch_params, metrics=batch_metrics)
    for artifact in artifacts:
        mlflow_client.log_artifact(run_id, str(artifact))
    for name, directory in directories.items():
        mlflow_client.log_artifacts(run_id, str(directory), artifact_path=name)


def flat(values: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """A nested mapping (params.yaml's sections) as dotted MLflow params: `train.epochs`."""
    out: dict[str, object] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            text = json.dumps(value) if isinstance(value, (list, tuple, Mapping)) else str(value)
            out[f"{prefix}{key}"] = shown(text)  # an endpoint's password never reaches the store
    return out


def dataset_input(name: str, digest: str, source: str, profile: Mapping[str, object]):
    """The run's dataset as an MLflow input (the runs table's Dataset column): its DVC md5 as the digest,
    its split sizes as the profile."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    dataset = Dataset(
        name=name,
        digest=digest[:36],  # MLflow's column; DVC's md5 with its `.dir` suffix is 36 characters
        source_type="local",
        source=json.dumps({"uri": source}),
        profile=json.dumps(dict(profile)),
    )
    return DatasetInput(dataset=dataset, tags=[InputTag("mlflow.data.context", "training")])


def log_dataset(run_id: str, dataset) -> None:
    """Log the run's dataset input. MLflow's SQL store looks a dataset up, then inserts it: two runs that
    start at once on one new store can both miss it and one insert fails its unique key. The second try
    finds the row the other run wrote."""
    from mlflow.exceptions import MlflowException

    try:
        client().log_inputs(run_id, datasets=[dataset])
    except MlflowException as error:
        if "UNIQUE constraint failed: datasets" not in str(error) and "duplicate key" not in str(error):
            raise
        client().log_inputs(run_id, datasets=[dataset])


def log_logged_model(run_id: str, experiment: str, name: str, directory: Path, tags: Mapping[str, str]) -> str:
    """An MLflow logged model (the Models tab, the registry's source) made by `run_id`, with the files of
    `directory`; returns its model id."""
    mlflow_client = client()
    model = mlflow_client.create_logged_model(
        experiment_id(experiment), name=name, source_run_id=run_id, tags=dict(tags), model_type="tflite"
    )
    try:
        mlflow_client.log_model_artifacts(model.model_id, str(directory))
    except BaseException:
        mlflow_client.finalize_logged_model(model.model_id, "FAILED")
        raise
    mlflow_client.finalize_logged_model(model.model_id, "READY")
    from mlflow.entities import LoggedModelOutput

    mlflow_client.log_outputs(run_id, [LoggedModelOutput(model.model_id, 0)])  # the run page's "Logged models"
    return model.model_id


def log_curves(run_ids: Iterable[str], prefix: str, curves: Mapping[str, list[float]], first_step: int = 0) -> None:
    """Per-epoch curves (Keras's `loss`, `accuracy`, `val_loss`, ...) as metric histories named
    `<prefix>.<key>`, step = epoch, on each run."""
    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    metrics = [
        Metric(f"{prefix}.{key}", float(value), now_ms, first_step + epoch)
        for key, values in curves.items()
        for epoch, value in enumerate(values)
    ]
    mlflow_client = client()
    for run_id in run_ids:
        for start in range(0, len(metrics), 1000):  # MLflow takes at most 1,000 metrics per batch
            mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])


def epoch_logger(run_ids: Iterable[str], prefix: str):
    """Where a fit sends each epoch's figures as it ends: the MLflow runs `run_ids`, as `<prefix>.<key>`
    (None without runs). Tracking never stops a training: a failed request is logged once and the fit
    goes on (its record keeps the curves)."""
    run_ids = tuple(run_ids)
    if not run_ids:
        return None
    failed: list[str] = []

    def log(epoch: int, figures: dict[str, float]) -> None:
        if failed:
            return
        try:
            log_curves(run_ids, prefix, {key: [value] for key, value in figures.items()}, first_step=epoch)
        except Exception as exc:  # noqa: BLE001  (a tracking server's hiccup must not end a training)
            failed.append(str(exc))
            logging.getLogger(__name__).warning("live curves of %s stopped: %s", prefix, shown(str(exc))[:200])

    return log


def start_run(experiment: str, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
    """A new MLflow run, RUNNING until end_run (nested under `parent_run_id` if given); its id."""
    tags = {**tags, "mlflow.parentRunId": parent_run_id} if parent_run_id else dict(tags)
    return client().create_run(experiment_id(experiment), run_name=run_name, tags=tags).info.run_id


def end_run(run_id: str, error: BaseException | str | None = None) -> None:
    """FINISHED, or FAILED with an `error` tag (the error's first line) when there is one."""
    if error is None:
        client().set_terminated(run_id, status="FINISHED")
        return
    with contextlib.suppress(Exception):  # the run's own error is what the user must see
        text = error if isinstance(error, str) else (str(error).splitlines() or [type(error).__name__])[0]
        client().set_tag(run_id, "error", shown(text)[:TAG_LIMIT])
    client().set_terminated(run_id, status="FAILED")


@contextlib.contextmanager
def tracked_run(
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
    parent_run_id: str | None = None,
    run_id: str | None = None,
) -> Iterator[str]:
    """An MLflow run around a block (its id inside): a new one, or `run_id` opened earlier (it gets `tags`);
    FINISHED when the block ends, FAILED with an `error` tag when it raises (an interrupt too), so no run
    is left RUNNING."""
    if run_id is None:
        run_id = start_run(experiment, run_name, tags, parent_run_id)
    else:
        tags = {**tags, "mlflow.parentRunId": parent_run_id} if parent_run_id else dict(tags)
        for key, value in tags.items():
            client().set_tag(run_id, key, value)
    try:
        yield run_id
    except BaseException as exc:
        end_run(run_id, exc)
        raise
    end_run(run_id)
