"""`graph` folding on functional models: BN and separate activations go into their producers, outputs stay."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.graph import check_equivalent, fold_layers, summarize
from tinyopt.core.errors import NotApplicable


@pytest.fixture(scope="module")
def tf():
    import tensorflow as tf

    return tf


def randomize_batch_norms(model, seed=0):
    """Moving statistics and affine parameters far from the identity, so a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            size = layer.get_weights()[0].shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, size), rng.normal(size=size), rng.normal(size=size), rng.uniform(0.5, 2, size)]
            )
    return model


def kinds(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def assert_same_outputs(original, folded, shape):
    x = np.random.default_rng(1).normal(size=(3, *shape)).astype(np.float32)
    np.testing.assert_allclose(folded(x, training=False), original(x, training=False), rtol=1e-4, atol=1e-4)
    check_equivalent(original, folded)


def test_mini_resnet_with_add_and_concatenate(tf):
    layers = tf.keras.layers
    inputs = tf.keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    skip = layers.ReLU(name="r1")(x)
    x = layers.Conv2D(8, 3, padding="same", name="c2")(skip)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.Activation("relu", name="r2")(x)
    added = layers.Add(name="add")([x, skip])
    joined = layers.Concatenate(name="cat")([added, skip])
    pooled = layers.GlobalAveragePooling2D()(joined)
    model = randomize_batch_norms(tf.keras.Model(inputs, layers.Dense(4)(pooled)))
    folded, changes = fold_layers(model)
    assert "BatchNormalization" not in kinds(folded) and "ReLU" not in kinds(folded)
    assert len(folded.layers) == len(model.layers) - 4
    assert changes == ["folded bn1 into c1", "fused r1 (relu) into c1", "folded bn2 into c2", "fused r2 (relu) into c2"]
    assert summarize(changes) == "folded 2 BatchNormalization and 2 activations into their producers"
    assert folded.get_layer("c1").activation.__name__ == "relu" and folded.get_layer("c1").use_bias
    assert_same_outputs(model, folded, (16, 16, 3))


def test_ds_cnn_block_with_depth_multiplier(tf):
    layers = tf.keras.layers
    inputs = tf.keras.Input((12, 12, 4))
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", use_bias=False, name="dw")(inputs)
    x = layers.BatchNormalization(name="bn_dw")(x)
    x = layers.ReLU(6.0, name="relu6")(x)
    x = layers.Conv2D(6, 1, use_bias=False, name="pw")(x)
    x = layers.BatchNormalization(name="bn_pw")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.SeparableConv2D(5, 3, name="sep")(x)
    x = layers.BatchNormalization(name="bn_sep")(x)
    model = randomize_batch_norms(tf.keras.Model(inputs, x))
    folded, changes = fold_layers(model)
    assert kinds(folded) == ["InputLayer", "DepthwiseConv2D", "Conv2D", "SeparableConv2D"]
    assert "fused relu6 (relu6) into dw" in changes and "folded bn_sep into sep" in changes
    assert folded.output_names == [folded.layers[-1].name]
    assert_same_outputs(model, folded, (12, 12, 4))


def test_conv1d_and_dense_batch_norms(tf):
    layers = tf.keras.layers
    inputs = tf.keras.Input((20, 3))
    x = layers.Conv1D(8, 5, name="conv1d")(inputs)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Flatten()(x)
    x = layers.Dense(6, name="dense")(x)
    x = layers.BatchNormalization(name="bn_dense")(x)
    x = layers.Activation("tanh", name="tanh")(x)
    model = randomize_batch_norms(tf.keras.Model(inputs, layers.Dense(2)(x)))
    folded, changes = fold_layers(model)
    assert "BatchNormalization" not in kinds(folded) and "Activation" not in kinds(folded)
    assert changes == ["folded bn into conv1d", "folded bn_dense into dense", "fused tanh (tanh) into dense"]
    assert_same_outputs(model, folded, (20, 3))


def test_a_producer_with_two_consumers_keeps_its_batch_norm(tf):
    layers = tf.keras.layers
    inputs = tf.keras.Input((10, 10, 2))
    shared = layers.Conv2D(4, 3, padding="same", name="shared")(inputs)
    normed = layers.BatchNormalization(name="bn_kept")(shared)
    other = layers.Conv2D(4, 1, name="other")(shared)  # a second consumer of shared's output
    x = layers.Add()([normed, other])
    x = layers.Conv2D(4, 1, name="last")(x)
    x = layers.BatchNormalization(name="bn_last")(x)
    model = randomize_batch_norms(tf.keras.Model(inputs, x))
    folded, changes = fold_layers(model)
    assert changes == ["folded bn_last into last"]
    assert [layer.name for layer in folded.layers if type(layer).__name__ == "BatchNormalization"] == ["bn_kept"]
    assert len(folded.layers) == len(model.layers) - 1
    assert_same_outputs(model, folded, (10, 10, 2))


def test_batch_norm_after_an_activated_layer_or_as_a_model_output_is_left(tf):
    layers = tf.keras.layers
    inputs = tf.keras.Input((8,))
    x = layers.Dense(4, activation="relu")(inputs)
    first = layers.BatchNormalization()(x)  # its producer already has an activation
    model = tf.keras.Model(inputs, [first, layers.Dense(3)(first)])
    with pytest.raises(NotApplicable, match="nothing to fold"):
        fold_layers(model)
    dense = layers.Dense(4, name="dense")
    two_outputs = tf.keras.Model(inputs, [dense(inputs), layers.BatchNormalization()(dense(inputs))])  # reused
    with pytest.raises(NotApplicable, match="nothing to fold"):
        fold_layers(two_outputs)
