"""Operations optimization: depthwise-separable convolutions in place of the k x k (k > 1) Conv2D layers where
the separable pair costs fewer MACs and parameters, started from each kernel's own factorisation, then the model
fine-tuned (the paper's "operations optimization").

A 1x1 convolution has nothing to separate, and a k x k one with few output channels can cost more as a pair:
those, and every other layer, keep their trained weights. The pair of a replaced layer starts from a rank-1
factorisation of its kernel per input channel (an SVD): the depthwise k x k taps from each channel's leading
left singular vector, the pointwise 1x1 weights from its right one, so the rebuilt model starts close to the
trained one instead of from random weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.training import FineTuning
from tinyopt.params import SeparableParams, TrainParams


@dataclass(frozen=True)
class Candidate:
    """One Conv2D layer, what it costs and what its depthwise-separable pair would cost (MACs per example)."""

    name: str
    kernel: tuple[int, int]
    channels_in: int
    channels_out: int
    macs: int
    params: int
    separable_macs: int
    separable_params: int
    why_not: str | None  # None: it is replaced

    @property
    def shape(self) -> str:
        return f"{self.kernel[0]}x{self.kernel[1]}, {self.channels_in}->{self.channels_out}"

    @property
    def kept_because(self) -> str:
        return f"{self.name} ({self.shape}: {self.why_not})"


def assess(layer) -> Candidate:
    """What replacing one Conv2D by a SeparableConv2D (depth multiplier 1) would save, and whether it qualifies."""
    config = layer.get_config()
    kernel = tuple(int(k) for k in config["kernel_size"])
    channels_first = config.get("data_format") == "channels_first"
    groups = int(config.get("groups", 1))
    channels_in = int(layer.kernel.shape[2]) * groups
    channels_out = int(config["filters"])
    shared = len(layer.inbound_nodes) > 1  # called more than once: its output shape is not one shape
    out_shape = layer.get_output_shape_at(0)
    spatial = out_shape[2:] if channels_first else out_shape[1:-1]
    positions = int(np.prod([d if d is not None else 1 for d in spatial]))
    area = kernel[0] * kernel[1]
    bias = channels_out if config["use_bias"] else 0
    params = area * channels_in * channels_out + bias
    separable_params = area * channels_in + channels_in * channels_out + bias
    macs = positions * area * channels_in * channels_out
    separable_macs = positions * (area * channels_in + channels_in * channels_out)
    why_not = None
    if area == 1:
        why_not = "nothing to separate"
    elif groups != 1:
        why_not = f"a grouped convolution ({groups} groups)"
    elif shared:
        why_not = "a layer called more than once"
    elif separable_macs >= macs or separable_params >= params:
        why_not = (
            f"the separable pair would not be smaller ({separable_macs:,} MACs and {separable_params:,} parameters "
            f"against {macs:,} and {params:,})"
        )
    return Candidate(
        layer.name, kernel, channels_in, channels_out, macs, params, separable_macs, separable_params, why_not
    )


def factorise(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """A Conv2D kernel (kh, kw, cin, cout) as the closest depthwise (kh, kw, cin, 1) and pointwise (1, 1, cin, cout)
    pair, channel by channel (rank-1 SVD of each input channel's kh*kw x cout slice), and the share of the
    kernel's energy (squared Frobenius norm) the pair keeps."""
    kh, kw, cin, cout = kernel.shape
    depthwise = np.zeros((kh, kw, cin, 1), dtype=np.float32)
    pointwise = np.zeros((1, 1, cin, cout), dtype=np.float32)
    kept = 0.0
    for channel in range(cin):
        left, values, right = np.linalg.svd(kernel[:, :, channel, :].reshape(kh * kw, cout), full_matrices=False)
        scale = np.sqrt(values[0])
        depthwise[:, :, channel, 0] = (left[:, 0] * scale).reshape(kh, kw)
        pointwise[0, 0, channel, :] = right[0] * scale
        kept += float(values[0] ** 2)
    total = float(np.sum(np.square(kernel, dtype=np.float64)))
    return depthwise, pointwise, (kept / total if total else 1.0)


@dataclass(frozen=True)
class Rewrite:
    model: object  # the rebuilt Keras model
    replaced: list[Candidate]
    kept: list[Candidate]  # Conv2D layers left as they were, with why
    energy: dict[str, float]  # replaced layer -> share of its kernel's energy its initial pair keeps


def to_separable(model) -> Rewrite:
    """The model with each qualifying Conv2D replaced by a SeparableConv2D started from its kernel's factorisation,
    every other layer (1x1 and other unqualified convolutions included) with its trained weights. Works on
    Sequential and functional models (Add, Concatenate, BatchNormalization...): the graph is cloned layer by
    layer. NotApplicable when no layer qualifies."""
    import tensorflow as tf

    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    if not convs:
        raise NotApplicable("the model has no Conv2D layer to replace")
    assessed = {layer.name: assess(layer) for layer in convs}
    replaced = [c for c in assessed.values() if c.why_not is None]
    kept = [c for c in assessed.values() if c.why_not is not None]
    if not replaced:
        raise NotApplicable(
            "no Conv2D layer has a k x k kernel (k > 1) whose depthwise-separable form costs fewer MACs and "
            f"parameters: {'; '.join(c.kept_because for c in kept)}"
        )

    def clone(layer):
        if layer.name in assessed and assessed[layer.name].why_not is None:
            config = layer.get_config()
            return tf.keras.layers.SeparableConv2D(
                filters=config["filters"],
                kernel_size=config["kernel_size"],
                strides=config["strides"],
                padding=config["padding"],
                data_format=config.get("data_format"),
                dilation_rate=config["dilation_rate"],
                activation=config["activation"],
                use_bias=config["use_bias"],
                name=f"{layer.name}_separable",
            )
        return layer.__class__.from_config(layer.get_config())

    rebuilt = tf.keras.models.clone_model(model, clone_function=clone)
    energy = {}
    for layer in model.layers:
        if type(layer).__name__ == "InputLayer" or not layer.weights:
            continue
        candidate = assessed.get(layer.name)
        if candidate is None or candidate.why_not is not None:
            rebuilt.get_layer(layer.name).set_weights(layer.get_weights())  # untouched: its trained weights
            continue
        weights = layer.get_weights()
        depthwise, pointwise, energy[layer.name] = factorise(weights[0])
        rebuilt.get_layer(f"{layer.name}_separable").set_weights([depthwise, pointwise, *weights[1:]])
    return Rewrite(rebuilt, replaced, kept, energy)


def model_macs(candidates: list[Candidate], separable: bool) -> int:
    return sum(c.separable_macs if separable and c.why_not is None else c.macs for c in candidates)


class Separable(FineTuning):
    """Each k x k Conv2D (k > 1) whose depthwise-separable form costs fewer MACs and parameters replaced by a
    SeparableConv2D started from its kernel's SVD factorisation; every other layer keeps its trained weights; then
    all layers fine-tuned (the training settings' epochs, learning rate and early stopping, unless
    `separable.epochs` says otherwise). Skipped, with the reason, when no layer qualifies or the model would not
    get smaller."""

    token = "separable"
    restructures = True

    def wrap(self, model, settings: SeparableParams, checked):
        rewrite = to_separable(model)
        before, after = model.count_params(), rewrite.model.count_params()
        convs = [*rewrite.replaced, *rewrite.kept]
        macs_before, macs_after = model_macs(convs, False), model_macs(convs, True)
        if after >= before or macs_after >= macs_before:
            raise NotApplicable(
                f"the rewritten model would not be smaller: parameters {before:,} -> {after:,}, "
                f"convolution MACs {macs_before:,} -> {macs_after:,}"
            )
        replaced = ", ".join(
            f"{c.name} ({c.shape}, {rewrite.energy[c.name]:.0%} of its kernel's energy kept)" for c in rewrite.replaced
        )
        notes = [
            f"replaced {replaced} by SeparableConv2D started from a rank-1-per-channel SVD of its kernel",
        ]
        single = [c.name for c in rewrite.replaced if c.channels_in == 1]
        if single:  # why such a variant scores lower, whatever the start: say it beside its figures
            notes.append(
                f"{', '.join(single)} read one input channel: every filter of a separable pair there is a multiple of "
                "one k x k filter, which limits what the layer can detect (expect a lower score)"
            )
        if rewrite.kept:
            notes.append("kept " + ", ".join(c.kept_because for c in rewrite.kept))
        notes.append(
            "every other layer kept its trained weights; fine-tuned all layers; "
            f"parameters {before:,} -> {after:,}, convolution MACs {macs_before:,} -> {macs_after:,}"
        )
        return rewrite.model, "; ".join(notes)

    def schedule(self, settings: SeparableParams, train: TrainParams) -> tuple[int, float, int]:
        return settings.epochs or train.epochs, train.learning_rate, train.early_stopping_patience


SEPARABLE = Separable()
