"""The `optimize` flow: fetch and prepare the data, train the baseline, run every chain of the plan
(shared prefixes trained once, independent branches in parallel), convert and evaluate each variant,
track everything in MLflow, and write reports/<run-id>/summary.json."""

from __future__ import annotations

import datetime as dt
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from flows import plan as planning
from flows import summary as summarize
from tasks.benchmark import benchmark_task, measure_latency
from tasks.cluster import cluster_task
from tasks.convert import convert_task
from tasks.data import fetch_task, load_prepared, prepare_task
from tasks.evaluate import evaluate_task
from tasks.graph import graph_task
from tasks.prune import prune_2_4_task, prune_task
from tasks.qat import qat_task
from tasks.reference import find_references
from tasks.report import write_report
from tasks.select import select
from tasks.separable import separable_task
from tasks.train import ModelRecord, train_task
from tinyopt import layout, tracking
from tinyopt.console import Progress, state_outcome
from tinyopt.files import write_json
from tinyopt.lineage import git_commit
from tinyopt.params import QAT_STEPS, Params, RunnerParams, load_params, with_inputs
from tinyopt.steps import SkippedRecord, compute_code_versions


def new_run_id() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


@task(name="log-variant", retries=3, retry_delay_seconds=[2, 10, 30])
def log_variant(
    parent_run_id: str, experiment: str, name: str, tags: dict, params: dict, metrics: dict, artifacts: list[Path]
) -> str:
    """One MLflow child run for one model variant (retried: a tracking server may blip)."""
    run_id = tracking.start_run(experiment, name, tags, parent_run_id=parent_run_id)
    tracking.log_run_data(run_id, params=params, metrics=metrics, artifacts=artifacts)
    tracking.end_run(run_id)
    return run_id


latency_task = task(name="measure-latency")(measure_latency)  # a measurement of this run: never cached


def technique_call(step: str, parent: ModelRecord, prepared: Path, params: Params, out_dir: Path):
    """The task that applies the technique `step` to the parent model, and its arguments."""
    common = dict(parent=Path(parent.model_path), prepared=prepared, out_dir=out_dir)
    techniques, trained = params.techniques, dict(train=params.train, task=params.task, seed=params.seed)
    if step == "prune":
        return prune_task, dict(settings=techniques.prune, **trained, **common)
    if step == "prune_2_4":
        return prune_2_4_task, dict(settings=techniques.prune_2_4, **trained, **common)
    if step in ("cluster", "sp_cluster"):
        return cluster_task, dict(
            settings=techniques.cluster, preserve_sparsity=step == "sp_cluster", **trained, **common
        )
    if step in QAT_STEPS:
        return qat_task, dict(step=step, settings=techniques.qat, **trained, **common)
    if step == "separable":
        return separable_task, dict(settings=techniques.separable, **trained, **common)
    if step == "graph":
        return graph_task, dict(settings=techniques.graph, task=params.task, **common)
    raise AssertionError(f"no task for technique {step}")  # params validation makes this unreachable


def technique_label(prefix: planning.Prefix) -> str:
    """What a technique's task run is called: `prune`, or `sp_cluster on prune` further down a chain."""
    return prefix[-1] if len(prefix) == 1 else f"{prefix[-1]} on {planning.model_name(prefix[:-1])}"


def named(step_task, label: str):
    """The task with its runs named after what they do (`convert qat-int8`), in the UI and the logs.
    Only the run's name: cache keys do not depend on it."""
    return step_task.with_options(task_run_name=label.replace("{", "{{").replace("}", "}}"))


def plan_steps(prefixes: list, chains: list, references: int) -> int:
    """Every task run of a whole run: fetch, prepare, train; each technique; per variant a conversion,
    evaluation, benchmark and MLflow log; per reference model an evaluation, benchmark and log; latency."""
    return 3 + len(prefixes) + 4 * len(chains) + 3 * references + 1


def publish_latest(files: list[Path], reports: Path = layout.REPORTS) -> None:
    """Copy a run's report files to reports/latest/, each replaced atomically."""
    latest = reports / "latest"
    latest.mkdir(parents=True, exist_ok=True)
    for path in files:
        shutil.copyfile(path, latest / f".{path.name}.tmp")
        (latest / f".{path.name}.tmp").replace(latest / path.name)


def task_runner(settings: RunnerParams):
    """The Prefect task runner params.yaml asks for."""
    if settings.kind == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.workers)
    from prefect_dask import DaskTaskRunner

    if settings.address:
        return DaskTaskRunner(address=settings.address)
    # One thread per worker process: TensorFlow uses the cores itself.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.workers, "threads_per_worker": 1, "processes": True})


@flow(name="optimize", task_runner=ThreadPoolTaskRunner(max_workers=4))
def optimize(
    params_path: str = "params.yaml",
    run_id: str | None = None,
    model: str | None = None,
    data: str | None = None,
) -> dict:
    """Run the pipeline end to end and return its summary (also written to reports/<run-id>/).
    `model` and `data` override params.yaml's model.path and data (see tinyopt.params.with_inputs)."""
    logger = get_run_logger()
    params = with_inputs(load_params(params_path), model, data)
    run_id = run_id or new_run_id()
    compute_code_versions()
    commit = git_commit()

    started = time.monotonic()

    fetched = named(fetch_task, f"fetch {params.data.dataset}")(
        params=params.data, out_root=layout.DATA_ROOT, return_state=True
    )
    dataset = fetched.result()
    prepared_state = named(prepare_task, f"prepare {params.data.dataset}")(
        raw_dir=Path(dataset.directory), params=params.data, seed=params.seed, out=layout.PREPARED, return_state=True
    )
    prepared = prepared_state.result()
    prepared_path = Path(prepared.path)
    logger.info(
        "data: %s %s, %d train / %d val / %d test",
        prepared.dataset,
        prepared.dataset_version,
        prepared.num_train,
        prepared.num_val,
        prepared.num_test,
    )
    references, reference_note = find_references(params.reference, dataset.name, prepared.input_shape)
    if reference_note:
        logger.info(reference_note)
    chains = planning.chains(params)
    prefixes = planning.technique_prefixes(chains)
    progress = Progress(plan_steps(prefixes, chains, len(references)), logger.info, started)
    progress.finished(f"fetch {params.data.dataset}", state_outcome(fetched))
    progress.finished(f"prepare {params.data.dataset}", state_outcome(prepared_state))

    def submit(step_task, label: str, **arguments):
        """Submit a task run named `label` and count it in the progress when it finishes."""
        return progress.track(named(step_task, label).submit(**arguments), label)

    trained = named(train_task, "train baseline")(
        prepared=prepared_path,
        model_params=params.model,
        train_params=params.train,
        task=params.task,
        seed=params.seed,
        out_dir=planning.model_dir(()),
        return_state=True,
    )
    progress.finished("train baseline", state_outcome(trained))
    baseline = trained.result()

    stage_started = time.perf_counter()  # the variant stage: techniques, conversions, evaluations
    models: dict[planning.Prefix, ModelRecord] = {(): baseline}
    skipped: dict[str, tuple[list[str], str]] = {}  # model or variant name -> (chain, reason)
    conversions: dict[str, tuple[list[str], Any]] = {}  # variant name -> (chain, conversion future)
    evaluations: dict[str, Any] = {}  # variant name -> evaluation future

    def submit_conversions(prefix: planning.Prefix) -> None:
        """Convert every chain that ends right after this model (in parallel)."""
        for chain in chains:
            if tuple(chain[:-1]) == prefix:
                conversions[planning.variant_name(chain)] = (
                    chain,
                    submit(
                        convert_task,
                        f"convert {planning.variant_name(chain)}",
                        model_path=Path(models[prefix].model_path),
                        conversion=chain[-1],
                        out_path=planning.variant_tflite(chain),
                        prepared=prepared_path,
                        settings=params.conversion,
                        seed=params.seed,
                    ),
                )

    def submit_evaluations(block: bool) -> None:
        """Evaluate each finished conversion (all of them, waiting, when `block`)."""
        waiting = [f for name, (_, f) in conversions.items() if name not in evaluations and name not in skipped]
        finished = as_completed(waiting) if block else [f for f in waiting if f.state.is_final()]
        for future in finished:
            name = next(n for n, (_, f) in conversions.items() if f is future)
            record = future.result()
            if isinstance(record, SkippedRecord):
                skipped[name] = (conversions[name][0], record.reason)
                progress.drop(3)  # its evaluation, benchmark and log
                logger.warning("skipped %s: %s", name, record.reason)
            else:
                evaluations[name] = submit(
                    evaluate_task,
                    f"evaluate {name}",
                    tflite_path=Path(record.tflite_path),
                    prepared=prepared_path,
                    metric=params.task.score_metric,
                )

    submit_conversions(())
    for depth in range(1, max((len(p) for p in prefixes), default=0) + 1):
        level = {}
        for prefix in (p for p in prefixes if len(p) == depth):
            if prefix[:-1] not in models:  # its parent was skipped: so is it, for the same reason
                skipped[planning.model_name(prefix)] = (list(prefix), skipped[planning.model_name(prefix[:-1])][1])
                continue
            step_task, arguments = technique_call(
                prefix[-1], models[prefix[:-1]], prepared_path, params, planning.model_dir(prefix)
            )
            level[prefix] = submit(step_task, technique_label(prefix), **arguments)
        for prefix, future in level.items():
            record = future.result()
            if isinstance(record, SkippedRecord):
                skipped[planning.model_name(prefix)] = (list(prefix), record.reason)
                below = [p for p in prefixes if len(p) > len(prefix) and p[: len(prefix)] == prefix]
                variants_below = [c for c in chains if tuple(c[:-1])[: len(prefix)] == prefix]
                progress.drop(len(below) + 4 * len(variants_below))
                logger.warning("skipped %s: %s", planning.model_name(prefix), record.reason)
            else:
                models[prefix] = record
                submit_conversions(prefix)
            submit_evaluations(block=False)
    submit_evaluations(block=True)
    for future in evaluations.values():
        future.wait()
    variant_stage_seconds = round(time.perf_counter() - stage_started, 1)
    logger.info("variant stage: %.1f s on %s", variant_stage_seconds, params.runner.kind)

    # Edge benchmark of every variant and reference model (in parallel), then host latency of all of
    # them in one sequential harness, once nothing else runs.
    reference_names = {path.stem: path for path in references}
    reference_evaluations = {
        name: submit(
            evaluate_task,
            f"evaluate ref:{name}",
            tflite_path=path,
            prepared=prepared_path,
            metric=params.task.score_metric,
        )
        for name, path in reference_names.items()
    }
    edges = {
        name: submit(
            benchmark_task,
            f"benchmark {name}",
            tflite_path=Path(conversions[name][1].result().tflite_path),
            prepared=prepared_path,
        )
        for name in evaluations
    }
    edges.update(
        {
            f"ref:{name}": submit(benchmark_task, f"benchmark ref:{name}", tflite_path=path, prepared=prepared_path)
            for name, path in reference_names.items()
        }
    )
    edge_records = {name: future.result() for name, future in edges.items()}
    evaluated = {name: future.result() for name, future in evaluations.items()}
    reference_evaluated = {name: future.result() for name, future in reference_evaluations.items()}
    sample = load_prepared(prepared_path)["x_test"][0]
    latencies = named(latency_task, "measure latency")(
        tflite_paths=[Path(e.tflite_path) for e in edge_records.values()],
        sample=sample,
        warmup=params.benchmark.latency_warmup,
        repeats=params.benchmark.latency_repeats,
    )
    progress.finished("measure latency")

    variants = []
    for chain in chains:  # in the plan's order
        name = planning.variant_name(chain)
        if name in evaluated:
            converted, edge = conversions[name][1].result(), edge_records[name]
            variants.append(
                summarize.variant_record(
                    chain,
                    models[tuple(chain[:-1])],
                    converted,
                    evaluated[name],
                    edge,
                    latencies[edge.tflite_path],
                    params,
                )
            )
    reference_records = [
        summarize.model_record(
            name,
            str(path),
            None,
            reference_evaluated[name],
            edge_records[f"ref:{name}"],
            latencies[edge_records[f"ref:{name}"].tflite_path],
            params,
        )
        for name, path in reference_names.items()
    ]
    base = next(v for v in variants if v["name"] == "base-float32")
    picks = select(variants, base["val_score"], base["metric"], params.objectives)

    lineage = {
        "tinyopt.run_id": run_id,
        "git_commit": commit,
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "params_hash": params.digest(),
    }
    parent_run_id = tracking.start_run(params.tracking.experiment, f"pipeline {run_id}", lineage)
    try:
        log_futures = []
        for variant in variants:
            chain = variant["chain"][1:]
            picked = [objective for objective, pick in picks.items() if pick["variant"] == variant["name"]]
            tags = {
                **lineage,
                "variant": variant["name"],
                "chain": " > ".join(variant["chain"]),
                "parent_variant": variant["parent_variant"],
                "input_dtype": variant["input_dtype"],
                "tflm_runs": str(variant["tflm_runs"]).lower(),
                "kind": "variant",
                **{f"pick.{objective}": "true" for objective in picked},
            }
            if variant["notes"]:
                tags["notes"] = variant["notes"][:5000]
            if variant["tflm_error"]:
                tags["tflm_error"] = variant["tflm_error"][:5000]
            artifacts = [
                Path(variant["tflite"]),
                Path(variant["c_source"]),
                Path(variant["c_source"]).with_suffix(".h"),
            ]
            if variant["name"] == "base-float32":
                artifacts.append(Path(variant["model"]))
            log_futures.append(
                submit(
                    log_variant,
                    f"log {variant['name']} to MLflow",
                    parent_run_id=parent_run_id,
                    experiment=params.tracking.experiment,
                    name=variant["name"],
                    tags=tags,
                    params=planning.chain_params(chain, params),
                    metrics=summarize.metrics_of(variant),
                    artifacts=artifacts,
                )
            )
        for reference in reference_records:
            log_futures.append(
                submit(
                    log_variant,
                    f"log ref:{reference['name']} to MLflow",
                    parent_run_id=parent_run_id,
                    experiment=params.tracking.experiment,
                    name=f"reference {reference['name']}",
                    tags={
                        **lineage,
                        "variant": f"ref:{reference['name']}",
                        "kind": "reference",
                        "tflm_runs": str(reference["tflm_runs"]).lower(),
                        "source": reference["tflite"],
                    },
                    params={"reference_file": reference["tflite"]},
                    metrics=summarize.metrics_of(reference),
                    artifacts=[],
                )
            )
        for record, future in zip([*variants, *reference_records], log_futures, strict=False):
            record["mlflow_run_id"] = future.result()

        summary = {
            "run_id": run_id,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mlflow_run_id": parent_run_id,
            "mlflow_tracking_uri": tracking.shown(tracking.tracking_uri()),  # never a password in a report
            "mlflow_experiment": params.tracking.experiment,
            "git_commit": commit,
            "params_hash": params.digest(),
            "dataset": {
                "name": dataset.name,
                "version": dataset.version,
                "num_train": prepared.num_train,
                "num_val": prepared.num_val,
                "num_test": prepared.num_test,
            },
            "baseline": {**base, "train_seconds": baseline.train_seconds, "epochs_run": baseline.epochs_run},
            "variants": variants,
            "skipped": [
                {"name": name, "chain": ["train", *chain], "reason": reason}
                for name, (chain, reason) in skipped.items()
            ],
            "picks": picks,
            "reference": reference_records,
            "reference_note": reference_note,
            "comparisons": summarize.comparisons(variants, reference_records, params.reference.counterparts),
            "headline": summarize.headline(variants, reference_records),
            "devices": {name: profile.model_dump() for name, profile in params.devices.items()},
            "timings": {"variant_stage_seconds": variant_stage_seconds, "runner": params.runner.model_dump()},
        }
        summary_path = write_json(layout.REPORTS / run_id / "summary.json", summary)
        report_files = write_report(summary, summary_path.parent)
        publish_latest([summary_path, *report_files])
        tracking.log_run_data(
            parent_run_id,
            params={"params_hash": params.digest(), "variants": len(variants), "skipped": len(skipped)},
            metrics={f"baseline_{base['metric']}": base["score"]},
            artifacts=[summary_path, *report_files],
        )
        pick_tags = {f"pick.{objective}": pick["variant"] or "none" for objective, pick in picks.items()}
        for key, value in pick_tags.items():
            tracking.client().set_tag(parent_run_id, key, value)
        if skipped:
            tracking.client().set_tag(
                parent_run_id, "skipped", "; ".join(f"{name}: {reason}" for name, (_, reason) in skipped.items())[:5000]
            )
        create_markdown_artifact(
            markdown=report_files[0].read_text(), key="tinyopt-report", description=f"tinyopt run {run_id}"
        )
    except BaseException:
        tracking.end_run(parent_run_id, "FAILED")
        raise
    tracking.end_run(parent_run_id)
    logger.info("summary: %s", summary_path)
    return summary
