"""Filter pruning removes whole filters by slicing: the rebuilt model computes what the original computes when nothing
goes (or only dead filters go), shrinks what it may, keeps residual groups and the output whole, and runs as a step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.filter_pruning import count_macs, prune_filters

SEED = 3


def layers():
    import tensorflow as tf

    return tf.keras.layers


def randomize_batchnorm(model, seed: int = 0):
    """BN layers with statistics far from identity, so that slicing the wrong channel shows."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            size = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 2, size), rng.normal(size=size), rng.normal(size=size), rng.uniform(0.5, 2, size)]
            )
    return model


def mini_resnet():
    """A prunable stem, a residual Add block, a Concatenate of two branches, then a prunable head."""
    import tensorflow as tf

    L = layers()

    def conv_bn(x, filters, name, kernel=3):
        x = L.Conv2D(filters, kernel, padding="same", use_bias=False, name=f"{name}_conv")(x)
        return L.BatchNormalization(name=f"{name}_bn")(x)

    inputs = tf.keras.Input((12, 12, 3))
    x = L.MaxPooling2D(2)(L.ReLU()(conv_bn(inputs, 12, "first")))
    x = L.ReLU()(conv_bn(x, 8, "stem"))
    y = L.ReLU()(conv_bn(x, 8, "res1"))
    x = L.ReLU()(L.Add()([x, conv_bn(y, 8, "res2")]))
    a = L.ReLU()(conv_bn(x, 8, "branch_a"))
    b = L.Conv2D(4, 1, name="branch_b_conv")(x)
    x = L.ReLU()(conv_bn(L.Concatenate()([a, b]), 16, "mix"))
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dropout(0.2)(L.Activation("relu")(L.Dense(16, name="hidden")(x)))
    return randomize_batchnorm(tf.keras.Model(inputs, L.Dense(3, name="head")(x)))


def ds_cnn():
    """Conv2D > BN > ReLU > DepthwiseConv2D > BN > ReLU > Conv2D(1x1) > BN > ReLU > GlobalAveragePooling2D > Dense."""
    import tensorflow as tf

    L = layers()
    inputs = tf.keras.Input((12, 12, 1))
    x = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(16, 3, strides=2, padding="same", name="conv1")(inputs)))
    x = L.ReLU()(L.BatchNormalization(name="bn2")(L.DepthwiseConv2D(3, padding="same", name="dw")(x)))
    x = L.ReLU()(L.BatchNormalization(name="bn3")(L.Conv2D(16, 1, name="pw")(x)))
    outputs = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(x))
    return randomize_batchnorm(tf.keras.Model(inputs, outputs))


def conv1d_net():
    import tensorflow as tf

    L = layers()
    inputs = tf.keras.Input((32, 3))
    x = L.ReLU()(L.BatchNormalization()(L.Conv1D(8, 5, padding="same", name="c1")(inputs)))
    x = L.Conv1D(12, 3, activation="relu", name="c2")(L.ZeroPadding1D(1)(L.MaxPooling1D(2)(x)))
    outputs = L.Dense(4, name="head")(L.GlobalMaxPooling1D()(x))
    return randomize_batchnorm(tf.keras.Model(inputs, outputs))


def paper_cnn():
    from tasks.train import build_paper_cnn
    from tinyopt.params import ModelParams

    return build_paper_cnn((28, 28), 10, ModelParams())


def autoencoder():
    """A DCASE-style dense autoencoder: 640 > 128 > 128 > 8 > 128 > 128 > 640."""
    import tensorflow as tf

    L = layers()
    inputs = tf.keras.Input((640,))
    x = inputs
    for units in (128, 128, 8, 128, 128):
        x = L.ReLU()(L.BatchNormalization()(L.Dense(units)(x)))
    return randomize_batchnorm(tf.keras.Model(inputs, L.Dense(640)(x)))


def random_inputs(model, count: int = 8) -> np.ndarray:
    return np.random.default_rng(SEED).normal(size=(count, *model.input_shape[1:])).astype(np.float32)


@pytest.mark.parametrize("build", [mini_resnet, ds_cnn, conv1d_net, paper_cnn, autoencoder])
def test_keeping_every_filter_rebuilds_the_same_model(build):
    model = build()
    rebuilt, _ = prune_filters(model, 1.0)
    assert rebuilt is not model and type(rebuilt) is type(model)
    assert rebuilt.count_params() == model.count_params()
    x = random_inputs(model)
    np.testing.assert_allclose(rebuilt(x, training=False), model(x, training=False), rtol=0, atol=1e-5)


def test_removing_dead_filters_through_flatten_leaves_the_outputs_unchanged():
    """Filters that output zero carry nothing: removing them (and the Dense inputs each position's copy fed) must
    not change the outputs, which checks the flattened index p * C + c."""
    model = paper_cnn()
    conv = model.layers[1]
    kernel, bias = conv.get_weights()
    dead = [1, 4, 6, 11]
    kernel[..., dead], bias[dead] = 0.0, 0.0
    conv.set_weights([kernel, bias])
    rebuilt, note = prune_filters(model, 0.5)  # 12 * 0.5 = 6, rounded up to 8: exactly the live ones
    assert rebuilt.layers[1].filters == 8 and f"{conv.name} 12->8" in note
    x = random_inputs(model)
    np.testing.assert_allclose(rebuilt(x), model(x), rtol=0, atol=1e-5)


def test_removing_dead_filters_through_batch_norm_and_depthwise_leaves_the_outputs_unchanged():
    model = ds_cnn()
    dead = [0, 3, 5, 9, 10, 12, 14, 15]
    for name in ("bn1", "bn2"):  # gamma = beta = 0: the channel is zero after each BN
        gamma, beta, mean, variance = model.get_layer(name).get_weights()
        gamma[dead], beta[dead] = 0.0, 0.0
        model.get_layer(name).set_weights([gamma, beta, mean, variance])
    rebuilt, _ = prune_filters(model, 0.5)
    assert rebuilt.get_layer("conv1").filters == 8 and rebuilt.get_layer("pw").filters == 8
    assert rebuilt.get_layer("dw").depthwise_kernel.shape[2] == 8 and rebuilt.get_layer("bn2").gamma.shape[0] == 8
    x = random_inputs(model)
    # pw's filters are chosen by their own norms, so compare up to conv1's removal: outputs of bn2's ReLU.
    import tensorflow as tf

    def probe(m):
        return tf.keras.Model(m.input, m.get_layer("pw").input)(x)

    live = [c for c in range(16) if c not in dead]
    np.testing.assert_allclose(probe(rebuilt), tf.gather(probe(model), live, axis=-1), rtol=0, atol=1e-5)


def test_half_the_filters_go_where_they_may_and_residual_groups_and_the_output_stay_whole():
    model = mini_resnet()
    rebuilt, note = prune_filters(model, 0.5)
    widths = {layer.name: layer.get_weights()[0].shape[-1] for layer in rebuilt.layers if "conv" in layer.name}
    widths["hidden"], widths["head"] = rebuilt.get_layer("hidden").units, rebuilt.get_layer("head").units
    assert widths == {
        "first_conv": 8,  # 12 * 0.5 = 6, rounded up to a multiple of 4
        "stem_conv": 8,  # feeds the Add
        "res1_conv": 4,  # inside the block, read by res2 only
        "res2_conv": 8,  # feeds the Add
        "branch_a_conv": 8,  # feeds the Concatenate
        "branch_b_conv": 4,
        "mix_conv": 8,
        "hidden": 8,
        "head": 3,  # the output
    }
    assert "stem_conv, res2_conv (feeds a residual Add)" in note and "head (the model's output)" in note
    assert "branch_a_conv, branch_b_conv (feeds a Concatenate)" in note
    assert rebuilt.count_params() < model.count_params() and count_macs(rebuilt) < count_macs(model)
    assert "MACs" in note and "parameters" in note


def test_the_kept_filters_are_the_largest_in_their_original_order_with_their_weights():
    model = paper_cnn()  # Reshape > Conv2D(12) > MaxPool > Flatten > Dense
    conv, dense = model.layers[1], model.layers[4]
    scaled = np.random.default_rng(1).uniform(0, 2, 12)  # filters of clearly different norms
    conv.set_weights([w * scaled for w in conv.get_weights()])
    kernel, bias = conv.get_weights()
    kept = np.sort(np.argsort(-np.abs(kernel).sum(axis=(0, 1, 2)))[:8])
    rebuilt, _ = prune_filters(model, 0.5)
    new_kernel, new_bias = rebuilt.layers[1].get_weights()
    np.testing.assert_array_equal(new_kernel, kernel[..., kept])
    np.testing.assert_array_equal(new_bias, bias[kept])
    positions = 13 * 13  # 28 - 2 = 26, pooled to 13 x 13
    rows = [p * 12 + c for p in range(positions) for c in kept]
    np.testing.assert_array_equal(rebuilt.layers[4].get_weights()[0], dense.get_weights()[0][rows])
    np.testing.assert_array_equal(rebuilt.layers[4].get_weights()[1], dense.get_weights()[1])


def test_batch_norm_scale_weighs_which_filters_go():
    """Equal kernels: the filters whose BN scale |gamma| / sqrt(var + eps) is largest are kept."""
    model = ds_cnn()
    conv = model.get_layer("conv1")
    conv.set_weights([np.ones_like(conv.kernel.numpy()), np.zeros(16)])
    gamma = np.linspace(0.1, 1.6, 16)[::-1].copy()  # largest first
    bn = model.get_layer("bn1")
    bn.set_weights([gamma, np.zeros(16), np.zeros(16), np.ones(16)])
    rebuilt, _ = prune_filters(model, 0.5)
    np.testing.assert_allclose(rebuilt.get_layer("bn1").gamma.numpy(), gamma[:8])


def test_a_reshape_or_a_shared_layer_keeps_its_producer_whole():
    import tensorflow as tf

    L = layers()
    inputs = tf.keras.Input((8,))
    shared = L.Dense(8, name="shared")
    x = L.Reshape((4, 4))(L.Dense(16, name="to_reshape")(inputs))
    x = L.Dense(8, name="free")(L.Flatten()(x))
    y = shared(shared(L.Dense(8, name="into_shared")(inputs)))
    model = tf.keras.Model(inputs, L.Dense(2, name="out")(L.Concatenate()([x, y])))
    with pytest.raises(NotApplicable) as raised:
        prune_filters(model, 0.5)
    message = str(raised.value)
    assert "to_reshape: feeds a Reshape" in message and "shared: called more than once" in message
    assert "into_shared: feeds a layer called more than once" in message and "out: the model's output" in message


def test_a_model_with_only_an_output_layer_is_not_applicable():
    import tensorflow as tf

    inputs = tf.keras.Input((10,))
    model = tf.keras.Model(inputs, layers().Dense(3, name="only")(inputs))
    with pytest.raises(NotApplicable, match="no Conv/Dense layer's filters can be removed: only: the model's output"):
        prune_filters(model, 0.5)


def test_the_step_fine_tunes_a_smaller_model_that_converts_to_int8(tmp_path):
    from tasks.convert import convert_model
    from tasks.fine_tune import fine_tune
    from tasks.prune import PRUNE_FILTERS
    from tinyopt.ml.models import load_model, save_model
    from tinyopt.params import ConversionParams, FilterPruneParams, TaskParams, TrainParams

    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 200), ("val", 40), ("test", 40)):
        arrays[f"x_{split}"] = rng.random((count, 12, 12, 1), dtype=np.float32)
        arrays[f"y_{split}"] = rng.integers(0, 4, count)
    prepared = tmp_path / "prepared.npz"
    np.savez(prepared, input_scale=np.float64(1.0), **arrays)
    parent = ds_cnn()  # batch norm throughout: trained in the rebuilt model's fine-tune
    save_model(parent, tmp_path / "parent" / "model.keras")

    settings = FilterPruneParams(keep=0.5, fine_tune_epochs=1)
    record = fine_tune(
        PRUNE_FILTERS,
        tmp_path / "parent" / "model.keras",
        prepared,
        settings,
        TrainParams(batch_size=32),
        TaskParams(),
        SEED,
        tmp_path / "out",
    )
    child = load_model(record.model_path)
    assert record.num_params == child.count_params() < parent.count_params()
    assert "filters kept: conv1 16->8, pw 16->8" in record.notes
    # Batch norm trained in the fine-tune and its statistics re-estimated: the layers' inputs changed.
    assert "batch-norm statistics re-estimated" in record.notes
    for name in ("bn1", "bn2", "bn3"):  # sliced to the kept channels, saved trainable as given
        assert child.get_layer(name).moving_mean.shape[0] == 8 and child.get_layer(name).trainable
    converted = convert_model(
        Path(record.model_path), "int8", tmp_path / "m.tflite", prepared, ConversionParams(calibration_samples=50)
    )
    assert (converted.input_dtype, converted.output_dtype) == ("int8", "int8")


def test_the_step_refuses_a_keep_that_removes_nothing():
    from tasks.prune import PRUNE_FILTERS
    from tinyopt.params import FilterPruneParams

    with pytest.raises(NotApplicable, match="keep 1.0 removes no filter"):
        PRUNE_FILTERS.wrap(paper_cnn(), FilterPruneParams(keep=1.0), None)
