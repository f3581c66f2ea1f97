"""Train step: the paper's base CNN (or later, a user's model), with seeds fixed and early stopping on
the validation split only."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tinyopt.files import atomic_path
from tinyopt.params import ModelParams, TrainParams
from tinyopt.steps import StepRecord, outputs_of, step_task


class TrainRecord(StepRecord):
    model_path: str
    epochs_run: int
    train_seconds: float
    val_accuracy: float
    keras_test_accuracy: float
    num_params: int


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


def fit(model, data: dict, params: TrainParams) -> int:
    """Train on the train split, stopping early on the validation split; returns epochs run."""
    import tensorflow as tf

    callbacks = []
    if params.early_stopping_patience:
        callbacks.append(
            tf.keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=params.early_stopping_patience, restore_best_weights=True
            )
        )
    history = model.fit(
        data["x_train"], data["y_train"],
        validation_data=(data["x_val"], data["y_val"]),
        epochs=params.epochs, batch_size=params.batch_size,
        shuffle=True, callbacks=callbacks, verbose=0,
    )  # fmt: skip
    return len(history.history["loss"])


def train_baseline(
    prepared: Path, model_params: ModelParams, train_params: TrainParams, seed: int, out_dir: Path
) -> TrainRecord:
    """Train the base model and save it as out_dir/model.keras, with its figures in metrics.json."""
    from tasks.data import load_prepared

    data = load_prepared(prepared)
    set_seeds(seed)
    num_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
    model = build_paper_cnn(data["x_train"].shape[1:], num_classes, model_params)
    compile_for_classification(model, train_params.learning_rate)
    started = time.perf_counter()
    epochs_run = fit(model, data, train_params)
    train_seconds = time.perf_counter() - started
    _, val_accuracy = model.evaluate(data["x_val"], data["y_val"], verbose=0)
    _, test_accuracy = model.evaluate(data["x_test"], data["y_test"], verbose=0)

    model_path = out_dir / "model.keras"
    with atomic_path(model_path) as tmp:
        model.save(tmp)
    record = dict(
        model_path=str(model_path),
        epochs_run=epochs_run,
        train_seconds=round(train_seconds, 2),
        val_accuracy=round(float(val_accuracy), 6),
        keras_test_accuracy=round(float(test_accuracy), 6),
        num_params=int(model.count_params()),
    )
    metrics_path = out_dir / "train.json"
    with atomic_path(metrics_path) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return TrainRecord(**record, outputs=outputs_of(model_path, metrics_path))


train_task = step_task(train_baseline)
