"""Structured filter pruning: whole filters of Conv2D, Conv1D and Dense layers removed, so that the model itself gets
smaller and does fewer MACs (magnitude pruning only zeroes weights, which the device's kernels still multiply).

The filters with the smallest L1 norm go (Li et al. 2017, "Pruning Filters for Efficient ConvNets"); when a
BatchNormalization follows, each norm is weighted by the filter's effective scale |gamma| / sqrt(var + eps). The
layers a producer's channels pass through unchanged in number (batch norm, depthwise convolutions, activations,
dropout, pooling, padding) are sliced with it, and the convolutions and dense layers that read them lose the same
input channels (after a Flatten: every position's copy of each channel).

A producer stays whole when removing its filters could not be done by slicing alone: the model's output, a layer
called more than once, and a layer whose channels reach a merge (residual Add, Concatenate...), a reshape or any
layer type not known here. Residual groups are kept whole rather than pruned together: simpler, and always right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tinyopt.core.errors import NotApplicable

PRODUCERS = ("Conv2D", "Conv1D", "Dense")  # their output channels (last axis) may shrink
MERGES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot")
# Each output channel depends on its own input channel only, and the layer has no per-channel size in its config.
ELEMENTWISE = (
    "ReLU",
    "LeakyReLU",
    "ELU",
    "ThresholdedReLU",
    "Activation",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
)
SPATIAL = (
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "Cropping1D",
    "Cropping2D",
    "UpSampling1D",
    "UpSampling2D",
)
DEPTHWISE = ("DepthwiseConv2D", "DepthwiseConv1D")
MIXES_CHANNELS = ("softmax", "log_softmax")  # an activation over the channel axis: removing one changes the others


@dataclass
class Reach:
    """Where a producer's channels go: the per-channel layers sliced with it and the layers whose input axis loses
    them, each with the positions a Flatten spread every channel over (1 before any Flatten); or why it stays whole."""

    channelwise: list[tuple[str, int]] = field(default_factory=list)
    readers: list[tuple[str, int]] = field(default_factory=list)
    why_whole: str | None = None


@dataclass(frozen=True)
class LayerGraph:
    """A model's layers by name, who reads each one's output, how often each is called, and the output layers."""

    layers: dict[str, Any]
    readers: dict[str, list[str]]
    calls: dict[str, int]
    outputs: frozenset[str]


def layer_graph(model) -> LayerGraph:
    """The graph of a Sequential model (a chain) or a functional one (from its config's inbound nodes)."""
    import tensorflow as tf

    layers = {layer.name: layer for layer in model.layers if type(layer).__name__ != "InputLayer"}
    if isinstance(model, tf.keras.Sequential):
        names = list(layers)
        readers = {name: names[i + 1 : i + 2] for i, name in enumerate(names)}
        return LayerGraph(layers, readers, dict.fromkeys(names, 1), frozenset(names[-1:]))
    config = model.get_config()
    readers: dict[str, list[str]] = {name: [] for name in layers}
    calls = {}
    for entry in config["layers"]:
        calls[entry["name"]] = len(entry["inbound_nodes"])
        for source in dict.fromkeys(referenced_layers(entry["inbound_nodes"], layers)):
            readers[source].append(entry["name"])
    given = config["output_layers"]
    outputs = [given] if given and isinstance(given[0], str) else given
    return LayerGraph(layers, readers, calls, frozenset(output[0] for output in outputs))


def referenced_layers(nodes: Any, names: dict) -> list[str]:
    """Every layer an inbound-nodes entry of a config names ([name, node, tensor, kwargs] lists, at any depth)."""
    if isinstance(nodes, dict):
        return [name for value in nodes.values() for name in referenced_layers(value, names)]
    if not isinstance(nodes, list | tuple):
        return []
    if len(nodes) >= 3 and isinstance(nodes[0], str) and isinstance(nodes[1], int) and nodes[0] in names:
        return [nodes[0], *referenced_layers(list(nodes[3:]), names)]
    return [name for item in nodes for name in referenced_layers(item, names)]


def channels_last(layer) -> bool:
    import tensorflow as tf

    data_format = layer.get_config().get("data_format") or tf.keras.backend.image_data_format()
    return data_format == "channels_last"


def reads_channels(layer) -> bool:
    """A convolution or dense layer whose kernel's input axis can lose channels."""
    kind = type(layer).__name__
    if kind == "Dense":
        return True
    return kind in ("Conv2D", "Conv1D") and layer.get_config().get("groups", 1) == 1 and channels_last(layer)


def keeps_channels_apart(layer) -> bool:
    """A layer that computes each output channel from the same input channel only (so it can be sliced)."""
    kind, config = type(layer).__name__, layer.get_config()
    if kind == "BatchNormalization":
        axes = config["axis"] if isinstance(config["axis"], list | tuple) else [config["axis"]]
        rank = len(layer.input_shape)
        return len(axes) == 1 and axes[0] % rank == rank - 1
    if kind in DEPTHWISE:
        return config.get("depth_multiplier", 1) == 1 and channels_last(layer)
    if kind == "Activation":
        return config["activation"] not in MIXES_CHANNELS
    if kind in SPATIAL:
        return channels_last(layer)
    if config.get("noise_shape") and config["noise_shape"][-1] not in (None, 1):  # a dropout mask per channel
        return False
    return kind in ELEMENTWISE


def why_not_a_producer(graph: LayerGraph, name: str) -> str | None:
    """Why a Conv2D, Conv1D or Dense layer cannot lose filters, whatever reads it; None if it may."""
    layer = graph.layers[name]
    config = layer.get_config()
    if name in graph.outputs:
        return "the model's output"
    if graph.calls.get(name, 1) != 1:
        return "called more than once"
    if config.get("groups", 1) != 1 or (type(layer).__name__ != "Dense" and not channels_last(layer)):
        return "a grouped or channels-first convolution"
    if config.get("activation") in MIXES_CHANNELS:
        return "a softmax over its filters"
    return None


def trace(graph: LayerGraph, producer: str) -> Reach:
    """Follow a producer's channels through the layers that keep them apart to the layers that read them."""
    reach = Reach()
    reach.why_whole = why_not_a_producer(graph, producer)
    frontier = [(producer, 1)]
    while frontier and reach.why_whole is None:
        name, positions = frontier.pop()
        for reader in graph.readers[name]:
            layer, kind = graph.layers[reader], type(graph.layers[reader]).__name__
            if graph.calls.get(reader, 1) != 1:
                reach.why_whole = "feeds a layer called more than once"
            elif kind in MERGES:
                reach.why_whole = f"feeds a residual {kind}" if kind != "Concatenate" else "feeds a Concatenate"
            elif reads_channels(layer):
                reach.readers.append((reader, positions))
                continue
            elif reader in graph.outputs:
                reach.why_whole = "feeds the model's output"
            elif kind == "Flatten" and channels_last(layer) and None not in layer.input_shape[1:]:
                frontier.append((reader, positions * math.prod(layer.input_shape[1:-1])))
                continue
            elif keeps_channels_apart(layer):
                reach.channelwise.append((reader, positions))
                frontier.append((reader, positions))
                continue
            else:
                reach.why_whole = f"feeds a {kind}"
            break
    return reach


def filter_scores(graph: LayerGraph, producer: str) -> np.ndarray:
    """Each filter's L1 norm, times |gamma| / sqrt(var + eps) of a BatchNormalization that reads it directly."""
    kernel = graph.layers[producer].get_weights()[0]
    scores = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).astype(np.float64)
    readers = graph.readers[producer]
    if len(readers) == 1 and type(graph.layers[readers[0]]).__name__ == "BatchNormalization":
        bn = graph.layers[readers[0]]
        gamma = bn.gamma.numpy() if bn.gamma is not None else np.ones_like(scores)
        scores *= np.abs(gamma) / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    return scores


def filters_to_keep(channels: int, keep: float, multiple: int) -> int:
    """keep * channels rounded up to a multiple of `multiple`, at least `multiple`, at most `channels`."""
    wanted = math.ceil(round(keep * channels / multiple, 9)) * multiple
    return min(channels, max(multiple, wanted))


def spread(kept: np.ndarray, channels: int, positions: int) -> np.ndarray:
    """The kept indices after a Flatten spread `channels` channels over `positions`: p * channels + c."""
    return (np.arange(positions)[:, None] * channels + kept[None, :]).reshape(-1)


def sliced_weights(layer, out_keep: np.ndarray | None, in_keep: np.ndarray | None, channel_keep: np.ndarray | None):
    """The layer's weights without the removed filters (last kernel axis, bias), input channels (kernel axis -2)
    or channels (a per-channel layer's vectors and depthwise kernel's channel axis)."""
    sliced = []
    for weight in layer.get_weights():
        if channel_keep is not None:
            weight = weight[channel_keep] if weight.ndim == 1 else np.take(weight, channel_keep, axis=-2)
        elif weight.ndim == 1:  # a bias
            weight = weight if out_keep is None else weight[out_keep]
        else:
            weight = weight if in_keep is None else np.take(weight, in_keep, axis=-2)
            weight = weight if out_keep is None else weight[..., out_keep]
        sliced.append(weight)
    return sliced


def count_macs(model) -> int:
    """Multiply-accumulates per example of the convolution and dense layers: output positions x kernel size."""
    total = 0
    for layer in model.layers:
        kernels = [w for w in layer.weights if w.name.split("/")[-1].split(":")[0].endswith("kernel")]
        if not kernels or not hasattr(layer, "get_output_shape_at"):
            continue
        for node in range(max(1, len(layer.inbound_nodes))):
            shape = layer.get_output_shape_at(node)
            if isinstance(shape, list):  # a nested model: not counted
                break
            positions = math.prod(d or 1 for d in shape[1:-1])
            total += positions * sum(int(np.prod(k.shape)) for k in kernels)
    return total


def in_units_of(value: int, largest: int) -> str:
    """A MAC count in the unit that suits `largest` (both counts of a note in the same unit)."""
    if largest >= 1_000_000:
        return f"{value / 1e6:.2f}M"
    return f"{value / 1e3:.1f}K" if largest >= 1_000 else str(value)


def rebuilt_with(model, filters: dict[str, int]):
    """A new model of the same class from the model's config, the named producers with fewer filters or units."""
    import tensorflow as tf

    config = model.get_config()
    for entry in config["layers"]:
        entry.pop("build_config", None)  # the input shapes it was built for, some of which change: built anew
        if entry["config"].get("name") in filters:
            key = "units" if entry["class_name"] == "Dense" else "filters"
            entry["config"][key] = filters[entry["config"]["name"]]
    own_classes = {type(layer).__name__: type(layer) for layer in model.layers}  # a user's custom layers too
    with tf.keras.utils.custom_object_scope(own_classes):
        if isinstance(model, tf.keras.Sequential):
            return tf.keras.Sequential.from_config(config)
        return tf.keras.Model.from_config(config)


def prune_filters(model, keep: float, multiple: int = 4) -> tuple[Any, str]:
    """A new, smaller model (Sequential or functional, as given) keeping `keep` of each prunable layer's filters
    (rounded up to `multiple`), with the kept weights copied; and a one-line note of what was removed. With
    keep=1.0 it computes what the model computes. NotApplicable when no layer's filters can be removed."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], not {keep}")
    graph = layer_graph(model)
    producers = [name for name, layer in graph.layers.items() if type(layer).__name__ in PRODUCERS]
    reaches = {name: trace(graph, name) for name in producers}
    whole = {name: reach.why_whole for name, reach in reaches.items() if reach.why_whole}
    prunable = [name for name in producers if name not in whole]
    if not prunable:
        reasons = "; ".join(f"{name}: {why}" for name, why in whole.items()) or "the model has none"
        raise NotApplicable(f"no Conv/Dense layer's filters can be removed: {reasons}")

    out_keep, in_keep, channel_keep = {}, {}, {}
    for name in prunable:
        scores = filter_scores(graph, name)
        count = filters_to_keep(len(scores), keep, multiple)
        out_keep[name] = np.sort(np.argsort(-scores, kind="stable")[:count])
        for layer, positions in reaches[name].channelwise:
            channel_keep[layer] = spread(out_keep[name], len(scores), positions)
        for layer, positions in reaches[name].readers:
            in_keep[layer] = spread(out_keep[name], len(scores), positions)

    rebuilt = rebuilt_with(model, {name: len(kept) for name, kept in out_keep.items()})
    for name, layer in graph.layers.items():
        if layer.weights:
            weights = sliced_weights(layer, out_keep.get(name), in_keep.get(name), channel_keep.get(name))
            rebuilt.get_layer(name).set_weights(weights)
    return rebuilt, pruning_note(model, rebuilt, out_keep, whole)


def pruning_note(model, rebuilt, out_keep: dict[str, np.ndarray], whole: dict[str, str]) -> str:
    """'filters kept: conv 12->8; MACs 1.23M -> 0.61M (-50%); parameters ...; left whole: ... (why)'."""
    shrunk = {
        name: (model.get_layer(name).get_weights()[0].shape[-1], len(kept))
        for name, kept in out_keep.items()
        if len(kept) < model.get_layer(name).get_weights()[0].shape[-1]
    }
    parts = [
        "filters kept: " + ", ".join(f"{name} {before}->{after}" for name, (before, after) in shrunk.items())
        if shrunk
        else "no filter removed (each prunable layer would keep all of its filters)"
    ]
    macs_before, macs_after = count_macs(model), count_macs(rebuilt)
    change = f" ({(macs_after - macs_before) / macs_before:+.0%})" if macs_before else ""
    largest = max(macs_before, macs_after)
    parts.append(f"MACs {in_units_of(macs_before, largest)} -> {in_units_of(macs_after, largest)}{change}")
    parts.append(f"parameters {model.count_params():,} -> {rebuilt.count_params():,}")
    if whole:
        by_reason: dict[str, list[str]] = {}
        for name, why in whole.items():
            by_reason.setdefault(why, []).append(name)
        parts.append("left whole: " + "; ".join(f"{', '.join(names)} ({why})" for why, names in by_reason.items()))
    return "; ".join(parts)
