"""Train step: the paper's base CNN, with seeds fixed and early stopping on the validation split only.

Also the shared pieces every technique uses to fine-tune a model and record what it produced.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np

from tinyopt.errors import UserError
from tinyopt.files import atomic_path
from tinyopt.metrics import score
from tinyopt.models import check_input_shape, describe, load_model, save_model, weight_stats
from tinyopt.params import ModelParams, TaskParams, TrainParams
from tinyopt.steps import StepRecord, outputs_of, step_task

# Keras seeds and graph state are process-wide: techniques running in parallel threads train one at a
# time (conversions and evaluations still overlap with them), which keeps every chain reproducible.
TRAINING_LOCK = threading.Lock()


class ModelRecord(StepRecord):
    """A trained or optimized Keras model: one node of the plan's tree."""

    step: str
    model_path: str
    parent_path: str | None = None
    epochs_run: int = 0
    train_seconds: float = 0.0
    metric: str
    val_score: float  # the task's metric on the validation split (Keras model)
    keras_score: float  # the same on the test split
    num_params: int
    sparsity: float
    unique_weights: dict[str, int]
    notes: str = ""


def set_seeds(seed: int) -> None:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)  # Python, NumPy and TensorFlow at once
    tf.config.experimental.enable_op_determinism()


def build_paper_cnn(input_shape: tuple[int, ...], num_classes: int, params: ModelParams):
    """Reshape -> Conv2D(12, 3x3, relu) -> MaxPool(2) -> Flatten -> Dense(10), as in the paper."""
    import tensorflow as tf

    height, width = input_shape[0], input_shape[1]
    channels = input_shape[2] if len(input_shape) > 2 else 1
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=tuple(input_shape)),
            tf.keras.layers.Reshape((height, width, channels)),
            tf.keras.layers.Conv2D(params.conv_filters, params.kernel_size, activation="relu"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(num_classes),
        ],
        name="paper_cnn",
    )


def _final_activation(model) -> str:
    config = model.layers[-1].get_config() if model.layers else {}
    inner = config.get("layer", {}).get("config", config)  # tfmot wrappers keep the layer's config inside
    return str(inner.get("activation", "linear"))


def compile_for_task(model, task: TaskParams, learning_rate: float) -> None:
    """Adam with the task's loss; outputs are logits unless the last layer applies softmax/sigmoid."""
    import tensorflow as tf

    losses = tf.keras.losses
    activation = _final_activation(model)
    outputs = int(np.prod(model.output_shape[1:]))
    if task.kind == "regression":
        loss = losses.MeanSquaredError()
    elif task.kind == "anomaly" or outputs == 1:
        loss = losses.BinaryCrossentropy(from_logits=activation != "sigmoid")
    else:
        loss = losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate), loss=loss)


def keras_score(model, x: np.ndarray, y: np.ndarray, task: TaskParams) -> float:
    return score(task.score_metric, y, model.predict(x, batch_size=1024, verbose=0))


def fit(model, data: dict, epochs: int, batch_size: int, patience: int = 0, callbacks: tuple = ()) -> tuple[int, float]:
    """Train on the train split (early stopping watches the validation split only).
    Returns (epochs run, seconds)."""
    import tensorflow as tf

    callbacks = list(callbacks)
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
    return len(history.history["loss"]), round(time.perf_counter() - started, 2)


def record_model(
    model,
    data: dict,
    task: TaskParams,
    step: str,
    out_path: Path,
    *,
    parent: Path | None = None,
    epochs_run: int = 0,
    train_seconds: float = 0.0,
    notes: str = "",
    stats_model=None,
) -> ModelRecord:
    """Score, save (atomically) and describe a model; `stats_model` is the one whose weights count
    (e.g. the stripped model, when `model` still carries training wrappers)."""
    files = save_model(model, out_path)
    stats = weight_stats(stats_model or model)
    record = dict(
        step=step,
        model_path=str(out_path),
        parent_path=str(parent) if parent else None,
        epochs_run=epochs_run,
        train_seconds=train_seconds,
        metric=task.score_metric,
        val_score=round(keras_score(model, data["x_val"], data["y_val"], task), 6),
        keras_score=round(keras_score(model, data["x_test"], data["y_test"], task), 6),
        notes=notes,
        **stats,
    )
    summary_path = out_path.parent / "model.json"
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return ModelRecord(**record, outputs=outputs_of(*files, summary_path))


def check_model_fits_data(model, data: dict) -> None:
    """A user's model must take the data's inputs; say which shapes disagree if it does not."""
    check_input_shape(describe(model)["inputs"], data["x_train"].shape[1:])


def train_baseline(
    prepared: Path, model_params: ModelParams, train_params: TrainParams, task: TaskParams, seed: int, out_dir: Path
) -> ModelRecord:
    """The baseline, saved as out_dir/model.keras with its figures in model.json: the user's model
    (model.path; fine-tuned first if asked), or the paper's CNN trained from scratch."""
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        if model_params.path:
            model = load_model(model_params.path)
            check_model_fits_data(model, data)
            epochs, notes = model_params.fine_tune_epochs, f"your model {model_params.path}"
        else:
            if task.kind != "classification":
                raise UserError(
                    f"the built-in paper-cnn is a classifier; for a {task.kind} task give your model (model.path)"
                )
            num_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
            model = build_paper_cnn(data["x_train"].shape[1:], num_classes, model_params)
            epochs, notes = train_params.epochs, ""
        epochs_run, seconds = 0, 0.0
        if epochs:
            compile_for_task(model, task, train_params.learning_rate)
            epochs_run, seconds = fit(
                model, data, epochs, train_params.batch_size, train_params.early_stopping_patience
            )
        return record_model(
            model,
            data,
            task,
            "train",
            out_dir / "model.keras",
            epochs_run=epochs_run,
            train_seconds=seconds,
            notes=notes,
        )


train_task = step_task(train_baseline)
