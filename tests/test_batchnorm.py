"""Batch normalization in fine-tunes: frozen by default, re-estimated when trained, collapse noted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks.fine_tune import fine_tune
from tasks.prune import PRUNE
from tinyopt.datasets.prepared import load_prepared
from tinyopt.ml.models import load_model
from tinyopt.ml.training import (
    batchnorm_layers,
    collapse_note,
    collapsed,
    compile_for_task,
    keras_score,
    reestimate_batchnorm,
    save_trained,
    set_seeds,
)
from tinyopt.params import PruneParams, TaskParams, TrainParams

TASK = TaskParams()
SEED = 5
SHAPE = (12, 12, 3)


def synthetic_split(rng, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Three classes told apart by which channel is brightest, on noisy inputs far from zero mean."""
    y = rng.integers(0, 3, count)
    x = rng.normal(2.0, 1.0, (count, *SHAPE)).astype(np.float32)
    x[np.arange(count), :, :, y] += 1.5
    return x, y


def mini_resnet():
    """Conv2D > BN > ReLU, a residual block of two such with an Add, pooling and a Dense head."""
    import tensorflow as tf

    layers = tf.keras.layers

    def block(x, name):
        x = layers.Conv2D(8, 3, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return x

    inputs = tf.keras.Input(SHAPE)
    x = layers.ReLU()(block(inputs, "stem"))
    y = layers.ReLU()(block(x, "res1"))
    y = block(y, "res2")
    x = layers.ReLU()(layers.Add()([x, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(3)(x))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", 600), ("val", 150), ("test", 150)):
        arrays[f"x_{split}"], arrays[f"y_{split}"] = synthetic_split(rng, count)
    path = tmp_path_factory.mktemp("bn-data") / "prepared.npz"
    np.savez(path, input_scale=np.float64(1.0), **arrays)
    return path


@pytest.fixture(scope="module")
def parent(prepared, tmp_path_factory):
    """A trained mini ResNet, saved with its record (model.json) as the pipeline saves a parent."""
    data = load_prepared(prepared)
    set_seeds(SEED)
    model = mini_resnet()
    compile_for_task(model, TASK, 1e-2)
    model.fit(data["x_train"], data["y_train"], epochs=6, batch_size=32, shuffle=True, verbose=0)
    reestimate_batchnorm(model, data["x_train"], 32)  # a parent with settled statistics
    record = save_trained(model, data, TASK, "train", tmp_path_factory.mktemp("bn-parent") / "model.keras")
    assert record.val_score > 0.8, record.val_score  # the task is learnable
    return record


def moving_stats(model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [layer.moving_mean.numpy(), layer.moving_variance.numpy()] for layer in batchnorm_layers(model)}


PRUNE_SETTINGS = PruneParams(target_sparsity=0.5, initial_sparsity=0.2, fine_tune_epochs=1)


def test_a_fine_tune_freezes_batch_norm_by_default(prepared, parent, tmp_path):
    record = fine_tune(
        PRUNE, Path(parent.model_path), prepared, PRUNE_SETTINGS, TrainParams(batch_size=32), TASK, SEED, tmp_path
    )
    before, after = load_model(parent.model_path), load_model(record.model_path)
    assert len(batchnorm_layers(after)) == 3
    for name, (mean, variance) in moving_stats(before).items():
        np.testing.assert_array_equal(moving_stats(after)[name][0], mean)
        np.testing.assert_array_equal(moving_stats(after)[name][1], variance)
    for layer in batchnorm_layers(before):  # gamma and beta as trained
        for given, kept in zip(layer.get_weights(), after.get_layer(layer.name).get_weights(), strict=True):
            np.testing.assert_array_equal(given, kept)
    assert all(layer.trainable for layer in batchnorm_layers(after))  # saved as the parent was
    assert record.val_score >= parent.val_score - 0.1
    assert "re-estimated" not in record.notes and "collapsed" not in record.notes


def test_trained_batch_norm_is_re_estimated_after_the_fine_tune(prepared, parent, tmp_path):
    train = TrainParams(batch_size=32, batchnorm="trained")
    record = fine_tune(PRUNE, Path(parent.model_path), prepared, PRUNE_SETTINGS, train, TASK, SEED, tmp_path)
    assert "batch-norm statistics re-estimated on 600 training examples" in record.notes
    assert record.val_score >= parent.val_score - 0.1
    changed = moving_stats(load_model(record.model_path))
    assert any(
        not np.array_equal(changed[name][0], mean)
        for name, (mean, _) in moving_stats(load_model(parent.model_path)).items()
    )


def test_a_technique_that_rebuilds_layers_trains_and_re_estimates_batch_norm(prepared, parent, tmp_path):
    """Fewer filters change what the next batch norm sees: frozen, its stale statistics collapsed the zoo's
    DS-CNN and MobileNet (0.55 and 0.26 against 0.89 and 0.85)."""
    from tasks.prune import PRUNE_FILTERS
    from tinyopt.params import FilterPruneParams

    settings = FilterPruneParams(keep=0.5, fine_tune_epochs=1)
    record = fine_tune(
        PRUNE_FILTERS, Path(parent.model_path), prepared, settings, TrainParams(batch_size=32), TASK, SEED, tmp_path
    )
    assert "batch-norm statistics re-estimated on 600 training examples" in record.notes
    assert record.num_params < load_model(parent.model_path).count_params()
    assert record.val_score >= parent.val_score - 0.1 and "collapsed" not in record.notes, record


def test_re_estimation_recovers_corrupted_statistics_and_changes_nothing_else(prepared, parent):
    data = load_prepared(prepared)
    model = load_model(parent.model_path)
    weights = {v.name: v.numpy() for v in model.trainable_variables}
    for layer in batchnorm_layers(model):
        layer.moving_mean.assign(layer.moving_mean.numpy() + 5.0)
        layer.moving_variance.assign(layer.moving_variance.numpy() * 40.0)
    corrupted = keras_score(model, data["x_val"], data["y_val"], TASK)
    assert corrupted < parent.val_score - 0.2
    assert reestimate_batchnorm(model, data["x_train"], 32) == 600
    assert keras_score(model, data["x_val"], data["y_val"], TASK) >= parent.val_score - 0.05
    for v in model.trainable_variables:
        np.testing.assert_array_equal(v.numpy(), weights[v.name])
    assert all(layer.momentum == 0.99 for layer in batchnorm_layers(model))  # put back
    # Deterministic, and the mean is that of the data: the stem's BN sees the stem convolution's outputs.
    again = load_model(parent.model_path)
    reestimate_batchnorm(again, data["x_train"], 32)
    for name, stats in moving_stats(model).items():
        np.testing.assert_allclose(moving_stats(again)[name][0], stats[0], rtol=1e-5, atol=1e-5)
    stem = model.get_layer("stem_conv")(data["x_train"][:1000]).numpy()
    np.testing.assert_allclose(
        model.get_layer("stem_bn").moving_mean.numpy(), stem.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-4
    )


def test_a_frozen_layer_is_not_re_estimated(parent, prepared):
    model = load_model(parent.model_path)
    for layer in batchnorm_layers(model):
        layer.trainable = False
    assert reestimate_batchnorm(model, load_prepared(prepared)["x_train"], 32) == 0


def test_a_collapsed_child_gets_a_note_in_its_record(prepared, parent, tmp_path):
    data = load_prepared(prepared)
    model = load_model(parent.model_path)
    for layer in batchnorm_layers(model):
        layer.moving_mean.assign(layer.moving_mean.numpy() + 5.0)
        layer.moving_variance.assign(layer.moving_variance.numpy() * 40.0)
    record = save_trained(
        model, data, TASK, "prune", tmp_path / "model.keras", notes="pruned", parent_score=parent.val_score
    )
    assert record.notes.startswith("pruned; validation accuracy ")
    assert f"against its parent's {parent.val_score:.2f}: the fine-tune collapsed" in record.notes


def test_collapse_is_judged_in_the_metric_s_direction():
    assert collapsed("accuracy", 0.87, 0.11) and not collapsed("accuracy", 0.87, 0.70)
    assert not collapsed("accuracy", 0.5, 0.95)
    assert collapsed("auc", 0.9, 0.5) and not collapsed("auc", 0.9, 0.85)
    assert collapsed("mae", 0.1, 0.5) and not collapsed("mae", 0.1, 0.15) and not collapsed("mae", 0.5, 0.1)
    assert collapse_note("accuracy", 0.874, 0.112).startswith("validation accuracy 0.11 against its parent's 0.87: ")
    assert collapse_note("accuracy", 0.874, 0.86) == ""


def test_qat_and_clustering_train_with_frozen_batch_norm(prepared, parent, tmp_path):
    from tasks.cluster import CLUSTER
    from tasks.qat import QAT
    from tinyopt.params import ClusterParams, QatParams

    train = TrainParams(batch_size=32)
    qat = fine_tune(
        QAT, Path(parent.model_path), prepared, QatParams(fine_tune_epochs=1), train, TASK, SEED, tmp_path / "q"
    )
    assert qat.val_score >= parent.val_score - 0.1 and "collapsed" not in qat.notes
    settings = ClusterParams(clusters=8, fine_tune_epochs=1)
    clustered = fine_tune(CLUSTER, Path(parent.model_path), prepared, settings, train, TASK, SEED, tmp_path / "c")
    assert clustered.val_score >= parent.val_score - 0.1
    after = moving_stats(load_model(clustered.model_path))
    for name, (mean, _) in moving_stats(load_model(parent.model_path)).items():
        np.testing.assert_array_equal(after[name][0], mean)


def test_distill_refuses_a_collapsed_teacher(prepared, parent, tmp_path):
    from tasks.distill import DISTILL
    from tinyopt.core.errors import NotApplicable
    from tinyopt.ml.models import save_model
    from tinyopt.params import DistillParams

    teacher = load_model(parent.model_path)
    for layer in batchnorm_layers(teacher):
        layer.moving_mean.assign(layer.moving_mean.numpy() + 5.0)
        layer.moving_variance.assign(layer.moving_variance.numpy() * 40.0)
    save_model(teacher, tmp_path / "teacher.keras")
    settings = DistillParams(teacher=str(tmp_path / "teacher.keras"), fine_tune_epochs=1)
    with pytest.raises(NotApplicable, match=r"the teacher's validation accuracy 0\.\d\d is far below the student's"):
        fine_tune(DISTILL, Path(parent.model_path), prepared, settings, TrainParams(), TASK, SEED, tmp_path / "out")
