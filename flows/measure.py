"""Measuring model files in the pipeline's harness: the evaluation, the edge benchmark and, for int8 models,
the C library and its run on each emulated device (all in parallel), then the host latency of all of them
in one sequential harness, once nothing else runs.

The optimize flow measures its variants and the reference models with it; `tinyopt bench` measures
any .tflite files with it, running each step in-process (tinyopt.steps.run_now)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.benchmark import benchmark_task, latency_task
from tasks.compile import compile_task
from tasks.device import device_task
from tasks.evaluate import EvalRecord, evaluate_task
from tinyopt import layout
from tinyopt.datasets.prepared import load_prepared
from tinyopt.mcu.firmware import toolchain_missing, toolchain_version
from tinyopt.params import Params
from tinyopt.records import Measured
from tinyopt.steps import SkippedRecord
from tinyopt.summary import measured

REFERENCE = "ref:"  # how a reference model's task runs are labelled


def measure(
    ours: dict[str, Path],
    references: dict[str, Path],
    prepared: Path,
    params: Params,
    run: Any,
    evaluated: dict[str, EvalRecord] | None = None,
) -> tuple[dict[str, Measured], dict[str, Measured]]:
    """Every figure of each named file, ours and the reference models; `run(step, label, **arguments)`
    runs a step and returns its future. Files of ours already in `evaluated` are not evaluated again."""
    evaluated = evaluated or {}
    labelled = {**ours, **{REFERENCE + name: path for name, path in references.items()}}
    evaluations = {
        label: run(
            evaluate_task, f"evaluate {label}", tflite_path=path, prepared=prepared, metric=params.task.score_metric
        )
        for label, path in labelled.items()
        if label not in evaluated
    }
    edges = {
        label: run(benchmark_task, f"benchmark {label}", tflite_path=path, prepared=prepared)
        for label, path in labelled.items()
    }
    on_device = devices(labelled, prepared, params, run)
    edges = {label: future.result() for label, future in edges.items()}
    evaluated = {**evaluated, **{label: future.result() for label, future in evaluations.items()}}
    latencies = run(
        latency_task,
        "measure latency",
        tflite_paths=[Path(edge.tflite_path) for edge in edges.values()],
        sample=load_prepared(prepared)["x_test"][0],
        warmup=params.benchmark.latency_warmup,
        repeats=params.benchmark.latency_repeats,
    ).result()

    def figures(label: str, name: str) -> Measured:
        edge = edges[label]
        latency = latencies[edge.tflite_path]
        return measured(name, str(labelled[label]), evaluated[label], edge, latency, params.devices, on_device[label])

    return (
        {name: figures(name, name) for name in ours},
        {name: figures(REFERENCE + name, name) for name in references},
    )


def devices(labelled: dict[str, Path], prepared: Path, params: Params, run: Any) -> dict[str, Any]:
    """Each file's C library run on every profile of benchmark.devices (a DeviceRecord), or why not (a str:
    a float model, an op the generator lacks, no cross compiler). Waits for all: the host latency that follows
    must run alone."""
    profiles = {name: params.devices[name] for name in params.benchmark.devices}
    missing = toolchain_missing()
    if not profiles or missing:
        reason = missing or "benchmark.devices lists no profile"
        return {label: f"not measured on a device: {reason}" for label in labelled}
    expect(run, len(labelled))
    libraries = {
        label: run(
            compile_task,
            f"compile {label}",
            tflite_path=path,
            model_name=label.replace(REFERENCE, "ref-"),
            out_dir=layout.C_LIBRARIES / label.replace(REFERENCE, "ref-"),
        )
        for label, path in labelled.items()
    }
    libraries = {label: future.result() for label, future in libraries.items()}
    expect(run, sum(not isinstance(library, SkippedRecord) for library in libraries.values()))
    runs = {
        label: run(
            device_task,
            f"device {label}",
            tflite_path=labelled[label],
            library=Path(library.directory),
            prepared=prepared,
            profiles=profiles,
            metric=params.task.score_metric,
            images=params.benchmark.device_images,
            toolchain=toolchain_version(),
        )
        for label, library in libraries.items()
        if not isinstance(library, SkippedRecord)
    }
    runs = {label: future.result() for label, future in runs.items()}
    return {
        label: runs[label] if label in runs else f"not compiled for a device: {library.reason}"
        for label, library in libraries.items()
    }


def expect(run: Any, steps: int) -> None:
    """Count steps only known now in the flow's progress line (a command's run_now has none)."""
    progress = getattr(run, "progress", None)
    if progress is not None:
        progress.expect(steps)
