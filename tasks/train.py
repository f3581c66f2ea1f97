"""Train step: the paper's base CNN, with seeds fixed and early stopping on the validation split only.

Also the shared pieces every technique uses to fine-tune a model and record what it produced.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Optional

from tinyopt.files import atomic_path
from tinyopt.models import save_model, weight_stats
from tinyopt.params import ModelParams, TrainParams
from tinyopt.steps import StepRecord, outputs_of, step_task

# Keras seeds and graph state are process-wide: techniques running in parallel threads train one at a
# time (conversions and evaluations still overlap with them), which keeps every chain reproducible.
TRAINING_LOCK = threading.Lock()


class ModelRecord(StepRecord):
    """A trained or optimized Keras model: one node of the plan's tree."""

    step: str
    model_path: str
    parent_path: Optional[str] = None
    epochs_run: int = 0
    train_seconds: float = 0.0
    val_accuracy: float
    keras_test_accuracy: float
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


def compile_for_classification(model, learning_rate: float) -> None:
    import tensorflow as tf

    model.compile(
        optimizer=tf.keras.optimizers.Adam(learning_rate),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def fit(model, data: dict, epochs: int, batch_size: int, patience: int = 0, callbacks: tuple = ()) -> tuple[int, float]:
    """Train on the train split (early stopping watches the validation split only).
    Returns (epochs run, seconds)."""
    import tensorflow as tf

    callbacks = list(callbacks)
    if patience:
        callbacks.append(tf.keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True))
    started = time.perf_counter()
    history = model.fit(
        data["x_train"], data["y_train"], validation_data=(data["x_val"], data["y_val"]),
        epochs=epochs, batch_size=batch_size, shuffle=True, callbacks=callbacks, verbose=0,
    )  # fmt: skip
    return len(history.history["loss"]), round(time.perf_counter() - started, 2)


def record_model(
    model, data: dict, step: str, out_path: Path, *, parent: Optional[Path] = None, epochs_run: int = 0,
    train_seconds: float = 0.0, notes: str = "", stats_model=None,
) -> ModelRecord:  # fmt: skip
    """Evaluate, save (atomically) and describe a model; `stats_model` is the one whose weights count
    (e.g. the stripped model, when `model` still carries training wrappers)."""
    compile_for_classification(model, 1e-3)  # only for evaluate(); the optimizer is not used
    _, val_accuracy = model.evaluate(data["x_val"], data["y_val"], verbose=0)
    _, test_accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)
    files = save_model(model, out_path)
    stats = weight_stats(stats_model or model)
    record = dict(
        step=step, model_path=str(out_path), parent_path=str(parent) if parent else None,
        epochs_run=epochs_run, train_seconds=train_seconds, val_accuracy=round(float(val_accuracy), 6),
        keras_test_accuracy=round(float(test_accuracy), 6), notes=notes, **stats,
    )  # fmt: skip
    summary_path = out_path.parent / "model.json"
    with atomic_path(summary_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return ModelRecord(**record, outputs=outputs_of(*files, summary_path))


def train_baseline(
    prepared: Path, model_params: ModelParams, train_params: TrainParams, seed: int, out_dir: Path
) -> ModelRecord:
    """Train the base model and save it as out_dir/model.keras, with its figures in model.json."""
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        num_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
        model = build_paper_cnn(data["x_train"].shape[1:], num_classes, model_params)
        compile_for_classification(model, train_params.learning_rate)
        epochs_run, seconds = fit(
            model, data, train_params.epochs, train_params.batch_size, train_params.early_stopping_patience
        )
        return record_model(model, data, "train", out_dir / "model.keras", epochs_run=epochs_run, train_seconds=seconds)


train_task = step_task(train_baseline)
