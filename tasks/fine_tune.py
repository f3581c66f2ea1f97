"""The one fine-tune every technique shares: load the prepared data, take the training lock, seed,
load the parent fresh from its file, wrap it (or say why the technique does not apply), freeze its
batch normalization (train.batchnorm), compile, fit, strip (re-estimate BN statistics it trained), record
(with a note when the validation score collapsed against the parent's). A technique only says how to
wrap and strip (tinyopt.ml.training.FineTuning)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinyopt.core.errors import NotApplicable
from tinyopt.ml.models import load_model
from tinyopt.ml.training import (
    STEPS_PER_EXECUTION,
    TRAINING_LOCK,
    FineTuning,
    compile_for_task,
    freeze_batchnorm,
    recorded_val_score,
    reestimate_batchnorm,
    restore_batchnorm,
    save_trained,
    set_seeds,
    train_epochs,
)
from tinyopt.orchestration.steps import step
from tinyopt.orchestration.tracking import epoch_logger
from tinyopt.params import TaskParams, TrainParams
from tinyopt.records.steps import TrainedModel


def fine_tune(
    technique: FineTuning,
    parent: Path,
    prepared: Path,
    settings: Any,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
    curves_to: tuple[str, ...] = (),
) -> TrainedModel:
    """Apply `technique` to the parent model and fine-tune it; saved as out_dir/model.keras (or
    model.savedmodel) with its figures in model.json. Each epoch's figures go live to the MLflow runs
    `curves_to` (as `<token>.loss`, ...)."""
    from tinyopt.datasets.prepared import load_prepared

    checked = technique.check(parent, prepared, settings, train)
    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        # A fresh copy of the parent: tfmot wrappers share layers with the model they wrap.
        model = load_model(parent)
        try:
            wrapped, notes = technique.wrap(model, settings, checked)
        except (ValueError, RuntimeError, TypeError) as exc:
            if technique.verb is None:
                raise
            why = str(exc).splitlines()[0][:200]
            raise NotApplicable(f"tfmot cannot {technique.verb} this model: {why}") from None
        epochs, learning_rate, patience = technique.schedule(settings, train)
        objective = technique.objective(wrapped, data, settings, train, task, out_dir)
        # After the objective: a teacher widened from the model trains its own BN from scratch.
        frozen = freeze_batchnorm(wrapped) if train.batchnorm == "frozen" and not technique.restructures else {}
        callbacks = technique.callbacks()
        per_call = 1 if callbacks else STEPS_PER_EXECUTION  # batch callbacks must see every batch
        compile_for_task(wrapped, task, learning_rate, objective.loss, steps_per_execution=per_call)
        live = epoch_logger(curves_to, technique.token)
        fit = train_epochs(wrapped, objective.data, epochs, train.batch_size, patience, callbacks, live)
        stripped = technique.strip(wrapped)
        restore_batchnorm(stripped, frozen)
        reestimated = 0 if frozen else reestimate_batchnorm(stripped, objective.data["x_train"], train.batch_size)
        bn_note = f"batch-norm statistics re-estimated on {reestimated:,} training examples" if reestimated else ""
        return save_trained(
            stripped,
            data,
            task,
            technique.token,
            out_dir / technique.saved_as,
            parent=parent,
            fit=fit,
            notes="; ".join(filter(None, [notes, objective.notes, bn_note])),
            also=objective.files,
            curves=objective.curves,
            parent_score=recorded_val_score(parent, task.score_metric),
        )


def fine_tuning_step(technique: FineTuning) -> Any:
    """The step of one technique, named by its token (`qat`, `sp_cluster`), cached like any step."""

    def run(
        parent: Path,
        prepared: Path,
        settings: Any,
        train: TrainParams,
        task: TaskParams,
        seed: int,
        out_dir: Path,
        curves_to: tuple[str, ...] = (),
    ) -> TrainedModel:
        return fine_tune(technique, parent, prepared, settings, train, task, seed, out_dir, curves_to)

    # The cache digests the technique's own module (and all it imports), under the technique's name.
    run.__module__, run.__name__, run.__qualname__ = type(technique).__module__, technique.token, technique.token
    run.__doc__ = type(technique).__doc__
    return step()(run)
