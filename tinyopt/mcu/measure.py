"""Device-true figures of one int8 model: its C library built into firmware for each device profile's core
and run under QEMU on labelled test inputs, compared with TFLM's reference kernels on the same inputs."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyopt.errors import NotApplicable, UserError
from tinyopt.mcu.codegen import Generated, generate
from tinyopt.mcu.firmware import build_firmware, run_firmware
from tinyopt.mcu.host import model_io, run_tflm, tflm_interpreter
from tinyopt.metrics import score
from tinyopt.params import DeviceProfile


@dataclass
class DeviceReport:
    model: str
    core: str
    machine: str
    flash_bytes: int
    model_flash_bytes: int
    ram_bytes: int  # data + bss + stack high-water mark
    arena_bytes: int
    stack_bytes: int
    instructions_per_inference: float
    instructions_per_op: dict[str, float]
    images: int
    score: float  # the task's metric on the outputs the emulated device computed
    bit_exact_share: float  # share of inputs whose outputs equal TFLM's reference kernels' exactly
    sparse_ops: int  # dense layers that skip zero weights
    clustered_ops: int  # dense layers stored as 4-bit indices into their few values

    @property
    def accuracy(self) -> float:  # the benchmark script's name for a classifier's score
        return self.score

    def latency_estimate_ms(self, clock_mhz: float, cpi: float = 1.0) -> float:
        """An estimate, not a measurement: instructions x an assumed CPI at the profile's clock."""
        return self.instructions_per_inference * cpi / (clock_mhz * 1e3)


def dequantized(outputs: np.ndarray, interpreter) -> np.ndarray:
    """The device's raw outputs in the model's output units (int8 outputs through their scale and zero point)."""
    if outputs.dtype != np.int8:
        return outputs.astype(np.float32)
    detail = interpreter.get_output_details(0)["quantization_parameters"]
    return (outputs.astype(np.float32) - float(detail["zero_points"][0])) * float(detail["scales"][0])


def measure_library(
    generated: Generated,
    blob: bytes,
    profiles: dict[str, DeviceProfile],
    x: np.ndarray,
    y: np.ndarray,
    metric: str = "accuracy",
    sparse_ops: int = 0,
    clustered_ops: int = 0,
    timeout: float = 600,
) -> dict[str, DeviceReport | str]:
    """Each profile's report, or the reason it could not be built or run there (the model does not fit,
    the core has no emulator). TFLM's reference outputs are computed once for all profiles."""
    interpreter = tflm_interpreter(blob)
    inputs = model_io(x, generated, interpreter)
    reference = run_tflm(blob, inputs)
    reports: dict[str, DeviceReport | str] = {}
    for name, profile in profiles.items():
        try:
            with tempfile.TemporaryDirectory() as scratch:
                firmware = build_firmware(generated, profile, Path(scratch))
                run = run_firmware(firmware, inputs, generated.op_kinds, generated.output_dtype, timeout=timeout)
        except NotApplicable as exc:
            reports[name] = str(exc)
            continue
        except (RuntimeError, UserError) as exc:  # a build or emulator failure: reported, the run goes on
            reports[name] = f"failed on {profile.name}: {str(exc).splitlines()[0][:300]}"
            continue
        per_op = {
            f"{index}:{kind}": count
            for index, (kind, count) in enumerate(zip(generated.op_kinds, run.instructions_per_op, strict=False))
        }
        reports[name] = DeviceReport(
            model=generated.name,
            core=run.core,
            machine=run.machine,
            flash_bytes=run.flash_bytes,
            model_flash_bytes=run.model_flash_bytes,
            ram_bytes=run.ram_bytes,
            arena_bytes=generated.arena_bytes,
            stack_bytes=run.stack_bytes,
            instructions_per_inference=run.instructions_per_inference,
            instructions_per_op=per_op,
            images=len(x),
            score=score(metric, y, dequantized(run.outputs, interpreter)),
            bit_exact_share=float((run.outputs == reference).all(axis=1).mean()),
            sparse_ops=sparse_ops,
            clustered_ops=clustered_ops,
        )
    return reports


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
    counts = sum(t.sparse for t in generated.techniques), sum(t.clustered for t in generated.techniques)
    report = measure_library(generated, blob, {"profile": profile}, x, y, "accuracy", *counts, timeout=timeout)
    if isinstance(report["profile"], str):
        raise NotApplicable(report["profile"])
    report["profile"].model = path.stem
    return report["profile"]
