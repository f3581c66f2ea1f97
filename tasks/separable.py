"""Operations optimization: rebuild the model with depthwise-separable convolutions in place of
standard Conv2D layers, and retrain it from scratch (the paper's "operations optimization")."""

from __future__ import annotations

from pathlib import Path

from tasks.train import TRAINING_LOCK, ModelRecord, compile_for_task, fit, record_model, set_seeds
from tinyopt.errors import NotApplicable
from tinyopt.models import load_model
from tinyopt.params import SeparableParams, TaskParams, TrainParams
from tinyopt.steps import step_task


def to_separable(model):
    """The same architecture with each Conv2D replaced by a SeparableConv2D of the same shape, freshly
    initialised (its weights cannot be carried over)."""
    import tensorflow as tf

    replaced = []

    def clone(layer):
        if type(layer).__name__ == "Conv2D":
            replaced.append(layer.name)
            config = layer.get_config()
            return tf.keras.layers.SeparableConv2D(
                filters=config["filters"],
                kernel_size=config["kernel_size"],
                strides=config["strides"],
                padding=config["padding"],
                dilation_rate=config["dilation_rate"],
                activation=config["activation"],
                use_bias=config["use_bias"],
                name=f"{layer.name}_separable",
            )
        return layer.__class__.from_config(layer.get_config())

    rebuilt = tf.keras.models.clone_model(model, clone_function=clone)
    return rebuilt, replaced


def make_separable(
    parent: Path,
    prepared: Path,
    settings: SeparableParams,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
) -> ModelRecord:
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        original = load_model(parent)
        model, replaced = to_separable(original)
        if not replaced:
            raise NotApplicable("the model has no Conv2D layer to replace")
        compile_for_task(model, task, train.learning_rate)
        epochs_run, seconds = fit(
            model, data, settings.epochs or train.epochs, train.batch_size, train.early_stopping_patience
        )
        notes = (
            f"replaced {', '.join(replaced)} by SeparableConv2D and retrained all layers from scratch; "
            f"parameters {original.count_params():,} -> {model.count_params():,}"
        )
        return record_model(
            model,
            data,
            task,
            "separable",
            out_dir / "model.keras",
            parent=parent,
            epochs_run=epochs_run,
            train_seconds=seconds,
            notes=notes,
        )


separable_task = step_task(make_separable)
