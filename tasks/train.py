"""Train step: the baseline, the user's model (fine-tuned if asked) or the paper's base CNN trained from
scratch, with seeds fixed and early stopping on the validation split only."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.ml.architectures import build_blocks, describe_blocks
from tinyopt.ml.distillation import widened
from tinyopt.ml.models import check_input_shape, describe, load_model
from tinyopt.ml.training import (
    TRAINING_LOCK,
    EpochWatch,
    Fit,
    compile_for_task,
    fit_data,
    learning_rate_schedule,
    save_trained,
    set_seeds,
    train_epochs,
)
from tinyopt.orchestration.steps import step
from tinyopt.orchestration.tracking import epoch_logger
from tinyopt.params import ModelParams, TaskParams, TrainParams
from tinyopt.records.steps import StoppedTraining, TrainedModel


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


def rescaled(model, factor: float):
    """The user's model with every hidden layer's width times `factor`, freshly initialised (a UserError when
    it has no hidden layer to rescale)."""
    try:
        return widened(model, factor, f"by {factor:g}", "leave it at 1")
    except NotApplicable as exc:
        raise UserError(f"model.width_multiplier: {exc}") from None


def check_model_fits_data(model, data: dict) -> None:
    """A user's model must take the data's inputs; say which shapes disagree if it does not."""
    check_input_shape(describe(model)["inputs"], data["x_train"].shape[1:])


def model_to_train(model_params: ModelParams, train_params: TrainParams, task: TaskParams, data: dict):
    """The baseline before its training, its epochs to train and a note of what it is: the user's model
    (model.path; rescaled and re-initialised for a width multiplier), or one of tinyopt's own, initialised."""
    if model_params.path:
        model = load_model(model_params.path)
        check_model_fits_data(model, data)
        epochs, notes = model_params.fine_tune_epochs, f"your model {model_params.path}"
        if model_params.width_multiplier != 1:  # a wider or narrower copy of it, trained from scratch
            model = rescaled(model, model_params.width_multiplier)
            epochs = train_params.epochs
            notes += f", every hidden layer's width x {model_params.width_multiplier:g}, trained from scratch"
        return model, epochs, notes
    if task.kind != "classification":
        raise UserError(
            f"tinyopt's own architectures are classifiers; for a {task.kind} task give your model (model.path)"
        )
    num_classes = int(max(data["y_train"].max(), data["y_test"].max())) + 1
    if model_params.architecture == "blocks":
        model = build_blocks(data["x_train"].shape[1:], num_classes, model_params)
        return model, train_params.epochs, f"blocks {describe_blocks(model_params)}"
    return build_paper_cnn(data["x_train"].shape[1:], num_classes, model_params), train_params.epochs, ""


def untrained_model(prepared: Path, model_params: ModelParams, task: TaskParams, seed: int = 0):
    """The model as its training with `seed` would start, initialised and untrained: what a search measures an
    architecture by before it trains it (bytes and instructions follow its shapes, barely its weights)."""
    from tinyopt.datasets.prepared import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:  # building a model draws initial weights from the seeded generators a training uses
        set_seeds(seed)
        model, _, _ = model_to_train(model_params, TrainParams(), task, data)
    return model


@step("train")
def train_baseline(
    prepared: Path,
    model_params: ModelParams,
    train_params: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
    curves_to: tuple[str, ...] = (),
    stop_early: EpochWatch | None = None,
) -> TrainedModel | StoppedTraining:
    """The baseline, saved as out_dir/model.keras with its figures in model.json: the user's model
    (model.path; fine-tuned first if asked), or the paper's CNN trained from scratch. Each epoch's
    figures go live to the MLflow runs `curves_to` (as `train.loss`, ...). `stop_early` sees them too
    (a search's pruner): the reason it returns ends the training there, with nothing saved."""
    from tinyopt.datasets.prepared import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        model, epochs, notes = model_to_train(model_params, train_params, task, data)
        fit = Fit(0, 0.0)
        if epochs:
            compile_for_task(model, task, train_params.learning_rate)
            live, stopped = epoch_logger(curves_to, "train"), []

            def on_epoch(epoch: int, figures: dict[str, float]) -> None:
                if live:
                    live(epoch, figures)
                if stop_early and (reason := stop_early(epoch, figures)):
                    stopped.append(reason)
                    model.stop_training = True  # Keras ends the fit after this epoch

            fit = train_epochs(
                model,
                fit_data(task, data, model),
                epochs,
                train_params.batch_size,
                train_params.early_stopping_patience,
                callbacks=learning_rate_schedule(train_params),
                on_epoch=on_epoch,
            )
            if stopped:
                return StoppedTraining(reason=stopped[0], epochs_run=fit.epochs_run)
        return save_trained(
            model,
            data,
            task,
            "train",
            out_dir / "model.keras",
            fit=fit,
            notes=notes,
        )
