"""Device step: a model's C library built into firmware for each device profile's Cortex-M core and run
under QEMU on the test split. Measured, not estimated: flash and RAM of the firmware, instructions per
inference (QEMU counts instructions, not cycles), the task's score as the device computes it, and the share
of test examples whose outputs are bit-exact with TensorFlow Lite Micro's reference kernels."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core.errors import NotApplicable
from tinyopt.mcu.library import read_library
from tinyopt.mcu.on_device import measure_library
from tinyopt.orchestration.steps import step
from tinyopt.params import DeviceProfile
from tinyopt.records.steps import DeviceRecord


@step("device")
def run_on_devices(
    tflite_path: Path,
    library: Path,
    prepared: Path,
    profiles: dict[str, DeviceProfile],
    metric: str = "accuracy",
    images: int | None = None,
    toolchain: str = "",
) -> DeviceRecord:
    """Build and run the library on every profile; `toolchain` (the compiler's and QEMU's versions) only keys
    the cache: another compiler or emulator measures again."""
    from tinyopt.datasets.prepared import load_prepared

    if not (Path(library) / "library.json").is_file():
        raise NotApplicable(f"no C library in {library} (the compile step skipped this model)")
    data = load_prepared(prepared)
    x = data["x_test"][:images]
    y = data["y_test"][:images] if "y_test" in data else None  # random inputs: no score
    generated = read_library(library)
    blob = Path(tflite_path).read_bytes()
    reports = measure_library(generated, blob, profiles, x, y, metric, timeout=max(600, len(x) * 0.2))
    figures = {name: report for name, report in reports.items() if not isinstance(report, str)}
    not_run = {name: report for name, report in reports.items() if isinstance(report, str)}
    return DeviceRecord(tflite_path=str(tflite_path), library=str(library), figures=figures, not_run=not_run)
