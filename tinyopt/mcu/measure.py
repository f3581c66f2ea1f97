"""One step: a .tflite, a device profile and labelled test inputs in, the device-true figures out."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyopt.mcu.codegen import generate
from tinyopt.mcu.firmware import build_firmware, run_firmware
from tinyopt.mcu.host import model_io, run_tflm, tflm_interpreter
from tinyopt.params import DeviceProfile


@dataclass
class DeviceReport:
    model: str
    core: str
    flash_bytes: int
    model_flash_bytes: int
    ram_bytes: int  # data + bss + stack high-water mark
    arena_bytes: int
    stack_bytes: int
    instructions_per_inference: float
    instructions_per_op: dict[str, float]
    images: int
    accuracy: float  # top-1 of the outputs the emulated device computed
    bit_exact_share: float  # share of inputs whose outputs equal TFLM's reference kernels' exactly
    sparse_ops: int  # dense layers that skip zero weights
    clustered_ops: int  # dense layers stored as 4-bit indices into their few values

    def latency_estimate_ms(self, clock_mhz: float, cpi: float = 1.0) -> float:
        """An estimate, not a measurement: instructions x an assumed CPI at the profile's clock."""
        return self.instructions_per_inference * cpi / (clock_mhz * 1e3)


def measure_on_device(
    tflite_path: str | Path,
    profile: DeviceProfile,
    x: np.ndarray,
    y: np.ndarray,
    sparse: bool = True,
    cluster_indices: bool = False,
    timeout: float = 600,
) -> DeviceReport:
    """Generate C for the model, build it for the profile's core, run every input under QEMU, and compare the
    device's outputs with TFLM's on the same inputs. NotApplicable when an op or the budget rules it out."""
    path = Path(tflite_path)
    blob = path.read_bytes()
    generated = generate(blob, "model", sparse=sparse, cluster_indices=cluster_indices)
    inputs = model_io(x, generated, tflm_interpreter(blob))
    with tempfile.TemporaryDirectory() as scratch:
        firmware = build_firmware(generated, profile, Path(scratch))
        run = run_firmware(firmware, inputs, generated.op_kinds, generated.output_dtype, timeout=timeout)
    reference = run_tflm(blob, inputs)
    same = (run.outputs == reference).all(axis=1)
    per_op: dict[str, float] = {}
    for index, (kind, count) in enumerate(zip(generated.op_kinds, run.instructions_per_op, strict=False)):
        per_op[f"{index}:{kind}"] = count
    return DeviceReport(
        path.stem,
        run.core,
        run.flash_bytes,
        run.model_flash_bytes,
        run.ram_bytes,
        generated.arena_bytes,
        run.stack_bytes,
        run.instructions_per_inference,
        per_op,
        len(x),
        float(np.mean(run.outputs.argmax(axis=1) == y)),
        float(same.mean()),
        sum(t.sparse for t in generated.techniques),
        sum(t.clustered for t in generated.techniques),
    )
