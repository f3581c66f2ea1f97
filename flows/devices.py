"""Running int8 model files on the emulated devices: per file a compile step (its C library), then a device
step that waits for it and runs the library on every profile of benchmark.devices. The optimize flow starts
them as soon as each int8 variant is converted, so the emulators work while other models still train."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.compile import FLOAT_MODEL, compile_model
from tasks.device import run_on_devices
from tinyopt.core import layout
from tinyopt.mcu.firmware import toolchain_missing, toolchain_version
from tinyopt.mcu.graph import has_int8_tensors
from tinyopt.params import Params
from tinyopt.records.steps import DEVICES_OFF, DeviceRecord, NotRun, SkippedRecord


@dataclass(frozen=True)
class OnDevices:
    """One model file's compile and device task runs (their futures)."""

    compiled: Any
    measured: Any

    def result(self) -> DeviceRecord | NotRun:
        """What the devices measured, or why they measured nothing (an op the generator lacks...)."""
        compiled, measured = self.compiled.result(), self.measured.result()
        if isinstance(compiled, SkippedRecord):
            return NotRun(reason=f"not compiled for a device: {compiled.reason}")
        if isinstance(measured, SkippedRecord):
            return NotRun(reason=f"not run on a device: {measured.reason}")
        return measured


Started = OnDevices | NotRun  # a model file sent to the devices, or why it was not


def devices_off(params: Params) -> NotRun | None:
    """Why no model of this run is measured on a device, or None."""
    if not params.benchmark.devices:
        return NotRun(reason=DEVICES_OFF + "benchmark.devices lists no profile")
    missing = toolchain_missing()
    return NotRun(reason=DEVICES_OFF + missing) if missing else None


def start_on_devices(labelled: dict[str, Path], prepared: Path, params: Params, run: Any) -> dict[str, Started]:
    """label -> its compile and device task runs, or why it has none (devices off, a float model)."""
    off = devices_off(params)
    if off:
        return {label: off for label in labelled}
    started: dict[str, Started] = {
        label: NotRun(reason=f"not compiled for a device: {FLOAT_MODEL}")
        for label, path in labelled.items()
        if not has_int8_tensors(path)
    }
    profiles = {name: params.devices[name] for name in params.benchmark.devices}
    for label, path in ((label, path) for label, path in labelled.items() if label not in started):
        name = label.replace(":", "-")  # ref:base-f32 -> ref-base-f32
        library = layout.C_LIBRARIES / name
        compiled = run(compile_model, f"compile {label}", tflite_path=path, model_name=name, out_dir=library)
        measured = run(
            run_on_devices,
            f"device {label}",
            wait_for=[compiled],
            tflite_path=path,
            library=library,
            prepared=prepared,
            profiles=profiles,
            metric=params.task.score_metric,
            images=params.benchmark.device_images,
            toolchain=toolchain_version(),
        )
        started[label] = OnDevices(compiled, measured)
    return started


def device_results(started: dict[str, Started]) -> dict[str, DeviceRecord | NotRun]:
    """label -> its DeviceRecord, or why it has none (waits for every device step)."""
    return {label: on.result() if isinstance(on, OnDevices) else on for label, on in started.items()}
