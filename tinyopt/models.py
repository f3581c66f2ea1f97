"""Saving, loading and inspecting Keras models, whatever technique produced them.

Plain and stripped models are saved as `.keras` files. Quantization-aware models are saved as
SavedModel directories: tfmot's quantize wrappers do not survive a `.keras` or `.h5` round trip
(their variables are renamed on load), but they do survive SavedModel.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from tinyopt.errors import UserError
from tinyopt.files import atomic_dir

# What tf-keras says when it meets a Keras 3 file: its config keys and class paths.
KERAS3_MARKS = ("DTypePolicy", "batch_shape", "keras.src.models")
KERNEL_LAYERS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "Dense")


def load_model(path: str | Path):
    """Load a model saved by tinyopt (or a user's .keras/.h5/SavedModel); UserError if it is broken."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model file; train it first (`tinyopt train`) or fix the path")
    try:
        with tfmot.quantization.keras.quantize_scope():
            return tf.keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file; all mean the same here.
        text = str(exc)
        if any(mark in text for mark in KERAS3_MARKS):
            raise UserError(
                f"{path}: saved by Keras 3, and tfmot optimizes Keras 2 (tf-keras) models only; build and save "
                "it with `import tf_keras as keras` (or TF_USE_LEGACY_KERAS=1 before importing TensorFlow)"
            ) from None
        reason = text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable Keras model ({reason}); re-train or re-export it") from None


def save_model(model, path: Path) -> list[Path]:
    """Save atomically (a file or a SavedModel directory, chosen by the path's suffix); returns the
    files written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".keras":
        with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
            tmp = Path(scratch) / path.name
            model.save(tmp)
            tmp.replace(path)
        return [path]
    with atomic_dir(path) as staging:
        model.save(staging, save_format="tf")
    return sorted(p for p in path.rglob("*") if p.is_file())


def kernels(model) -> dict[str, np.ndarray]:
    """The kernels of each convolution and dense layer: 'layer' or, for layers with several
    (separable convolutions), 'layer/depthwise_kernel' and so on."""
    found = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # look through tfmot wrappers
        if type(inner).__name__ not in KERNEL_LAYERS:
            continue
        tensors = {
            weight.name.split("/")[-1].split(":")[0]: weight.numpy()
            for weight in layer.weights
            if weight.name.split("/")[-1].split(":")[0].endswith("kernel")  # not kernel_min / kernel_max
        }
        for short, value in tensors.items():
            found[layer.name if len(tensors) == 1 else f"{layer.name}/{short}"] = value
    return found


def weight_stats(model) -> dict:
    """Sparsity (share of exact zeros over all kernels) and unique values per layer kernel."""
    tensors = kernels(model)
    total = sum(t.size for t in tensors.values())
    zeros = sum(int(np.sum(t == 0)) for t in tensors.values())
    return {
        "sparsity": round(zeros / total, 6) if total else 0.0,
        "unique_weights": {name: int(np.unique(t).size) for name, t in tensors.items()},
        "num_params": int(model.count_params()),
    }
