"""Pruning steps: magnitude pruning with a sparsity schedule, and 2:4 structured pruning (tfmot)."""

from __future__ import annotations

from pathlib import Path

from tasks.train import TRAINING_LOCK, ModelRecord, compile_for_task, fit, record_model, set_seeds
from tinyopt.errors import NotApplicable
from tinyopt.models import load_model
from tinyopt.params import PruneParams, StructuredPruneParams, TaskParams, TrainParams
from tinyopt.steps import step_task


def _prune_and_fine_tune(
    parent: Path,
    prepared: Path,
    step: str,
    wrap,
    epochs: int,
    learning_rate: float,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
    notes: str = "",
) -> ModelRecord:
    import tensorflow_model_optimization as tfmot

    from tasks.data import load_prepared

    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        # A fresh copy of the parent: tfmot wrappers share layers with the model they wrap.
        try:
            pruned = wrap(load_model(parent))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise NotApplicable(f"tfmot cannot prune this model: {str(exc).splitlines()[0][:200]}") from None
        compile_for_task(pruned, task, learning_rate)
        epochs_run, seconds = fit(
            pruned, data, epochs, train.batch_size, callbacks=(tfmot.sparsity.keras.UpdatePruningStep(),)
        )
        stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        return record_model(
            stripped,
            data,
            task,
            step,
            out_dir / "model.keras",
            parent=parent,
            epochs_run=epochs_run,
            train_seconds=seconds,
            notes=notes,
        )


def prune_magnitude(
    parent: Path, prepared: Path, settings: PruneParams, train: TrainParams, task: TaskParams, seed: int, out_dir: Path
) -> ModelRecord:
    """Prune the smallest weights to `target_sparsity` over the fine-tuning epochs, then strip."""
    import math

    import tensorflow_model_optimization as tfmot

    from tasks.data import load_prepared

    steps_per_epoch = math.ceil(len(load_prepared(prepared)["y_train"]) / train.batch_size)
    end_step = max(1, steps_per_epoch * settings.fine_tune_epochs - 1)
    # Update the masks at least ten times over the schedule (tfmot's default, every 100 steps, would
    # never reach the target on a small training set), and last at end_step itself.
    frequency = max(1, min(100, end_step // 10))
    end_step -= end_step % frequency
    if settings.schedule == "polynomial_decay":
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            settings.initial_sparsity, settings.target_sparsity, 0, end_step, frequency=frequency
        )
    else:
        schedule = tfmot.sparsity.keras.ConstantSparsity(settings.target_sparsity, 0, frequency=frequency)

    def wrap(model):
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule)

    return _prune_and_fine_tune(
        parent, prepared, "prune", wrap, settings.fine_tune_epochs, settings.learning_rate, train, task, seed, out_dir
    )


def prune_2_4(
    parent: Path,
    prepared: Path,
    settings: StructuredPruneParams,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
) -> ModelRecord:
    """2:4 structured pruning of every layer whose weights allow it (input depth a multiple of 4)."""
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot

    probe = load_model(parent)
    eligible = [
        layer.name
        for layer in probe.layers
        if type(layer).__name__ in ("Conv2D", "Dense")
        and layer.get_weights()
        and layer.get_weights()[0].shape[-2] % 4 == 0
    ]
    skipped = [
        layer.name
        for layer in probe.layers
        if type(layer).__name__ in ("Conv2D", "Dense") and layer.name not in eligible
    ]
    if not eligible:
        raise NotApplicable("no Conv2D or Dense layer has an input depth that is a multiple of 4")

    def wrap(model):
        def clone(layer):
            if layer.name in eligible:
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, sparsity_m_by_n=(2, 4), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0)
                )
            return layer  # unchanged, weights kept (the parent copy is fresh, so sharing is safe)

        return tf.keras.models.clone_model(model, clone_function=clone)

    notes = f"2:4 on {', '.join(eligible)}" + (
        f"; left dense: {', '.join(skipped)} (input depth not a multiple of 4)" if skipped else ""
    )
    return _prune_and_fine_tune(
        parent,
        prepared,
        "prune_2_4",
        wrap,
        settings.fine_tune_epochs,
        settings.learning_rate,
        train,
        task,
        seed,
        out_dir,
        notes,
    )


prune_task = step_task(prune_magnitude)
prune_2_4_task = step_task(prune_2_4)
