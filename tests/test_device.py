"""The compile and device steps: an int8 .tflite to its C library, and that library as firmware on each emulated
core, measured and compared with TFLM's reference kernels; and the params that choose the profiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.compile import compile_model
from tests.conftest import REPO, needs_fashion, prepare_fashion_slice
from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.params import DEFAULT_DEVICES, DeviceProfile, parse_params

SEED_DIR = REPO.parent / "shared" / "reference" / "seed-cnn1"
needs_seed = pytest.mark.skipif(not SEED_DIR.is_dir(), reason="needs ../shared/reference/seed-cnn1")


def _toolchain_reason() -> str | None:
    from tinyopt.mcu.firmware import toolchain_missing

    return toolchain_missing()


needs_arm = pytest.mark.skipif(_toolchain_reason() is not None, reason=str(_toolchain_reason()))


@needs_seed
def test_compile_writes_a_library_a_firmware_team_can_use(tmp_path):
    record = compile_model(SEED_DIR / "base-int8-floatio.tflite", "ref-base-int8-floatio", tmp_path / "lib")
    files = {Path(p).name for p in record.outputs}
    assert files == {"ref_base_int8_floatio.c", "ref_base_int8_floatio.h", "kernels.h", "README.md", "library.json"}
    assert record.name == "ref_base_int8_floatio" and record.arena_bytes > 0
    assert record.ops == ["QUANTIZE", "RESHAPE", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "FULLY_CONNECTED", "DEQUANTIZE"]
    readme = (tmp_path / "lib" / "README.md").read_text()
    assert "ref_base_int8_floatio_invoke(in, out);" in readme and f"{record.arena_bytes:,} bytes" in readme
    assert (
        "int ref_base_int8_floatio_invoke(const float *in, float *out);"
        in (tmp_path / "lib" / "ref_base_int8_floatio.h").read_text()
    )
    pruned = compile_model(SEED_DIR / "pruned-int8-floatio.tflite", "pruned", tmp_path / "pruned")
    assert pruned.sparse_ops == 1  # 80% of its dense weights are zeros: the kernel skips them
    assert "to_fully_connected_sparse(" in (tmp_path / "pruned" / "pruned.c").read_text()
    with pytest.raises(NotApplicable, match="a float model"):
        compile_model(SEED_DIR / "base-f32.tflite", "ref-base-f32", tmp_path / "float")
    assert not (tmp_path / "float").exists()  # nothing half-written


@needs_seed
@needs_fashion
@needs_arm
def test_device_step_measures_each_core_bit_exact_and_says_what_does_not_fit(tmp_path):
    from tasks.device import run_on_devices
    from tinyopt.datasets.prepared import load_prepared
    from tinyopt.ml.metrics import score
    from tinyopt.runtimes.litert import predict

    prepared = prepare_fashion_slice(tmp_path, 200, 120, seed=0)
    model = SEED_DIR / "pruned-int8-floatio.tflite"
    library = Path(compile_model(model, "pruned", tmp_path / "lib").directory)
    tiny = DeviceProfile(name="Tiny M4", core="Cortex-M4", emulator="mps2-an386", flash_bytes=8192, sram_bytes=65536)
    profiles = {name: DEFAULT_DEVICES[name] for name in ("nano33ble", "stm32f746", "corstone-300")} | {"tiny": tiny}
    record = run_on_devices(model, library, prepared, profiles, images=100, toolchain="test")
    assert set(record.figures) == {"nano33ble", "stm32f746", "corstone-300"}
    assert "does not fit Tiny M4: FLASH (8,192 bytes) overflowed by" in record.not_run["tiny"]
    data = load_prepared(prepared)
    litert_score = score("accuracy", data["y_test"][:100], predict(model, data["x_test"][:100]))
    for name, figures in record.figures.items():
        assert figures.bit_exact and figures.bit_exact_share == 1.0 and figures.images == 100
        assert abs(figures.score - litert_score) <= 0.02  # TFLM's reference kernels vs LiteRT's: a step apart
        assert figures.flash_bytes > figures.model_flash_bytes > 5_000 and figures.ram_bytes > figures.arena_bytes
        # The pruned dense layer lists only its non-zero weights: 2 bytes each, against 21,922 model bytes dense.
        assert figures.model_flash_bytes < 11_000 and figures.flash_bytes < 14_000
        assert sum(figures.instructions_per_op.values()) == pytest.approx(figures.instructions, rel=0.01)
        clock = profiles[name].clock_mhz
        assert figures.latency_ms_estimate == pytest.approx(figures.instructions / (clock * 1e3), rel=1e-3)
    assert [record.figures[p].core for p in ("nano33ble", "stm32f746", "corstone-300")] == [
        "cortex-m4",
        "cortex-m7",
        "cortex-m55",
    ]


@pytest.mark.parametrize(
    "section, message",
    [
        ({"benchmark": {"devices": ["esp32"]}}, "benchmark.devices: esp32 cannot be emulated: no emulated machine"),
        ({"benchmark": {"devices": ["nowhere"]}}, "benchmark.devices: no device profile 'nowhere'"),
        (
            {
                "devices": {
                    **{name: profile.model_dump() for name, profile in DEFAULT_DEVICES.items()},
                    "m4": {
                        "name": "M4",
                        "core": "Cortex-M4",
                        "emulator": "mps3-an547",
                        "flash_bytes": 1,
                        "sram_bytes": 1,
                    },
                },
                "benchmark": {"devices": ["m4"]},
            },
            "QEMU machine mps3-an547 emulates a cortex-m55, not a Cortex-M4",
        ),
        (
            {"objectives": {"fast": {"metric": "instructions", "goal": "min", "profile": "b-l475e-iot01a"}}},
            "objectives.fast: instructions is measured on an emulated device; set its profile to one of",
        ),
    ],
)
def test_device_profiles_that_cannot_be_measured_are_one_line_errors(section, message):
    with pytest.raises(UserError, match=re.escape(message)):
        parse_params({**section, **({"schedule": {"objective": "most-accurate"}} if "objectives" in section else {})})
