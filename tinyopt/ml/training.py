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
from tinyopt.ml.metrics import score
from tinyopt.ml.models import save_model, weight_stats
from tinyopt.params import TaskParams
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
    """How a model's outputs are read: 'values' (regression), 'binary' (anomaly, or one output: a logit
    or a sigmoid), 'classes' (several outputs: logits or a softmax)."""
    if task.kind == "regression":
        return "values"
    return "binary" if task.kind == "anomaly" or outputs == 1 else "classes"


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
        if kind == "values":
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
    return score(task.score_metric, y, model.predict(x, batch_size=1024, verbose=0))


EpochSink = Callable[[int, dict[str, float]], None]  # (epoch, Keras's logs): where a fit's curves go live


@dataclass(frozen=True)
class Fit:
    """What a fit did: its epochs, its seconds, and its per-epoch curves (loss, the task's metric, val_*)."""

    epochs_run: int
    seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)


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
    curves = {key: [round(float(v), 6) for v in values] for key, values in history.history.items()}
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
) -> TrainedModel:
    """Score, save (atomically) and describe a model; `stats_model` is the one whose weights count
    (e.g. the stripped model, when `model` still carries training wrappers); `also`: other files the
    step wrote (a teacher), checked with the model when the step's result is reused; `curves`: other
    per-epoch curves the step made (a teacher's), besides the fit's."""
    files = save_model(model, out_path)
    stats = weight_stats(stats_model or model)
    record = dict(
        step=step,
        model_path=str(out_path),
        parent_path=str(parent) if parent else None,
        epochs_run=fit.epochs_run,
        train_seconds=fit.seconds,
        history={**fit.history, **(curves or {})},
        metric=task.score_metric,
        val_score=round(keras_score(model, data["x_val"], data["y_val"], task), 6),
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
        return Objective(data=data)
