"""Benchmark: the variant stage (techniques, conversions, evaluations) on a local Dask cluster with 1
and with 2 worker processes, each in a fresh project directory (cold), with params.yaml otherwise as is.

    python benchmarks/variant_stage_workers.py [--params params.yaml] [--workers 1,2]

Prints, per worker count, the variant stage's wall time (as the flow measures it) and the whole run's.
Both runs must produce the same variants with the same bytes; the script checks and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    source = Path(args.params).resolve()
    params = yaml.safe_load(source.read_text())
    if params.get("reference", {}).get("dir") and not Path(params["reference"]["dir"]).is_absolute():
        params["reference"]["dir"] = str((source.parent / params["reference"]["dir"]).resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    fingerprints = {}
    for workers in [int(w) for w in args.workers.split(",")]:
        project = Path(tempfile.mkdtemp(prefix=f"tinyopt-dask{workers}-"))
        (project / "params.yaml").write_text(yaml.safe_dump({**params, "runner": {"kind": "dask", "workers": workers}}))
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "tinyopt", "run"], cwd=project, env=env, capture_output=True, text=True
        )
        wall = time.perf_counter() - started
        if done.returncode != 0:
            sys.exit(f"{workers} worker(s): run failed\n{done.stderr[-3000:]}")
        summary = json.loads((project / "reports" / "latest" / "summary.json").read_text())
        fingerprints[workers] = {
            v["name"]: hashlib.sha256((project / v["tflite"]).read_bytes()).hexdigest() for v in summary["variants"]
        }
        print(
            f"{workers} worker(s): variant stage {summary['timings']['variant_stage_seconds']:.1f} s, "
            f"whole run {wall:.1f} s, {len(summary['variants'])} variants ({project})",
            flush=True,
        )
    same = len({json.dumps(f, sort_keys=True) for f in fingerprints.values()}) == 1
    print("identical variants (names and .tflite bytes) across worker counts:", "yes" if same else "NO")
    print(f"cpu cores: {os.cpu_count()}")


if __name__ == "__main__":
    main()
