"""Knowledge distillation (Hinton et al., 2015): a student learns from the labels and from a teacher's
outputs softened by a temperature. The teacher's outputs ride beside the labels in the targets Keras
fits on, so they are shuffled with them and the fit is the one every technique uses."""

from __future__ import annotations

import functools
import math

import numpy as np

from tinyopt.core.errors import NotApplicable

# The output layer keeps its width (the task's classes or targets); every other layer that has a width widens.
WIDTH_KEYS = ("filters", "units")
SETTINGS = ("kind", "label_columns", "temperature", "label_weight", "from_logits")


def as_logits(outputs: np.ndarray, activation: str, kind: str) -> np.ndarray:
    """A model's outputs as logits (a softmax or sigmoid layer's probabilities taken back), float32."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if kind == "classes" and activation == "softmax":
        outputs = np.log(np.clip(outputs, 1e-12, 1.0))
    elif kind == "binary" and activation == "sigmoid":
        p = np.clip(outputs, 1e-7, 1 - 1e-7)
        outputs = np.log(p / (1 - p))
    return outputs.reshape(len(outputs), -1).astype(np.float32)


def with_teacher(labels: np.ndarray, teacher_logits: np.ndarray) -> np.ndarray:
    """The targets a student fits on: the labels' columns, then the teacher's."""
    return np.concatenate([labels.reshape(len(labels), -1).astype(np.float32), teacher_logits], axis=1)


def distillation_loss(kind: str, label_columns: int, temperature: float, label_weight: float, from_logits: bool):
    """label_weight x the task's loss on the labels + (1 - label_weight) x T^2 x the KL divergence from
    the teacher's softened outputs to the student's (for regression: the squared error to the teacher)."""
    return _loss_class()(
        kind=kind,
        label_columns=label_columns,
        temperature=temperature,
        label_weight=label_weight,
        from_logits=from_logits,
        name="distillation",
    )


@functools.cache  # Keras registers a serializable class once per process
def _loss_class():
    import tensorflow as tf

    @tf.keras.utils.register_keras_serializable("tinyopt")
    class DistillationLoss(tf.keras.losses.Loss):
        def __init__(self, **config):
            self.settings = {k: config.pop(k) for k in SETTINGS}
            super().__init__(**config)

        def call(self, y_true, y_pred):
            s = self.settings
            labels, teacher = y_true[:, : s["label_columns"]], y_true[:, s["label_columns"] :]
            y_pred = tf.reshape(tf.cast(y_pred, tf.float32), [tf.shape(y_pred)[0], -1])
            weight, t = s["label_weight"], s["temperature"]
            if s["kind"] == "values":
                hard = tf.reduce_mean(tf.square(labels - y_pred), axis=-1)
                soft = tf.reduce_mean(tf.square(teacher - y_pred), axis=-1)
                return weight * hard + (1 - weight) * soft
            if s["kind"] == "binary":
                logits = y_pred if s["from_logits"] else _logit(y_pred)
                hard = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)[:, 0]
                p = tf.sigmoid(teacher / t)
                soft = tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=logits / t)[:, 0]
                soft -= tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=teacher / t)[:, 0]  # KL, not CE
                return weight * hard + (1 - weight) * t * t * soft
            logits = y_pred if s["from_logits"] else tf.math.log(tf.clip_by_value(y_pred, 1e-12, 1.0))
            hard = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(labels[:, 0], tf.int32), logits=logits)
            teacher_log_p = tf.nn.log_softmax(teacher / t)
            soft = tf.reduce_sum(tf.exp(teacher_log_p) * (teacher_log_p - tf.nn.log_softmax(logits / t)), axis=-1)
            return weight * hard + (1 - weight) * t * t * soft

        def get_config(self):
            return {**super().get_config(), **self.settings}

    return DistillationLoss


def _logit(p):
    import tensorflow as tf

    p = tf.clip_by_value(p, 1e-7, 1 - 1e-7)
    return tf.math.log(p / (1 - p))


def widened(
    model, factor: float, purpose: str = "into a teacher", instead: str = "give one with techniques.distill.teacher"
):
    """A freshly initialised copy of `model` with every layer's filters or units times `factor`, except
    the output layer's: a larger teacher of the same shape, or (search) a narrower or wider baseline.
    NotApplicable if the model cannot widen, saying `purpose` and what to do `instead`."""
    import tensorflow as tf

    outputs = {t.node.layer.name for t in model.outputs} if hasattr(model.outputs[0], "node") else set()
    outputs = outputs or {model.layers[-1].name}
    widened_layers = []

    def clone(layer):
        config = layer.get_config()
        key = next((k for k in WIDTH_KEYS if k in config), None)
        if key and layer.name not in outputs:
            config[key] = max(1, math.ceil(config[key] * factor))
            widened_layers.append(layer.name)
        return layer.__class__.from_config(config)

    try:
        teacher = tf.keras.models.clone_model(model, clone_function=clone)
    except (ValueError, TypeError) as exc:
        why = str(exc).splitlines()[0][:200]
        raise NotApplicable(f"cannot widen this model {purpose} ({why}); {instead}") from None
    if not widened_layers:
        raise NotApplicable(f"the model has no hidden layer with filters or units to widen {purpose}")
    return teacher
