"""Training a Keras model, shared by the train step and every fine-tuning technique: seeds, the
training lock, the task's loss, the epochs on the train split, and the record of what came out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tinyopt.core.files import atomic_path
from tinyopt.ml.metrics import HIGHER_IS_BETTER, better, drop, score
from tinyopt.ml.models import save_model, weight_stats
from tinyopt.params import TaskParams, TrainParams
from tinyopt.records.steps import TrainedModel, outputs_of

# Keras seeds and graph state are process-wide: techniques running in parallel threads train one at a
# time (conversions and evaluations still overlap with them), which keeps every chain reproducible.
TRAINING_LOCK = threading.Lock()

# Batches per call into the compiled train step: the paper's CNN is so small that Python's per-batch
# overhead dominated its epochs. Same batches and updates in the same order (the weights come out the same),
# about 2x faster epochs. Batch-level callbacks fire once per call, so a fit with one (pruning's
# UpdatePruningStep counts batches) runs a batch per call.
STEPS_PER_EXECUTION = 32


def set_seeds(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow at once
    tf.config.experimental.enable_op_determinism()


def final_activation(model) -> str:
    config = model.layers[-1].get_config() if model.layers else {}
    inner = config.get("layer", {}).get("config", config)  # tfmot wrappers keep the layer's config inside
    return str(inner.get("activation", "linear"))


def output_kind(task: TaskParams, outputs: int) -> str:
    """How a model's outputs are read: 'values' (regression), 'reconstruction' (an anomaly model that
    reconstructs its input: preflight checks the shapes), 'binary' (anomaly, or one output: a logit or a
    sigmoid), 'classes' (several outputs: logits or a softmax)."""
    if task.kind == "regression":
        return "values"
    if task.kind == "anomaly" and outputs > 2:
        return "reconstruction"
    return "binary" if task.kind == "anomaly" or outputs == 1 else "classes"


def fit_data(task: TaskParams, data: dict, model) -> dict:
    """What a model is fitted on: the splits as they are, or for a reconstruction model the normal
    (label 0) examples of the train and validation splits with themselves as targets (anomalies in them
    only count in the validation score)."""
    if output_kind(task, int(np.prod(model.output_shape[1:]))) != "reconstruction":
        return data
    normal_train, normal_val = data["x_train"][data["y_train"] == 0], data["x_val"][data["y_val"] == 0]
    return {**data, "x_train": normal_train, "y_train": normal_train, "x_val": normal_val, "y_val": normal_val}


def compile_for_task(
    model, task: TaskParams, learning_rate: float, loss=None, steps_per_execution: int = STEPS_PER_EXECUTION
) -> None:
    """Adam with the task's loss (or `loss`); outputs are logits unless the last layer applies softmax/sigmoid.
    With the task's own loss, Keras also tracks the task's metric per epoch (its curve in MLflow); a custom
    loss (distillation) fits other targets, so only the loss is tracked then."""
    import tensorflow as tf

    metrics = []
    if loss is None:
        activation, losses = final_activation(model), tf.keras.losses
        kind = output_kind(task, int(np.prod(model.output_shape[1:])))
        if kind == "reconstruction":  # the task's AUC needs the labels: only the loss is tracked
            loss = losses.MeanSquaredError()
        elif kind == "values":
            loss, metrics = losses.MeanSquaredError(), [tf.keras.metrics.MeanAbsoluteError(name="mae")]
        elif kind == "binary":
            logits = activation != "sigmoid"
            loss = losses.BinaryCrossentropy(from_logits=logits)
            if task.score_metric == "auc":
                metrics = [tf.keras.metrics.AUC(from_logits=logits, name="auc")]
            else:
                metrics = [tf.keras.metrics.BinaryAccuracy(threshold=0.0 if logits else 0.5, name="accuracy")]
        else:
            loss = losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
            metrics = [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=loss,
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )


def keras_score(model, x: np.ndarray, y: np.ndarray, task: TaskParams) -> float:
    return score(task.score_metric, y, model.predict(x, batch_size=1024, verbose=0), x)


EpochSink = Callable[[int, dict[str, float]], None]  # (epoch, Keras's logs): where a fit's curves go live
EpochWatch = Callable[[int, dict[str, float]], str | None]  # (epoch, Keras's logs): a reason to stop there, or None


@dataclass(frozen=True)
class Fit:
    """What a fit did: its epochs, its seconds, and its per-epoch curves (loss, the task's metric, val_*)."""

    epochs_run: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


def learning_rate_schedule(train: TrainParams) -> tuple:
    """The callbacks that change the baseline's learning rate as it trains: none (constant), or a division by 5
    whenever validation loss stalls for `lr_patience` epochs, down to 1/125 of the start (plateau)."""
    if train.lr_schedule == "constant":
        return ()
    import tensorflow as tf

    return (
        tf.keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.2, patience=train.lr_patience, min_lr=train.learning_rate / 125, verbose=0
        ),
    )


def train_epochs(
    model,
    data: dict,
    epochs: int,
    batch_size: int,
    patience: int = 0,
    callbacks: tuple = (),
    on_epoch: EpochSink | None = None,
) -> Fit:
    """Train on the train split (early stopping watches the validation split only); `on_epoch` sees each
    epoch's figures as it ends (the live MLflow curves)."""
    import tensorflow as tf

    callbacks = list(callbacks)
    if on_epoch is not None:
        callbacks.append(
            tf.keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch(epoch, {k: float(v) for k, v in (logs or {}).items()})
            )
        )
    if patience:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
        )
    started = time.perf_counter()
    history = model.fit(
        data["x_train"],
        data["y_train"],
        validation_data=(data["x_val"], data["y_val"]),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        callbacks=callbacks,
        verbose=0,
    )
    # six significant digits: a learning rate of 1e-7 (a fine-tune's, divided on a plateau) stays on the curve
    curves = {key: [float(f"{float(v):.6g}") for v in values] for key, values in history.history.items()}
    return Fit(len(curves["loss"]), round(time.perf_counter() - started, 2), curves)


def save_trained(
    model,
    data: dict,
    task: TaskParams,
    step: str,
    out_path: Path,
    *,
    parent: Path | None = None,
    fit: Fit = Fit(0, 0.0),
    notes: str = "",
    stats_model=None,
    also: tuple[Path, ...] = (),
    curves: dict[str, list[float]] | None = None,
    parent_score: float | None = None,
) -> TrainedModel:
    """Score, save (atomically) and describe a model; `stats_model` is the one whose weights count
    (e.g. the stripped model, when `model` still carries training wrappers); `also`: other files the
    step wrote (a teacher), checked with the model when the step's result is reused; `curves`: other
    per-epoch curves the step made (a teacher's), besides the fit's; `parent_score`: the parent's
    validation score, to note a collapse against it."""
    files = save_model(model, out_path)
    stats = weight_stats(stats_model or model)
    val_score = round(keras_score(model, data["x_val"], data["y_val"], task), 6)
    if parent_score is not None:
        notes = "; ".join(filter(None, [notes, collapse_note(task.score_metric, parent_score, val_score)]))
    record = dict(
        step=step,
        model_path=str(out_path),
        parent_path=str(parent) if parent else None,
        epochs_run=fit.epochs_run,
        train_seconds=fit.seconds,
        history={**fit.history, **(curves or {})},
        metric=task.score_metric,
        val_score=val_score,
        keras_score=round(keras_score(model, data["x_test"], data["y_test"], task), 6),
        notes=notes,
        **stats,
    )
    summary_path = out_path.parent / "model.json"
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return TrainedModel(**record, outputs=outputs_of(*files, *also, summary_path))


@dataclass(frozen=True)
class Objective:
    """What a fine-tune fits: the data (labels, or more), its loss (None: the task's), and a note and the
    files of what else it made to get there (a teacher)."""

    data: dict
    loss: Any = None
    notes: str = ""
    files: tuple[Path, ...] = ()
    curves: dict[str, list[float]] = field(default_factory=dict)  # what else was fitted on the way (a teacher)


class FineTuning:
    """How one technique fine-tunes a model, named by its plan token: how to wrap the parent model for training,
    and how to strip the training wrappers after. tasks.fine_tune runs the rest, the same for every technique."""

    token: str  # its name in the plan, the Prefect UI and the record
    verb: str | None = None  # "prune": a tfmot error while wrapping means "tfmot cannot prune this model"
    saved_as = "model.keras"
    # Rebuilds layers (fewer filters, a separable pair): the batch norms after them see other inputs now, so
    # they are trained and re-estimated whatever train.batchnorm says (frozen, stale statistics collapse it).
    restructures = False

    def check(self, parent: Path, prepared: Path, settings, train) -> Any:
        """Before the training lock: what wrap needs (raise NotApplicable when it cannot apply)."""
        return None

    def wrap(self, model, settings, checked: Any) -> tuple[Any, str]:
        """The model ready to fine-tune, and a note on what was done (raise NotApplicable if nothing)."""
        raise NotImplementedError

    def strip(self, model):
        """The trained model without its training wrappers."""
        return model

    def schedule(self, settings, train) -> tuple[int, float, int]:
        """(epochs, learning rate, early-stopping patience): fine-tuning settings by default."""
        return settings.fine_tune_epochs, settings.learning_rate, 0

    def callbacks(self) -> tuple:
        return ()

    def objective(self, model, data: dict, settings, train, task: TaskParams, out_dir: Path) -> Objective:
        """What to fit: the task's labels and loss by default (distill adds a teacher's outputs)."""
        return Objective(data=fit_data(task, data, model))


# A child whose validation score falls this far below its parent's has collapsed (accuracy, AUC: points;
# MAE: a child error more than this many times the parent's).
COLLAPSE_DROP = 0.2
COLLAPSE_RATIO = 2.0


def collapsed(metric: str, parent: float, child: float) -> bool:
    """True when `child` is far worse than `parent` on `metric` (not a small fine-tuning loss)."""
    if not better(metric, parent, child):
        return False
    if HIGHER_IS_BETTER[metric]:
        return drop(metric, parent, child) > COLLAPSE_DROP
    return child > COLLAPSE_RATIO * parent


def collapse_note(metric: str, parent: float, child: float) -> str:
    """A note for a record whose validation score collapsed against its parent's; "" if it did not."""
    if not collapsed(metric, parent, child):
        return ""
    return (
        f"validation {metric} {child:.2f} against its parent's {parent:.2f}: the fine-tune collapsed "
        "(check batch-norm statistics, the learning rate and the epochs)"
    )


def recorded_val_score(model_path: Path, metric: str) -> float | None:
    """The validation score in the record (model.json) beside a saved model, if it has one for `metric`."""
    summary = Path(model_path).parent / "model.json"
    try:
        record = json.loads(summary.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("metric") != metric:
        return None
    value = record.get("val_score")
    return float(value) if isinstance(value, (int, float)) else None


# Batch normalization. A short fine-tune on a small dataset leaves BN moving statistics behind the
# weights (the inference-mode model can score at chance), so by default a pretrained model's BN layers
# are frozen (inference mode, gamma and beta as trained); when they are trained, their moving statistics
# are re-estimated on training data afterwards.
BN_EXAMPLES = 1000  # training examples the re-estimated statistics are averaged over


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer in the model, inside nested models and tfmot wrappers, in order."""
    import tensorflow as tf

    found, seen = [], set()

    def visit(layer) -> None:
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            found.append(layer)
        for inner in getattr(layer, "layers", None) or ():
            visit(inner)
        inner = getattr(layer, "layer", None)  # a wrapper (prune, cluster, quantize)
        if isinstance(inner, tf.keras.layers.Layer):
            visit(inner)

    visit(model)
    return found


def freeze_batchnorm(model) -> dict[str, bool]:
    """Run every BN layer in inference mode with its gamma and beta fixed (tf_keras: trainable=False);
    returns each layer's trainable flag before, by name, for `restore_batchnorm`. Before compiling."""
    layers = batchnorm_layers(model)
    before = {layer.name: layer.trainable for layer in layers}
    for layer in layers:
        layer.trainable = False
    return before


def restore_batchnorm(model, before: dict[str, bool]) -> None:
    """Put back the trainable flags `freeze_batchnorm` found (on the model or its stripped copy)."""
    for layer in batchnorm_layers(model):
        if layer.name in before:
            layer.trainable = before[layer.name]


def reestimate_batchnorm(model, x: np.ndarray, batch_size: int, examples: int = BN_EXAMPLES) -> int:
    """Make every trainable BN layer's moving mean and variance the average of its batch statistics over
    the first `examples` training examples (forward passes in training mode, each batch at momentum
    seen / (seen + its size): a cumulative average weighted by batch size, deterministic). Nothing
    else changes: every other variable (a quantizer's ranges, say) is put back. Returns the examples
    used (0: no BN layer to re-estimate)."""
    layers = [layer for layer in batchnorm_layers(model) if layer.trainable]
    if not layers or len(x) == 0:
        return 0
    x = x[:examples]
    batch = max(1, min(batch_size, len(x)))
    moving = {id(v) for layer in layers for v in (layer.moving_mean, layer.moving_variance)}
    others = [(v, v.numpy()) for v in model.variables if id(v) not in moving]
    momenta = [layer.momentum for layer in layers]
    try:
        for start in range(0, len(x), batch):
            part = x[start : start + batch]
            for layer in layers:
                layer.momentum = start / (start + len(part))
            model(part, training=True)  # eager: each call reads the momentum
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        for variable, value in others:
            variable.assign(value)
    return len(x)
