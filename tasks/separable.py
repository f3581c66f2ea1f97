"""Operations optimization: rebuild the model with depthwise-separable convolutions in place of
standard Conv2D layers, and retrain it from scratch (the paper's "operations optimization")."""

from __future__ import annotations

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.training import FineTuning
from tinyopt.params import SeparableParams, TrainParams


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


class Separable(FineTuning):
    """Each Conv2D replaced by a SeparableConv2D, all layers retrained from scratch (the training
    settings' epochs, learning rate and early stopping, unless `separable.epochs` says otherwise)."""

    token = "separable"

    def wrap(self, model, settings: SeparableParams, checked):
        rebuilt, replaced = to_separable(model)
        if not replaced:
            raise NotApplicable("the model has no Conv2D layer to replace")
        notes = (
            f"replaced {', '.join(replaced)} by SeparableConv2D and retrained all layers from scratch; "
            f"parameters {model.count_params():,} -> {rebuilt.count_params():,}"
        )
        return rebuilt, notes

    def schedule(self, settings: SeparableParams, train: TrainParams) -> tuple[int, float, int]:
        return settings.epochs or train.epochs, train.learning_rate, train.early_stopping_patience


SEPARABLE = Separable()
