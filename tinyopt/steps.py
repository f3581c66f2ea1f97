"""What every pipeline step shares: its result record, and how it is wrapped as a cached Prefect task.

A step is a plain function with explicit inputs (paths, a params section) that writes its outputs
atomically and returns a record. The Prefect task around it caches on the step's code and on the
*contents* of its input files, so a second run with nothing changed skips the work, while an edited
dataset or params section runs it again.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import logging
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

import tinyopt
from tinyopt.files import sha256_file, sha256_tree


class StepRecord(BaseModel):
    """A step's result. `outputs` maps each written file to its sha256, so a cached record can be checked."""

    model_config = ConfigDict(frozen=True)
    outputs: dict[str, str] = {}

    def intact(self) -> bool:
        """True when every output still exists with the content this record describes."""
        return all(Path(p).is_file() and sha256_file(p) == digest for p, digest in self.outputs.items())


def outputs_of(*paths: Path) -> dict[str, str]:
    return {str(p): sha256_file(p) for p in paths}


def _fingerprint(value: Any) -> str:
    if isinstance(value, Path):
        # The name counts too: two variants whose files happen to be identical keep separate records.
        if value.is_file():
            return f"file:{value}:{sha256_file(value)}"
        if value.is_dir():
            return f"dir:{value}:{sha256_tree(value)}"
        return "missing:" + str(value)
    if isinstance(value, BaseModel):
        # A params section naming the user's files (data.path, model.path) counts them by content:
        # new data or a retrained model at the same path must not be served from the cache.
        named = getattr(value, "path", None)
        return value.model_dump_json() + (_fingerprint(Path(named)) if isinstance(named, str) else "")
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fingerprint(v) for v in value) + "]"
    return repr(value)


OWN_PACKAGES = ("tinyopt", "tasks", "flows")


_CODE_VERSION_LOCK = threading.Lock()  # ast.parse is not thread-safe on CPython 3.11
_STEP_MODULES: set[str] = set()  # modules of the functions step_task wrapped


def code_version(module_name: str) -> str:
    """Digest of a module's source and of every tinyopt module it imports, transitively: a change in
    any code a step runs invalidates its cache, and a change elsewhere does not."""
    with _CODE_VERSION_LOCK:
        return _code_version(module_name)


def compute_code_versions() -> None:
    """Digest every step module's code now, in the calling thread. The flow calls this before it
    submits tasks: a cache key that failed in a worker thread would leave that step uncached."""
    for module_name in sorted(_STEP_MODULES):
        code_version(module_name)


@functools.cache
def _code_version(module_name: str) -> str:
    seen: set[str] = set()
    pending = [module_name]
    while pending:
        name = pending.pop()
        module = sys.modules.get(name) or importlib.import_module(name)
        if name in seen or not getattr(module, "__file__", None):
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            pending += [n for n in names if n.split(".")[0] in OWN_PACKAGES and _is_module(n)]
    digest = hashlib.sha256()
    for name in sorted(seen):
        digest.update(name.encode() + b"\0" + Path(sys.modules[name].__file__).read_bytes())
    return digest.hexdigest()


def _is_module(name: str) -> bool:
    """True for `tasks.train`, false for `tasks.train.fit` (a name imported from a module)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False


def cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Key = the code the step runs + tinyopt version + every input, input files by content.

    Parameters named `out*` are where the step writes: they count by name, not by what is there now.
    """
    fn = inspect.unwrap(context.task.fn)
    digest = hashlib.sha256(tinyopt.__version__.encode())
    digest.update(code_version(fn.__module__).encode())
    for name in sorted(parameters):
        value = parameters[name]
        fingerprint = str(value) if name.startswith("out") else _fingerprint(value)
        digest.update(f"{name}={fingerprint}\n".encode())
    key = f"{fn.__module__}.{fn.__name__}-{digest.hexdigest()[:32]}"
    _forget_if_outputs_changed(getattr(context, "result_store", None), key)
    return key


def _forget_if_outputs_changed(store: Any, key: str) -> None:
    """A cached record whose files were deleted or overwritten since is dropped, so the step runs again."""
    if store is None:
        return
    try:
        if not store.exists(key):
            return
        record = store.read(key).result
    except Exception as exc:  # left to Prefect's own lookup: only a record known to be stale is dropped
        logging.getLogger("tinyopt.cache").warning("cache entry %s unreadable (%s); leaving it to Prefect", key, exc)
        return
    if not isinstance(record, StepRecord) or record.intact():
        return
    for storage in (store.metadata_storage, store.result_storage):
        resolve = getattr(storage, "_resolve_path", None)
        if resolve is not None:
            Path(resolve(key)).unlink(missing_ok=True)


class SkippedRecord(StepRecord):
    """What a technique step returns when it cannot apply to the model (cached like any result)."""

    reason: str


def step_task(fn: Callable, *, name: str | None = None, retries: int = 0, cache: bool = True) -> Any:
    """Wrap a plain step function as a Prefect task (cached on inputs and code version).

    `name` is the task's name in the Prefect UI (the function's name by default).
    A step that raises NotApplicable completes with a SkippedRecord instead of failing: the flow
    reports the reason and runs the rest of the plan.
    """
    from prefect import task

    from tinyopt.errors import NotApplicable, UserError

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NotApplicable as exc:
            return SkippedRecord(reason=str(exc))

    def retry_unless_user_error(_task: Any, _run: Any, state: Any) -> bool:
        # A wrong input stays wrong on the next try: only retry what may be transient.
        try:
            state.result()
        except UserError:
            return False
        except Exception:
            return True
        return False

    _STEP_MODULES.add(fn.__module__)
    options: dict[str, Any] = {"name": name or fn.__name__, "retries": retries}
    if retries:
        options.update(retry_delay_seconds=[2, 10, 30][:retries], retry_condition_fn=retry_unless_user_error)
    if cache:
        options.update(cache_key_fn=cache_key, persist_result=True)
    return task(**options)(run)


def named(step: Any, label: str) -> Any:
    """The task with its runs named after what they do (`convert qat-int8`), in the UI and the logs.
    Only the run's name: cache keys do not depend on it."""
    return step.with_options(task_run_name=label.replace("{", "{{").replace("}", "}}"))


class Submitter:
    """How a flow runs its steps: each task run named `label`, counted in the run's progress."""

    def __init__(self, progress: Any):
        self.progress = progress

    def __call__(self, step: Any, label: str, **arguments: Any) -> Any:
        """Submit the task run (it runs alongside others); returns its future."""
        return self.progress.track(named(step, label).submit(**arguments), label)

    def now(self, step: Any, label: str, **arguments: Any) -> Any:
        """Run the task now, in the flow's thread; returns its result."""
        from tinyopt.console import state_outcome

        state = named(step, label)(**arguments, return_state=True)
        self.progress.finished(label, state_outcome(state))
        return state.result()


class Done:
    """A result that is already there, for code written against futures."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def run_now(step: Any, label: str, **arguments: Any) -> Done:
    """Run a step's function in this process, without Prefect (the CLI's one-step commands)."""
    return Done(step.fn(**arguments))
