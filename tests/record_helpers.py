"""Records for tests of selection, fit and the report: the figures those read, the rest plain."""

from __future__ import annotations

from tinyopt.records.run import DeviceFigures, Variant


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
