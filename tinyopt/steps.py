"""What every pipeline step shares: its result record, and how it is wrapped as a cached Prefect task.

A step is a plain function with explicit inputs (paths, a params section) that writes its outputs
atomically and returns a record. The Prefect task around it caches on the step's code and on the
*contents* of its input files, so a second run with nothing changed skips the work, while an edited
dataset or params section runs it again.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

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
        if value.is_file():
            return "file:" + sha256_file(value)
        if value.is_dir():
            return "dir:" + sha256_tree(value)
        return "missing:" + str(value)
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_fingerprint(v) for v in value) + "]"
    return repr(value)


def cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Key = the step's module source + tinyopt version + every input, input files by content.

    Parameters named `out*` are where the step writes: they count by name, not by what is there now.
    """
    fn = context.task.fn
    digest = hashlib.sha256(tinyopt.__version__.encode())
    digest.update(inspect.getsource(sys.modules[fn.__module__]).encode())
    for name in sorted(parameters):
        value = parameters[name]
        fingerprint = str(value) if name.startswith("out") else _fingerprint(value)
        digest.update(f"{name}={fingerprint}\n".encode())
    return f"{fn.__module__}.{fn.__name__}-{digest.hexdigest()[:32]}"


def step_task(fn: Callable, *, retries: int = 0, cache: bool = True) -> Any:
    """Wrap a plain step function as a Prefect task (cached on inputs and code version)."""
    from prefect import task

    from tinyopt.errors import UserError

    def retry_unless_user_error(_task: Any, _run: Any, state: Any) -> bool:
        # A wrong input stays wrong on the next try: only retry what may be transient.
        try:
            state.result()
        except UserError:
            return False
        except Exception:
            return True
        return False

    options: dict[str, Any] = {"name": fn.__name__.replace("_", "-"), "retries": retries}
    if retries:
        options.update(retry_delay_seconds=[2, 10, 30][:retries], retry_condition_fn=retry_unless_user_error)
    if cache:
        options.update(cache_key_fn=cache_key, persist_result=True)
    return task(**options)(fn)


def run_step(step: Any, **kwargs: Any) -> Any:
    """Run a cached step; if its cached outputs were deleted or overwritten since, run it again."""
    record = step(**kwargs)
    if isinstance(record, StepRecord) and not record.intact():
        record = step.with_options(refresh_cache=True)(**kwargs)
    return record
