"""The edge benchmark, device fit, selection and report, on real files (ours and the paper's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.benchmark import benchmark_tflite, graph_facts, measure_latency
from tests.conftest import REPO, make_project, needs_fashion, prepare_fashion_slice, run_cli
from tinyopt.device_fit import fit_verdict, fits_all
from tinyopt.params import DEFAULT_DEVICES, Objective
from tinyopt.plots import pareto_front
from tinyopt.records import Baseline, DeviceFigures, Pick, Summary, Variant
from tinyopt.report import markdown, write_report
from tinyopt.select import select

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


def variant(name, val, gzip, tflm=True, fits=True, latency=10.0, metric="accuracy", **more) -> Variant:
    """A variant record with the figures selection and the headline look at; the rest plain."""
    figures = dict(
        name=name,
        tflite=f"{name}.tflite",
        raw_bytes=gzip * 2,
        gzip_bytes=gzip,
        metric=metric,
        score=val,
        val_score=val,
        latency_us_p50=latency,
        latency_us_p99=latency,
        input_dtype="int8",
        output_dtype="int8",
        params=1,
        macs=1,
        ops={},
        tflm_runs=tflm,
        arena_bytes=1000,
        fits={"nano33ble": fits},
        chain=["train", "int8"],
        model="m.keras",
        c_source="m.cc",
        keras_score=val,
        train_seconds=0.0,
        sparsity=0.0,
        unique_weights={},
    )
    return Variant(**{**figures, **more})


def test_selection_applies_constraints_and_explains_the_pick():
    variants = [
        variant("a", 0.90, 18000),
        variant("b", 0.895, 7000),
        variant("c", 0.86, 5000),
        variant("d", 0.91, 40000, tflm=False, fits=False),
    ]
    picks = select(
        variants,
        0.90,
        "accuracy",
        {
            "ota": Objective(metric="gzip_bytes", goal="min", max_score_drop=0.01, tflm_only=True),
            "best": Objective(metric="score", goal="best"),
            "nano": Objective(metric="score", goal="best", profile="nano33ble"),
            "impossible": Objective(
                metric="gzip_bytes", goal="min", max_score_drop=0.0, tflm_only=True, profile="nano33ble"
            ),
        },
    )
    assert picks["ota"].variant == "b" and picks["ota"].runner_up == "a" and picks["ota"].candidates == 2
    assert "lowest gzip_bytes (7000) of 2 variants meeting: TFLM runs it;" in picks["ota"].why
    assert "highest validation accuracy (0.91)" in picks["best"].why
    assert picks["best"].variant == "d" and picks["nano"].variant == "a"
    assert picks["impossible"].variant == "a"  # exactly at the baseline passes a zero-drop limit
    assert (
        select(
            [variant("c", 0.5, 10)], 0.9, "accuracy", {"x": Objective(metric="score", goal="best", max_score_drop=0.1)}
        )["x"].variant
        is None
    )


def test_selection_follows_the_metric_direction_for_errors():
    variants = [
        variant("a", 0.30, 9000, metric="mae"),
        variant("b", 0.20, 9500, metric="mae"),
        variant("c", 0.26, 5000, metric="mae"),
    ]
    picks = select(
        variants,
        0.25,
        "mae",
        {
            "best": Objective(metric="score", goal="best"),
            "small": Objective(metric="gzip_bytes", goal="min", max_score_drop=0.02),
        },
    )
    assert picks["best"].variant == "b" and picks["best"].why.startswith("lowest validation mae (0.2)")
    assert picks["small"].variant == "c"  # 0.01 worse than the baseline's 0.25: allowed; a is 0.05 worse


def test_pareto_front_keeps_only_undominated_points():
    points = [(100, 0.80), (50, 0.85), (200, 0.90), (60, 0.84), (300, 0.89)]
    assert sorted(pareto_front(points)) == [1, 2]


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


def device_figures(instructions: float, flash: int = 20_000, ram: int = 10_000) -> DeviceFigures:
    return DeviceFigures(
        core="cortex-m4",
        machine="mps2-an386",
        flash_bytes=flash,
        model_flash_bytes=flash - 2_000,
        ram_bytes=ram,
        arena_bytes=ram - 1_000,
        stack_bytes=200,
        instructions=instructions,
        instructions_per_op={"0:CONV_2D": instructions},
        images=100,
        score=0.9,
        bit_exact=True,
        bit_exact_share=1.0,
        latency_ms_estimate=instructions / 64e3,
    )


def test_report_has_every_section_and_the_device_figures(tmp_path):
    record = variant(
        "base-int8",
        0.9,
        17000,
        params=20410,
        macs=93288,
        latency_us_p99=12.0,
        device={"nano33ble": device_figures(4e5)},
    )
    summary = Summary(
        run_id="r1",
        created="2026-12-01T00:00:00+00:00",
        mlflow_run_id="m",
        mlflow_tracking_uri="sqlite:///mlflow.db",
        mlflow_experiment="tinyopt",
        git_commit="c",
        params_hash="h",
        dataset={"name": "fashion-mnist", "version": "v", "num_train": 1, "num_val": 1, "num_test": 1},
        baseline=Baseline(**dict(record), epochs_run=1),
        variants=[record],
        skipped=[],
        picks={
            "ota": Pick(
                variant="base-int8", value=17000, metric="gzip_bytes", why="because", candidates=1, runner_up=None
            )
        },
        reference=[record.model_copy(update={"name": "ref"})],
        reference_note=None,
        comparisons=[
            {
                "reference": "ref",
                "ours": "base-int8",
                "size_ratio": 1.0,
                "gzip_ratio": 1.0,
                "score_diff": 0.0,
                "latency_ratio": 1.0,
            }
        ],
        headline=[],
        devices={name: profile.model_dump() for name, profile in DEFAULT_DEVICES.items()},
        timings={},
    )
    text = markdown(summary)
    for heading in (
        "## Picks",
        "## Variants",
        "## On the emulated devices",
        "## Reference models",
        "## Ours beside the reference",
        "## How to read this",
    ):
        assert heading in text
    assert "| base-int8 | 34,000 | 17,000 | 0.9000 |" in text
    assert "| base-int8 | nano33ble | cortex-m4 (mps2-an386) | 20,000 (18,000) | 10,000 | 400,000 |" in text
    assert "| 1.000 | 1.000 |" in text  # flash and instructions as a share of base-int8's
    assert "| ref:ref | nano33ble |" in text
    assert "not device latency" in text and "QEMU counts instructions, not cycles" in text
    files = write_report(summary, tmp_path)
    assert {f.name for f in files} == {
        "report.md",
        "score-vs-gzip.png",
        "score-vs-arena.png",
        "score-vs-instructions.png",
    }


def test_fastest_on_a_device_is_the_fewest_measured_instructions():
    variants = [
        variant("float", 0.90, 40000, latency=1.0),  # fastest on the host, never run on the device
        variant("a", 0.90, 18000, latency=9.0, device={"nano33ble": device_figures(5e5)}),
        variant("b", 0.90, 7000, latency=8.0, device={"nano33ble": device_figures(3e5)}),
    ]
    objective = Objective(metric="instructions", goal="min", profile="nano33ble")
    pick = select(variants, 0.90, "accuracy", {"fastest": objective})["fastest"]
    assert (pick.variant, pick.value, pick.runner_up, pick.candidates) == ("b", 3e5, "a", 2)
    assert "lowest instructions on nano33ble's emulated core (300000.0)" in pick.why


def test_measured_figures_decide_the_fit_where_a_device_ran_the_model():
    edge = variant("a", 0.9, 1000, raw_bytes=2_000_000, arena_bytes=1000)  # the estimate: over nano's flash
    devices = {k: DEFAULT_DEVICES[k] for k in ("nano33ble", "stm32f746", "uno")}
    verdicts = fits_all(
        edge,
        devices,
        {"nano33ble": device_figures(4e5, flash=30_000, ram=12_000)},
        {"stm32f746": "the firmware does not fit STM32F746 Discovery: FLASH (1,048,576 bytes) overflowed by 9 bytes"},
    )
    assert (
        verdicts["nano33ble"]["fits"]
        and "measured on mps2-an386: 30,000 B flash, 12,000 B RAM" in (verdicts["nano33ble"]["reason"])
    )
    assert not verdicts["stm32f746"]["fits"] and "overflowed by 9 bytes" in verdicts["stm32f746"]["reason"]
    assert not verdicts["uno"]["fits"] and verdicts["uno"]["reason"].endswith("(estimate: TFLM's runtime figures)")


def test_headline_lists_every_deployable_int8_variant_that_beats_the_reference():
    from tinyopt.summary import headline

    def model(name, raw, gzip, acc, tflm=True, io="int8", latency=10.0):
        return variant(name, acc, gzip, tflm=tflm, latency=latency, raw_bytes=raw, input_dtype=io, output_dtype=io)

    references = [
        model("ref-best", 23224, 17098, 0.8964, io="float32", latency=8.0),
        model("ref-small", 23208, 7549, 0.8878, io="float32", latency=5.0),
        model("ref-undeployable", 20000, 5000, 0.95, tflm=False),
    ]
    ours = [
        model("a", 22632, 16627, 0.8994),
        model("b", 23300, 16000, 0.90),
        model("c", 22000, 7000, 0.89),
        model("d", 22000, 7000, 0.95, io="float32"),
        model("e", 22000, 6000, 0.85),
    ]
    best, small = headline(ours, references)
    assert best["reference"] == "ref-best"
    assert [m["name"] for m in best["ours"]] == ["a"]  # b is larger, c less accurate, d has float I/O
    assert small["reference"] == "ref-small" and [m["name"] for m in small["ours"]] == ["c"]
    assert small["ours"][0]["latency_ratio_to_fastest_reference"] == 2.0
