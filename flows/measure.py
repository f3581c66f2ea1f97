"""Measuring model files in the pipeline's harness: the evaluation, the edge benchmark and, for int8 models,
the C library and its run on each emulated device (all in parallel), then the host latency of all of them
in one sequential harness, once nothing else runs.

The optimize flow measures its variants and the reference models with it; `tinyopt bench` measures
any .tflite files with it, running each step in-process (tinyopt.orchestration.steps.run_now)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.devices import Started, device_results, devices_off, start_on_devices
from tasks.benchmark import benchmark_tflite, measure_latency
from tasks.evaluate import evaluate_tflite
from tinyopt.datasets.prepared import load_prepared
from tinyopt.mcu.graph import has_int8_tensors
from tinyopt.params import Params
from tinyopt.records.run import Measured
from tinyopt.records.steps import EvalRecord, NotRun
from tinyopt.run.summary import measured

REFERENCE = "ref:"  # how a reference model's task runs are labelled
NOT_AN_INT8_CONVERSION = NotRun(
    reason="not run on a device: the run measures the int8 and int8_fallback conversions there"
)


def measure(
    ours: dict[str, Path],
    references: dict[str, Path],
    prepared: Path,
    params: Params,
    run: Any,
    evaluated: dict[str, EvalRecord] | None = None,
    on_devices: dict[str, Started] | None = None,
) -> tuple[dict[str, Measured], dict[str, Measured]]:
    """Every figure of each named file, ours and the reference models; `run(step, label, **arguments)`
    runs a step and returns its future. Files of ours already in `evaluated` are not evaluated again, nor
    run again on the devices when in `on_devices` (flows.devices.start_on_devices's, started earlier)."""
    evaluated = evaluated or {}
    labelled = {**ours, **{REFERENCE + name: path for name, path in references.items()}}
    evaluations = {
        label: run(
            evaluate_tflite, f"evaluate {label}", tflite_path=path, prepared=prepared, metric=params.task.score_metric
        )
        for label, path in labelled.items()
        if label not in evaluated
    }
    edges = {
        label: run(benchmark_tflite, f"benchmark {label}", tflite_path=path, prepared=prepared)
        for label, path in labelled.items()
    }
    if on_devices is None:  # `tinyopt bench`: every int8 file goes to the devices
        waiting = start_on_devices(labelled, prepared, params, run)
    else:  # the flow started its int8 conversions; a float-named conversion of a QAT model is not one
        skipped = (
            {} if devices_off(params) else {k: NOT_AN_INT8_CONVERSION for k, p in ours.items() if has_int8_tensors(p)}
        )
        waiting = skipped | on_devices
        waiting |= start_on_devices({k: v for k, v in labelled.items() if k not in waiting}, prepared, params, run)
        if not devices_off(params):  # the run counted two device steps per reference model; a float one has none
            floats = [label for label in labelled if label.startswith(REFERENCE) and isinstance(waiting[label], NotRun)]
            run.progress.skip(f"device steps of {len(floats)} float reference models", 2 * len(floats))
    edges = {label: future.result() for label, future in edges.items()}
    on_device = device_results(waiting)  # all of them: the host latency below must run alone
    evaluated = {**evaluated, **{label: future.result() for label, future in evaluations.items()}}
    latencies = run(
        measure_latency,
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
