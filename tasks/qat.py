"""Quantization-aware training, plain (qat) or collaborative: pruning-preserving (pqat),
cluster-preserving (cqat), or both (pcqat), from tfmot; saved as a SavedModel directory."""

from __future__ import annotations

from tasks.fine_tune import fine_tune_task
from tinyopt.params import QAT_STEPS, QatParams
from tinyopt.training import Technique


def _scheme(token: str):
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
    }[token]()


class Qat(Technique):
    """Insert fake-quantization (int8) and fine-tune; the fake-quant layers stay for the converter."""

    verb = "quantize"
    saved_as = "model.savedmodel"

    def __init__(self, token: str):
        self.token = token

    def wrap(self, model, settings: QatParams, checked):
        import tensorflow_model_optimization as tfmot

        quantization = tfmot.quantization.keras
        return quantization.quantize_apply(quantization.quantize_annotate_model(model), _scheme(self.token)), ""


QAT, PQAT, CQAT, PCQAT = (Qat(token) for token in QAT_STEPS)
qat_task = fine_tune_task(QAT)
pqat_task = fine_tune_task(PQAT)
cqat_task = fine_tune_task(CQAT)
pcqat_task = fine_tune_task(PCQAT)
