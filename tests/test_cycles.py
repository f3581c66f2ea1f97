"""benchmarks/cycles: the QEMU plugin counts exactly the instructions the firmware's SysTick counts in its
window, sorted into classes that fit the model, and the Cortex-M4 estimate is a range above that count."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from tests.conftest import needs_fashion
from tests.test_mcu import SEED_DIR, _model_inputs, _profile, _test_images, needs_arm, needs_gcc


@needs_fashion
@needs_arm
@needs_gcc
def test_the_instruction_mix_adds_up_to_the_measured_instructions(tmp_path):
    from benchmarks.cycles import estimate
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.firmware import build_firmware, run_firmware

    blob = (SEED_DIR / "base-int8-floatio.tflite").read_bytes()
    generated = generate(blob, "base")
    inputs = _model_inputs(blob, _test_images(2))
    firmware = build_firmware(generated, _profile("Cortex-M4"), tmp_path / "fw")
    measured = run_firmware(firmware, inputs, generated.op_kinds, generated.output_dtype, timeout=120)
    mix = estimate.instruction_mix(firmware.elf, firmware.core, inputs, tmp_path / "plugin")

    counted = estimate.instructions(mix)
    # The window also holds the few instructions that read SysTick around the invoke.
    assert measured.instructions_per_inference <= counted <= measured.instructions_per_inference + 50
    macs = 26 * 26 * 12 * 9 + 13 * 13 * 12 * 10  # its 3x3 convolution's and its dense layer's
    assert 0.5 * macs <= mix["mul"] <= macs  # one or two (SMLAD) multiply-accumulates per multiply instruction
    assert mix["load"] + mix["load_next"] > 0 and 0 < mix["taken"] <= mix["branch"] + mix["multi"] + mix["load"]
    low, high = estimate.cycles(mix)
    assert counted < low < high < 3 * counted


@needs_arm
@needs_gcc
def test_a_firmware_without_window_markers_is_refused_in_words(tmp_path):
    from benchmarks.cycles import estimate
    from tinyopt.mcu.firmware import core_for

    elf, source = tmp_path / "bare.elf", tmp_path / "bare.c"
    source.write_text("void Reset_Handler(void) { for (;;) {} }\n")
    compile_bare = ["arm-none-eabi-gcc", "-mcpu=cortex-m4", "-mthumb", "-nostdlib", "-o", str(elf), str(source)]
    subprocess.run(compile_bare, check=True, capture_output=True)
    with pytest.raises(estimate.MixUnavailable, match="has no fw_window_open"):
        estimate.instruction_mix(elf, core_for(_profile("Cortex-M4")), np.zeros((1, 1), np.int8), tmp_path)
