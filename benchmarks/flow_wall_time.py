"""Benchmark: wall time of the whole `optimize` flow (`tinyopt run`), cold and then warm.

Cold: a fresh project directory (no data copy, no artifacts, no task cache, no MLflow store).
Warm: the same command again with nothing changed (every step should come from the cache).

    python benchmarks/flow_wall_time.py [--params params.yaml] [--runs cold,warm] [--keep DIR]

Prints one line per run and the variant table of the last run. Timings are of this machine; the
figures in benchmarks/RESULTS.md were taken on a 2-core, no-GPU machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--runs", default="cold,warm")
    parser.add_argument("--keep", default=None, help="project directory to use and keep (default: a temporary one)")
    args = parser.parse_args()

    project = Path(args.keep or tempfile.mkdtemp(prefix="tinyopt-bench-"))
    project.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    # The params file stays where it is: relative paths in it (reference.dir) are relative to it.
    tinyopt = [sys.executable, "-m", "tinyopt", "run", "--params", str(Path(args.params).resolve())]
    results = []
    for label in args.runs.split(","):
        started = time.perf_counter()
        done = subprocess.run(tinyopt, cwd=project, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{label} run failed:\n{done.stderr[-3000:]}")
        cached = (done.stdout + done.stderr).count("Cached(type=COMPLETED)")
        results.append({"run": label, "wall_seconds": round(seconds, 1), "cached_task_runs": cached})
        print(f"{label:5s} run: {seconds:7.1f} s wall, {cached} task runs served from the cache", flush=True)
    summary = json.loads((project / "reports" / "latest" / "summary.json").read_text())
    print(
        f"\nvariants: {len(summary['variants'])}, skipped: {len(summary.get('skipped', []))}, "
        f"cpu cores: {os.cpu_count()}, project: {project}"
    )
    print(done.stdout[done.stdout.find("model ") :].split("\nrun ")[0])
    print(json.dumps(results))
    if not args.keep:
        shutil.rmtree(project, ignore_errors=True)


if __name__ == "__main__":
    main()
