"""Benchmark: what the architecture pruner (search.prune_architectures, Optuna's MedianPruner over each drawn
architecture's per-epoch validation accuracy) saves in a blocks search, and what it costs in the pick. The same
search, seed and trial count with the pruner on and off, each in a fresh project (cold).

    python benchmarks/search_pruning.py [--trials 12] [--train-limit 12000] [--seed 42]

Prints, per setting: wall seconds, the architectures trained in full and their epochs, the architectures the
pruner stopped and their epochs, and the most accurate pick (validation, then test once). Every figure is
measured by that run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BLOCKS = {"depth": [1, 3], "filters": [4, 8, 16, 32], "kernel_size": [3, 5]}


def project(root: Path, prune: bool, trials: int, train_limit: int, seed: int) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = seed
    params["data"]["train_limit"] = train_limit
    params["reference"]["dir"] = None
    params["search"].update(trials=trials, time_budget_s=7200, latency=False, prune_architectures=prune)
    params["search"]["space"].update(chains=[["int8"]], blocks=BLOCKS)  # architectures are what differs
    root.mkdir(parents=True)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def measured(root: Path) -> dict:
    # The project's own Prefect home and task cache: the other setting's baselines are not served here.
    unset = ("PREFECT_HOME", "PREFECT_RESULTS_LOCAL_STORAGE_PATH", "PREFECT_API_URL", "MLFLOW_TRACKING_URI")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tinyopt", "search"], cwd=root, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    [result_file] = (root / "reports").glob("search-*/search.json")
    result = json.loads(result_file.read_text())
    full = [json.loads(p.read_text()) for p in (root / "artifacts" / "search" / "baselines").glob("*/model.json")]
    stopped = {t["reason"] for t in result["trials"] if t["reason"].startswith("architecture ")}
    stopped_epochs = sum(int(r.split("after epoch ")[1].split(":")[0]) for r in stopped)
    best = result["picks"]["most_accurate"]
    pick = next((t for t in result["trials"] if t["number"] == best), None)
    return {
        "wall": wall,
        "full": len(full),
        "full_epochs": sum(r["epochs_run"] for r in full),
        "stopped": len(stopped),
        "stopped_epochs": stopped_epochs,
        "pruned_trials": sum(t["reason"].startswith("architecture ") for t in result["trials"]),
        "pick": pick and (pick["val_score"], result["test_scores"][str(best)], pick["settings"]["model"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--train-limit", type=int, default=12000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--pruner", choices=["on", "off"], nargs="+", default=["on", "off"])
    parser.add_argument("--keep", type=Path, help="keep the projects here (their baselines' curves, MLflow stores)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        scratch = args.keep or temporary
        for prune in (setting == "on" for setting in args.pruner):
            root = project(Path(scratch) / f"prune-{prune}", prune, args.trials, args.train_limit, args.seed)
            row = measured(root)
            pick = f"val {row['pick'][0]:.4f}, test {row['pick'][1]:.4f}, {row['pick'][2]}" if row["pick"] else "none"
            print(
                f"pruner {'on ' if prune else 'off'}: {row['wall']:,.0f} s wall; drawn architectures trained in "
                f"full {row['full']} ({row['full_epochs']} epochs); stopped {row['stopped']} ({row['stopped_epochs']} "
                f"epochs, {row['pruned_trials']} trials pruned); most accurate: {pick}",
                flush=True,
            )


if __name__ == "__main__":
    main()
