"""1-D convolutional models in the form tfmot can quantize-aware train.

tfmot has no quantize config for Conv1D or MaxPooling1D, and its per-channel weight quantizer takes
2-D or 4-D kernels only, so QAT (and PQAT, CQAT, PCQAT) used to skip every sensor model. A Conv1D is a
(k x 1) Conv2D over (steps, 1, channels): `Conv1DAsConv2D` computes it that way with a 4-D kernel, and
`OneDimensionalScheme` asks the scheme's own registry for a layer's config as if it were the 2-D layer,
so the collaborative schemes keep their sparsity- and cluster-preserving quantizers. The converter
writes the same EXPAND_DIMS > CONV_2D > RESHAPE graph it writes for a Conv1D.

tfmot also refuses DepthwiseConv1D outright, in pruning and clustering as well as in QAT (its registries
know DepthwiseConv2D only). `DepthwiseConv1DAsDepthwiseConv2D` computes it as a (k x 1) DepthwiseConv2D
and declares its depthwise kernel prunable and clusterable itself; `tfmot_form` puts a model in that form
for prune_low_magnitude and cluster_weights, and `as_1d_convolutions` brings the stripped model back.
"""

from __future__ import annotations

import tensorflow as tf  # tinyopt's __init__ has chosen tf-keras (Keras 2) by now
import tensorflow_model_optimization as tfmot

_layers = tf.keras.layers


class _StepsAsRows:
    """A 2-D convolution layer taking (batch, steps, channels): built as if over (steps, 1, channels), and
    giving (batch, steps', channels') back. Its `call` expands and squeezes the width axis."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.input_spec = _layers.InputSpec(ndim=3)  # the 2-D layer's asks for 4-D inputs

    def build(self, input_shape):
        super().build((input_shape[0], input_shape[1], 1, input_shape[2]))
        self.input_spec = _layers.InputSpec(ndim=3, axes={-1: input_shape[-1]})

    def compute_output_shape(self, input_shape):
        shape = super().compute_output_shape((input_shape[0], input_shape[1], 1, input_shape[2]))
        return tf.TensorShape((shape[0], shape[1], shape[3]))


@tf.keras.utils.register_keras_serializable(package="tinyopt")
class Conv1DAsConv2D(_StepsAsRows, _layers.Conv2D):
    """A Conv1D on (batch, steps, channels) computed as a (k x 1) Conv2D; kernel (k, 1, in, out)."""

    def call(self, inputs):
        # Not super().call: it checks a 4-D output shape. tfmot swaps self.kernel for its quantized form.
        outputs = self.convolution_op(tf.expand_dims(inputs, 2), self.kernel)
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(tf.squeeze(outputs, 2))


@tf.keras.utils.register_keras_serializable(package="tinyopt")
class DepthwiseConv1DAsDepthwiseConv2D(
    _StepsAsRows,
    _layers.DepthwiseConv2D,
    tfmot.sparsity.keras.PrunableLayer,
    tfmot.clustering.keras.ClusterableLayer,
):
    """A DepthwiseConv1D on (batch, steps, channels) computed as a (k x 1) DepthwiseConv2D over
    (steps, 1, channels); depthwise kernel (k, 1, channels, multiplier). Prunable and clusterable by tfmot
    (which leaves a DepthwiseConv2D's kernel alone and refuses a DepthwiseConv1D)."""

    def call(self, inputs):
        # tfmot's pruning, clustering and quantize wrappers swap self.depthwise_kernel for their own form.
        outputs = tf.keras.backend.depthwise_conv2d(
            tf.expand_dims(inputs, 2),
            self.depthwise_kernel,
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            outputs = tf.nn.bias_add(outputs, self.bias)
        return self.activation(tf.squeeze(outputs, 2))

    def get_prunable_weights(self):
        # Kept dense: a depthwise kernel has a few taps per channel, and pruning them to the default 70% collapsed
        # the zoo's temporal depthwise net (test accuracy 0.33 against 0.88); tfmot leaves depthwise kernels too.
        return []

    def get_clusterable_weights(self):
        return [("depthwise_kernel", self.depthwise_kernel)]


_ONE_D = (_layers.Conv1D, _layers.DepthwiseConv1D)


def has_1d_layers(model) -> bool:
    return any(type(layer) in (*_ONE_D, _layers.MaxPooling1D) for layer in model.layers)


def has_depthwise_1d(model) -> bool:
    return any(type(layer) is _layers.DepthwiseConv1D for layer in model.layers)


def _as_2d(layer):
    config = layer.get_config()
    if config["padding"] == "causal" or config.get("groups", 1) != 1:
        raise ValueError(f"{layer.name}: a causal or grouped {type(layer).__name__} has no 2-D form")
    if config.get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"{layer.name}: a channels_first {type(layer).__name__} has no 2-D form here")
    for key in ("kernel_size", "strides", "dilation_rate"):
        config[key] = (config[key][0], 1)
    config.pop("groups", None)
    two_d = Conv1DAsConv2D if type(layer) is _layers.Conv1D else DepthwiseConv1DAsDepthwiseConv2D
    return two_d.from_config(config)


def as_2d_convolutions(model, kinds: tuple = _ONE_D):
    """The same model (same weights, same outputs) with each Conv1D computed as a Conv2D and each
    DepthwiseConv1D as a DepthwiseConv2D (those of `kinds`)."""
    return _rebuilt(model, lambda layer: type(layer) in kinds, _as_2d, lambda kernel: kernel[:, None])


def _as_1d(layer):
    config = layer.get_config()
    for key in ("kernel_size", "strides", "dilation_rate"):
        config[key] = (config[key][0],)
    return _layers.DepthwiseConv1D.from_config(config)


def as_1d_convolutions(model):
    """The model with each DepthwiseConv1DAsDepthwiseConv2D back as the DepthwiseConv1D it computes."""
    if not any(type(layer) is DepthwiseConv1DAsDepthwiseConv2D for layer in model.layers):
        return model
    return _rebuilt(
        model, lambda layer: type(layer) is DepthwiseConv1DAsDepthwiseConv2D, _as_1d, lambda kernel: kernel[:, 0]
    )


def _rebuilt(model, replaced, replacement, kernel):
    def clone(layer):
        return replacement(layer) if replaced(layer) else layer.__class__.from_config(layer.get_config())

    rebuilt = tf.keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        if replaced(layer):  # (k, in, out) <-> (k, 1, in, out); depthwise (k, ch, mult) <-> (k, 1, ch, mult)
            weights = [kernel(weights[0]), *weights[1:]]
        rebuilt.get_layer(layer.name).set_weights(weights)
    return rebuilt


def tfmot_form(model, verb: str) -> tuple[object, str]:
    """The model as tfmot can prune or cluster it, and a note: each DepthwiseConv1D (which tfmot refuses)
    computed as a DepthwiseConv2D whose kernel tfmot prunes and clusters; any other model as it is (tfmot
    prunes and clusters Conv1D itself). `as_1d_convolutions` undoes it after strip."""
    if not has_depthwise_1d(model):
        return model, ""
    note = f"DepthwiseConv1D layers {verb} in their DepthwiseConv2D form" + (
        " (their kernels kept dense)" if verb == "pruned" else ""
    )
    return as_2d_convolutions(model, (_layers.DepthwiseConv1D,)), note


def _stand_in(layer):
    """The 2-D layer a 1-D one is quantized like (built, so registries see its trainable weights)."""
    if isinstance(layer, Conv1DAsConv2D):
        stand_in = _layers.Conv2D.from_config(layer.get_config())
        stand_in.build((None, None, 1, layer.input_spec.axes[-1]))
        return stand_in
    if isinstance(layer, DepthwiseConv1DAsDepthwiseConv2D):
        stand_in = _layers.DepthwiseConv2D.from_config(layer.get_config())
        stand_in.build((None, None, 1, layer.input_spec.axes[-1]))
        return stand_in
    return layer


class _Registry(tfmot.quantization.keras.QuantizeRegistry):
    def __init__(self, inner):
        self.inner = inner

    def supports(self, layer) -> bool:
        return type(layer) is _layers.MaxPooling1D or self.inner.supports(_stand_in(layer))

    def get_quantize_config(self, layer):
        if type(layer) is _layers.MaxPooling1D:  # as tfmot does MaxPooling2D: nothing to quantize
            from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
                default_8bit_quantize_registry as registry,
            )

            return registry.Default8BitQuantizeConfig([], [], False)
        return self.inner.get_quantize_config(_stand_in(layer))


class OneDimensionalScheme(tfmot.quantization.keras.QuantizeScheme):
    """A tfmot quantize scheme that also quantizes Conv1DAsConv2D, DepthwiseConv1DAsDepthwiseConv2D and
    MaxPooling1D layers."""

    def __init__(self, inner):
        self.inner = inner

    def get_layout_transformer(self):
        return self.inner.get_layout_transformer()

    def get_quantize_registry(self):
        return _Registry(self.inner.get_quantize_registry())
