"""The edge benchmark on real files (ours and the paper's): graph facts, TFLM, latency, fit, `tinyopt bench`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
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


def convert(model, path: Path, int8: bool = False) -> Path:
    import numpy as np
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        shape = model.input_shape[1:]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([np.random.rand(1, *shape).astype("float32")] for _ in range(10))
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
    path.write_bytes(converter.convert())
    return path


def dense(shape: tuple[int, ...]):
    import tensorflow as tf

    inputs = tf.keras.Input(shape)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(tf.keras.layers.Flatten()(inputs)))


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> Path:
    """Two good files for Fashion-MNIST (28x28) and three bad ones, in one directory."""
    import tensorflow as tf

    root = tmp_path_factory.mktemp("batch")
    convert(dense((28, 28)), root / "good-f32.tflite")
    convert(dense((28, 28)), root / "good-int8.tflite", int8=True)
    convert(dense((32, 32, 3)), root / "wrong-shape.tflite")
    a, b = tf.keras.Input((28, 28)), tf.keras.Input((28, 28))
    sums = tf.keras.layers.Flatten()(tf.keras.layers.Add()([a, b]))
    convert(tf.keras.Model([a, b], tf.keras.layers.Dense(10)(sums)), root / "two-inputs.tflite")
    (root / "corrupt.tflite").write_bytes(b"not a flatbuffer" * 16)
    return root


BAD_FILE_NOTES = [
    "not measured corrupt: not a loadable .tflite model (The model is not a valid Flatbuffer buffer); "
    "re-run the conversion",
    "not measured two-inputs: the model has 2 inputs; tinyopt measures models with one input",
    "not measured wrong-shape: the model takes inputs of shape 32x32x3 but the data's examples are 28x28; "
    "convert a model made for this data, give the data it was made for, or measure it on random inputs "
    "(tinyopt bench --inputs random)",
]


@needs_fashion
def test_bench_on_a_batch_notes_each_bad_file_and_measures_the_others(tmp_path, prepared, batch):
    make_project(tmp_path)
    out = tmp_path / "bench.json"
    result = run_cli(["bench", str(batch), "--prepared", str(prepared), "--json", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[-3:] == BAD_FILE_NOTES
    assert sorted(r["name"] for r in json.loads(out.read_text())) == ["good-f32", "good-int8"]
    table = result.stdout.splitlines()
    assert any(line.startswith("good-f32 ") for line in table) and any(line.startswith("good-int8 ") for line in table)


@needs_fashion
def test_bench_exits_2_and_writes_nothing_when_no_file_could_be_measured(tmp_path, prepared, batch):
    make_project(tmp_path)
    out = tmp_path / "bench.json"
    bad = [str(batch / f"{name}.tflite") for name in ("corrupt", "two-inputs", "wrong-shape")]
    result = run_cli(["bench", *bad, "--prepared", str(prepared), "--json", str(out)], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout.splitlines() == BAD_FILE_NOTES
    assert result.stderr.strip().splitlines()[-1] == (
        "tinyopt: error: none of the 3 files could be measured (each one's reason above)"
    )
    assert "Traceback" not in result.stderr and not out.exists()


@needs_fashion
def test_kill_9_of_bench_leaves_no_compiler_or_qemu_behind(tmp_path, prepared, batch):
    from tests.conftest import TINYOPT
    from tests.test_children import all_gone, command_line, descendants, gone

    make_project(tmp_path)
    toolchain = ("arm-none-eabi-gcc", "cc1", "qemu-system-arm")

    def toolchain_runs(children) -> bool:
        return any(any(tool in command_line(child) for tool in toolchain) for child in children)

    bench = subprocess.Popen(
        [*TINYOPT, "bench", str(batch / "good-int8.tflite"), "--prepared", str(prepared)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        children = []
        while not toolchain_runs(children) and time.monotonic() < deadline:
            time.sleep(0.02)
            children = descendants(bench.pid)
        assert toolchain_runs(children), "no compiler or QEMU ran"
        bench.send_signal(signal.SIGKILL)
        bench.wait()
        assert all_gone([child.pid for child in children]), [command_line(c) for c in children if not gone(c.pid)]
    finally:
        bench.kill()


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


@pytest.fixture(scope="module")
def other_shape_int8(tmp_path_factory) -> Path:
    """A full-int8 model for 32x32x3 inputs: not the project's 28x28 Fashion-MNIST."""
    return convert(dense((32, 32, 3)), tmp_path_factory.mktemp("other") / "other-shape.tflite", int8=True)


def test_bench_on_random_inputs_measures_a_model_without_its_data(tmp_path, other_shape_int8):
    from tinyopt.mcu.firmware import toolchain_missing

    make_project(tmp_path)  # no prepared data in this project: --inputs random needs none
    out = tmp_path / "bench.json"
    result = run_cli(["bench", str(other_shape_int8), "--inputs", "random:4", "--json", str(out)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    [record] = json.loads(out.read_text())
    assert record["score"] is None and record["val_score"] is None and record["metric"] == "none (random inputs)"
    assert record["tflm_runs"] and record["tflm_max_abs_diff"] == 0.0  # TFLM and LiteRT agree on them
    assert "no scores: measured on 4 random inputs of each model's own shape (seed 7)" in result.stdout
    if toolchain_missing():  # no cross compiler or QEMU here: the rest needs them
        return
    figures = record["device"]["nano33ble"]
    assert figures["score"] is None and figures["images"] == 4
    assert figures["bit_exact"]  # the generated C on the emulated core computes what TFLM computes
    assert figures["flash_bytes"] > figures["model_flash_bytes"] > 30 * 1024  # 30,720 weights
    assert figures["ram_bytes"] >= figures["arena_bytes"] and figures["instructions"] > 0


@needs_fashion
def test_bench_on_data_of_another_shape_is_a_one_line_error(tmp_path, prepared, other_shape_int8):
    make_project(tmp_path)
    result = run_cli(["bench", str(other_shape_int8), "--prepared", str(prepared)], cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tinyopt: error: other-shape: the model takes inputs of shape 32x32x3 but the data's examples are 28x28; "
        "convert a model made for this data, give the data it was made for, or measure it on random inputs "
        "(tinyopt bench --inputs random)"
    )
    wrong = run_cli(["bench", str(other_shape_int8), "--inputs", "random:0"], cwd=tmp_path)
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert wrong.stderr.strip().splitlines()[-1].startswith("tinyopt: error: --inputs 'random:0': say random, or")
