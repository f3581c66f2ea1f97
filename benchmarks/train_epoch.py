"""Benchmark: seconds per training epoch of the paper CNN on Fashion-MNIST, with oneDNN's CPU kernels
on (tinyopt's default) and off (TensorFlow's default on CPUs without AVX-512 VNNI).

    python benchmarks/train_epoch.py [--epochs 2] [--rounds 2]

Each setting runs in a fresh process (TensorFlow reads TF_ENABLE_ONEDNN_OPTS once, at import), the
settings alternate round by round, and the train step is tinyopt's own (seeds, loss, batch size from
params.yaml's defaults). Prints seconds per epoch and the last validation loss of every run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, sys, time
from tasks.train import build_paper_cnn
from tinyopt.datasets.sources import load_source
from tinyopt.params import DataParams, ModelParams, TaskParams, TrainParams
from tinyopt.ml.training import compile_for_task, set_seeds, train_epochs

x, y, x_test, y_test = load_source(DataParams())
x = (x / 255.0).astype("float32")  # as prepared
data = dict(x_train=x[6000:], y_train=y[6000:], x_val=x[:6000], y_val=y[:6000])
set_seeds(42)
model = build_paper_cnn((28, 28), 10, ModelParams())
train = TrainParams()
compile_for_task(model, TaskParams(), train.learning_rate)
epochs = int(sys.argv[1])
started = time.perf_counter()
history = model.fit(data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
                    epochs=epochs, batch_size=train.batch_size, shuffle=True, verbose=0)
print(json.dumps({"s_per_epoch": (time.perf_counter() - started) / epochs,
                  "val_loss": history.history["val_loss"][-1]}))
"""


def run(onednn: str, epochs: int) -> dict:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": onednn}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(epochs)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.epochs} epochs per run; 48,600 training images, batch 64")
    for round_ in range(1, args.rounds + 1):
        for onednn, label in (("1", "oneDNN on "), ("0", "oneDNN off")):
            figures = run(onednn, args.epochs)
            print(f"round {round_} {label}: {figures['s_per_epoch']:6.2f} s/epoch, val_loss {figures['val_loss']:.4f}")


if __name__ == "__main__":
    main()
