"""The re-optimization decision and its deployments, without a server (tests/test_schedule.py runs
them on a real Prefect server)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import full_params
from tinyopt.release.decision import replaces_production
from tinyopt.release.registry import RegisteredRecord, Serving

PICK = RegisteredRecord(name="qat-int8", metric="accuracy", score=0.8994, fits={"nano33ble": True, "uno": False})
PRODUCTION = Serving(
    model_name="fashion-mnist-nano33ble", version=4, name="base-int8", metric="accuracy", score=0.8971, sha256="bb"
)


def production(**changes) -> Serving:
    return PRODUCTION.model_copy(update=changes)


def test_a_better_pick_that_fits_replaces_production():
    replace, why = replaces_production(PICK, "aa", PRODUCTION, "nano33ble")
    assert replace
    assert why == (
        "the new pick qat-int8 (accuracy 0.8994) beats what production serves fashion-mnist-nano33ble v4 "
        "(base-int8, accuracy 0.8971)"
    )
    assert replaces_production(PICK, "aa", None, "nano33ble") == (
        True,
        "nothing in production yet; qat-int8 (accuracy 0.8994) fits nano33ble",
    )


def test_production_stays_unless_the_pick_is_strictly_better_and_fits():
    assert replaces_production(PICK, "aa", production(score=0.8994), "nano33ble")[1].endswith("is not better")
    assert replaces_production(PICK, "aa", production(score=0.91), "nano33ble")[0] is False
    assert replaces_production(PICK, "aa", production(sha256="aa"), "nano33ble")[1].endswith(
        "the same model as the new pick"
    )
    assert replaces_production(PICK, "aa", None, "uno") == (
        False,
        "the new pick qat-int8 (accuracy 0.8994) does not fit uno",
    )
    assert not replaces_production(PICK, "aa", production(metric="mae"), "nano33ble")[
        0
    ]  # unlike metrics: a person decides
    mae = PICK.model_copy(update={"metric": "mae", "score": 0.20})
    assert replaces_production(mae, "aa", production(metric="mae", score=0.25), "nano33ble")[0]  # lower error is better


def write_params(root: Path, **schedule) -> Path:
    params = full_params(schedule=dict(full_params()["schedule"], **schedule))
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root / "params.yaml"


def test_deployments_follow_the_schedule_section(tmp_path):
    from flows.reoptimize import deployments

    path = write_params(tmp_path, cron="30 3 * * 1-5", timezone="Europe/Berlin")
    on_demand, nightly = deployments(str(path))
    assert (on_demand.name, on_demand.schedules) == ("on-demand", [])
    assert nightly.name == "nightly" and len(nightly.schedules) == 1
    assert (nightly.schedules[0].schedule.cron, nightly.schedules[0].schedule.timezone) == (
        "30 3 * * 1-5",
        "Europe/Berlin",
    )
    for deployment in (on_demand, nightly):
        assert deployment.entrypoint == "flows.reoptimize.reoptimize"  # importable from any working directory
        assert deployment.parameters == {"params_path": str(path.resolve())}
        assert deployment.concurrency_limit == 1
    (worker_job,) = deployments(str(write_params(tmp_path, cron=None)), for_worker=True)
    assert worker_job.name == "on-demand" and worker_job.job_variables == {
        "working_dir": str(tmp_path.resolve()),
        "env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(tmp_path.resolve() / ".tinyopt" / "prefect-results")},
    }


def test_production_lookup_tells_none_from_an_error(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    from tinyopt.orchestration import tracking
    from tinyopt.release.registry import serving

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert serving("no-such-model") is None
    tracking.client().create_registered_model("fashion-mnist-nano33ble")
    assert serving("fashion-mnist-nano33ble") is None  # a model, but no version holds `production`
    # A tracking server that does not answer is an error, never "nothing in production" (which would publish).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(MlflowException, match="failed"):
        serving("fashion-mnist-nano33ble")
