"""Benchmark: the optimization sequence on published TinyML reference architectures, not the paper's CNN.

For each architecture of the zoo (tests/zoo.py: DS-CNN, ResNet-8, MobileNetV1-style, a 1-D temporal depthwise
net, the MLPerf Tiny FC autoencoder; or those named), makes its synthetic dataset and trains it, then runs
`tinyopt run --model M --data D` on them in a fresh project with each of the default plan's techniques once
followed by int8 (measured on the Cortex-M4 of the Nano 33 BLE profile), and prints from each run's summary.json
a table: int8 test score, drop against base-int8, .tflite bytes, M4 instructions per inference, bit-exactness,
or why a technique was skipped. The table is also written to OUT/zoo.md.

    python benchmarks/zoo.py [ARCH ...] [--out zoo-runs] [--count 3000] [--quick]

The default plan's epochs unless --quick (a few epochs per technique, as tests/test_zoo.py runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.zoo, when run as a script

from tests import zoo  # noqa: E402


def run_architecture(name: str, root: Path, count: int, quick: bool, device_images: int | None) -> dict:
    """Dataset, trained model and one tinyopt run for one architecture under root/<name>: its rows and timings."""
    project = root / name
    project.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    model, data, keras_score = zoo.save_trained(name, project / "inputs", count=count)
    trained = time.monotonic() - started
    params = zoo.params(zoo.ZOO[name].kind, quick=quick, device_images=device_images)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL")}
    command = [sys.executable, "-m", "tinyopt", "run", "--model", str(model), "--data", str(data)]
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    (project / "run.log").write_text(done.stdout + done.stderr)
    seconds = time.monotonic() - started - trained
    if done.returncode != 0:
        return {"error": f"tinyopt run failed (exit {done.returncode}); see {project / 'run.log'}", "train_s": trained}
    summary = json.loads((project / "reports" / "latest" / "summary.json").read_text())
    return {
        "rows": zoo.outcomes(summary, params["plan"], (project / "reports" / "latest" / "report.md").read_text()),
        "metric": summary["baseline"]["metric"],
        "keras_score": keras_score,
        "baseline_score": summary["baseline"]["score"],
        "train_s": trained,
        "run_s": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="*", metavar="ARCH", help=f"any of {', '.join(zoo.ZOO)} (default: all)")
    parser.add_argument("--out", type=Path, default=Path("zoo-runs"), help="where each architecture's project goes")
    parser.add_argument("--count", type=int, default=zoo.TRAIN, help="training examples (test: a fifth, >= 100)")
    parser.add_argument("--quick", action="store_true", help="a few epochs per technique, not the defaults")
    parser.add_argument("--device-images", type=int, default=None, help="test examples the M4 runs (all: default)")
    args = parser.parse_args()
    unknown = set(args.architectures) - set(zoo.ZOO)
    if unknown:
        parser.error(f"unknown architecture {', '.join(sorted(unknown))}; the zoo has {', '.join(zoo.ZOO)}")
    args.out.mkdir(parents=True, exist_ok=True)
    results, metrics, lines = {}, {}, []
    for name in args.architectures or list(zoo.ZOO):
        outcome = run_architecture(name, args.out.resolve(), args.count, args.quick, args.device_images)
        if "error" in outcome:
            lines.append(f"- {name}: {outcome['error']}")
            print(lines[-1], flush=True)
            continue
        results[name], metrics[name] = outcome["rows"], outcome["metric"]
        lines.append(
            f"- {name}: baseline (float32) {outcome['metric']} {outcome['baseline_score']:.4f}; trained in "
            f"{outcome['train_s']:.0f} s, tinyopt run {outcome['run_s']:.0f} s"
        )
        print(lines[-1], flush=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    header = (
        f"Zoo: {args.count} training examples, {'quick epochs' if args.quick else 'default epochs'}, "
        f"M4 on {args.device_images or 'all'} test examples, "
        f"commit {commit or '?'}, {platform.node()} ({os.cpu_count()} CPUs), {time.strftime('%Y-%m-%d')}\n\n"
    )
    text = header + zoo.table(results, metrics) + "\n" + "\n".join(lines) + "\n"
    (args.out / "zoo.md").write_text(text)
    print("\n" + text)
    print(f"written: {args.out / 'zoo.md'}")


if __name__ == "__main__":
    main()
