"""Benchmark: how much of a variant's score is its seed. Rebuilds the chain of a params file (a search's
`plan-*.yaml`, or any params file with one chain) with each seed, from the baseline on, each in a fresh
project (`tinyopt run`: no reference models, one emulated core on 100 images), and prints the validation and test
score (LiteRT, the whole split), raw and gzip bytes per seed, then the mean and sample standard deviation.

    python benchmarks/seed_spread.py reports/<search-id>/plan-smallest.yaml [--seeds 42 43 44]

A score difference smaller than the spread printed here is not a difference.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from tinyopt.run.plan import variant_name


def build(params: dict, seed: int, scratch: Path) -> dict:
    """One seed's variant, as summary.json records it."""
    root = scratch / f"seed-{seed}"
    root.mkdir(parents=True)
    params = {**params, "seed": seed}
    params["reference"] = {**params.get("reference", {}), "dir": None}
    # One emulated core on a few images: the objectives need a measured profile; scores come from the host.
    params["benchmark"] = {**params.get("benchmark", {}), "devices": ["nano33ble"], "device_images": 100}
    params["benchmark"]["latency_repeats"] = 20
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    done = subprocess.run([sys.executable, "-m", "tinyopt", "run"], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"seed {seed}: tinyopt run failed\n{(done.stdout + done.stderr)[-3000:]}")
    variants = json.loads((root / "reports" / "latest" / "summary.json").read_text())["variants"]
    return next(v for v in variants if v["name"] == variant_name(params["plan"][0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("params", type=Path, help="a params file whose plan is one chain")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    args = parser.parse_args()
    params = yaml.safe_load(args.params.read_text())
    if len(params.get("plan") or []) != 1:
        raise SystemExit(f"{args.params}: give a params file whose plan is exactly one chain")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            v = build(params, seed, Path(scratch))
            rows.append(v)
            print(
                f"seed {seed}: {v['name']}  val {v['val_score']:.4f}  test {v['score']:.4f}  "
                f"{v['raw_bytes']:,} B  {v['gzip_bytes']:,} gzip B",
                flush=True,
            )
    for key in ("val_score", "score", "raw_bytes", "gzip_bytes"):
        values = [row[key] for row in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{key}: mean {statistics.mean(values):.4f}, sd {spread:.4f}, min {min(values)}, max {max(values)}")


if __name__ == "__main__":
    main()
