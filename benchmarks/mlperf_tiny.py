"""Benchmark: MLPerf Tiny's four reference architectures as tinyopt's generated C runs them on emulated Cortex-M
cores (QEMU -icount: instructions, not cycles), beside TFLM + CMSIS-NN measured on the same machines.

    python benchmarks/mlperf_tiny.py [--models kws vww ic ad] [--profiles nano33ble stm32f746 corstone-300]
                                     [--inputs 3] [--cache DIR]

The models follow mlcommons/tiny's training code (benchmark/training/*/keras_model.py, vww_model.py): DS-CNN
keyword spotting (49x10x1, 12 classes), MobileNetV1 alpha 0.25 visual wake words (96x96x3, 2 classes),
ResNet-8 image classification (32x32x3, 10 classes) and the FC autoencoder of anomaly detection (640 inputs).
Instruction counts depend on shapes, not on trained weights: weights are randomly initialised and batch
normalisation gets random statistics, then each model is converted to full int8 (int8 input and output) with
a seeded random representative set. Per model: flash (whole firmware / model), RAM, instructions per inference,
whether every output byte equals TFLM's reference kernels', and per op kind the instructions and instructions
per multiply-accumulate.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

# Measured 2026-12-07 (shared/GUIDE.md): TFLM + CMSIS-NN, int8 registrations, same QEMU machines and counting.
TFLM_CMSIS = {
    "cortex-m4": {"kws": 7.70e6, "vww": 24.10e6, "ic": 29.86e6, "ad": 0.583e6},
    "cortex-m55": {"kws": 1.81e6, "vww": 6.56e6, "ic": 4.91e6, "ad": 0.150e6},
}
SEED = 7


def ds_cnn():
    """keyword_spotting/keras_model.py, model 'ds_cnn' (dropout omitted: not in the inference graph)."""
    from tf_keras import Input, Model, layers

    def bn_relu(x):
        return layers.Activation("relu")(layers.BatchNormalization()(x))

    inp = Input((49, 10, 1))
    x = bn_relu(layers.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(inp))
    for _ in range(4):
        x = bn_relu(layers.DepthwiseConv2D((3, 3), padding="same")(x))
        x = bn_relu(layers.Conv2D(64, (1, 1), padding="same")(x))
    x = layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]))(x)
    return Model(inp, layers.Dense(12, activation="softmax")(layers.Flatten()(x)))


def mobilenet_v1():
    """visual_wake_words/vww_model.py: MobileNetV1 with alpha 0.25 (8 first filters) on 96x96x3."""
    from tf_keras import Input, Model, layers

    def bn_relu(x):
        return layers.Activation("relu")(layers.BatchNormalization()(x))

    inp = Input((96, 96, 3))
    x = bn_relu(layers.Conv2D(8, 3, strides=2, padding="same")(inp))
    for filters, stride in (
        [(16, 1), (32, 2), (32, 1), (64, 2), (64, 1), (128, 2)] + [(128, 1)] * 5 + [(256, 2), (256, 1)]
    ):
        x = bn_relu(layers.DepthwiseConv2D(3, strides=stride, padding="same")(x))
        x = bn_relu(layers.Conv2D(filters, 1, padding="same")(x))
    x = layers.AveragePooling2D(pool_size=(x.shape[1], x.shape[2]))(x)
    return Model(inp, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))


def resnet8():
    """image_classification/keras_model.py, resnet_v1_eembc: three stacks of 16, 32, 64 filters."""
    from tf_keras import Input, Model, layers

    inp = Input((32, 32, 3))
    x = layers.Activation("relu")(layers.BatchNormalization()(layers.Conv2D(16, 3, padding="same")(inp)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = layers.Conv2D(filters, 3, strides=stride, padding="same")(x)
        y = layers.Activation("relu")(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(y))
        if stride != 1:
            x = layers.Conv2D(filters, 1, strides=stride, padding="same")(x)
        x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.AveragePooling2D(pool_size=x.shape[1])(x)
    return Model(inp, layers.Dense(10, activation="softmax")(layers.Flatten()(x)))


def fc_autoencoder():
    """anomaly_detection/keras_model.py: 640-128x4-8-128x4-640 with batch norm and ReLU."""
    from tf_keras import Input, Model, layers

    inp = x = Input((640,))
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = layers.Activation("relu")(layers.BatchNormalization()(layers.Dense(units)(x)))
    return Model(inp, layers.Dense(640)(x))


MODELS = {"kws": ds_cnn, "vww": mobilenet_v1, "ic": resnet8, "ad": fc_autoencoder}


def randomize_batch_norm(model, rng: np.random.Generator) -> None:
    """Trained-like statistics, so the folded weights and the activation ranges are not degenerate."""
    from tf_keras import layers

    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # gamma
                    rng.normal(0, 0.1, n).astype(np.float32),  # beta
                    rng.normal(0, 0.1, n).astype(np.float32),  # moving mean
                    rng.uniform(0.5, 1.5, n).astype(np.float32),  # moving variance
                ]
            )


def convert(name: str) -> bytes:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(SEED)
    model = MODELS[name]()
    rng = np.random.default_rng(SEED)
    randomize_batch_norm(model, rng)
    shape = model.input_shape[1:]
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, *shape)).astype(np.float32)] for _ in range(32))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def op_stats(blob: bytes) -> list[tuple[str, int]]:
    """Each op's label (convolutions split by shape: pointwise and 3x3 depthwise are what the fast paths target)
    and its multiply-accumulates from the .tflite shapes (0 for ops without weights)."""
    from tinyopt.mcu.graph import load_graph

    g = load_graph(blob)
    stats = []
    for op in g.ops:
        outputs = int(np.prod(g.tensors[op.outputs[0]].shape))
        w = g.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
        if op.kind == "CONV_2D":  # weights [oc, kh, kw, ic]
            label = "CONV_2D 1x1" if w[1] == w[2] == 1 else f"CONV_2D {w[1]}x{w[2]}"
            stats.append((label, outputs * w[1] * w[2] * w[3]))
        elif op.kind == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, oc]
            stats.append((f"DEPTHWISE {w[1]}x{w[2]} s{op.options.strideH}", outputs * w[1] * w[2]))
        elif op.kind == "FULLY_CONNECTED":  # weights [outs, k]
            stats.append((op.kind, outputs * w[1]))
        else:
            stats.append((op.kind, 0))
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--profiles", nargs="*", default=["nano33ble"])
    parser.add_argument("--inputs", type=int, default=3, help="seeded random inputs per model")
    parser.add_argument("--cache", type=Path, help="keep the converted .tflite files here (and reuse them)")
    args = parser.parse_args()

    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.host import tflm_interpreter
    from tinyopt.mcu.on_device import measure_library
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.params.machines import core_name
    from tinyopt.records.run import DeviceFigures
    from tinyopt.runtimes.random_inputs import random_inputs

    profiles = {p: DEFAULT_DEVICES[p] for p in args.profiles}
    all_exact = True
    for name in args.models:
        cached = args.cache / f"{name}.tflite" if args.cache else None
        if cached and cached.exists():
            blob = cached.read_bytes()
        else:
            blob = convert(name)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(blob)
        generated = generate(blob, name)
        x = random_inputs(tflm_interpreter(blob).get_input_details(0), args.inputs, seed=SEED)
        stats = op_stats(blob)
        reports = measure_library(generated, blob, profiles, x, None, timeout=1800)
        for profile_name, report in reports.items():
            print(f"\n== {name} on {profile_name} ({profiles[profile_name].core})")
            if not isinstance(report, DeviceFigures):
                print(f"   not measured: {report}")
                all_exact = False
                continue
            all_exact &= report.bit_exact
            anchor = TFLM_CMSIS.get(core_name(profiles[profile_name].core), {}).get(name)
            ratio = f" ({report.instructions / anchor:.2f}x TFLM+CMSIS-NN's {anchor / 1e6:.2f} M)" if anchor else ""
            print(
                f"   flash {report.flash_bytes:,} B (model {report.model_flash_bytes:,} B), "
                f"RAM {report.ram_bytes:,} B, "
                f"{report.instructions / 1e6:.3f} M instructions/inference{ratio}, "
                f"bit-exact {report.bit_exact} ({report.images} inputs), MACs {sum(m for _, m in stats):,}"
            )
            kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
            for key, n in report.instructions_per_op.items():
                label, m = stats[int(key.split(":", 1)[0])]
                kinds[label][0] += n
                kinds[label][1] += m
            print(f"   {'op kind':<22}{'instructions':>14}{'share':>8}{'MACs':>12}{'instr/MAC':>11}")
            for kind, (n, m) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
                per_mac = f"{n / m:.2f}" if m else "-"
                print(f"   {kind:<22}{n:>14,.0f}{n / report.instructions:>8.1%}{m:>12,}{per_mac:>11}")
    sys.exit(0 if all_exact else 1)


if __name__ == "__main__":
    main()
