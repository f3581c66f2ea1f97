"""What every pipeline step shares: its result record, the one way it is declared as a Prefect task
(cached by tinyopt.orchestration.cache.STEP_CACHE), and how a flow or a command runs it.

A step is a plain function with explicit inputs (paths, a params section) that writes its outputs
atomically and returns a record. A second run with nothing changed skips the work, while an edited
dataset or params section runs it again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from prefect.cache_policies import NO_CACHE

from tinyopt.orchestration.cache import STEP_CACHE, STEP_MODULES
from tinyopt.records.steps import SkippedRecord


def retry_unless_user_error(_task: Any, _run: Any, state: Any) -> bool:
    """A Prefect retry condition: retry what may be transient; a wrong input fails the same way twice."""
    from tinyopt.core.errors import UserError

    try:
        state.result()
    except UserError:
        return False
    except Exception:
        return True
    return False


def step(name: str | None = None, *, retries: int = 0, cache: bool = True) -> Callable[[Callable], Callable]:
    """Declare a plain function a pipeline step; the function stays plain (DVC stages, the CLI and tests call it),
    and `fn.task` is the Prefect task that runs it in a flow (cached on inputs and code version).

    `name` is the task's name in the Prefect UI (the function's name by default).
    Run as a task, a step that raises NotApplicable completes with a SkippedRecord instead of failing: the flow
    reports the reason and runs the rest of the plan.
    """
    from prefect import task

    from tinyopt.core.errors import NotApplicable

    def declare(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except NotApplicable as exc:
                return SkippedRecord(reason=str(exc))

        STEP_MODULES.add(fn.__module__)
        options: dict[str, Any] = {"name": name or fn.__name__, "retries": retries}
        if retries:
            options.update(retry_delay_seconds=[2, 10, 30][:retries], retry_condition_fn=retry_unless_user_error)
        if cache:
            options.update(cache_policy=STEP_CACHE, persist_result=True)
        else:
            options.update(cache_policy=NO_CACHE)
        fn.task = task(**options)(run)
        return fn

    return declare


def named(step: Callable, label: str) -> Any:
    """The step's task with its runs named after what they do (`convert qat-int8`), in the UI and the logs.
    Only the run's name: cache keys do not depend on it."""
    return step.task.with_options(task_run_name=label.replace("{", "{{").replace("}", "}}"))


class Submitter:
    """How a flow runs its steps: each task run named `label`, counted in the run's progress."""

    def __init__(self, progress: Any):
        self.progress = progress

    def __call__(self, step: Any, label: str, **arguments: Any) -> Any:
        """Submit the task run (it runs alongside others); returns its future."""
        return self.progress.track(named(step, label).submit(**arguments), label)

    def now(self, step: Any, label: str, **arguments: Any) -> Any:
        """Run the task now, in the flow's thread; returns its result."""
        return self.now_told(step, label, **arguments)[0]

    def now_told(self, step: Any, label: str, **arguments: Any) -> tuple[Any, str]:
        """`now`, and how it went: `done`, or `cached` where the task cache gave the result (nothing ran)."""
        from tinyopt.core.console import state_outcome

        state = named(step, label)(**arguments, return_state=True)
        outcome = state_outcome(state)
        self.progress.finished(label, outcome)
        return state.result(), outcome


class Done:
    """A result that is already there, for code written against futures."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


def run_now(step: Callable, label: str, **arguments: Any) -> Done:
    """Run a step in this process, without Prefect (the CLI's one-step commands), as its task would (a step that
    does not apply returns a SkippedRecord). Steps run one after another here, so what a step would wait for
    (`wait_for`) is done already."""
    arguments.pop("wait_for", None)
    return Done(step.task.fn(**arguments))
