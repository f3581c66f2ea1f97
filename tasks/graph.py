"""Graph optimization: fold BatchNormalization layers and standalone activations into the convolution
or dense layer before them, and report what that changes in the converted graph.

The TFLite converter already folds batch-norm and fuses ReLU into convolutions on its own, so for many
models this step changes nothing in the .tflite: the record says so rather than claiming a gain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.models import load_model
from tinyopt.ml.training import TRAINING_LOCK, save_trained
from tinyopt.orchestration.steps import step
from tinyopt.params import GraphParams, TaskParams
from tinyopt.records.steps import TrainedModel

FOLDABLE_INTO = ("Conv2D", "DepthwiseConv2D", "Conv1D", "Dense")
FUSABLE_ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid")


def fold_layers(model):
    """A new Sequential model with BN and separate activations folded; returns (model, what it did)."""
    import tensorflow as tf

    if not isinstance(model, tf.keras.Sequential):
        raise NotApplicable("graph folding supports Sequential models only")
    layers, changes = [], []
    for layer in model.layers:
        kind = type(layer).__name__
        previous = layers[-1] if layers else None
        prev_kind = type(previous[0]).__name__ if previous else None
        linear = previous and previous[1].get("activation") == "linear"
        if kind == "BatchNormalization" and prev_kind in FOLDABLE_INTO and linear:
            config, weights = previous[1], previous[2]
            gamma, beta, mean, variance = layer.get_weights() if layer.scale and layer.center else _bn_weights(layer)
            scale = gamma / np.sqrt(variance + layer.epsilon)
            kernel = weights[0]
            bias = weights[1] if config.get("use_bias", True) else np.zeros_like(mean)
            if prev_kind == "DepthwiseConv2D":
                kernel = kernel * scale.reshape(1, 1, -1, 1)
            else:
                kernel = kernel * scale
            config["use_bias"] = True
            layers[-1] = (previous[0], config, [kernel, (bias - mean) * scale + beta])
            changes.append(f"folded {layer.name} into {previous[1]['name']}")
            continue
        if kind in ("Activation", "ReLU") and prev_kind in FOLDABLE_INTO and linear:
            activation = (
                "relu"
                if kind == "ReLU" and not layer.get_config().get("max_value")
                else layer.get_config().get("activation")
            )
            if activation in FUSABLE_ACTIVATIONS:
                previous[1]["activation"] = activation
                changes.append(f"fused {layer.name} ({activation}) into {previous[1]['name']}")
                continue
        layers.append((layer, layer.get_config(), layer.get_weights()))
    rebuilt = tf.keras.Sequential(name=model.name)
    rebuilt.add(tf.keras.layers.InputLayer(input_shape=model.input_shape[1:]))
    for layer, config, weights in layers:
        new = layer.__class__.from_config(config)
        rebuilt.add(new)
        new.set_weights(weights)
    return rebuilt, changes


def _bn_weights(layer):
    values = dict(zip([w.name.split("/")[-1].split(":")[0] for w in layer.weights], layer.get_weights(), strict=False))
    size = values["moving_mean"].shape
    return (
        values.get("gamma", np.ones(size)),
        values.get("beta", np.zeros(size)),
        values["moving_mean"],
        values["moving_variance"],
    )


def tflite_op_counts(model) -> dict[str, int]:
    """Op name -> count in the model's float32 .tflite conversion."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    counts: dict[str, int] = {}
    for op in interpreter._get_ops_details():
        counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return dict(sorted(counts.items()))


@step()
def graph(parent: Path, prepared: Path, settings: GraphParams, task: TaskParams, out_dir: Path) -> TrainedModel:
    """Fold what can be folded and record the effect on the converted graph (nothing is trained)."""
    from tinyopt.datasets.prepared import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        original = load_model(parent)
        folded, changes = fold_layers(original)
        before, after = tflite_op_counts(original), tflite_op_counts(folded)
        keras_layers = f"Keras layers {len(original.layers)} -> {len(folded.layers)}"
        if before == after:
            effect = f"the converted graph is unchanged ({sum(after.values())} ops: {after})"
        else:
            effect = f"converted graph ops {before} -> {after}"
        notes = ("; ".join(changes) if changes else "nothing to fold") + f"; {keras_layers}; {effect}"
        return save_trained(folded, data, task, "graph", out_dir / "model.keras", parent=parent, notes=notes)
