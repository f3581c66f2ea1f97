"""Graph optimization: fold BatchNormalization layers and standalone activations into the convolution
or dense layer before them, and report what that changes in the converted graph.

The TFLite converter already folds batch-norm and fuses ReLU into convolutions on its own, so for many
models this step changes nothing in the .tflite: the record says so rather than claiming a gain.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.models import load_model
from tinyopt.ml.training import TRAINING_LOCK, save_trained
from tinyopt.orchestration.steps import step
from tinyopt.params import GraphParams, TaskParams
from tinyopt.records.steps import TrainedModel

FOLDABLE_INTO = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv1D", "DepthwiseConv1D", "Dense")
FUSABLE_ACTIVATIONS = ("relu", "relu6", "tanh", "sigmoid")


def fold_layers(model):
    """A new model with BN and separate activations folded into the layer before; returns (model, what it did).

    A Sequential model comes back Sequential; a functional one is rebuilt from its rewritten config, and one
    with nothing to fold is NotApplicable."""
    import tensorflow as tf

    if isinstance(model, tf.keras.Sequential):
        return _fold_sequential(model)
    if not getattr(model, "_is_graph_network", False):
        raise NotApplicable("graph folding needs a Sequential or functional model, not a subclassed one")
    return _fold_functional(model)


def _fold_sequential(model):
    import tensorflow as tf

    layers, changes = [], []
    for layer in model.layers:
        kind = type(layer).__name__
        previous = layers[-1] if layers else None
        prev_kind = type(previous[0]).__name__ if previous else None
        linear = previous and previous[1].get("activation") == "linear"
        if kind == "BatchNormalization" and prev_kind in FOLDABLE_INTO and linear and _foldable_bn(layer):
            config, weights = previous[1], previous[2]
            layers[-1] = (previous[0], config, _fold_bn_weights(prev_kind, config, weights, layer))
            changes.append(f"folded {layer.name} into {previous[1]['name']}")
            continue
        if kind in ("Activation", "ReLU") and prev_kind in FOLDABLE_INTO and linear:
            activation = _fusable_activation(layer)
            if activation:
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


def _fold_functional(model):
    """Rewrite the functional config: drop each folded layer, point its consumers at its producer."""
    import tensorflow as tf

    config = copy.deepcopy(model.get_config())
    entries = {entry["name"]: entry for entry in config["layers"]}
    layers = {layer.name: layer for layer in model.layers}
    weights: dict[str, list] = {}
    changes: list[str] = []
    while True:
        fold = _next_fold(config, entries, layers)
        if fold is None:
            break
        removed, producer = fold
        entry, layer = entries[producer], layers[producer]
        kind, follower = type(layer).__name__, layers[removed]
        if type(follower).__name__ == "BatchNormalization":
            current = weights.get(producer, layer.get_weights())
            weights[producer] = _fold_bn_weights(kind, entry["config"], current, follower)
            changes.append(f"folded {removed} into {producer}")
        else:
            activation = _fusable_activation(follower)
            entry["config"]["activation"] = activation
            changes.append(f"fused {removed} ({activation}) into {producer}")
        # The removed layer's only input is the producer's output: its consumers now read that instead.
        source = entries[removed]["inbound_nodes"][0][0][:3]
        config["layers"] = [other for other in config["layers"] if other["name"] != removed]
        del entries[removed]
        for other in config["layers"]:
            other["inbound_nodes"] = _rewire(other["inbound_nodes"], removed, source)
        config["output_layers"] = _rewire(config["output_layers"], removed, source)
    if not changes:
        raise NotApplicable(
            "nothing to fold: no BatchNormalization or separate activation follows a linear "
            f"{'/'.join(FOLDABLE_INTO)} layer whose output feeds only it"
        )
    custom = {}
    for layer in model.layers:
        custom[type(layer).__name__] = type(layer)
        custom[tf.keras.utils.get_registered_name(type(layer))] = type(layer)
    rebuilt = tf.keras.Model.from_config(config, custom_objects=custom)
    for layer in rebuilt.layers:
        layer.set_weights(weights.get(layer.name, layers[layer.name].get_weights()))
    return rebuilt, changes


def _next_fold(config, entries, layers):
    """(removed layer, producer) for the first BN or activation that can be folded, or None."""
    references: dict[str, int] = {}
    for entry in config["layers"]:
        for name in _references(entry["inbound_nodes"]):
            references[name] = references.get(name, 0) + 1
    outputs = set(_references(config["output_layers"]))
    for entry in config["layers"]:
        name = entry["name"]
        layer = layers[name]
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            if not _foldable_bn(layer):
                continue
        elif kind not in ("Activation", "ReLU") or not _fusable_activation(layer):
            continue
        nodes = entry["inbound_nodes"]
        if len(nodes) != 1 or len(nodes[0]) != 1 or len(nodes[0][0]) < 3 or nodes[0][0][3:] not in ([], [{}]):
            continue  # called more than once, on several inputs, or with arguments
        producer = nodes[0][0][0]
        if producer not in entries or not _linear_producer(layers[producer], entries[producer]):
            continue
        if references.get(producer, 0) != 1 or producer in outputs or nodes[0][0][1:3] != [0, 0]:
            continue  # the producer's output feeds something else too
        return name, producer
    return None


def _linear_producer(layer, entry) -> bool:
    layer_config = entry["config"]
    return (
        type(layer).__name__ in FOLDABLE_INTO
        and layer_config.get("activation") == "linear"
        and layer_config.get("data_format", "channels_last") == "channels_last"
        and len(entry["inbound_nodes"]) == 1
    )


def _references(nodes):
    """Names of the layers whose outputs a serialized inbound-node structure refers to."""
    if isinstance(nodes, (list, tuple)):
        if _is_reference(nodes):
            yield nodes[0]
            if len(nodes) > 3:
                yield from _references(nodes[3])
            return
        for item in nodes:
            yield from _references(item)
    elif isinstance(nodes, dict):
        for item in nodes.values():
            yield from _references(item)


def _rewire(nodes, removed, source):
    if isinstance(nodes, (list, tuple)):
        if _is_reference(nodes):
            head = list(source) if nodes[0] == removed and list(nodes[1:3]) == [0, 0] else list(nodes[:3])
            return head + [_rewire(item, removed, source) for item in nodes[3:]]
        return [_rewire(item, removed, source) for item in nodes]
    if isinstance(nodes, dict):
        return {key: _rewire(item, removed, source) for key, item in nodes.items()}
    return nodes


def _is_reference(item) -> bool:
    return (
        len(item) in (3, 4)
        and isinstance(item[0], str)
        and isinstance(item[1], int)
        and isinstance(item[2], int)
        and item[1] >= 0
    )


def _foldable_bn(layer) -> bool:
    """A plain inference-mode BN over the last axis (what a channels-last kernel's output channels are)."""
    axis = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
    rank = layer.input_spec.ndim if layer.input_spec is not None else None
    last = len(axis) == 1 and (axis[0] == -1 or (rank is not None and axis[0] == rank - 1))
    return last and not getattr(layer, "renorm", False) and not getattr(layer, "virtual_batch_size", None)


def _fold_bn_weights(kind: str, config: dict, weights: list, bn) -> list:
    """The producer's weights with the BN folded in: w * gamma/sqrt(var+eps) per output channel and
    b' = (b - mean) * gamma/sqrt(var+eps) + beta. Sets use_bias in config."""
    gamma, beta, mean, variance = _bn_weights(bn)
    scale = (gamma / np.sqrt(variance + bn.epsilon)).astype(np.float64)
    weights = list(weights)
    bias = weights.pop() if config.get("use_bias", True) else np.zeros_like(mean)
    if kind in ("DepthwiseConv2D", "DepthwiseConv1D"):
        # kernel (h, w, channels, multiplier) or (k, channels, multiplier): output channel c * multiplier + m
        kernel = weights[0]
        weights[0] = kernel * scale.reshape(kernel.shape[-2:])
    else:  # the last kernel (SeparableConv2D: the pointwise one) has the output channels last
        weights[-1] = weights[-1] * scale
    config["use_bias"] = True
    dtype = weights[-1].dtype
    return [w.astype(dtype) for w in weights] + [((bias - mean) * scale + beta).astype(dtype)]


def _fusable_activation(layer) -> str | None:
    """The activation a separate Activation/ReLU layer computes, if a kernel layer can take it on."""
    config = layer.get_config()
    if type(layer).__name__ == "ReLU":
        if float(config.get("negative_slope") or 0) or float(config.get("threshold") or 0):
            return None
        max_value = config.get("max_value")
        if max_value is None:
            return "relu"
        return "relu6" if float(max_value) == 6 else None
    activation = config.get("activation")
    return activation if activation in FUSABLE_ACTIVATIONS else None


def _bn_weights(layer):
    if layer.scale and layer.center:
        return layer.get_weights()
    values = dict(zip([w.name.split("/")[-1].split(":")[0] for w in layer.weights], layer.get_weights(), strict=False))
    size = values["moving_mean"].shape
    return (
        values.get("gamma", np.ones(size)),
        values.get("beta", np.zeros(size)),
        values["moving_mean"],
        values["moving_variance"],
    )


def summarize(changes: list[str]) -> str:
    """'folded 5 BatchNormalization and 2 activations into their producers'."""
    norms = sum(change.startswith("folded ") for change in changes)
    activations = len(changes) - norms
    plural = "s" if activations != 1 else ""
    return f"folded {norms} BatchNormalization and {activations} activation{plural} into their producers"


def check_equivalent(original, folded, tolerance: float = 1e-4) -> None:
    """Both models give the same outputs on random inputs (inference mode), relative to the outputs' size."""
    import tensorflow as tf

    shapes = [tuple(spec.shape) for spec in original.inputs]
    if any(None in shape[1:] for shape in shapes) or any(not spec.dtype.is_floating for spec in original.inputs):
        return  # no random input to try: variable-size or integer inputs
    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(size=(4, *shape[1:])).astype(spec.dtype.as_numpy_dtype)
        for shape, spec in zip(shapes, original.inputs, strict=True)
    ]
    before = tf.nest.flatten(original(inputs if len(inputs) > 1 else inputs[0], training=False))
    after = tf.nest.flatten(folded(inputs if len(inputs) > 1 else inputs[0], training=False))
    for old, new in zip(before, after, strict=True):
        old, new = np.asarray(old, np.float64), np.asarray(new, np.float64)
        limit = tolerance * max(1.0, float(np.abs(old).max(initial=0.0)))
        difference = float(np.abs(old - new).max(initial=0.0))
        if difference > limit:
            raise RuntimeError(f"graph folding changed the outputs by up to {difference:.3g} (allowed {limit:.3g})")


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
        check_equivalent(original, folded)
        notes = (f"{summarize(changes)}: {'; '.join(changes)}" if changes else "nothing to fold") + (
            f"; {keras_layers}; {effect}"
        )
        return save_trained(folded, data, task, "graph", out_dir / "model.keras", parent=parent, notes=notes)
