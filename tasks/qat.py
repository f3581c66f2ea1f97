"""Quantization-aware training, plain (qat) or collaborative: pruning-preserving (pqat),
cluster-preserving (cqat), or both (pcqat), from tfmot; saved as a SavedModel directory."""

from __future__ import annotations

from tasks.graph import fold_layers
from tinyopt.core.errors import NotApplicable
from tinyopt.ml.training import FineTuning
from tinyopt.params import QAT_STEPS, QatParams


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


def _bn_tfmot_leaves_unfolded(model) -> bool:
    """Whether a BatchNormalization follows a Dense, Conv1D or DepthwiseConv1D layer: tfmot folds BN only after
    Conv2D and DepthwiseConv2D, and a BN left after a fake-quantized output is not what the int8 converter
    builds (an autoencoder's int8 reconstruction was noise)."""
    for layer in model.layers:
        if type(layer).__name__ != "BatchNormalization":
            continue
        for node in layer.inbound_nodes:
            producers = node.inbound_layers if isinstance(node.inbound_layers, list) else [node.inbound_layers]
            if any(type(p).__name__ in ("Dense", "Conv1D", "DepthwiseConv1D") for p in producers):
                return True
    return False


def quantizable_form(model) -> tuple[object, str]:
    """The model as tfmot can quantize it, and a note: BatchNormalization after a Dense, Conv1D or DepthwiseConv1D
    layer folded into it (tfmot folds BN only after Conv2D and DepthwiseConv2D), and Conv1D and DepthwiseConv1D
    layers computed as Conv2D and DepthwiseConv2D (tinyopt.ml.conv1d); any other model as it is."""
    from tinyopt.ml.conv1d import as_2d_convolutions, has_1d_layers, has_depthwise_1d

    notes = []
    if _bn_tfmot_leaves_unfolded(model):
        try:
            model, folded = fold_layers(model)
            notes.append("; ".join(folded))
        except NotApplicable as reason:  # a functional model whose BN follows an activated layer, say
            notes.append(f"BatchNormalization not folded ({reason})")
    if not has_1d_layers(model):
        return model, "; ".join(notes)
    if any(type(layer).__name__ in ("Conv1D", "MaxPooling1D") for layer in model.layers):
        notes.append("Conv1D layers quantized in their Conv2D form")
    if has_depthwise_1d(model):
        notes.append("DepthwiseConv1D layers quantized in their DepthwiseConv2D form")
    return as_2d_convolutions(model), "; ".join(notes)


class Qat(FineTuning):
    """Insert fake-quantization (int8) and fine-tune; the fake-quant layers stay for the converter."""

    verb = "quantize"
    saved_as = "model.savedmodel"

    def __init__(self, token: str):
        self.token = token

    def wrap(self, model, settings: QatParams, checked):
        import tensorflow_model_optimization as tfmot

        from tinyopt.ml.conv1d import OneDimensionalScheme

        quantization = tfmot.quantization.keras
        model, notes = quantizable_form(model)
        scheme = OneDimensionalScheme(_scheme(self.token))
        return quantization.quantize_apply(quantization.quantize_annotate_model(model), scheme), notes


QAT, PQAT, CQAT, PCQAT = (Qat(token) for token in QAT_STEPS)
