"""Pruning: magnitude pruning with a sparsity schedule (prune), and 2:4 structured pruning (prune_2_4), from tfmot,
both fine-tuned by tasks.fine_tune and stripped of their pruning wrappers; and filter pruning (prune_filters,
tinyopt.ml.filter_pruning), which rebuilds a smaller model and fine-tunes it as it is."""

from __future__ import annotations

from pathlib import Path

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.filter_pruning import prune_filters
from tinyopt.ml.models import load_model
from tinyopt.ml.training import FineTuning
from tinyopt.params import FilterPruneParams, PruneParams, StructuredPruneParams, TrainParams


class Prune(FineTuning):
    """Prune the smallest weights to `target_sparsity` over the fine-tuning epochs, then strip."""

    token, verb = "prune", "prune"

    def check(self, parent: Path, prepared: Path, settings: PruneParams, train: TrainParams):
        import math

        import tensorflow_model_optimization as tfmot

        from tinyopt.datasets.prepared import load_prepared

        steps_per_epoch = math.ceil(len(load_prepared(prepared)["y_train"]) / train.batch_size)
        end_step = max(1, steps_per_epoch * settings.fine_tune_epochs - 1)
        # Update the masks at least ten times over the schedule (tfmot's default, every 100 steps, would
        # never reach the target on a small training set), and last at end_step itself.
        frequency = max(1, min(100, end_step // 10))
        end_step -= end_step % frequency
        if settings.schedule == "polynomial_decay":
            return tfmot.sparsity.keras.PolynomialDecay(
                settings.initial_sparsity, settings.target_sparsity, 0, end_step, frequency=frequency
            )
        return tfmot.sparsity.keras.ConstantSparsity(settings.target_sparsity, 0, frequency=frequency)

    def wrap(self, model, settings: PruneParams, schedule):
        import tensorflow_model_optimization as tfmot

        from tinyopt.ml.conv1d import tfmot_form

        model, notes = tfmot_form(model, "pruned")
        return tfmot.sparsity.keras.prune_low_magnitude(model, pruning_schedule=schedule), notes

    def strip(self, model):
        import tensorflow_model_optimization as tfmot

        from tinyopt.ml.conv1d import as_1d_convolutions

        return as_1d_convolutions(tfmot.sparsity.keras.strip_pruning(model))

    def callbacks(self) -> tuple:
        import tensorflow_model_optimization as tfmot

        return (tfmot.sparsity.keras.UpdatePruningStep(),)


class Prune24(Prune):
    """2:4 structured pruning of every layer whose weights allow it (input depth a multiple of 4)."""

    token = "prune_2_4"

    def check(self, parent: Path, prepared: Path, settings: StructuredPruneParams, train: TrainParams):
        probe = load_model(parent)
        weighted = [layer for layer in probe.layers if type(layer).__name__ in ("Conv2D", "Dense")]
        eligible = [
            layer.name for layer in weighted if layer.get_weights() and layer.get_weights()[0].shape[-2] % 4 == 0
        ]
        skipped = [layer.name for layer in weighted if layer.name not in eligible]
        if not eligible:
            raise NotApplicable("no Conv2D or Dense layer has an input depth that is a multiple of 4")
        notes = f"2:4 on {', '.join(eligible)}" + (
            f"; left dense: {', '.join(skipped)} (input depth not a multiple of 4)" if skipped else ""
        )
        return eligible, notes

    def wrap(self, model, settings: StructuredPruneParams, checked):
        import tensorflow as tf
        import tensorflow_model_optimization as tfmot

        eligible, notes = checked

        def clone(layer):
            if layer.name in eligible:
                return tfmot.sparsity.keras.prune_low_magnitude(
                    layer, sparsity_m_by_n=(2, 4), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0)
                )
            return layer  # unchanged, weights kept (the parent copy is fresh, so sharing is safe)

        return tf.keras.models.clone_model(model, clone_function=clone), notes


class PruneFilters(FineTuning):
    """Whole filters (units) with the smallest L1 norm removed from each Conv2D, Conv1D and Dense layer that can
    lose them: a new, smaller model with fewer MACs, which the device runs faster (zeroed weights it does not).
    No training wrappers: the rebuilt model is fine-tuned and saved as it is."""

    token = "prune_filters"
    restructures = True

    def wrap(self, model, settings: FilterPruneParams, checked):
        smaller, notes = prune_filters(model, settings.keep)
        if smaller.count_params() >= model.count_params():
            raise NotApplicable(f"keep {settings.keep} removes no filter: {notes}")
        return smaller, notes


PRUNE, PRUNE_2_4, PRUNE_FILTERS = Prune(), Prune24(), PruneFilters()
