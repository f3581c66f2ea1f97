"""Saving, loading and inspecting Keras models, whatever technique produced them.

Plain and stripped models are saved as `.keras` files. Quantization-aware models are saved as
SavedModel directories: tfmot's quantize wrappers do not survive a `.keras` or `.h5` round trip
(their variables are renamed on load), but they do survive SavedModel.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyopt.core.children import run_child
from tinyopt.core.errors import UserError
from tinyopt.core.files import atomic_dir

# What tf-keras says when it meets a Keras 3 file: its config keys and class paths.
KERAS3_MARKS = ("DTypePolicy", "batch_shape", "keras.src.models")
KERNEL_LAYERS = (
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "Conv1D",
    "Conv1DAsConv2D",
    "DepthwiseConv1D",
    "DepthwiseConv1DAsDepthwiseConv2D",
    "Dense",
)


def load_model(path: str | Path):
    """Load a model saved by tinyopt (or a user's .keras/.h5/SavedModel); UserError if it is broken."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    import tinyopt.ml.conv1d  # noqa: F401  (registers Conv1DAsConv2D, which QAT'd 1-D models hold)

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


def describe(model) -> dict:
    """What the checks before a run need of a model: its input and output shapes (batch dimension
    first, None where unknown) and the activation of its last layer."""
    config = model.layers[-1].get_config() if model.layers else {}
    inner = config.get("layer", {}).get("config", config)  # tfmot wrappers keep the layer's config inside
    return {
        "inputs": [list(tensor.shape) for tensor in model.inputs],
        "outputs": [list(tensor.shape) for tensor in model.outputs],
        "activation": str(inner.get("activation", "linear")),
    }


def check_input_shape(inputs: list[list], given: tuple[int, ...]) -> None:
    """A user's model (`describe`'s inputs) must take examples of the data's shape; say which differ."""
    if len(inputs) != 1:
        raise UserError(f"the model has {len(inputs)} inputs; tinyopt handles models with one input")
    expected = tuple(inputs[0][1:])
    given = tuple(given)
    if len(expected) != len(given) or any(e not in (None, g) for e, g in zip(expected, given, strict=False)):
        raise UserError(
            f"the model takes inputs of shape {expected}, the data has {given}; give data the model was built for"
        )


PROBE_TIMEOUT_S = 600


def probe_model(path: str | Path) -> dict:
    """Load a user's model file once in a child process and return `describe` of it.

    A damaged .h5 or a file that only pretends to be a model can crash the loader itself (h5py and
    TensorFlow are C code: a segfault, not an exception). In a child, a crash becomes a UserError
    here, and the file is known to load before this process ever opens it.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model file; train it first (`tinyopt train`) or fix the path")
    code = "import sys; from tinyopt.ml.models import _probe_main; _probe_main(sys.argv[1])"
    try:
        done = run_child([sys.executable, "-c", code, str(path)], timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise UserError(f"{path}: loading the model took over {PROBE_TIMEOUT_S} s; is it a Keras model?") from None
    answer = _last_json_line(done.stdout)
    if answer is not None and "error" in answer:
        raise UserError(answer["error"])  # the loader's own one line, even if the child crashed after it
    if done.returncode != 0 or answer is None:
        how = f"signal {signal.Signals(-done.returncode).name}" if done.returncode < 0 else f"exit {done.returncode}"
        raise UserError(
            f"{path}: loading it crashed the model loader ({how}); the file is damaged or not a Keras "
            "model: re-export it"
        )
    return answer


def _last_json_line(text: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def _probe_main(path: str) -> None:
    """The child side of probe_model: one JSON line on stdout, a description or the error."""
    import tensorflow as tf

    import tinyopt  # noqa: F401  (tf-keras, as tfmot needs, before TensorFlow is imported)

    try:
        try:  # most user models load without tfmot's scope, and importing tfmot costs seconds
            model = tf.keras.models.load_model(path, compile=False)
        except Exception:
            model = load_model(path)  # with the scope, and its one-line errors
        answer = describe(model)
    except UserError as exc:
        answer = {"error": str(exc)}
    except Exception as exc:  # it loaded, but is not a model with known inputs and outputs (a bare tf.Module)
        reason = (str(exc).strip().splitlines() or [""])[0][:150]
        answer = {
            "error": f"{path}: not a Keras model with known inputs and outputs ({type(exc).__name__}: "
            f"{reason}); save it with model.save()"
        }
    print(json.dumps(answer), flush=True)


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


def int8_weight_bytes(model) -> int:
    """At least the bytes a full-int8 .tflite of `model` stores for its weights: one per kernel weight, four per
    bias of each kernel's last axis (batch norm folds into the convolutions), before the flatbuffer's own."""
    return sum(kernel.size + 4 * kernel.shape[-1] for kernel in kernels(model).values())


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
