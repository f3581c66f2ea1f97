"""The console of a run is for a person: native-library chatter filtered out, and a line per finished
step of the plan (steps done / total, elapsed, what is still running)."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

from tinyopt.core.children import start_child

# Lines TensorFlow, XLA, absl and LiteRT write from C++ straight to file descriptor 2, none of them
# actionable here: absl's notice before its logging is set up, the CUDA probe of a machine without a
# GPU, the Grappler warning about an attribute newer than its op registry, oneDNN's notice (tinyopt
# turns oneDNN on), LiteRT's delegate notice and the converter's quantization settings. Only these
# exact messages are dropped; anything else native code writes, a crash message above all, still
# reaches the terminal.
NATIVE_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:. ]+\d+ (cudart_stub|cuda_platform|cuda_executor|cuda_diagnostics|cuda_dnn|cuda_fft"
    r"|cuda_blas|gpu_device)\.cc:\d+\]"
    r"|[IWE]\d{4} [\d:. ]+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute \w+ which is not in the op definition"
    r"|[IWE]\d{4} [\d:. ]+\d+ port\.cc:\d+\] oneDNN custom operations are on\."
    r"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$"
)

FORWARD_GRACE_S = 2.0  # how long the log forwarder may outlive tinyopt, to forward its last lines


def is_native_noise(line: str) -> bool:
    return NATIVE_NOISE.match(line.rstrip("\r\n")) is not None


def filter_native_stderr() -> None:
    """Route what native code writes to fd 2 through a filter process that drops NATIVE_NOISE.

    Python's own sys.stderr keeps the original stream (a terminal keeps its colours, tracebacks go
    straight out). The filter is a separate process so that it still forwards whatever a crashing
    run writes last; it ends when every writer has closed the pipe, or FORWARD_GRACE_S after tinyopt
    died while some orphan still holds the pipe (tinyopt.core.children)."""
    if os.environ.get("TINYOPT_NATIVE_LOGS") == "all":  # the escape hatch, for a bug report
        return
    sys.stderr.flush()
    original = os.dup(2)
    reader, writer = os.pipe()
    start_child(  # given a moment after tinyopt dies: it forwards what a crashing run writes last
        [sys.executable, "-c", "import tinyopt.core.console as c; c._forward_filtered()"],
        grace=FORWARD_GRACE_S,
        stdin=reader,
        stdout=original,
        stderr=subprocess.DEVNULL,
    )
    os.close(reader)
    os.dup2(writer, 2)
    os.close(writer)
    sys.stderr = os.fdopen(original, "w", buffering=1, encoding=sys.stderr.encoding, errors="backslashreplace")


def _forward_filtered() -> None:
    out = sys.stdout.buffer
    for raw in sys.stdin.buffer:
        if not is_native_noise(raw.decode("utf-8", "replace")):
            out.write(raw)
            out.flush()


# TensorFlow's Python-level warnings (its 'tensorflow' logger; Keras 3 uses the warnings module) that say nothing
# to a tinyopt user: PCQAT's frozen cluster centroids have no gradients by design, a loaded model's metrics are
# built when it is evaluated, and measuring many models calls tf.functions on new shapes on purpose. Only these
# exact messages are dropped; every other warning still shows.
TENSORFLOW_NOISE = re.compile(
    r"Gradients do not exist for variables "
    r"|Compiled the loaded model, but the compiled metrics have yet to be built\."
    r"|\d+ out of the last \d+ calls to .* triggered tf\.function retracing\."
)


class _NotTensorflowNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return TENSORFLOW_NOISE.match(record.getMessage()) is None


_TENSORFLOW_FILTER = _NotTensorflowNoise()


def quiet_tensorflow_warnings() -> None:
    """Drop TENSORFLOW_NOISE from TensorFlow's logger and from Python warnings (TINYOPT_NATIVE_LOGS=all keeps it)."""
    if os.environ.get("TINYOPT_NATIVE_LOGS") == "all":
        return
    logging.getLogger("tensorflow").addFilter(_TENSORFLOW_FILTER)  # a logger keeps one copy of the same filter
    warnings.filterwarnings("ignore", message=TENSORFLOW_NOISE.pattern)


class _NotPrefectsTaskFinished(logging.Filter):
    """Prefect logs 'Finished in state ...' for every task run; the progress line says it, with the count."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.name == "prefect.task_runs"
            and record.levelno == logging.INFO
            and record.getMessage().startswith("Finished in state")
        )


def quiet_prefect_task_finished() -> None:
    """On the console only: the Prefect API (and its UI) still receives every task run's log."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for logger in (logging.getLogger(), logging.getLogger("prefect")):
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler):
                handler.addFilter(_NotPrefectsTaskFinished())


def _elapsed(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}m{seconds:02d}s"


class Progress:
    """Counts the plan's steps as their task runs finish; `say` prints one line per finished step:
    `[12/57 1m32s] convert qat-int8 done (running: train qat, evaluate prune-int8)`. The total is every
    step that may run, fixed at the start; steps that turn out not to run are counted by `skip`."""

    def __init__(self, total: int, say: Callable[[str], Any], started: float | None = None):
        self.total, self.done, self.say = total, 0, say
        self.started = time.monotonic() if started is None else started
        self.running: list[str] = []
        self._lock = threading.Lock()

    def track(self, future: Any, label: str) -> Any:
        """Report `label` when the Prefect future finishes; returns the future."""
        with self._lock:
            self.running.append(label)
        future.add_done_callback(lambda finished: self.finished(label, _outcome(finished)))
        return future

    def finished(self, label: str, outcome: str = "done") -> None:
        with self._lock:
            self.done += 1
            if label in self.running:
                self.running.remove(label)
            running = self.running[:3] + ([f"{len(self.running) - 3} more"] if len(self.running) > 3 else [])
            line = f"[{self.done}/{self.total} {_elapsed(time.monotonic() - self.started)}] {label} {outcome}"
            self.say(line + (f" (running: {', '.join(running)})" if running else ""))

    def skip(self, label: str, steps: int) -> None:
        """Steps counted in the total that will not run (a skipped technique takes its variants' with it):
        counted as finished, in one line, so the total stays what it was at the start."""
        if steps <= 0:
            return
        with self._lock:
            self.done += steps
            line = f"[{self.done}/{self.total} {_elapsed(time.monotonic() - self.started)}] {label} skipped"
            self.say(line + (f" ({steps} steps)" if steps > 1 else ""))


def _outcome(future: Any) -> str:
    """done, cached or failed, from the task run's final state (without asking the API)."""
    try:
        return state_outcome(future.wrapped_future.result())
    except BaseException:
        return "failed"


def state_outcome(state: Any) -> str:
    """A Prefect state as a progress word: done, cached, or the state's own name (failed, crashed)."""
    if not state.is_completed():
        return state.name.lower()
    return "cached" if state.name == "Cached" else "done"
