"""params.yaml's device profiles, the objectives that pick variants for them, and how models are measured."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tinyopt.params.section import Section


class DeviceProfile(Section):
    """A target device (public datasheet figures): its memory budgets and what the runtime itself takes."""

    name: str
    core: str = ""
    emulator: str | None = Field(
        default=None,
        description="the QEMU machine that emulates the core (mps2-an386: Cortex-M4, mps2-an500: Cortex-M7, "
        "mps3-an547: Cortex-M55); null: the one tinyopt knows for the core",
    )
    clock_mhz: float | None = Field(default=None, gt=0)
    flash_bytes: int = Field(ge=0)
    sram_bytes: int = Field(ge=0)
    # An estimate, not a measurement: TFLM's interpreter with the handful of kernels a small CNN uses,
    # plus a minimal application, built with -Os for Cortex-M (about 50 KB of flash), and its RAM
    # outside the tensor arena (interpreter objects, op resolver, stack: about 8 KB).
    runtime_flash_bytes: int = Field(
        default=50_000,
        ge=0,
        description="an estimate of the flash TFLM and a minimal application take besides the model, used where a "
        "profile is not measured",
    )
    runtime_ram_bytes: int = Field(
        default=8_000, ge=0, description="the same for RAM outside the tensor arena (interpreter, op resolver, stack)"
    )


DEFAULT_PROFILE = "nano33ble"  # the device a channel, the scheduled objective and `tinyopt register` target

DEFAULT_DEVICES = {
    DEFAULT_PROFILE: DeviceProfile(
        name="Arduino Nano 33 BLE Sense (nRF52840)",
        core="Cortex-M4F",
        emulator="mps2-an386",
        clock_mhz=64,
        flash_bytes=1024 * 1024,
        sram_bytes=256 * 1024,
    ),
    "stm32f746": DeviceProfile(
        name="STM32F746 Discovery",
        core="Cortex-M7",
        emulator="mps2-an500",
        clock_mhz=216,
        flash_bytes=1024 * 1024,
        sram_bytes=320 * 1024,
    ),
    # The board QEMU's mps3-an547 emulates: code in its 512 KB ITCM, data in its 512 KB DTCM.
    "corstone-300": DeviceProfile(
        name="Arm Corstone-300 (MPS3 AN547)",
        core="Cortex-M55",
        emulator="mps3-an547",
        clock_mhz=32,
        flash_bytes=512 * 1024,
        sram_bytes=512 * 1024,
    ),
    "b-l475e-iot01a": DeviceProfile(
        name="B-L475E-IOT01A (STM32L475)",
        core="Cortex-M4",
        emulator="mps2-an386",
        clock_mhz=80,
        flash_bytes=1024 * 1024,
        sram_bytes=128 * 1024,
    ),
    "pico": DeviceProfile(
        name="Raspberry Pi Pico (RP2040)",
        core="Cortex-M0+",
        clock_mhz=133,
        flash_bytes=2 * 1024 * 1024,
        sram_bytes=264 * 1024,
    ),
    "esp32": DeviceProfile(
        name="ESP32-WROOM-32", core="Xtensa LX6", clock_mhz=240, flash_bytes=4 * 1024 * 1024, sram_bytes=520 * 1024
    ),
    "uno": DeviceProfile(
        name="Arduino Uno (ATmega328P)", core="AVR", clock_mhz=16, flash_bytes=32 * 1024, sram_bytes=2 * 1024
    ),
}


DEVICE_METRICS = ("instructions", "flash_bytes", "ram_bytes")


class Objective(Section):
    """One way to pick the best variant: a metric to minimise or maximise, under constraints."""

    metric: Literal[
        "score", "gzip_bytes", "raw_bytes", "latency_us_p50", "arena_bytes", "instructions", "flash_bytes", "ram_bytes"
    ] = Field(
        description="score: the task's metric; instructions, flash_bytes, ram_bytes: as measured on `profile`'s "
        "emulated core (one of benchmark.devices)",
    )
    goal: Literal["min", "max", "best"] = Field(description="best: the score's own direction (max accuracy, min MAE)")
    max_score_drop: float | None = Field(
        default=None,
        ge=0.0,
        description="at most this much worse than the baseline's validation score, in the metric's units "
        "(0.005 = half a point of accuracy)",
    )
    tflm_only: bool = Field(default=False, description="only variants TensorFlow Lite Micro runs")
    profile: str | None = Field(
        default=None,
        description="only variants that fit this device profile; an objective named after it (best-on-<profile>) "
        "only variants measured on its emulated core, bit-exact with TFLM there",
    )


DEFAULT_OBJECTIVE = f"best-on-{DEFAULT_PROFILE}"
DEFAULT_OBJECTIVES = {
    "smallest-ota": Objective(metric="gzip_bytes", goal="min", max_score_drop=0.01, tflm_only=True),
    "most-accurate": Objective(metric="score", goal="best"),
    "most-accurate-deployable": Objective(metric="score", goal="best", tflm_only=True),
    # Fewest instructions on the device's emulated core: host latency says little about a microcontroller.
    "fastest": Objective(metric="instructions", goal="min", max_score_drop=0.005, profile=DEFAULT_PROFILE),
    DEFAULT_OBJECTIVE: Objective(metric="score", goal="best", profile=DEFAULT_PROFILE),
}


# The authors' public repository at the commit whose files ../shared/reference/seed-cnn1/ copies.
PAPER_MODELS_URL = (
    "https://raw.githubusercontent.com/bharathsudharsan/CNN_on_MCU/5f91ebbaac2908afdac743f7dbfc4635d0a057fa/{path}"
)


class ReferenceParams(Section):
    """Reference .tflite models measured in the same run and harness: the paper's published models, each checked
    against its sha256 (skipped, with a note saying where to put them, when they can be neither found nor
    downloaded, or when they were trained on another dataset)."""

    dir: str | None = Field(
        default="../shared/reference/seed-cnn1",
        description="a local copy of the paper's models (a machine without network); where it is missing they are "
        "downloaded from url into data/reference/seed-cnn1/; null: no reference models",
    )
    url: str | None = Field(
        default=PAPER_MODELS_URL,
        pattern=r"\{path\}",
        description="each file's download address, {path} its path in the authors' repository (the commit "
        "pinned); null: no download",
    )
    dataset: str = Field(default="fashion-mnist", description="the dataset the reference models were trained on")
    counterparts: dict[str, str] = Field(
        description="which of our variants answers each reference model, for the side-by-side ratios",
        default_factory=lambda: {
            f"{theirs}-{their_conv}": f"{ours}-{our_conv}"
            for theirs, ours in (
                ("base", "base"),
                ("pruned", "prune"),
                ("qat", "qat"),
                ("graph", "graph"),
                ("separable", "separable"),
            )
            for their_conv, our_conv in (
                ("f32", "float32"),
                ("f16", "float16"),
                ("dynrange", "dynamic_range"),
                ("int8-floatio", "int8_fallback"),
            )
        },
    )


class BenchmarkParams(Section):
    latency_warmup: int = Field(default=50, ge=0, le=100000, description="invokes before timing")
    latency_repeats: int = Field(
        default=300,
        ge=20,
        le=1000000,
        description="timed invokes per model (fewer for models slower than 2 s in total)",
    )
    devices: list[str] = Field(
        default_factory=lambda: [DEFAULT_PROFILE, "stm32f746", "corstone-300"],
        description="every int8 and int8_fallback variant and every int8 reference model compiled to C "
        "(tinyopt/mcu), built into firmware for each of these profiles and run under QEMU: flash, RAM, "
        "instructions, the score the device computes, and agreement with TFLM's reference kernels; []: none",
    )
    device_images: int | None = Field(
        default=None, ge=1, description="test examples each emulated device runs; null: the whole test split"
    )
