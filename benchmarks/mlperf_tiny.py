"""Benchmark: MLPerf Tiny's four reference architectures and the paper CNN as tinyopt's generated C runs them on
emulated Cortex-M cores (QEMU -icount: instructions, not cycles), beside TFLM + CMSIS-NN built from pinned upstream
commits and measured in the same run, on the same QEMU machines, inputs and counting (benchmarks/tflm_anchor).

    python benchmarks/mlperf_tiny.py [--models kws vww ic ad paper] [--profiles nano33ble stm32f746 corstone-300]
                                     [--inputs 3] [--cache DIR] [--tflm-sources DIR] [--tflm-work DIR] [--no-tflm]

--tflm-sources is a directory of git repositories of TFLM and its downloads (owner+name/repo as a GitHub mirror
lays them out, or name/); without it they are cloned from GitHub. Building TFLM for a core takes about 1.5 minutes
on 2 cores and is kept in --tflm-work.

The models follow mlcommons/tiny's training code (benchmark/training/*/keras_model.py, vww_model.py): DS-CNN
keyword spotting (49x10x1, 12 classes), MobileNetV1 alpha 0.25 visual wake words (96x96x3, 2 classes),
ResNet-8 image classification (32x32x3, 10 classes) and the FC autoencoder of anomaly detection (640 inputs);
`paper` is tinyopt's default model (tasks/train.py). Instruction counts depend on shapes, not on trained weights:
weights are randomly initialised and batch normalisation gets random statistics, then each model is converted to
full int8 (int8 input and output) with a seeded random representative set. Per model and core: flash (whole
firmware), RAM, instructions per inference, whether every output byte equals TFLM's reference kernels', the
ratios to TFLM + CMSIS-NN, and per op kind the instructions and instructions per multiply-accumulate. The last
table checks issue 21's targets; the exit status is 1 when an output is not bit-exact.
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

from benchmarks.cycles import estimate  # noqa: E402
from benchmarks.tflm_anchor import anchor  # noqa: E402

# MLPerf Tiny's best published Cortex-M4 results (STM32L4R5 at 120 MHz; X-CUBE-AI 9.0, Plumerai for AD), cycles
# per inference: an in-order M4 retires at most one instruction per cycle, so more instructions than these is slower.
RECORD_CYCLES_M4 = {"kws": 5.18e6, "vww": 10.67e6, "ic": 19.82e6, "ad": 0.49e6}
TARGET_RATIO = {"cortex-m4": 0.7, "cortex-m55": 0.8}  # instructions against TFLM + CMSIS-NN's, same run
TARGET_MEMORY_RATIO = 0.85  # flash and RAM against TFLM + CMSIS-NN's
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


def paper_cnn():
    """tinyopt's default model (tasks/train.py): the paper's CNN on 28x28 Fashion-MNIST images."""
    from tasks.train import build_paper_cnn
    from tinyopt.params import ModelParams

    return build_paper_cnn((28, 28), 10, ModelParams())


MODELS = {"kws": ds_cnn, "vww": mobilenet_v1, "ic": resnet8, "ad": fc_autoencoder, "paper": paper_cnn}


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
    # Batch 1, as tinyopt converts (tasks/convert.py): a dynamic batch leaves Reshape's shape arithmetic in the graph.
    serve = tf.function(lambda x: model(x, training=False)).get_concrete_function(tf.TensorSpec([1, *shape]))
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve], model)
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


def load_model(name: str, cache: Path | None) -> bytes:
    cached = cache / f"{name}.tflite" if cache else None
    if cached and cached.exists():
        return cached.read_bytes()
    blob = convert(name)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_bytes(blob)
    return blob


def ratio(ours: float, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--profiles", nargs="*", default=["nano33ble", "stm32f746", "corstone-300"])
    parser.add_argument("--inputs", type=int, default=3, help="seeded random inputs per model")
    parser.add_argument("--cache", type=Path, help="keep the converted .tflite files here (and reuse them)")
    anchor.add_arguments(parser)
    args = parser.parse_args()

    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.host import run_tflm, tflm_interpreter
    from tinyopt.mcu.on_device import measure_library
    from tinyopt.params import DEFAULT_DEVICES
    from tinyopt.params.machines import core_name
    from tinyopt.records.run import DeviceFigures
    from tinyopt.runtimes.quantized_io import quantize_input
    from tinyopt.runtimes.random_inputs import random_inputs

    profiles = {p: DEFAULT_DEVICES[p] for p in args.profiles}
    libraries = anchor.libraries(profiles, args)
    all_exact, rows = True, []
    for name in args.models:
        blob = load_model(name, args.cache)
        generated = generate(blob, name)
        detail = tflm_interpreter(blob).get_input_details(0)
        x = random_inputs(detail, args.inputs, seed=SEED)
        inputs = quantize_input(x, detail)
        reference = run_tflm(blob, inputs)
        stats = op_stats(blob)
        reports = measure_library(generated, blob, profiles, x, None, timeout=1800)
        for profile_name, report in reports.items():
            profile = profiles[profile_name]
            core = core_name(profile.core)
            print(f"\n== {name} on {profile_name} ({profile.core})")
            if not isinstance(report, DeviceFigures):
                print(f"   not measured: {report}")
                all_exact = False
                continue
            all_exact &= report.bit_exact
            print(
                f"   tinyopt:        flash {report.flash_bytes:>9,} B, RAM {report.ram_bytes:>8,} B, "
                f"{report.instructions / 1e6:8.3f} M instructions/inference, bit-exact {report.bit_exact} "
                f"({report.images} inputs), MACs {sum(m for _, m in stats):,}"
            )
            out = args.tflm_work / "runs" / core / name
            tflm = anchor.measure_or_reason(libraries[profile_name], blob, profile, inputs, out, "int8")
            if isinstance(tflm, str):
                print(f"   TFLM + CMSIS-NN: {tflm}")
                tflm_exact = None
            else:
                tflm_exact = bool(np.array_equal(tflm.outputs, reference))
                print(
                    f"   TFLM + CMSIS-NN: flash {tflm.flash_bytes:>9,} B, RAM {tflm.ram_bytes:>8,} B "
                    f"(arena {tflm.arena_bytes:,}), {tflm.instructions_per_inference / 1e6:8.3f} M instructions/"
                    f"inference, bit-exact {tflm_exact}\n"
                    f"   ratios:         flash {ratio(report.flash_bytes, tflm.flash_bytes)}, "
                    f"RAM {ratio(report.ram_bytes, tflm.ram_bytes)}, "
                    f"instructions {ratio(report.instructions, tflm.instructions_per_inference)}"
                )
            tflm = None if isinstance(tflm, str) else tflm
            estimates = estimated_cycles(generated, profile, tflm, inputs[:1], out) if core == "cortex-m4" else None
            rows.append((name, core, report, tflm, tflm_exact, estimates))
            kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
            for key, n in report.instructions_per_op.items():
                label, m = stats[int(key.split(":", 1)[0])]
                kinds[label][0] += n
                kinds[label][1] += m
            print(f"   {'op kind':<22}{'instructions':>14}{'share':>8}{'MACs':>12}{'instr/MAC':>11}")
            for kind, (n, m) in sorted(kinds.items(), key=lambda kv: -kv[1][0]):
                per_mac = f"{n / m:.2f}" if m else "-"
                print(f"   {kind:<22}{n:>14,.0f}{n / report.instructions:>8.1%}{m:>12,}{per_mac:>11}")
    print_targets(rows)
    sys.exit(0 if all_exact else 1)


def estimated_cycles(generated, profile, tflm, one_input: np.ndarray, out: Path) -> dict[str, tuple | str]:
    """Cortex-M4 cycle ranges (benchmarks/cycles: the executed instruction mix x the TRM's timings) of
    tinyopt's firmware and TFLM's, or why not."""
    from tinyopt.mcu.firmware import build_firmware, core_for

    core = core_for(profile)
    elves = {"tinyopt": lambda: build_firmware(generated, profile, out / "tinyopt").elf}
    if tflm:
        elves["TFLM + CMSIS-NN"] = lambda: tflm.elf
    found = {}
    for who, elf in elves.items():
        try:
            found[who] = estimate.cycles(estimate.instruction_mix(elf(), core, one_input, out.parent.parent))
        except (estimate.MixUnavailable, RuntimeError) as e:
            found[who] = str(e)
        said = found[who] if isinstance(found[who], str) else f"{found[who][0] / 1e6:.3f}-{found[who][1] / 1e6:.3f} M"
        print(f"   estimated cycles, {who}: {said} (Cortex-M4 TRM timings, no wait states; an estimate)")
    return found


def cycle_range(estimates: dict | None, who: str) -> str:
    found = (estimates or {}).get(who)
    return f"{found[0] / 1e6:.2f}-{found[1] / 1e6:.2f}" if isinstance(found, tuple) else "-"


def print_targets(rows: list) -> None:
    """Issue 21's targets per model and core: instructions against TFLM + CMSIS-NN (0.7x on the M4, 0.8x on the
    M55) and the record (M4), flash and RAM at most 0.85x TFLM's, bit-exact outputs."""
    print(
        "\n| model | core | tinyopt M instr | TFLM+CMSIS-NN M instr | ratio (target) | M4 record M cycles | "
        "est. M cycles tinyopt | est. M cycles TFLM | flash ratio | RAM ratio | bit-exact (tinyopt, TFLM) | "
        "targets met |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, core, ours, tflm, tflm_exact, estimates in rows:
        record = RECORD_CYCLES_M4.get(name) if core == "cortex-m4" else None
        met = [ours.bit_exact]
        cells = ["-", "-", "-", "-"]
        if tflm:
            speed = ours.instructions / tflm.instructions_per_inference
            flash, ram = ours.flash_bytes / tflm.flash_bytes, ours.ram_bytes / tflm.ram_bytes
            target = TARGET_RATIO.get(core)
            met += [flash <= TARGET_MEMORY_RATIO, ram <= TARGET_MEMORY_RATIO] + ([speed <= target] if target else [])
            cells = [
                f"{tflm.instructions_per_inference / 1e6:.3f}",
                f"{speed:.2f}x" + (f" (<= {target})" if target else ""),
                f"{flash:.2f}x",
                f"{ram:.2f}x",
            ]
        if record:
            met.append(ours.instructions <= record)
        print(
            f"| {name} | {core} | {ours.instructions / 1e6:.3f} | {cells[0]} | {cells[1]} | "
            f"{f'{record / 1e6:.2f}' if record else '-'} | {cycle_range(estimates, 'tinyopt')} | "
            f"{cycle_range(estimates, 'TFLM + CMSIS-NN')} | {cells[2]} | {cells[3]} | "
            f"{ours.bit_exact}, {tflm_exact} | {'yes' if all(met) and tflm else 'no' if tflm else 'no anchor'} |"
        )


if __name__ == "__main__":
    main()
