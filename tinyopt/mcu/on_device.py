"""Device-true figures of one int8 model: its C library built into firmware for each device profile's core
and run under QEMU on labelled test inputs, compared with TFLM's reference kernels on the same inputs."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.mcu.codegen import Generated, generate
from tinyopt.mcu.firmware import build_firmware, run_firmware
from tinyopt.mcu.host import run_tflm, tflm_interpreter
from tinyopt.ml.metrics import score
from tinyopt.params import DeviceProfile
from tinyopt.records.run import DeviceFigures
from tinyopt.records.steps import FIRMWARE_FAILED
from tinyopt.runtimes.quantized_io import dequantize_output, quantize_input


def measure_library(
    generated: Generated,
    blob: bytes,
    profiles: dict[str, DeviceProfile],
    x: np.ndarray,
    y: np.ndarray | None,
    metric: str = "accuracy",
    timeout: float = 600,
) -> dict[str, DeviceFigures | str]:
    """Each profile's report, or the reason it could not be built or run there (the model does not fit,
    the core has no emulator). TFLM's reference outputs are computed once for all profiles. Without labels
    (`y` None: random inputs) the report has no score."""
    interpreter = tflm_interpreter(blob)
    inputs = quantize_input(x, interpreter.get_input_details(0))
    reference = run_tflm(blob, inputs)
    reports: dict[str, DeviceFigures | str] = {}
    for name, profile in profiles.items():
        try:
            with tempfile.TemporaryDirectory() as scratch:
                firmware = build_firmware(generated, profile, Path(scratch))
                run = run_firmware(firmware, inputs, generated.op_kinds, generated.output_dtype, timeout=timeout)
        except NotApplicable as exc:
            reports[name] = str(exc)
            continue
        except (RuntimeError, UserError) as exc:  # a build or emulator failure: reported, the run goes on
            reports[name] = f"{FIRMWARE_FAILED}{profile.name}: {str(exc).splitlines()[0][:300]}"
            continue
        per_op = zip(generated.op_kinds, run.instructions_per_op, strict=False)
        same = float((run.outputs == reference).all(axis=1).mean())
        clock = profile.clock_mhz
        reports[name] = DeviceFigures(
            core=run.core,
            machine=run.machine,
            flash_bytes=run.flash_bytes,
            model_flash_bytes=run.model_flash_bytes,
            ram_bytes=run.ram_bytes,
            arena_bytes=generated.arena_bytes,
            stack_bytes=run.stack_bytes,
            instructions=round(run.instructions_per_inference, 1),
            instructions_per_op={f"{i}:{kind}": round(n, 1) for i, (kind, n) in enumerate(per_op)},
            images=len(x),
            score=None if y is None else round(device_score(metric, y, x, run, interpreter), 6),
            bit_exact=same == 1.0,
            bit_exact_share=round(same, 6),
            latency_ms_estimate=round(run.latency_estimate_ms(clock), 4) if clock else None,
        )
    return reports


def device_score(metric: str, y: np.ndarray, x: np.ndarray, run, interpreter) -> float:
    """The task's metric on the device's outputs; an autoencoder is scored by the reconstruction errors its
    firmware computed with the generated C function."""
    if run.errors is not None:
        return score(metric, y, run.errors)
    return score(metric, y, dequantize_output(run.outputs, interpreter.get_output_details(0)), x)


def measure_on_device(
    tflite_path: str | Path,
    profile: DeviceProfile,
    x: np.ndarray,
    y: np.ndarray,
    sparse: bool = True,
    cluster_indices: bool = False,
    timeout: float = 600,
) -> DeviceFigures:
    """Generate C for the model, build it for the profile's core, run every input under QEMU, and compare the
    device's outputs with TFLM's on the same inputs. NotApplicable when an op or the budget rules it out."""
    blob = Path(tflite_path).read_bytes()
    generated = generate(blob, "model", sparse=sparse, cluster_indices=cluster_indices)
    report = measure_library(generated, blob, {"profile": profile}, x, y, "accuracy", timeout=timeout)["profile"]
    if isinstance(report, str):
        raise NotApplicable(report)
    return report
