"""`tinyopt search`: what a trial draws, the Pareto front and the picks, and a real search on a slice whose
pick a `tinyopt run` rebuilds byte for byte."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.conftest import REPO, make_project, needs_fashion, run_cli
from tests.flow_helpers import mlflow_client
from tests.sensor_helpers import sensor_regressor
from tests.test_mcu import _int8_from_keras, needs_arm
from tinyopt.core.errors import UserError
from tinyopt.params import parse_params
from tinyopt.records.steps import TrialRecord
from tinyopt.search.space import chain_settings, draw, pareto_front, picks


def record(number: int, score: float, size: int, state: str = "complete", fits: bool = True) -> TrialRecord:
    return TrialRecord(
        number=number, chain=["int8"], settings={}, state=state, metric="accuracy", val_score=score,
        raw_bytes=size, gzip_bytes=size, fits=fits,
    )  # fmt: skip


def test_front_holds_the_feasible_trials_nothing_beats_on_both_axes():
    trials = [
        record(0, 0.90, 20_000),
        record(1, 0.88, 8_000),
        record(2, 0.87, 9_000),  # beaten by 1 on both
        record(3, 0.91, 30_000, fits=False),  # the most accurate, but does not fit
        record(4, 0.89, 15_000),
        record(5, 0.88, 8_000),  # a tie with 1: the earlier one stands for both
        record(6, 0.95, 1_000, state="pruned"),
    ]
    assert [r.number for r in pareto_front(trials, "gzip_bytes")] == [1, 4, 0]
    chosen = picks(trials, "gzip_bytes", floor=0.885)
    assert chosen["most_accurate"].number == 0 and chosen["smallest"].number == 4  # 1 is below the floor
    assert picks([record(0, 0.5, 1, fits=False)], "gzip_bytes", None) == {"most_accurate": None, "smallest": None}


def test_with_latency_the_front_has_three_axes_and_a_fastest_pick():
    def timed(number, score, size, instructions, fits=True):
        return record(number, score, size, fits=fits).model_copy(update={"instructions": instructions})

    trials = [
        timed(0, 0.90, 20_000, 400_000),
        timed(1, 0.88, 8_000, 300_000),
        timed(2, 0.87, 9_000, 150_000),  # beaten by 1 on score and size, not on instructions: on the front
        timed(3, 0.86, 9_500, 200_000),  # beaten by 2 on all three
        timed(4, 0.89, 15_000, 100_000, fits=False),  # over the budget: infeasible
    ]
    assert [r.number for r in pareto_front(trials, "gzip_bytes", latency=True)] == [1, 2, 0]
    assert [r.number for r in pareto_front(trials, "gzip_bytes")] == [1, 0]
    chosen = picks(trials, "gzip_bytes", floor=0.865, latency=True)
    assert chosen["fastest"].number == 2 and chosen["smallest"].number == 1 and chosen["most_accurate"].number == 0
    assert "fastest" not in picks(trials, "gzip_bytes", floor=0.865)


def test_the_instruction_budget_is_the_tighter_of_count_and_time():
    from tinyopt.params.search import SearchParams

    assert SearchParams().instruction_budget(64) is None
    assert SearchParams(max_instructions=200_000).instruction_budget(None) == 200_000
    assert SearchParams(max_instructions=200_000, max_latency_ms=2).instruction_budget(64) == 128_000
    with pytest.raises(UserError, match="search.max_latency_ms: the profile .* has no clock_mhz"):
        parse_params({"search": {"profile": "p", "max_latency_ms": 2}, "devices": {**DEVICES, "p": NO_CLOCK}})


def test_the_sampler_is_told_how_far_over_the_budget_a_trial_is():
    from flows.trials import Trials

    params = parse_params({"search": {"max_model_bytes": 10_000, "max_instructions": 200_000}})
    trials = Trials(None, params, None, "", 0.0)
    timed = record(0, 0.9, 12_000, fits=False).model_copy(update={"instructions": 300_000})
    assert trials.violation(record(0, 0.9, 9_000)) == 0.0
    assert trials.violation(record(0, 0.9, 12_000, fits=False)) == pytest.approx(0.2)
    assert trials.violation(timed) == pytest.approx(0.5)  # the greater excess: 50% over the instructions
    assert trials.violation(record(0, 0.9, 9_000, fits=False)) == 1.0  # fails otherwise (flash, RAM)
    assert trials.violation(record(0, 0.9, None, state="pruned", fits=False)) == 1.0


def test_the_sampler_draws_on_after_trials_that_did_not_complete(monkeypatch):
    # Two feasible trials among 23 that did not complete: multi-objective TPE's "below" group then holds some of
    # the latter, whose values it reads (optuna 4.9 failed on a pruned trial's None).
    import flows.trials
    from flows.trials import Trials, open_study

    monkeypatch.setattr(flows.trials, "end_trial_run", lambda run_id, record: None)  # no MLflow run here
    params = parse_params({"search": {"trials": 6, "max_instructions": 200_000, "space": {"chains": [["int8"]]}}})
    study = open_study(params, "a search", latency=True)
    trials = Trials(study, params, None, "", 0.0, latency=True)
    for number in range(25):
        trial = study.ask()
        draw(trial, params)
        trials.running[number] = "its run"
        done = record(number, 0.88, 9_000).model_copy(update={"instructions": 180_000})
        stopped = record(number, None, None, state="pruned", fits=False)
        trials.finish(trial, done if number in (3, 7) else stopped, violation=None if number in (3, 7) else 0.5)
    assert draw(study.ask(), params).plan == [["int8"]]
    assert [t.user_attrs["constraints"] for t in study.trials[2:4]] == [[0.5], [0.0]]


DEVICES = {name: profile.model_dump() for name, profile in parse_params({}).devices.items()}
NO_CLOCK = {"name": "a board", "core": "Cortex-M4", "flash_bytes": 1 << 20, "sram_bytes": 1 << 18}


@needs_arm
def test_a_trial_is_measured_on_the_profile_s_core_and_held_to_the_budget(tmp_path):
    import tensorflow as tf

    from tasks.trial import on_the_core

    tf.keras.utils.set_random_seed(0)
    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((8, 8, 1)), layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(3)])
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(_int8_from_keras(model))
    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    params = parse_params({})
    figures, verdict = on_the_core(tflite, "int8", x, params)
    assert figures["instructions"] > 1000 and figures["flash_bytes"] > 0 and figures["ram_bytes"] > 0
    assert verdict["fits"] and verdict["reason"].startswith("measured on nano33ble")
    tight = params.model_copy(update={"search": params.search.model_copy(update={"max_instructions": 1000})})
    assert on_the_core(tflite, "int8", x, tight)[1] == {
        "fits": False,
        "reason": f"{figures['instructions']:,.0f} instructions, over the budget (1,000)",
    }
    assert on_the_core(tflite, "float16", x, params) == (
        {},
        {"fits": False, "reason": "a float16 model: the search measures int8 models on nano33ble"},
    )


def test_floors_follow_the_metrics_direction():
    from flows.search import floor_of

    assert floor_of(0.90, 0.03, "accuracy") == pytest.approx(0.87)
    assert floor_of(0.20, 0.05, "mae") == pytest.approx(0.25)  # lower is better: the floor is above
    assert floor_of(0.90, None, "accuracy") is None


def test_a_trial_draws_only_the_settings_its_chain_reads():
    import optuna

    space = {"chains": [["int8"], ["prune", "sp_cluster", "pcqat", "int8"]], "conv_filters": None, "kernel_size": None}
    params = parse_params({"search": {"space": space}}, "params.yaml")
    drawn = draw(
        optuna.trial.FixedTrial(
            {
                "chain": "prune-sp_cluster-pcqat-int8",
                "target_sparsity": 0.8,
                "prune_epochs": 2,
                "prune_learning_rate": 1e-3,
                "clusters": 8,
                "cluster_epochs": 3,
                "cluster_learning_rate": 2e-4,
                "qat_epochs": 4,
                "qat_learning_rate": 1e-4,
            }
        ),
        params,
    )
    assert drawn.plan == [["prune", "sp_cluster", "pcqat", "int8"]]
    assert drawn.techniques.prune.target_sparsity == 0.8 and drawn.techniques.prune.initial_sparsity == 0.4
    assert drawn.techniques.cluster.clusters == 8 and drawn.techniques.qat.fine_tune_epochs == 4
    assert set(chain_settings(drawn.plan[0], drawn)) == {"prune", "cluster", "qat"}
    plain = draw(optuna.trial.FixedTrial({"chain": "base-int8"}), params)
    assert plain.plan == [["int8"]] and plain.techniques == params.techniques


def test_width_is_drawn_for_tinyopts_own_architecture_only(tmp_path):
    import optuna

    from tinyopt.search.space import write_plan

    space = {"chains": [["int8"], ["qat", "int8"]], "conv_filters": [8, 16], "kernel_size": [3, 5]}
    params = parse_params({"search": {"space": space}}, "params.yaml")
    fixed = {"chain": "qat-int8", "conv_filters": 16, "kernel_size": 5, "qat_epochs": 2, "qat_learning_rate": 1e-3}
    drawn = draw(optuna.trial.FixedTrial(fixed), params)
    assert (drawn.model.conv_filters, drawn.model.kernel_size) == (16, 5)
    settings = chain_settings(drawn.plan[0], drawn)
    assert settings["model"] == {"conv_filters": 16, "kernel_size": 5} and set(settings) == {"model", "qat"}

    # The pick's params file carries the width, so `tinyopt run` trains that baseline.
    pick = TrialRecord(
        number=0, chain=drawn.plan[0], settings=settings, state="complete", metric="accuracy", val_score=0.9,
        raw_bytes=20_000, gzip_bytes=15_000, fits=True, sha256="0" * 64,
    )  # fmt: skip
    (tmp_path / "params.yaml").write_text("seed: 3\nmodel:\n  conv_filters: 12\n")
    written = yaml.safe_load(write_plan(pick, {0: drawn}, tmp_path / "params.yaml", tmp_path / "plan.yaml").read_text())
    assert written["seed"] == 3 and written["model"] == {"conv_filters": 16, "kernel_size": 5}
    assert written["plan"] == [["qat", "int8"]] and written["techniques"]["qat"]["fine_tune_epochs"] == 2

    # A user's model is taken as it is: no width drawn, none in the trial's settings.
    own = params.model_copy(update={"model": params.model.model_copy(update={"path": "mine.keras"})})
    drawn = draw(optuna.trial.FixedTrial({"chain": "base-int8"}), own)
    assert drawn.model == own.model and chain_settings(drawn.plan[0], drawn) == {}


@pytest.mark.parametrize(
    "search, message",
    [
        ({"profile": "nope"}, "search.profile: no device profile 'nope'"),
        ({"space": {"chains": [["separable", "int8"]]}}, "separable is not searched"),
        ({"space": {"chains": [["int8", "prune"]]}}, "search.space.chains[0]"),
        ({"space": {"target_sparsity": [0.5, 1.0]}}, "target_sparsity: below 1"),
        ({"space": {"qat_epochs": [3, 1]}}, "qat_epochs: [low, high]"),
        ({"space": {"conv_filters": []}}, "search.space.conv_filters: a list of values from 1 to 512"),
        ({"stop_drop": -0.1}, "search.stop_drop"),
        ({"space": {"kernel_size": [3, 13]}}, "search.space.kernel_size: a list of values from 1 to 11"),
    ],
)
def test_a_bad_search_section_names_the_key(search, message):
    from tinyopt.core.errors import UserError

    with pytest.raises(UserError) as error:
        parse_params({"search": search}, "params.yaml")
    assert message in str(error.value)


@pytest.mark.slow
@needs_fashion
def test_search_on_a_slice_then_its_pick_rebuilt_by_a_run(tmp_path):
    root = make_project(
        tmp_path / "project",
        seed=7,
        data={"train_limit": 1200, "test_limit": 400},
        train={"epochs": 2},
        conversion={"calibration_samples": 100},
        plan=[["int8"]],
        reference={"dir": str(REPO.parent / "shared" / "reference" / "seed-cnn1")},
        benchmark={"latency_warmup": 2, "latency_repeats": 20, "devices": ["nano33ble"]},
        search={
            "trials": 5,
            "max_drop": 0.5,
            "max_model_bytes": 20_000,  # the paper CNN's 12 filters take 22.8 KB: only 6 filters fit
            "space": {
                "chains": [["int8"], ["prune", "int8"], ["qat", "int8"], ["cluster", "int8"]],
                "fine_tune_epochs": [1, 2],
                "qat_epochs": [1, 2],
                "conv_filters": [6, 12],  # a trial at 6 filters trains that baseline
                "kernel_size": [3],
            },
        },
    )
    done = run_cli(["search"], cwd=root, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [report_dir] = (root / "reports").glob("search-*")
    result = json.loads((report_dir / "search.json").read_text())
    trials = {t["number"]: t for t in result["trials"]}
    repeats = [t for t in trials.values() if t["reason"].endswith("; not run again")]  # not counted in search.trials
    assert sorted(trials) == list(range(len(trials))) and len(trials) - len(repeats) == 5
    complete = [t for t in trials.values() if t["state"] == "complete"]
    assert complete and all(t["val_score"] > 0.3 and t["gzip_bytes"] > 0 for t in complete)
    for t in complete:  # feasible exactly when within max_model_bytes, and said so
        assert t["fits"] == (t["raw_bytes"] <= 20_000) and (t["fits"] or "search.max_model_bytes" in t["fit_reason"])
    assert {t["settings"]["model"]["conv_filters"] for t in complete} == {6, 12}
    # The test split scored only the front and the picks.
    assert {int(n) for n in result["test_scores"]} == set(result["front"]) | set(result["picks"].values())
    assert {int(n) for n in result["front_plans"]} == set(result["front"])  # each a params file
    assert all((root / path).is_file() for path in result["front_plans"].values())
    assert result["latency"] and all(t["instructions"] > 0 for t in complete)  # measured on nano33ble's core
    for number in result["front"]:  # nothing on the front is beaten on all three axes
        t = trials[number]
        assert not any(
            o["val_score"] > t["val_score"]
            and o["gzip_bytes"] < t["gzip_bytes"]
            and o["instructions"] < t["instructions"]
            for o in complete
        )
    text = (report_dir / "search.md").read_text()
    for heading in (
        "## Picks",
        "## Pareto front",
        "## Reference models, scored on the same test split",
        "## Every trial",
    ):
        assert heading in text
    assert (report_dir / "search.png").stat().st_size > 10_000
    assert "pick most_accurate: trial" in done.stdout

    client = mlflow_client(root)
    parent = client.get_run(result["mlflow_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["tinyopt.kind"] == "search"
    assert parent.data.params["trials"] == "5" and parent.data.params["max_model_bytes"] == "20000"
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(children) == 5 and all(
        "val_score" in c.data.metrics or c.data.tags["tinyopt.trial_state"] != "complete" for c in children
    )
    assert all(c.info.status == "FINISHED" for c in children)
    assert "most_accurate.test_score" in parent.data.metrics
    # The baseline's curves on the search's run, one point per epoch (2, no early stop that soon).
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "train.loss")] == [0, 1]
    # Each trial that fine-tuned has its technique's curves on its own run, one point per epoch, as they came.
    run_of = {int(c.info.run_name.split()[1]): c for c in children}
    for number, t in trials.items():
        assert run_of[number].data.params["chain"] == " > ".join(t["chain"])
        if len(t["chain"]) == 1 or t["state"] == "skipped" or "not run again" in t["reason"]:
            continue
        token = t["chain"][0]
        epochs = t["settings"][token]["fine_tune_epochs"]
        for figure in ("loss", "accuracy", "val_loss", "val_accuracy"):
            history = client.get_metric_history(run_of[number].info.run_id, f"{token}.{figure}")
            assert [m.step for m in history] == list(range(epochs)), (number, figure)
    # The 6-filter baseline trained for the first trial at that width: its epochs went to that trial's run.
    first_at_6 = min(n for n, t in trials.items() if t["settings"].get("model", {}).get("conv_filters") == 6)
    history = client.get_metric_history(run_of[first_at_6].info.run_id, "train.loss")
    assert [m.step for m in history] == [0, 1]
    # The front on the search's run, step = rank (smallest first); its trials' runs say so.
    front = result["front"]
    assert parent.data.tags["front"] == " ".join(map(str, front))
    for key, figure in (
        ("front.trial", "number"),
        ("front.val_score", "val_score"),
        ("front.gzip_bytes", "gzip_bytes"),
    ):
        history = sorted(client.get_metric_history(parent.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(i, float(trials[n][figure])) for i, n in enumerate(front)]
    assert {n for n, c in run_of.items() if c.data.tags.get("front") == "true"} == set(front)

    # The pick's params file, run as a pipeline, makes the very same .tflite.
    pick = trials[result["picks"]["smallest"]]
    plan_file = root / result["plans"]["smallest"]  # relative to the project, as reports/ is
    written = yaml.safe_load(plan_file.read_text())
    assert written["plan"] == [pick["chain"]]
    written["reference"]["dir"] = None  # the reference models do not change the pick's bytes; they take minutes
    (root / "rebuild.yaml").write_text(yaml.safe_dump(written, sort_keys=False))
    rebuilt = run_cli(["run", "--params", "rebuild.yaml"], cwd=root, timeout=1200)
    assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
    name = "base-int8" if pick["chain"] == ["int8"] else "-".join(pick["chain"])
    made = root / "artifacts" / "variants" / name / f"{name}.tflite"
    assert hashlib.sha256(made.read_bytes()).hexdigest() == pick["sha256"]


@pytest.mark.slow
def test_search_on_a_users_1d_regressor_minimizes_its_error(tmp_path):
    """A user's Conv1D regressor and data: the score is MAE (lower is better), QAT runs on its Conv1D, and a
    trial may draw the model at half its width (rebuilt from its config, trained from scratch)."""
    model, data = sensor_regressor(tmp_path)
    root = make_project(
        tmp_path / "project",
        task={"kind": "regression"},
        conversion={"calibration_samples": 64},
        reference={"dir": None},
        search={
            "trials": 3,
            "max_drop": 0.2,
            "space": {
                "chains": [["int8"], ["qat", "int8"], ["prune", "int8"]],
                "fine_tune_epochs": [1, 3],
                "qat_epochs": [1, 3],
                "width_multiplier": [0.5, 1.0],
            },
        },
    )
    done = run_cli(["search", "--model", str(model), "--data", str(data)], cwd=root, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [report_dir] = (root / "reports").glob("search-*")
    result = json.loads((report_dir / "search.json").read_text())
    complete = [t for t in result["trials"] if t["state"] == "complete"]
    assert result["metric"] == "mae" and complete
    best = next(t for t in result["trials"] if t["number"] == result["picks"]["most_accurate"])
    assert best["val_score"] == min(t["val_score"] for t in complete if t["fits"])  # lower is better
    assert best["val_score"] < 0.35  # amplitudes span 0.5 to 2.0
    assert "## Reference models" not in (report_dir / "search.md").read_text()  # none for this data
    assert {t["settings"]["model"]["width_multiplier"] for t in result["trials"]} <= {0.5, 1.0}
    halves = [t for t in complete if t["settings"]["model"]["width_multiplier"] == 0.5]
    if halves:  # trained from scratch at half width: a smaller model than the user's
        assert "train baseline sensor-x0.5 done" in done.stdout + done.stderr
        whole = [t["raw_bytes"] for t in complete if t["settings"]["model"]["width_multiplier"] == 1.0]
        assert not whole or max(t["raw_bytes"] for t in halves) < min(whole)


def test_a_search_report_without_a_completed_trial_draws_no_plot(tmp_path):
    from tinyopt.search.report import SearchResult, nothing_completed, write_search_report

    pruned = TrialRecord(
        number=0, chain=["prune", "int8"], settings={}, state="pruned", metric="mae", val_score=0.31,
        reason="prune: validation mae 0.3100 is worse than the floor 0.2500",
    )  # fmt: skip
    result = SearchResult(
        search_id="search-x", metric="mae", size="gzip_bytes", profile="nano33ble", baseline_val_score=0.2,
        floor=0.3, stop_floor=0.25, seconds=9, trial_stage_seconds=5, runner="threads x 1", trials=[pruned],
        front=[], picks={"most_accurate": None, "smallest": None}, test_scores={}, plans={}, references=[],
        mlflow_run_id="m",
    )  # fmt: skip
    assert nothing_completed(result) == (
        "no trial completed: 1 of 1 fell below the stop floor 0.2500 (the baseline's validation mae 0.2000, a drop "
        "of 0.05 allowed); widen search.stop_drop (null: max_drop) or the space's fine-tuning ranges"
    )
    files = write_search_report(result, tmp_path)
    assert sorted(f.name for f in files) == sorted(f.name for f in tmp_path.iterdir()) == ["search.json", "search.md"]
    text = (tmp_path / "search.md").read_text()
    assert "No trial completed: 1 of 1 fell below" in text and "No plot: no trial completed" in text
    assert "search.png" not in text
    assert nothing_completed(result.model_copy(update={"trials": []})).startswith("no trial ran: ")


@pytest.mark.slow
def test_a_search_where_no_trial_completes_reports_what_to_widen(tmp_path):
    """stop_drop 0: any pruned model scoring worse than the baseline ends its trial, so none completes. The
    search still writes its report (no plot: nothing to draw), says what to widen, and exits 0."""
    model, data = sensor_regressor(tmp_path)
    root = make_project(
        tmp_path / "project",
        task={"kind": "regression"},
        conversion={"calibration_samples": 32},
        reference={"dir": None},
        search={
            "trials": 2,
            "stop_drop": 0.0,
            "space": {"chains": [["prune", "int8"]], "target_sparsity": [0.9, 0.95], "fine_tune_epochs": [1, 1]},
        },
    )
    done = run_cli(["search", "--model", str(model), "--data", str(data)], cwd=root, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stdout + done.stderr
    [report_dir] = (root / "reports").glob("search-*")
    assert sorted(p.name for p in report_dir.iterdir()) == ["search.json", "search.md"]
    result = json.loads((report_dir / "search.json").read_text())
    assert [t["state"] for t in result["trials"]] == ["pruned", "pruned"]
    assert result["picks"] == {"most_accurate": None, "smallest": None, "fastest": None} and result["front"] == []
    widen = next(line for line in done.stdout.splitlines() if line.startswith("no trial completed"))
    assert widen.startswith("no trial completed: 2 of 2 fell below the stop floor ")
    assert widen.endswith(
        "a drop of 0 allowed); widen search.stop_drop (null: max_drop) or the space's fine-tuning ranges"
    )
    text = (report_dir / "search.md").read_text()
    assert widen[0].upper() + widen[1:] + "." in text and "No plot: no trial completed" in text
    assert "pick most_accurate: none fits" in done.stdout


# `tinyopt search` with its baseline step raising, after the data steps ran: a failure inside the flow.
BROKEN_BASELINE = """
import sys
import flows.search
from cli import main

def broken(*args, **kwargs):
    raise RuntimeError("the baseline broke")

flows.search.train_stage = broken
sys.argv = ["tinyopt", "search"]
main()
"""


@pytest.mark.slow
@needs_fashion
def test_a_search_that_fails_leaves_its_run_failed_with_the_error(tmp_path):
    """The search's MLflow run opens before any step: a step failing ends it FAILED, with the error, not RUNNING."""
    root = make_project(tmp_path / "project", data={"train_limit": 300, "test_limit": 100}, reference={"dir": None})
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_BASELINE], cwd=root, capture_output=True, text=True, timeout=600
    )
    assert done.returncode != 0 and (root / "artifacts" / "prepared.npz").is_file(), (
        done.stdout[-3000:] + done.stderr[-3000:]
    )
    client = mlflow_client(root)
    [experiment] = [e for e in client.search_experiments() if e.name != "Default"]
    [parent] = client.search_runs([experiment.experiment_id])
    assert parent.info.status == "FAILED" and parent.data.tags["tinyopt.kind"] == "search"
    assert parent.data.tags["error"] == "the baseline broke" and parent.data.params["trials"]


def test_the_example_search_files_load():
    from tinyopt.params import load_params

    smallest = load_params(REPO / "examples" / "search-smallest.yaml")
    assert smallest.search.space.chains == [["prune", "sp_cluster", "pcqat", "int8"]]
    assert smallest.reference.dir == load_params(REPO / "params.yaml").reference.dir  # the same reference models
