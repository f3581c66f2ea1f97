"""MLflow tracking helpers against a real (SQLite) store."""

from __future__ import annotations

import mlflow

from tinyopt.orchestration import tracking


def test_a_logged_model_registers_though_the_process_wide_store_points_elsewhere(tmp_path, monkeypatch):
    # MLflow looks a `models:/<id>` registry source up in its process-wide store, which another library or an
    # earlier call may have pointed elsewhere: registering through tinyopt must still find the model, and leave
    # that store as it found it.
    import mlflow.tracking._tracking_service.utils as process_store

    monkeypatch.setattr(process_store, "_tracking_uri", None)  # restored after the test
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # the local store keeps its artifacts beside it
    elsewhere = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    mlflow.set_tracking_uri(elsewhere)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # where tinyopt tracks
    files = tmp_path / "files"
    files.mkdir()
    (files / "m.tflite").write_bytes(b"tflite")
    run_id = tracking.start_run("e", "run", {})
    model_id = tracking.log_logged_model(run_id, "e", "base-int8", files, {"variant": "base-int8"})
    client = tracking.client()
    client.create_registered_model("m")
    with tracking.as_process_store():
        version = client.create_model_version("m", source=f"models:/{model_id}", run_id=run_id, model_id=model_id)
    assert int(version.version) == 1 and client.get_logged_model(model_id).name == "base-int8"
    assert mlflow.get_tracking_uri() == elsewhere
