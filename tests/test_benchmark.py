"""The edge benchmark on real files (ours and the paper's): graph facts, TFLM, latency, fit, `tinyopt bench`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.benchmark import benchmark_tflite, graph_facts, measure_latency
from tests.conftest import REPO, make_project, needs_fashion, prepare_fashion_slice, run_cli
from tinyopt.params import DEFAULT_DEVICES
from tinyopt.run.device_fit import fit_verdict

REFERENCE = REPO.parent / "shared" / "reference" / "seed-cnn1"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="needs ../shared/reference/seed-cnn1")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    return prepare_fashion_slice(tmp_path_factory.mktemp("data"), 200, 100, seed=0)


@needs_reference
def test_graph_facts_count_the_paper_cnn_parameters_and_macs():
    facts = graph_facts(REFERENCE / "base-f32.tflite")
    assert facts["params"] == 20410  # as the paper states
    assert facts["macs"] == 26 * 26 * 12 * 9 + 2028 * 10  # conv 3x3x1 over 26x26x12, dense 2028 -> 10
    # That converter wrote the one-channel Conv2D as a depthwise convolution: same MACs either way.
    assert {"DEPTHWISE_CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "RESHAPE"} <= set(facts["ops"])
    assert graph_facts(REFERENCE / "base-f16.tflite")["params"] == 20410  # counted through DEQUANTIZE
    assert graph_facts(REFERENCE / "qat-f32.tflite")["params"] == 20410  # through FAKE_QUANT (was 22: biases only)


@needs_reference
@needs_fashion
@pytest.mark.parametrize(
    "name, runs, reason",
    [
        ("base-int8-floatio", True, None),
        ("base-f32", True, None),
        ("base-f16", False, "DEQUANTIZE"),
        ("base-dynrange", False, "FULLY_CONNECTED"),
        ("qat-f32", False, "FAKE_QUANT"),
    ],
)
def test_tflm_verdict_arena_and_agreement_with_litert(prepared, name, runs, reason):
    record = benchmark_tflite(REFERENCE / f"{name}.tflite", prepared)
    assert record.tflm_runs is runs
    if runs:
        assert record.arena_bytes and record.arena_verified  # the recorded arena is enough on its own
        assert record.tflm_top1_agreement == 1.0
        assert record.tflm_max_abs_diff < 0.05
    else:
        assert reason in record.tflm_error and record.arena_bytes is None


@needs_reference
@needs_fashion
def test_latency_harness_reports_percentiles_and_the_int16_slowdown(prepared, tmp_path):
    from tinyopt.datasets.prepared import load_prepared

    files = [REFERENCE / "base-int8-floatio.tflite", REFERENCE / "base-f32.tflite"]
    timings = measure_latency(files, load_prepared(prepared)["x_test"][0], warmup=5, repeats=50)
    for path in files:
        figures = timings[str(path)]
        assert 0 < figures["latency_us_p50"] <= figures["latency_us_p99"]
        assert figures["latency_runs"] == 50


def test_fit_verdicts_name_the_budget_and_the_overrun():
    nano, uno = DEFAULT_DEVICES["nano33ble"], DEFAULT_DEVICES["uno"]
    assert fit_verdict(23_000, True, 12_000, nano)["fits"] is True
    verdict = fit_verdict(23_000, True, 12_000, uno)
    assert verdict["fits"] is False
    assert (
        verdict["reason"] == f"flash over by {23_000 + 50_000 - 32 * 1024:,} bytes ({73_000:,} needed of {32 * 1024:,})"
    )
    sram = fit_verdict(1_000, True, 300_000, nano)
    assert sram["reason"].startswith("SRAM over by")
    refused = fit_verdict(20_000, False, None, nano, "Node DEQUANTIZE (number 1) failed to prepare; more")
    assert refused == {
        "fits": False,
        "reason": "TFLM cannot run it (Node DEQUANTIZE (number 1) failed to prepare)",
        "flash_needed": None,
        "ram_needed": None,
    }


@needs_reference
@needs_fashion
def test_bench_command_measures_files_in_the_pipeline_harness(tmp_path, prepared):
    make_project(tmp_path)
    out = tmp_path / "bench.json"
    result = run_cli(
        [
            "bench",
            str(REFERENCE / "base-int8-floatio.tflite"),
            str(REFERENCE / "qat-f32.tflite"),
            "--prepared",
            str(prepared),
            "--json",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    records = {r["name"]: r for r in json.loads(out.read_text())}
    assert records["base-int8-floatio"]["tflm_runs"] and records["base-int8-floatio"]["fits"]["nano33ble"]
    assert not records["qat-f32"]["tflm_runs"] and not any(records["qat-f32"]["fits"].values())
    assert "base-int8-floatio" in result.stdout and "FAKE_QUANT" in result.stdout
    missing = run_cli(["bench", str(tmp_path / "nothing.tflite")], cwd=tmp_path)
    assert missing.returncode == 2 and "nothing.tflite: no such file or directory" in missing.stderr


@needs_reference
@needs_fashion
def test_bench_says_why_a_model_has_no_device_figures_and_a_missing_toolchain_once(tmp_path, prepared):
    make_project(tmp_path)  # benchmark.devices: nano33ble, stm32f746, corstone-300
    float_model = str(REFERENCE / "base-f32.tflite")
    result = run_cli(["bench", float_model, "--prepared", str(prepared)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.endswith(
        "\n\nwhy no device figures:\n"
        "  base-f32: not compiled for a device: a float model: microcontroller C libraries are made from int8 models\n"
    )
    assert "tinyopt: warning" not in result.stderr

    # No cross compiler or QEMU on PATH: one warning before the figures, no reason repeated per model.
    no_toolchain = tmp_path / "empty-bin"
    no_toolchain.mkdir()
    int8_model = str(REFERENCE / "base-int8-floatio.tflite")
    result = run_cli(
        ["bench", float_model, int8_model, "--prepared", str(prepared)], cwd=tmp_path, env={"PATH": str(no_toolchain)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert [line for line in result.stderr.splitlines() if line.startswith("tinyopt:")] == [
        "tinyopt: warning: no device figures: arm-none-eabi-gcc is not installed "
        "(Debian: gcc-arm-none-eabi, qemu-system-arm; scripts/setup.sh)"
    ]
    assert "base-int8-floatio" in result.stdout and "why no device figures" not in result.stdout
    assert "not installed" not in result.stdout
