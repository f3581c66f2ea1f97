"""Building the plan's variants: every technique model of the tree (each trained once, as soon as its parent
is there; training takes turns), each chain's conversion as soon as its model is there, and each conversion's
evaluation (and an int8 one's device steps) as soon as it is converted.

A step's input is a file its parent's record names, and a skipped parent means no file: so a step is
submitted once its parent's future is done, whichever finishes first, with no wait for a whole depth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.futures import as_completed

from flows.devices import Started, devices_off, start_on_devices
from tasks.convert import convert_model
from tasks.evaluate import evaluate_tflite
from tasks.techniques import technique_call
from tinyopt.orchestration.live import LiveRuns, step_token, trained_figures
from tinyopt.params import CONVERSIONS, TECHNIQUES, Params
from tinyopt.records.run import Skipped
from tinyopt.records.steps import ConvertRecord, EvalRecord, SkippedRecord, TrainedModel
from tinyopt.run import plan


def step_count(chains: list[list[str]], devices_on: bool) -> int:
    """Every task run of a run but the reference models': fetch, prepare, train; each technique; each
    variant's (variant_steps); the latency harness."""
    return 3 + len(plan.technique_prefixes(chains)) + sum(variant_steps(chain, devices_on) for chain in chains) + 1


def variant_steps(chain: list[str], devices_on: bool) -> int:
    """A variant's task runs: its conversion, evaluation, benchmark and MLflow log, and for an int8
    conversion with the devices on, its compile and device steps."""
    return 4 + (2 if devices_on and CONVERSIONS[chain[-1]].on_device else 0)


def technique_label(prefix: plan.Prefix) -> str:
    """What a technique's task run is called: `prune`, or `sp_cluster on prune` further down a chain."""
    return prefix[-1] if len(prefix) == 1 else f"{prefix[-1]} on {plan.model_name(prefix[:-1])}"


@dataclass
class Built:
    """What the variant stage made: each model of the tree, each variant's conversion and evaluation."""

    models: dict[plan.Prefix, TrainedModel]  # the baseline at ()
    converted: dict[str, ConvertRecord] = field(default_factory=dict)  # variant -> its conversion
    evaluations: dict[str, Any] = field(default_factory=dict)  # variant -> its evaluation's future
    on_devices: dict[str, Started] = field(default_factory=dict)  # int8 variant -> its device steps
    skipped: list[Skipped] = field(default_factory=list)  # models and variants, with the reason

    def evaluated(self) -> dict[str, EvalRecord]:
        return {name: future.result() for name, future in self.evaluations.items()}

    def made(self, chains: list[list[str]]) -> list[tuple[list[str], str]]:
        """(chain, variant name) of every variant that was evaluated, in the plan's order."""
        named = [(chain, plan.variant_name(chain)) for chain in chains]
        return [(chain, name) for chain, name in named if name in self.evaluations]

    def skips(self) -> list[Skipped]:
        """The skips in the plan's order: shallower first (a skipped model's descendants after it)."""
        return sorted(self.skipped, key=lambda skip: (len(skip.chain), skip.chain))


class Tree:
    """The plan's tree as its steps finish: `pending` maps each submitted future to what takes its record
    (`trained` or `converted`) and what it makes (a model's prefix, a variant's chain)."""

    def __init__(self, params: Params, chains: list[list[str]], prepared: Path, run: Any, log: Any, live: LiveRuns):
        self.params, self.chains, self.prepared, self.run, self.log = params, chains, prepared, run, log
        self.live = live
        self.devices_on = devices_off(params) is None
        self.built = Built(models={})
        self.pending: dict[Any, tuple[Callable[[Any, Any], None], plan.Prefix | list[str]]] = {}

    def trained(self, prefix: plan.Prefix, record: TrainedModel | SkippedRecord) -> None:
        """A model is there: its conversions and the techniques on it start (the conversions first)."""
        if isinstance(record, SkippedRecord):
            self.skip_model(prefix, record.reason)
            return
        self.built.models[prefix] = record
        made_here = self.made_from(prefix)
        self.live.curves(made_here, step_token(prefix), record.history)  # reused from the cache: none went live
        for chain in made_here:
            self.live.figures(plan.variant_name(chain), trained_figures(record))
        model = Path(record.model_path)
        for chain in (c for c in self.chains if tuple(c[:-1]) == prefix):
            future = self.run(
                convert_model,
                f"convert {plan.variant_name(chain)}",
                model_path=model,
                conversion=chain[-1],
                out_path=plan.variant_tflite(chain),
                prepared=self.prepared,
                settings=self.params.conversion,
                seed=self.params.seed,
            )
            self.pending[future] = (self.converted, chain)
        for child in plan.technique_prefixes(self.chains):
            if child[:-1] == prefix:
                step, arguments = technique_call(child[-1], model, self.prepared, self.params, plan.model_dir(child))
                runs = self.live.start(self.made_from(child), self.built.models)
                if TECHNIQUES[child[-1]].fine_tuned:
                    arguments["curves_to"] = runs
                self.pending[self.run(step, technique_label(child), **arguments)] = (self.trained, child)

    def converted(self, chain: list[str], record: ConvertRecord | SkippedRecord) -> None:
        """A variant is converted: its evaluation starts, and an int8 one's device steps (the emulators
        work while other models train)."""
        name = plan.variant_name(chain)
        if isinstance(record, SkippedRecord):
            self.skip(name, chain, record.reason, variant_steps(chain, self.devices_on) - 1)  # all but its conversion
            self.live.end(name, "KILLED", {"skipped": record.reason})
            return
        self.built.converted[name] = record
        self.live.figures(name, {"raw_bytes": record.raw_bytes, "gzip_bytes": record.gzip_bytes})
        tflite = Path(record.tflite_path)
        evaluation = self.run(
            evaluate_tflite,
            f"evaluate {name}",
            tflite_path=tflite,
            prepared=self.prepared,
            metric=self.params.task.score_metric,
        )
        self.built.evaluations[name] = evaluation
        self.pending[evaluation] = (self.scored, chain)
        if CONVERSIONS[chain[-1]].on_device:
            self.built.on_devices |= start_on_devices({name: tflite}, self.prepared, self.params, self.run)

    def scored(self, chain: list[str], record: EvalRecord) -> None:
        """A variant is scored: its run shows the score now (the device figures follow when measured)."""
        scores = {"score": record.score, record.metric: record.score, "val_score": record.val_score}
        self.live.figures(plan.variant_name(chain), scores)

    def skip_model(self, prefix: plan.Prefix, reason: str) -> None:
        """A technique that cannot apply: the models below it are skipped for the same reason, and none of
        their steps runs."""
        below = [p for p in plan.technique_prefixes(self.chains) if len(p) > len(prefix) and p[: len(prefix)] == prefix]
        variants_below = [c for c in self.chains if tuple(c[:-1])[: len(prefix)] == prefix]
        steps = len(below) + sum(variant_steps(chain, self.devices_on) for chain in variants_below)
        self.skip(plan.model_name(prefix), list(prefix), reason, steps)
        for chain in variants_below:
            self.live.end(plan.variant_name(chain), "KILLED", {"skipped": reason})
        for descendant in below:
            self.built.skipped.append(
                Skipped(name=plan.model_name(descendant), chain=["train", *descendant], reason=reason)
            )

    def made_from(self, prefix: plan.Prefix) -> list[list[str]]:
        """The variants converted from the model at `prefix` (its own, not its descendants')."""
        return [chain for chain in self.chains if tuple(chain[:-1]) == prefix]

    def skip(self, name: str, chain: list[str], reason: str, steps: int) -> None:
        self.built.skipped.append(Skipped(name=name, chain=["train", *chain], reason=reason))
        self.run.progress.skip(name, steps)
        self.log.warning("skipped %s: %s", name, reason)


def build(
    params: Params,
    chains: list[list[str]],
    prepared: Path,
    baseline: TrainedModel,
    run: Any,
    log: Any,
    live: LiveRuns,
) -> Built:
    """Every model, conversion and evaluation of the plan, through `run` (a tinyopt.orchestration.steps.Submitter);
    the variants' MLflow runs (`live`) get their figures as they come."""
    tree = Tree(params, chains, prepared, run, log, live)
    tree.trained((), baseline)
    while tree.pending:
        future = next(as_completed(list(tree.pending)))
        then, made = tree.pending.pop(future)
        then(made, future.result())
    return tree.built
