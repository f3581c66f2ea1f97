"""When a step runs again: Prefect's cache, keyed by a CachePolicy composed with INPUTS.

The key covers the step's code (its module and every tinyopt module it imports, transitively), the
tinyopt version, every input (INPUTS), and the *contents* of its input files (a Path, or a params
section naming a file: data.path, model.path). Parameters named `out*` are where the step writes:
they count by name only. A cached record whose output files were deleted or changed since is not
served: the step runs again under a key that names the outputs' present state.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import operator
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import INPUTS, CachePolicy
from pydantic import BaseModel

import tinyopt
from tinyopt.core.files import sha256_file, sha256_tree

OWN_PACKAGES = ("tinyopt", "tasks", "flows")
# Inputs that watch a step's epochs as it runs, not what it computes: where they go live (MLflow run ids) and
# whether to stop there (a search's pruner; a stopped step's record is never served from the cache). Outside
# the cache key, so a new pipeline run (new run ids, a new pruner) still reuses the step's result.
WATCHING_INPUTS = ("curves_to", "stop_early")
_CODE_VERSION_LOCK = threading.Lock()  # one digest at a time: threads asking for the same one wait for it
STEP_MODULES: set[str] = set()  # modules of the steps tinyopt.orchestration.steps.step declared


def _fingerprint(value: Any) -> str:
    """An input by content: a file's digest, a directory's, or a params section's file's."""
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


def code_version(module_name: str) -> str:
    """Digest of a module's source and of every tinyopt module it imports, transitively: a change in
    any code a step runs invalidates its cache, and a change elsewhere does not."""
    with _CODE_VERSION_LOCK:
        return _code_version(module_name)


def compute_code_versions() -> None:
    """Digest every step module's code now, in the calling thread. The flow calls this before it
    submits tasks: a cache key that failed in a worker thread would leave that step uncached."""
    for module_name in sorted(STEP_MODULES):
        code_version(module_name)


@functools.cache
def _code_version(module_name: str) -> str:
    digest = hashlib.sha256()
    for name in own_modules(module_name):
        module = sys.modules[name]
        digest.update(name.encode() + b"\0" + Path(module.__file__).read_bytes())
        for extra in getattr(module, "CODE_FILES", ()):  # C sources and the like that the module runs
            digest.update(Path(extra).name.encode() + b"\0" + Path(extra).read_bytes())
    return digest.hexdigest()


def own_modules(module_name: str) -> list[str]:
    """The module and every tinyopt module it imports, transitively (at the top or inside a function):
    the code a step runs. dvc.yaml lists the same files as each stage's code."""
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
    return sorted(seen)


def _is_module(name: str) -> bool:
    """True for `tasks.train`, false for `tasks.train.train_baseline` (a name imported from a module)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, AttributeError, ValueError):
        return False


@dataclass
class StepCode(CachePolicy):
    """The step's code and the tinyopt version."""

    def compute_key(self, task_ctx: Any, inputs: dict, flow_parameters: dict, **kwargs: Any) -> str:
        fn = inspect.unwrap(task_ctx.task.fn)
        return f"{tinyopt.__version__}:{fn.__module__}.{fn.__name__}:{code_version(fn.__module__)}"


@dataclass
class InputFiles(CachePolicy):
    """The contents of the step's input files (INPUTS counts their names)."""

    def compute_key(self, task_ctx: Any, inputs: dict, flow_parameters: dict, **kwargs: Any) -> str:
        digest = hashlib.sha256()
        for name in sorted(inputs):
            if not name.startswith("out") and name not in WATCHING_INPUTS:
                digest.update(f"{name}={_fingerprint(inputs[name])}\n".encode())
        return digest.hexdigest()


@dataclass
class IntactOutputs(CachePolicy):
    """`policy`'s key, unless the record cached under it describes output files that were deleted or
    changed since: then a key naming the outputs' present state, so the step runs again."""

    policy: CachePolicy = field(default_factory=lambda: INPUTS)

    def compute_key(self, task_ctx: Any, inputs: dict, flow_parameters: dict, **kwargs: Any) -> str | None:
        key = self.policy.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)
        store = getattr(task_ctx, "result_store", None)
        while key is not None and store is not None and store.exists(key):
            record = store.read(key).result
            if not hasattr(record, "intact") or record.intact():
                return key
            # Stale: the next key in a chain no earlier staleness took, so a stale record is never served.
            present = sorted((path, _fingerprint(Path(path))) for path in record.outputs)
            key = hashlib.sha256(f"{key}:stale:{present}".encode()).hexdigest()
        return key


STEP_CACHE = IntactOutputs(policy=StepCode() + InputFiles() + functools.reduce(operator.sub, WATCHING_INPUTS, INPUTS))
