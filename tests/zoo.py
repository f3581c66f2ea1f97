"""A model zoo: small versions of published TinyML reference architectures, each with a synthetic dataset
it can learn, so that tests and benchmarks/zoo.py check the optimization sequence on more than the paper's CNN.

Each architecture has a builder (functional Keras, with BatchNormalization, MLPerf-Tiny-like but small
enough to train in seconds on a CPU) and a seeded dataset generator whose classes a model can tell apart,
but not perfectly (noise and overlapping class patterns keep a baseline near 0.85-0.95, not 1.0).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

import tinyopt  # noqa: F401  (tf-keras, as tfmot needs, before TensorFlow is imported)

TRAIN, TEST = 3000, 600  # the "about 3,000 training examples"


def _layers():
    import tensorflow as tf

    return tf.keras, tf.keras.layers


def _bn(layers, name: str):
    """BatchNormalization whose moving statistics settle within the few hundred steps a small fit takes
    (Keras' default momentum, 0.99, leaves them near their initial values and the model scoring at chance)."""
    return layers.BatchNormalization(momentum=0.9, name=name)


def _conv_bn_relu(layers, x, filters, kernel, strides=1, name=""):
    x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = _bn(layers, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def _dw_pw_block(layers, x, filters, strides, name):
    """Depthwise 3x3 > BN > ReLU > pointwise 1x1 > BN > ReLU: the DS-CNN and MobileNetV1 block."""
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = _bn(layers, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    return _conv_bn_relu(layers, x, filters, 1, name=f"{name}_pw")


def ds_cnn(classes: int = 4):
    """MLPerf Tiny keyword spotting's DS-CNN, narrowed: 49x10 MFCC-like input, a 10x4 stride-2 conv, then
    three depthwise-separable blocks."""
    keras, layers = _layers()
    inputs = keras.Input((49, 10, 1))
    x = _conv_bn_relu(layers, inputs, 24, (10, 4), strides=2, name="stem")
    for i in range(3):
        x = _dw_pw_block(layers, x, 24, 1, name=f"ds{i}")
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(x), name="ds_cnn")


def resnet8(classes: int = 4):
    """MLPerf Tiny image classification's ResNet-8, narrowed: three residual stacks joined by Add, a 1x1
    projection shortcut where the shape changes."""
    keras, layers = _layers()
    inputs = keras.Input((32, 32, 3))
    x = _conv_bn_relu(layers, inputs, 8, 3, name="stem")
    for i, (filters, strides) in enumerate([(8, 1), (16, 2), (24, 2)]):
        y = _conv_bn_relu(layers, x, filters, 3, strides=strides, name=f"res{i}a")
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"res{i}b_conv")(y)
        y = _bn(layers, name=f"res{i}b_bn")(y)
        if strides != 1 or x.shape[-1] != filters:
            x = layers.Conv2D(filters, 1, strides=strides, use_bias=False, name=f"res{i}_proj")(x)
            x = _bn(layers, name=f"res{i}_proj_bn")(x)
        x = layers.ReLU(name=f"res{i}_relu")(layers.Add(name=f"res{i}_add")([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(x), name="resnet8")


def mobilenet(classes: int = 4):
    """MobileNetV1-0.25-style, shortened: a stride-2 conv, then depthwise/pointwise blocks, some stride 2."""
    keras, layers = _layers()
    inputs = keras.Input((32, 32, 3))
    x = _conv_bn_relu(layers, inputs, 8, 3, strides=2, name="stem")
    for i, (filters, strides) in enumerate([(16, 1), (32, 2), (32, 1), (64, 2)]):
        x = _dw_pw_block(layers, x, filters, strides, name=f"mb{i}")
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(x), name="mobilenet")


def temporal_dw(classes: int = 4):
    """A 1-D temporal net for sensor windows (128 steps x 3 axes): Conv1D, then depthwise Conv1D blocks with a
    pointwise Conv1D, each with BatchNorm."""
    keras, layers = _layers()
    inputs = keras.Input((128, 3))
    x = layers.Conv1D(16, 5, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(_bn(layers, name="stem_bn")(x))
    for i, strides in enumerate([1, 2, 2]):
        x = layers.DepthwiseConv1D(5, strides=strides, padding="same", use_bias=False, name=f"t{i}_dw")(x)
        x = layers.ReLU(name=f"t{i}_dw_relu")(_bn(layers, name=f"t{i}_dw_bn")(x))
        x = layers.Conv1D(24, 1, use_bias=False, name=f"t{i}_pw")(x)
        x = layers.ReLU(name=f"t{i}_pw_relu")(_bn(layers, name=f"t{i}_pw_bn")(x))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(classes, name="logits")(x), name="temporal_dw")


def autoencoder(classes: int = 2):
    """MLPerf Tiny anomaly detection's fully connected autoencoder, narrowed: 640 inputs, Dense > BN > ReLU down
    to an 8-unit bottleneck and back up, a linear 640-unit output; scored by its reconstruction error."""
    keras, layers = _layers()
    inputs = keras.Input((640,))
    x = inputs
    for i, units in enumerate([64, 64, 8, 64, 64]):
        x = layers.Dense(units, use_bias=False, name=f"fc{i}")(x)
        x = layers.ReLU(name=f"fc{i}_relu")(_bn(layers, name=f"fc{i}_bn")(x))
    return keras.Model(inputs, layers.Dense(640, name="reconstruction")(x), name="autoencoder")


# Datasets. Each returns (x, y) for `count` examples from a seeded generator; the split is the caller's.


def _keywords(rng, count: int, classes: int = 4):
    """49 frames x 10 coefficients: each class a ridge drifting across the coefficients at its own rate
    (some rates close), at a random time offset, in noise."""
    y = rng.integers(0, classes, count)
    t = np.arange(49)[None, :, None]
    c = np.arange(10)[None, None, :]
    slope = (np.array([-0.2, -0.07, 0.07, 0.2])[y] + rng.normal(0, 0.04, count))[:, None, None]
    start = rng.uniform(2, 8, (count, 1, 1))
    centre = start + slope * (t - 24)
    word = np.exp(-((c - centre) ** 2) / 2.0) * (np.abs(t - rng.uniform(20, 29, (count, 1, 1))) < 15)
    x = 1.0 * word + rng.normal(0, 0.4, (count, 49, 10))
    return x[..., None].astype(np.float32), y


def _gratings(rng, count: int, classes: int = 4, amplitude: float = 0.5):
    """32x32 RGB: each class a grating at its own orientation (45 degrees apart), random phase, frequency and
    tint, in strong noise."""
    y = rng.integers(0, classes, count)
    angle = y * np.pi / classes + rng.normal(0, 0.25, count)
    freq = rng.uniform(0.35, 0.7, count)
    phase = rng.uniform(0, 2 * np.pi, count)
    i, j = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    wave = np.sin(
        freq[:, None, None] * (np.cos(angle)[:, None, None] * i + np.sin(angle)[:, None, None] * j)
        + phase[:, None, None]
    )
    tint = rng.uniform(0.3, 1.0, (count, 1, 1, 3))
    x = amplitude * wave[..., None] * tint + rng.normal(0, 0.8, (count, 32, 32, 3))
    return x.astype(np.float32), y


def _motions(rng, count: int, classes: int = 4):
    """128 steps x 3 axes: each class a periodic motion at its own frequency, on a random axis mix, phase and
    amplitude, in noise."""
    y = rng.integers(0, classes, count)
    freq = np.array([4.0, 6.0, 8.0, 11.0])[y] * np.exp(rng.normal(0, 0.09, count))
    phase = rng.uniform(0, 2 * np.pi, count)
    t = np.arange(128) / 128
    wave = np.sin(2 * np.pi * freq[:, None] * t[None, :] + phase[:, None])
    axes = rng.dirichlet(np.ones(3), count)
    x = 0.6 * wave[:, :, None] * axes[:, None, :] * 3**0.5 + rng.normal(0, 0.6, (count, 128, 3))
    return x.astype(np.float32), y


def _machine_sounds(rng, count: int, anomalies: float):
    """640 features (5 frames x 128 bins, as MLPerf's): normal examples mix 4 smooth spectra plus a little noise
    (a 4-dimensional manifold); anomalies add a narrow peak off that manifold, some faint. Labels: 0 normal,
    1 anomaly."""
    bins = np.arange(640) % 128
    basis = np.stack([np.exp(-((bins - centre) ** 2) / (2 * 18.0**2)) for centre in (20, 50, 80, 110)])
    y = (rng.random(count) < anomalies).astype(np.int64)
    x = rng.uniform(0.2, 1.0, (count, 4)) @ basis + rng.normal(0, 0.05, (count, 640))
    peak = np.exp(-((bins[None, :] - rng.uniform(0, 128, (count, 1))) ** 2) / (2 * 3.0**2))
    x += y[:, None] * rng.uniform(0.15, 0.7, (count, 1)) * peak
    return x.astype(np.float32), y


@dataclass(frozen=True)
class Architecture:
    name: str
    build: Callable
    data: Callable  # (rng, count) -> (x, y)
    kind: str  # the task.kind it runs as
    epochs: int  # how long save_trained fits it


ZOO = {
    "ds_cnn": Architecture("ds_cnn", ds_cnn, _keywords, "classification", 20),
    "resnet8": Architecture("resnet8", resnet8, _gratings, "classification", 20),
    "mobilenet": Architecture("mobilenet", mobilenet, partial(_gratings, amplitude=0.7), "classification", 20),
    "temporal_dw": Architecture("temporal_dw", temporal_dw, _motions, "classification", 20),
    "autoencoder": Architecture("autoencoder", autoencoder, None, "anomaly", 30),
}


def dataset(name: str, count: int = TRAIN, test: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test for architecture `name`: `count` training and `test` (default count/5)
    test examples. The autoencoder's training split is a tenth labelled anomalies (tinyopt fits the normal ones
    and needs both in the validation split it carves for the AUC), its test split a third."""
    rng = np.random.default_rng(seed)
    test = test or max(count // 5, 100)
    if name == "autoencoder":
        x_train, y_train = _machine_sounds(rng, count, anomalies=0.1)
        x_test, y_test = _machine_sounds(rng, test, anomalies=1 / 3)
    else:
        x, y = ZOO[name].data(rng, count + test)
        x_train, y_train, x_test, y_test = x[:count], y[:count], x[count:], y[count:]
    return dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def write_dataset(name: str, path: Path, count: int = TRAIN, test: int | None = None, seed: int = 0) -> Path:
    np.savez(path, **dataset(name, count, test, seed))
    return path


def trained(name: str, data: dict[str, np.ndarray], epochs: int | None = None, seed: int = 0):
    """The architecture fitted on `data` (seeded): classes on the labels, the autoencoder on its normal inputs."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    arch = ZOO[name]
    model = arch.build()
    x, epochs = data["x_train"], epochs or arch.epochs
    if arch.kind == "anomaly":
        x = x[data["y_train"] == 0]  # an autoencoder learns what normal looks like
    # A cosine-decayed rate: the model converges in the epochs given, so what a technique costs is not hidden
    # by the fine-tune training an under-trained baseline further.
    rate = tf.keras.optimizers.schedules.CosineDecay(3e-3, epochs * -(-len(x) // 64))
    if arch.kind == "anomaly":
        model.compile(tf.keras.optimizers.Adam(rate), "mse")
        model.fit(x, x, epochs=epochs, batch_size=64, verbose=0)
    else:
        loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        model.compile(tf.keras.optimizers.Adam(rate), loss, metrics=["accuracy"])
        model.fit(x, data["y_train"], epochs=epochs, batch_size=64, verbose=0)
    return model


def score(name: str, model, data: dict[str, np.ndarray]) -> float:
    """The test split's accuracy, or for the autoencoder the AUC of its per-example reconstruction MSE."""
    out = model.predict(data["x_test"], verbose=0, batch_size=256)
    if ZOO[name].kind == "anomaly":
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(data["y_test"], ((out - data["x_test"]) ** 2).mean(axis=1)))
    return float((out.argmax(axis=1) == data["y_test"]).mean())


def save_trained(
    name: str, directory: Path, count: int = TRAIN, test: int | None = None, epochs: int | None = None, seed: int = 0
) -> tuple[Path, Path, float]:
    """The dataset (directory/<name>.npz) and the model trained on it (directory/<name>.keras), and its test
    score."""
    from tinyopt.datasets.split import split_indices
    from tinyopt.params import DataParams, Params

    directory.mkdir(parents=True, exist_ok=True)
    data = dataset(name, count, test, seed)
    np.savez(directory / f"{name}.npz", **data)
    # Fitted on the examples tinyopt trains on, not its validation split (carved from x_train with the params'
    # seed), as a user's model is: else the baseline's validation score is memorised, and every fine-tune
    # compared with it looks collapsed.
    fit, _ = split_indices(count, DataParams(), Params.model_fields["seed"].default)
    model = trained(name, {**data, "x_train": data["x_train"][fit], "y_train": data["y_train"][fit]}, epochs, seed)
    model.save(directory / f"{name}.keras")
    return directory / f"{name}.keras", directory / f"{name}.npz", score(name, model, data)


# Running the optimization sequence on an architecture: the plan, its settings, and reading the run back.


def plan() -> list[list[str]]:
    """Each of the default plan's techniques once, then full-integer int8 (what a microcontroller runs); the
    default plan's collaborative chains ([prune, pqat], [prune, sp_cluster, pcqat]) stand for pqat, sp_cluster
    and pcqat; a filter-pruning technique too where this tinyopt has one."""
    from tinyopt.params.techniques import TECHNIQUES

    chains = [
        [],
        ["prune"],
        ["prune_2_4"],
        ["cluster"],
        ["qat"],
        ["prune", "pqat"],
        ["prune", "sp_cluster", "pcqat"],
        ["separable"],
        ["distill"],
        ["graph"],
    ]
    if "prune_filters" in TECHNIQUES:
        chains.insert(3, ["prune_filters"])
    return [[*chain, "int8"] for chain in chains]


def params(kind: str, quick: bool = False, device_images: int | None = None) -> dict:
    """The params a zoo run overrides: the task, the plan, devices measured on the M4 only (the Nano 33 BLE's
    core); with `quick`, a few epochs per technique (the tests), else the defaults' epochs."""
    overrides = dict(
        task={"kind": kind},
        plan=plan(),
        conversion={"calibration_samples": 200},
        reference={"dir": None},
        benchmark={
            "latency_warmup": 2,
            "latency_repeats": 20,
            "devices": ["nano33ble"],
            "device_images": device_images,
        },
    )
    if quick:
        overrides["train"] = {"epochs": 3}
        overrides["techniques"] = {
            "prune": {"fine_tune_epochs": 2},
            "prune_2_4": {"fine_tune_epochs": 1},
            "cluster": {"fine_tune_epochs": 1},
            "qat": {"fine_tune_epochs": 2},
            "distill": {"teacher_width": 2, "teacher_epochs": 3, "fine_tune_epochs": 2},
        }
    return overrides


PROFILE = "nano33ble"  # its core, a Cortex-M4, is the one the table reports
MAX_DROP = 0.03  # the target: every int8 variant within this of base-int8, unless flagged


def outcomes(summary: dict, chains: list[list[str]], report: str = "") -> list[dict]:
    """One row per chain of the plan: the variant's figures (flagged: the run's report.md says why it scores
    low), or where and why it was skipped."""
    from tinyopt.run.plan import model_name, variant_name

    variants = {v["name"]: v for v in summary["variants"]}
    skips = {s["name"]: s["reason"] for s in summary["skipped"]}
    base = variants.get("base-int8")
    rows = []
    for chain in chains:
        name = variant_name(chain)
        row = {"name": name, "chain": chain}
        steps = [model_name(tuple(chain[:i])) for i in range(1, len(chain))] + [name]
        skipped_at = next((step for step in steps if step in skips), None)
        if name in variants:
            v = variants[name]
            device = v.get("device", {}).get(PROFILE)
            row.update(
                score=v["score"],
                drop=None if base is None or name == "base-int8" else base["score"] - v["score"],
                notes=v.get("notes", ""),
                raw_bytes=v["raw_bytes"],
                instructions=device["instructions"] if device else None,
                device_score=device["score"] if device else None,
                bit_exact=device["bit_exact"] if device else None,
                device_note=v.get("device_note"),
            )
            row["flagged"] = flagged(row, report)
        elif skipped_at is not None:
            row["skipped"] = f"{skipped_at}: {skips[skipped_at]}"
        rows.append(row)
    return rows


def flagged(row: dict, report: str) -> bool:
    """True when the run's report says why this variant scores low: its line under the report's score drops,
    naming the step that lost it (the fine-tunes or the int8 conversion)."""
    drops = report.split("## Score drops", 1)[-1].split("\n## ", 1)[0] if "## Score drops" in report else ""
    return any(line.startswith(f"- {row['name']}: ") and "lost in the" in line for line in drops.splitlines())


def table(results: dict[str, list[dict]], metric: dict[str, str]) -> str:
    """Markdown: architecture x variant -> int8 test score, drop against base-int8, flag and notes, .tflite
    bytes, M4 instructions per inference, bit-exact on the M4; or the skip reason."""
    lines = [
        "| architecture | variant | score | drop vs base-int8 | within 0.03 | .tflite bytes | M4 instructions "
        "| M4 bit-exact | notes / skip reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, rows in results.items():
        for row in rows:
            if "score" not in row:
                reason = row.get("skipped", "neither measured nor skipped")
                lines.append(f"| {arch} | {row['name']} | - | - | - | - | - | - | skipped: {_cell(reason)} |")
                continue
            drop = row["drop"]
            ok = "" if drop is None else ("yes" if drop <= MAX_DROP else ("flagged" if row["flagged"] else "**no**"))
            instructions = "-" if row["instructions"] is None else f"{row['instructions']:,.0f}"
            exact = "-" if row["bit_exact"] is None else ("yes" if row["bit_exact"] else "**no**")
            notes = row["notes"] or ""
            notes = notes if len(notes) <= 160 else notes[:157] + "..."
            if row["instructions"] is None and row.get("device_note"):
                notes = f"{notes}; no device figures: {row['device_note']}".strip("; ")
            lines.append(
                f"| {arch} | {row['name']} | {metric[arch]} {row['score']:.4f} | "
                f"{'-' if drop is None else f'{drop:+.4f}'} | {ok} | {row['raw_bytes']:,} | {instructions} | {exact} | "
                f"{_cell(notes)} |"
            )
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")
