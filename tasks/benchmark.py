"""Edge benchmark: the same measurements for every .tflite, ours and the reference models alike.

- static facts from the file: bytes, gzip -9 bytes, parameters, MACs per inference, op list;
- TensorFlow Lite Micro: does it load and run the file (if not, the op or type it refuses), the
  tensor arena it needs (recording allocator, verified), and whether its outputs match LiteRT's;
- host latency (separately, one model at a time, see `measure_latency`).

Accuracy comes from the evaluate step, which runs the file itself on the held-out test split.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from tinyopt.core.files import gzip_size
from tinyopt.orchestration.steps import step
from tinyopt.records.steps import EdgeRecord
from tinyopt.runtimes import litert, tflm
from tinyopt.runtimes.quantized_io import quantize_input

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "CONV_3D")
TFLM_SAMPLES = 32  # test examples run through TFLM and LiteRT to compare outputs


def graph_facts(path: Path) -> dict:
    """Parameters (elements of the constant tensors that feed weighted ops, through (DE)QUANTIZE or FAKE_QUANT),
    multiply-accumulates for one inference, and op counts, read from the file's own graph."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without the default XNNPACK delegate, so that the ops are the file's own, not one DELEGATE node.
    interpreter = Interpreter(
        model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    interpreter.allocate_tensors()
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()
    produced = {i for op in ops for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    constant = {i for i in tensors if i not in produced and i not in graph_inputs}
    # Weights reach a layer through DEQUANTIZE (float16, dynamic range), FAKE_QUANT, or a QUANTIZE > DEQUANTIZE
    # pair on a float constant (a QAT model converted to float32): follow such chains back to the constant, or
    # QAT's float32 variant counts only its 22 biases.
    passes_through = ("DEQUANTIZE", "FAKE_QUANT", "QUANTIZE")
    produced_by = {op["outputs"][0]: op["inputs"][0] for op in ops if op["op_name"] in passes_through}

    def source_of(index: int) -> int:
        while index in produced_by:
            index = produced_by[index]
        return index

    counted: set[int] = set()
    macs = 0
    op_counts: dict[str, int] = {}
    for op in ops:
        op_counts[op["op_name"]] = op_counts.get(op["op_name"], 0) + 1
        if op["op_name"] not in WEIGHTED_OPS:
            continue
        for index in op["inputs"][1:]:
            source = source_of(index)
            if source in constant:
                counted.add(source)
        weights = tensors[op["inputs"][1]]["shape"]
        out = tensors[op["outputs"][0]]["shape"]
        if op["op_name"] == "FULLY_CONNECTED":
            macs += int(np.prod(out[:-1])) * int(weights[0]) * int(weights[1])
        elif op["op_name"] == "DEPTHWISE_CONV_2D":
            macs += int(np.prod(out)) * int(weights[1]) * int(weights[2])
        else:  # CONV_2D, TRANSPOSE_CONV, CONV_3D: every output element sums kernel x input depth
            macs += int(np.prod(out)) * int(np.prod(weights[1:]))
    params = sum(int(np.prod(tensors[i]["shape"])) for i in counted)
    return {"params": params, "macs": macs, "ops": dict(sorted(op_counts.items()))}


@step("benchmark")
def benchmark_tflite(tflite_path: Path, prepared: Path) -> EdgeRecord:
    """Everything about one .tflite file except accuracy and latency (see the module's docstring)."""
    from tinyopt.datasets.prepared import load_prepared

    x_test = load_prepared(prepared)["x_test"][:TFLM_SAMPLES]
    interpreter = litert.load_interpreter(tflite_path)
    input_dtype = np.dtype(interpreter.get_input_details()[0]["dtype"]).name
    output_dtype = np.dtype(interpreter.get_output_details()[0]["dtype"]).name
    micro = tflm.check(tflite_path, x_test)
    agreement = max_diff = None
    if micro["runs"]:
        ours = np.asarray(micro["outputs"], dtype=np.float32)
        reference = litert.predict(tflite_path, x_test).reshape(len(x_test), -1)
        if ours.shape[-1] > 1:  # a class per output: do both runtimes pick the same one?
            agreement = round(float(np.mean(np.argmax(ours, -1) == np.argmax(reference, -1))), 4)
        max_diff = round(float(np.max(np.abs(ours - reference))), 6)
    return EdgeRecord(
        tflite_path=str(tflite_path),
        raw_bytes=tflite_path.stat().st_size,
        gzip_bytes=gzip_size(tflite_path),
        input_dtype=input_dtype,
        output_dtype=output_dtype,
        **graph_facts(tflite_path),
        tflm_runs=micro["runs"],
        tflm_error=micro["error"],
        arena_bytes=micro.get("arena_bytes"),
        arena_verified=bool(micro.get("arena_verified")),
        tflm_top1_agreement=agreement,
        tflm_max_abs_diff=max_diff,
    )


@step(cache=False)  # a measurement of this run: never cached
def measure_latency(
    tflite_paths: list[Path], sample: np.ndarray, warmup: int = 50, repeats: int = 300, budget_seconds: float = 2.0
) -> dict[str, dict]:
    """Host latency of each file with the LiteRT interpreter, one thread, batch 1: `warmup` invokes,
    then `repeats` timed invokes (fewer for very slow models, at most `budget_seconds` each).
    Files are timed one after another, never alongside other work, with the same input.

    This is host latency: x86 kernels, XNNPACK where LiteRT delegates float ops. A microcontroller
    runs other kernels (int16x8 runs on slow reference kernels here), so compare ratios, not times."""
    results = {}
    for path in tflite_paths:
        interpreter = litert.load_interpreter(path, num_threads=1)
        detail = interpreter.get_input_details()[0]
        if len(detail["shape"]) and detail["shape"][0] != 1:
            interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
            interpreter.allocate_tensors()
            detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], quantize_input(sample[np.newaxis], detail))
        for _ in range(warmup):
            interpreter.invoke()
        times = []
        deadline = time.perf_counter() + budget_seconds
        while len(times) < repeats and (len(times) < 20 or time.perf_counter() < deadline):
            started = time.perf_counter_ns()
            interpreter.invoke()
            times.append((time.perf_counter_ns() - started) / 1000)
        results[str(path)] = {
            "latency_us_p50": round(float(np.percentile(times, 50)), 2),
            "latency_us_p99": round(float(np.percentile(times, 99)), 2),
            "latency_runs": len(times),
        }
    return results
