"""Building the plan's variants: every technique model of the tree (parents before children, each
trained once, independent branches in parallel), each chain's conversion as soon as its model is
there, and each conversion's evaluation as soon as it is converted."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.futures import as_completed

from flows.devices import start_on_devices
from tasks.convert import convert_task
from tasks.evaluate import evaluate_task
from tasks.techniques import technique_call
from tinyopt.params import Params
from tinyopt.records.run import Skipped
from tinyopt.records.steps import SkippedRecord
from tinyopt.run import plan

INTEGER_CONVERSIONS = ("int8", "int8_fallback")  # what microcontrollers run: compiled and run on the devices


def step_count(chains: list[list[str]]) -> int:
    """Every task run of a run before the reference models: fetch, prepare, train; each technique;
    per variant a conversion, evaluation, benchmark and MLflow log; the latency harness."""
    return 3 + len(plan.technique_prefixes(chains)) + 4 * len(chains) + 1


def technique_label(prefix: plan.Prefix) -> str:
    """What a technique's task run is called: `prune`, or `sp_cluster on prune` further down a chain."""
    return prefix[-1] if len(prefix) == 1 else f"{prefix[-1]} on {plan.model_name(prefix[:-1])}"


@dataclass
class Built:
    models: dict[plan.Prefix, Any]  # prefix -> its TrainedModel, the baseline at ()
    conversions: dict[str, tuple[list[str], Any]] = field(default_factory=dict)  # variant -> (chain, future)
    evaluations: dict[str, Any] = field(default_factory=dict)  # variant -> evaluation future
    skipped: dict[str, tuple[list[str], str]] = field(default_factory=dict)  # model or variant -> (chain, reason)
    on_devices: dict[str, Any] = field(default_factory=dict)  # int8 variant -> its compile and device futures

    def converted(self) -> dict[str, Any]:
        """Variant name -> its conversion record, for every variant that was evaluated."""
        return {name: self.conversions[name][1].result() for name in self.evaluations}

    def evaluated(self) -> dict[str, Any]:
        return {name: future.result() for name, future in self.evaluations.items()}

    def made(self, chains: list[list[str]]) -> list[tuple[list[str], str]]:
        """(chain, variant name) of every variant that was evaluated, in the plan's order."""
        named = [(chain, plan.variant_name(chain)) for chain in chains]
        return [(chain, name) for chain, name in named if name in self.evaluations]

    def skips(self) -> list[Skipped]:
        return [Skipped(name=name, chain=["train", *chain], reason=why) for name, (chain, why) in self.skipped.items()]


def build(params: Params, chains: list[list[str]], prepared: Path, baseline: Any, run: Any, log: Any) -> Built:
    """Every model, conversion and evaluation of the plan, through `run` (a tinyopt.orchestration.steps.Submitter)."""
    prefixes = plan.technique_prefixes(chains)
    built = Built(models={(): baseline})

    def skip(name: str, chain: list[str], reason: str, steps: int) -> None:
        built.skipped[name] = (chain, reason)
        run.progress.drop(steps)
        log.warning("skipped %s: %s", name, reason)

    def convert(prefix: plan.Prefix) -> None:
        """Convert every chain that ends right after this model (in parallel)."""
        for chain in (c for c in chains if tuple(c[:-1]) == prefix):
            name = plan.variant_name(chain)
            future = run(
                convert_task,
                f"convert {name}",
                model_path=Path(built.models[prefix].model_path),
                conversion=chain[-1],
                out_path=plan.variant_tflite(chain),
                prepared=prepared,
                settings=params.conversion,
                seed=params.seed,
            )
            built.conversions[name] = (chain, future)

    def evaluate(block: bool) -> None:
        """Evaluate each finished conversion (all of them, waiting, when `block`)."""
        done = built.evaluations.keys() | built.skipped.keys()
        waiting = {future: name for name, (_, future) in built.conversions.items() if name not in done}
        for future in as_completed(list(waiting)) if block else [f for f in waiting if f.state.is_final()]:
            name, record = waiting[future], future.result()
            if isinstance(record, SkippedRecord):
                skip(name, built.conversions[name][0], record.reason, 3)  # its evaluation, benchmark and log
                continue
            built.evaluations[name] = run(
                evaluate_task,
                f"evaluate {name}",
                tflite_path=Path(record.tflite_path),
                prepared=prepared,
                metric=params.task.score_metric,
            )
            if built.conversions[name][0][-1] in INTEGER_CONVERSIONS:  # the emulators work while others train
                built.on_devices |= start_on_devices({name: Path(record.tflite_path)}, prepared, params, run)

    convert(())
    for depth in range(1, max((len(p) for p in prefixes), default=0) + 1):
        level = {}
        for prefix in (p for p in prefixes if len(p) == depth):
            if prefix[:-1] not in built.models:  # its parent was skipped: so is it, for the same reason
                built.skipped[plan.model_name(prefix)] = (list(prefix), built.skipped[plan.model_name(prefix[:-1])][1])
                continue
            parent = Path(built.models[prefix[:-1]].model_path)
            step, arguments = technique_call(prefix[-1], parent, prepared, params, plan.model_dir(prefix))
            level[prefix] = run(step, technique_label(prefix), **arguments)
        for prefix, future in level.items():
            record = future.result()
            if isinstance(record, SkippedRecord):
                below = [p for p in prefixes if len(p) > len(prefix) and p[: len(prefix)] == prefix]
                variants_below = [c for c in chains if tuple(c[:-1])[: len(prefix)] == prefix]
                skip(plan.model_name(prefix), list(prefix), record.reason, len(below) + 4 * len(variants_below))
            else:
                built.models[prefix] = record
                convert(prefix)
            evaluate(block=False)
    evaluate(block=True)
    for future in built.evaluations.values():
        future.wait()
    return built
