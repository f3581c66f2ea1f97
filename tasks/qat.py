"""Quantization-aware training, plain (qat) or collaborative: pruning-preserving (pqat),
cluster-preserving (cqat), or both (pcqat), from tfmot."""

from __future__ import annotations

from pathlib import Path

from tasks.train import TRAINING_LOCK, ModelRecord, compile_for_task, fit, record_model, set_seeds
from tinyopt.errors import NotApplicable
from tinyopt.models import load_model
from tinyopt.params import QatParams, TaskParams, TrainParams
from tinyopt.steps import step_task


def _scheme(step: str):
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.cluster_preserve import (
        default_8bit_cluster_preserve_quantize_scheme as cluster_preserve,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.collab_opts.prune_preserve import (
        default_8bit_prune_preserve_quantize_scheme as prune_preserve,
    )
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_scheme

    return {
        "qat": default_8bit_quantize_scheme.Default8BitQuantizeScheme,
        "pqat": prune_preserve.Default8BitPrunePreserveQuantizeScheme,
        "cqat": cluster_preserve.Default8BitClusterPreserveQuantizeScheme,
        "pcqat": lambda: cluster_preserve.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=True),
    }[step]()


def quantize_aware_train(
    parent: Path,
    prepared: Path,
    step: str,
    settings: QatParams,
    train: TrainParams,
    task: TaskParams,
    seed: int,
    out_dir: Path,
) -> ModelRecord:
    """Insert fake-quantization (int8) and fine-tune; saved as a SavedModel directory."""
    import tensorflow_model_optimization as tfmot

    from tasks.data import load_prepared

    quantization = tfmot.quantization.keras
    data = load_prepared(prepared)
    with TRAINING_LOCK:
        set_seeds(seed)
        try:
            model = quantization.quantize_apply(quantization.quantize_annotate_model(load_model(parent)), _scheme(step))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise NotApplicable(f"tfmot cannot quantize this model: {str(exc).splitlines()[0][:200]}") from None
        compile_for_task(model, task, settings.learning_rate)
        epochs_run, seconds = fit(model, data, settings.fine_tune_epochs, train.batch_size)
        return record_model(
            model,
            data,
            task,
            step,
            out_dir / "model.savedmodel",
            parent=parent,
            epochs_run=epochs_run,
            train_seconds=seconds,
        )


qat_task = step_task(quantize_aware_train)
