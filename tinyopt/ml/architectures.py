"""tinyopt's own `blocks` architecture: a stack of convolution, depthwise-separable and inverted-residual
blocks for images (2-D layers) or sensor windows (1-D layers), each with batch norm and ReLU, then a head.
Every layer converts to the int8 ops the MCU code generator compiles (batch norm folds into the convolution
before it)."""

from __future__ import annotations

from tinyopt.params import ModelParams


def build_blocks(input_shape: tuple[int, ...], num_classes: int, params: ModelParams):
    """The Keras model `params.blocks` and `params.head` describe, for examples of `input_shape`."""
    import tensorflow as tf

    layers = tf.keras.layers
    series = params.signal == "series"
    conv, depthwise = (layers.Conv1D, layers.DepthwiseConv1D) if series else (layers.Conv2D, layers.DepthwiseConv2D)
    pool = layers.MaxPooling1D if series else layers.MaxPooling2D
    inputs = tf.keras.Input(tuple(input_shape))
    x = inputs
    if not series and len(input_shape) == 2:  # a grey image without its channel axis
        x = layers.Reshape((*input_shape, 1))(x)

    def normed(y, relu: bool = True):
        y = layers.BatchNormalization()(y)
        return layers.ReLU()(y) if relu else y

    for block in params.blocks:
        k, s = block.kernel_size, block.stride
        if block.kind == "conv":
            x = normed(conv(block.filters, k, strides=s, padding="same", use_bias=False)(x))
        elif block.kind == "separable":
            x = normed(depthwise(k, strides=s, padding="same", use_bias=False)(x))
            x = normed(conv(block.filters, 1, use_bias=False)(x))
        else:  # inverted residual (MobileNetV2): expand, depthwise, linear projection
            channels = int(x.shape[-1])
            y = normed(conv(channels * block.expansion, 1, use_bias=False)(x))
            y = normed(depthwise(k, strides=s, padding="same", use_bias=False)(y))
            y = normed(conv(block.filters, 1, use_bias=False)(y), relu=False)
            x = layers.Add()([x, y]) if s == 1 and channels == block.filters else y
        if block.pool and min(x.shape[1:-1]) >= 2:
            x = pool(2)(x)
    pooled = (layers.GlobalAveragePooling1D() if series else layers.GlobalAveragePooling2D())(x)
    x = pooled if params.head == "average" else layers.Flatten()(x)
    return tf.keras.Model(inputs, layers.Dense(num_classes)(x), name="blocks")


def describe_blocks(params: ModelParams) -> str:
    """A short name for an architecture: `c16k3-s32k3p-i24k5s2 avg` (conv, separable, inverted; stride 2 as
    s2, a pool as p), for task names and directories."""
    parts = [
        f"{b.kind[0]}{b.filters}k{b.kernel_size}{'s2' if b.stride == 2 else ''}{'p' if b.pool else ''}"
        for b in params.blocks
    ]
    return "-".join(parts) + ("" if params.head == "average" else "-flat")
