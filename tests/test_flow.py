"""The `optimize` flow end to end on a small slice, through the CLI, with a real (SQLite) MLflow store."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO, make_project, needs_fashion, run_cli
from tests.flow_helpers import finished_steps, mlflow_client, progress_counts, skipped_steps, summary_of
from tinyopt.mcu.graph import has_int8_tensors

pytestmark = [pytest.mark.slow, needs_fashion]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"))
    result = run_cli(["run"], cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (root / "first-run.log").write_text(result.stdout + result.stderr)
    assert "Error encountered when computing cache key" not in result.stdout + result.stderr  # every step cached
    return root


def test_summary_records_the_run_data_and_baseline(project):
    summary = summary_of(project)
    assert (project / "reports" / summary["run_id"] / "summary.json").read_text() == (
        project / "reports" / "latest" / "summary.json"
    ).read_text()
    assert summary["dataset"]["name"] == "fashion-mnist"
    assert summary["dataset"]["version"].endswith(".dir")
    assert (summary["dataset"]["num_train"], summary["dataset"]["num_val"], summary["dataset"]["num_test"]) == (
        1080,
        120,
        400,
    )
    baseline = summary["baseline"]
    assert baseline["chain"] == ["train", "float32"] and baseline["name"] == "base-float32"
    assert (project / baseline["model"]).is_file() and (project / baseline["tflite"]).is_file()
    assert baseline["raw_bytes"] == (project / baseline["tflite"]).stat().st_size
    assert 0.3 < baseline["accuracy"] <= 1.0 and baseline["accuracy"] == baseline["score"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert summary["git_commit"].removesuffix("-dirty") == head  # the code version, not the project dir's
    assert len(summary["params_hash"]) == 16


def test_every_chain_of_the_plan_is_a_variant_or_a_skip_with_its_reason(project):
    summary = summary_of(project)
    names = [v["name"] for v in summary["variants"]]
    assert names == ["base-float32", "base-int8", "prune-int8", "prune-float16", "prune-sp_cluster-int8"]
    assert summary["skipped"] == [
        {
            "name": "qat-int16x8",
            "chain": ["train", "qat", "int16x8"],
            "reason": "the TFLite converter rejects this model for int16x8: "
            "Quantization to 16x8-bit not yet supported for op: 'DEQUANTIZE'.",
        }
    ]
    by_name = {v["name"]: v for v in summary["variants"]}
    pruned = by_name["prune-int8"]
    assert pruned["chain"] == ["train", "prune", "int8"] and pruned["parent_variant"] == "base-int8"
    assert pruned["sparsity"] == pytest.approx(0.7, abs=0.01)
    assert (pruned["input_dtype"], pruned["output_dtype"]) == ("int8", "int8")
    assert pruned["gzip_bytes"] < 0.6 * by_name["base-int8"]["gzip_bytes"]  # where pruning shows its gain
    assert max(by_name["prune-sp_cluster-int8"]["unique_weights"].values()) <= 17
    for variant in summary["variants"]:
        assert (project / variant["tflite"]).is_file() and (project / variant["c_source"]).is_file()


VARIANT_FIELDS = {
    "name",
    "chain",
    "tflite",
    "c_source",
    "raw_bytes",
    "gzip_bytes",
    "accuracy",
    "latency_us_p50",
    "latency_us_p99",
    "input_dtype",
    "tflm_runs",
    "tflm_error",
    "arena_bytes",
    "params",
    "macs",
    "fits",
    "mlflow_run_id",
}


def test_every_variant_is_benchmarked_judged_per_device_and_picked_from(project):
    summary = summary_of(project)
    for record in [*summary["variants"], *summary["reference"]]:
        assert VARIANT_FIELDS - {"chain", "c_source"} <= set(record), record["name"]
        assert set(record["fits"]) == {
            "nano33ble",
            "stm32f746",
            "corstone-300",
            "b-l475e-iot01a",
            "pico",
            "esp32",
            "uno",
        }
        assert record["fits"]["uno"] is False  # 32 KB of flash: nothing fits, a useful negative case
        assert record["latency_us_p50"] <= record["latency_us_p99"]
    for variant in summary["variants"]:
        assert VARIANT_FIELDS <= set(variant)
        assert variant["params"] == 20410 and variant["macs"] == 26 * 26 * 12 * 9 + 2028 * 10
    by_name = {v["name"]: v for v in summary["variants"]}
    assert by_name["base-int8"]["tflm_runs"] and by_name["base-int8"]["arena_bytes"] > 0
    # TFLM reference kernels and LiteRT optimized kernels round differently by a step at most.
    assert by_name["base-int8"]["fits"]["nano33ble"] and by_name["base-int8"]["tflm_top1_agreement"] >= 0.9
    assert by_name["prune-float16"]["tflm_runs"] is False and "DEQUANTIZE" in by_name["prune-float16"]["tflm_error"]
    assert set(summary["picks"]) == {
        "smallest-ota",
        "most-accurate",
        "most-accurate-deployable",
        "fastest",
        "best-on-nano33ble",
    }
    ota = summary["picks"]["smallest-ota"]
    assert by_name[ota["variant"]]["tflm_runs"] and ota["why"].startswith("lowest gzip_bytes")


def test_reference_models_are_measured_in_the_same_run(project):
    summary = summary_of(project)
    if not summary["reference"]:
        pytest.skip(summary["reference_note"])
    names = {r["name"] for r in summary["reference"]}
    assert len(names) == 19 and "graph-int8-floatio" in names
    deployable = {r["name"] for r in summary["reference"] if r["tflm_runs"]}
    # The reference README's table: the float32 and int8-with-float-I/O files run, nothing else does.
    assert deployable == {
        f"{model}-{kind}" for model in ("base", "pruned", "graph", "separable") for kind in ("f32", "int8-floatio")
    }
    row = next(c for c in summary["comparisons"] if c["reference"] == "base-f32")
    assert row["ours"] == "base-float32" and row["latency_ratio"] > 0
    report = (project / "reports" / "latest" / "report.md").read_text()
    assert "## Reference models, measured in the same run and harness" in report
    for plot in ("score-vs-gzip.png", "score-vs-arena.png"):
        assert (project / "reports" / "latest" / plot).stat().st_size > 10_000


def test_every_int8_model_runs_on_each_emulated_core_bit_exact_with_tflm(project):
    summary = summary_of(project)
    by_name = {
        v["name"]: v for v in [*summary["variants"], *({**r, "name": "ref:" + r["name"]} for r in summary["reference"])]
    }
    int8 = [name for name, m in by_name.items() if "int8" in name and "int16" not in name]
    assert {"base-int8", "prune-int8", "prune-sp_cluster-int8"} <= set(int8)
    for name in int8:
        device = by_name[name]["device"]
        assert set(device) == {"nano33ble", "stm32f746", "corstone-300"}, (name, by_name[name]["device_note"])
        assert [device[p]["core"] for p in device] == ["cortex-m4", "cortex-m7", "cortex-m55"]
        for figures in device.values():
            assert figures["bit_exact"] and figures["images"] == summary["dataset"]["num_test"]
            assert 10_000 < figures["flash_bytes"] < 40_000 and 5_000 < figures["ram_bytes"] < 20_000
            assert 100_000 < figures["instructions"] < 2_000_000
        if by_name[name]["output_dtype"] == "int8":  # bit-exact with TFLM, and TFLM within a step of LiteRT
            assert abs(device["nano33ble"]["score"] - by_name[name]["score"]) <= 0.01
        assert by_name[name]["fit_reasons"]["nano33ble"].startswith("fits (measured on mps2-an386")
        library = project / by_name[name]["c_library"]
        assert {p.name for p in library.iterdir()} >= {"README.md", "kernels.h", "library.json"}
    assert by_name["base-float32"]["device"] == {} and "a float model" in by_name["base-float32"]["device_note"]
    assert summary["picks"]["fastest"]["metric"] == "instructions on nano33ble's emulated core"
    assert by_name[summary["picks"]["fastest"]["variant"]]["device"]["nano33ble"]
    report = (project / "reports" / "latest" / "report.md").read_text()
    assert "## On the emulated devices" in report and "| base-int8 | corstone-300 | cortex-m55 (mps3-an547) |" in report
    assert (project / "reports" / "latest" / "score-vs-instructions.png").stat().st_size > 10_000
    client = mlflow_client(project)
    run = client.get_run(by_name["base-int8"]["mlflow_run_id"])
    for profile in ("nano33ble", "stm32f746", "corstone-300"):
        for key in ("flash_bytes", "ram_bytes", "instructions", "score", "bit_exact"):
            assert f"device.{profile}.{key}" in run.data.metrics
    assert (
        run.data.metrics["device.nano33ble.instructions"] == by_name["base-int8"]["device"]["nano33ble"]["instructions"]
    )
    # The C library is in the variant's logged model, with the .tflite and its C array.
    logged = client.get_logged_model(by_name["base-int8"]["mlflow_model_id"])
    assert logged.source_run_id == run.info.run_id and logged.status == "READY" and logged.name == "base-int8"
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=logged.artifact_location, tracking_uri=f"sqlite:///{project / 'mlflow.db'}"
        )
    )
    assert {"base-int8.tflite", "base-int8.cc", "base-int8.h"} <= {p.name for p in local.iterdir()}
    assert {"base_int8.c", "base_int8.h", "README.md"} <= {p.name for p in (local / "c_library").iterdir()}
    assert (local / "base-int8.tflite").read_bytes() == (project / by_name["base-int8"]["tflite"]).read_bytes()
    linked = {metric.key: metric.value for metric in logged.metrics or []}
    assert linked["device.nano33ble.instructions"] == by_name["base-int8"]["device"]["nano33ble"]["instructions"]


def test_shared_prefixes_are_trained_once(project):
    # prune-int8, prune-float16 and prune-sp_cluster-int8 share one pruned model.
    assert len(list((project / "artifacts" / "models").iterdir())) == 3  # prune, prune-sp_cluster, qat
    log = (project / "first-run.log").read_text()
    assert len(re.findall(r"\] prune (done|cached)", log)) == 1  # one task run, named by its plan token


def test_mlflow_holds_a_parent_run_and_the_baseline_child_run(project):
    summary = summary_of(project)
    client = mlflow_client(project)
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.info.status == "FINISHED"
    for key in ("git_commit", "dataset", "dataset_version", "params_hash"):
        assert parent.data.tags[key] == str(
            {
                "git_commit": summary["git_commit"],
                "dataset": "fashion-mnist",
                "dataset_version": summary["dataset"]["version"],
                "params_hash": summary["params_hash"],
            }[key]
        )
    child = client.get_run(summary["baseline"]["mlflow_run_id"])
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert child.data.metrics["accuracy"] == pytest.approx(summary["baseline"]["accuracy"])
    assert child.data.metrics["raw_bytes"] == summary["baseline"]["raw_bytes"]
    for key in (
        "gzip_bytes",
        "train_seconds",
        "keras_score",
        "score",
        "params",
        "macs",
        "latency_us_p50",
        "fits.nano33ble",
    ):
        assert key in child.data.metrics
    assert child.data.params["train.epochs"] == "2" and child.data.params["seed"] == "7"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert artifacts == {"model.keras"}  # the Keras model; the .tflite and its C are its logged model's
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    ended = {run.data.tags["variant"]: run.info.status for run in children}
    assert ended == {
        **{v["name"]: "FINISHED" for v in summary["variants"]},
        **{f"ref:{r['name']}": "FINISHED" for r in summary["reference"]},
        **{s["name"]: "KILLED" for s in summary["skipped"]},  # its technique did not apply: the reason is a tag
    }
    skipped = next(run for run in children if run.data.tags["variant"] == "qat-int16x8")
    assert skipped.data.tags["skipped"] == summary["skipped"][0]["reason"]
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {
        "summary.json",
        "report.md",
        "score-vs-gzip.png",
        "score-vs-arena.png",
    }
    ota = summary["picks"]["smallest-ota"]["variant"]
    picked = next(run for run in children if run.data.tags["variant"] == ota)
    assert picked.data.tags["pick.smallest-ota"] == "true" and parent.data.tags["pick.smallest-ota"] == ota
    pruned = next(run for run in children if run.data.tags["variant"] == "prune-sp_cluster-int8")
    assert pruned.data.tags["parent_variant"] == "prune-int8"
    assert pruned.data.tags["chain"] == "train > prune > sp_cluster > int8"
    assert pruned.data.params["prune.target_sparsity"] == "0.7" and pruned.data.params["sp_cluster.clusters"] == "16"
    assert {"sparsity", "unique_weights.conv2d", "unique_weights.dense", "gzip_bytes"} <= set(pruned.data.metrics)
    # Local store: artifacts beside the database, in the project.
    assert (project / "mlartifacts").is_dir()


def test_mlflow_runs_hold_per_epoch_curves_the_dataset_and_the_params(project):
    summary = summary_of(project)
    client = mlflow_client(project)
    by_name = {v["name"]: v for v in summary["variants"]}
    baseline = client.get_run(by_name["base-float32"]["mlflow_run_id"])
    epochs = summary["baseline"]["epochs_run"]
    for key in ("train.loss", "train.accuracy", "train.val_loss", "train.val_accuracy"):
        history = client.get_metric_history(baseline.info.run_id, key)
        assert [point.step for point in sorted(history, key=lambda p: p.step)] == list(range(epochs)), key
    # A fine-tuned variant's run holds its own fit's curves and its ancestors': prune, then sp_cluster on it.
    clustered = by_name["prune-sp_cluster-int8"]["mlflow_run_id"]
    for key in ("train.loss", "prune.loss", "prune.val_accuracy", "sp_cluster.loss"):
        assert client.get_metric_history(clustered, key), key
    assert not client.get_metric_history(by_name["prune-int8"]["mlflow_run_id"], "sp_cluster.loss")
    # The dataset is each run's input: its DVC md5 as the digest, its split sizes as the profile.
    for run_id in (summary["mlflow_run_id"], by_name["prune-int8"]["mlflow_run_id"]):
        (data,) = client.get_run(run_id).inputs.dataset_inputs
        assert data.dataset.name == "fashion-mnist" and data.dataset.digest == summary["dataset"]["version"]
        assert '"num_train": 1080' in data.dataset.profile
    parent = client.get_run(summary["mlflow_run_id"])
    assert parent.data.params["train.epochs"] == "2" and parent.data.params["seed"] == "7"
    assert parent.data.metrics["wall_seconds"] > 0
    ota = summary["picks"]["smallest-ota"]["variant"]
    assert parent.data.metrics["pick.smallest-ota.gzip_bytes"] == by_name[ota]["gzip_bytes"]
    assert parent.info.end_time - parent.info.start_time > 20_000  # opened when the flow started, not at its end


def test_second_run_with_nothing_changed_reuses_every_step(project):
    model = project / "artifacts" / "baseline" / "model.keras"
    before = model.stat().st_mtime_ns
    result = run_cli(["run"], cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert model.stat().st_mtime_ns == before  # not retrained
    log = result.stdout + result.stderr
    # fetch, prepare, train, 2 techniques + qat, 6 conversions, 5 evaluations, and the benchmarks and
    # evaluations of the 5 variants and 19 reference models: all from the cache. Latency is measured anew.
    summary = summary_of(project)
    references = len(summary["reference"])
    files = [project / m["tflite"] for m in [*summary["variants"], *summary["reference"]]]
    devices = 2 * sum(map(has_int8_tensors, files))  # a compile and a device step per file with int8 tensors
    steps = finished_steps(log)
    counts = progress_counts(log)
    # the plan's total, fixed from the start, is reached: every step finished or counted as skipped
    assert len({total for _, total in counts}) == 1 and counts[-1][0] == counts[-1][1], counts
    assert counts[-1][0] == len(steps) + skipped_steps(log), counts
    assert len([name for name, outcome in steps if outcome == "cached"]) == 17 + 5 + 2 * references + devices, log[
        -3000:
    ]
    ran = [name for name, outcome in steps if outcome != "cached"]
    assert all(name.startswith("log ") or name == "measure latency" for name in ran), ran
    assert len(steps) == 17 + 5 + 2 * references + devices + 1 + 5 + references  # every step, the latency and logs
    # Nothing trained live, yet the new run's variants hold the curves, from the cached records.
    clustered = next(v for v in summary_of(project)["variants"] if v["name"] == "prune-sp_cluster-int8")
    history = mlflow_client(project).get_metric_history(clustered["mlflow_run_id"], "sp_cluster.loss")
    assert sorted(point.step for point in history) == list(range(len(history))) and history


def test_a_deleted_output_is_rebuilt_and_nothing_else_runs(project):
    # The working file (the summary names the run's own snapshot of it, under artifacts/runs/<run-id>/)
    tflite = project / "artifacts" / "variants" / "prune-int8" / "prune-int8.tflite"
    assert summary_of(project)["variants"][2]["tflite"].endswith("/variants/prune-int8/prune-int8.tflite")
    tflite.unlink()
    result = run_cli(["run"], cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert tflite.is_file()
    ran = [
        name
        for name, outcome in finished_steps(result.stdout + result.stderr)
        if outcome == "done" and not name.startswith("log ") and name != "measure latency"
    ]
    assert ran == ["convert prune-int8"]


def test_changed_params_retrain_everything_downstream(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    model = project / "artifacts" / "baseline" / "model.keras"
    before = model.stat().st_mtime_ns
    result = run_cli(["run"], cwd=project)
    assert result.returncode == 0, result.stderr[-3000:]
    assert model.stat().st_mtime_ns != before
    assert summary_of(project)["baseline"]["epochs_run"] == 1
    steps = dict(finished_steps(result.stdout + result.stderr))
    assert steps["fetch fashion-mnist"] == steps["prepare fashion-mnist"] == "cached"  # they did not change
    assert steps["train baseline"] == "done"
