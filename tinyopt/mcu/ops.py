"""The TFLite ops the C generator compiles, one record each: how to emit its C, the scratch it needs in the arena,
whether its output shares its input's storage. Code generation and the arena plan both read this table; adding
an op is one record here and its emitter function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tinyopt.mcu.emit_conv import emit_conv, im2col_bytes
from tinyopt.mcu.emit_data_movement import emit_alias, emit_concatenation
from tinyopt.mcu.emit_dense import emit_fully_connected
from tinyopt.mcu.emit_elementwise import emit_add
from tinyopt.mcu.emit_pool import emit_mean, emit_pool, mean_sums_bytes
from tinyopt.mcu.emit_quant import emit_dequantize, emit_quantize
from tinyopt.mcu.emit_softmax import emit_softmax
from tinyopt.mcu.emitter import Emitter
from tinyopt.mcu.graph import Graph, Op


@dataclass(frozen=True)
class SupportedOp:
    kind: str  # TFLite's builtin operator name
    emit: Callable[[Emitter, Op], None]  # appends the op's constants and invoke lines
    scratch_bytes: Callable[[Graph, Op], int] | None = None  # a buffer alive during the op only
    alias: bool = False  # same bytes, new shape: no code, the output shares its input's storage


OPS: dict[str, SupportedOp] = {
    op.kind: op
    for op in (
        SupportedOp("CONV_2D", emit_conv, scratch_bytes=im2col_bytes),
        SupportedOp("DEPTHWISE_CONV_2D", emit_conv, scratch_bytes=im2col_bytes),
        SupportedOp("FULLY_CONNECTED", emit_fully_connected),
        SupportedOp("MAX_POOL_2D", emit_pool),
        SupportedOp("AVERAGE_POOL_2D", emit_pool),
        SupportedOp("RESHAPE", emit_alias, alias=True),
        SupportedOp("EXPAND_DIMS", emit_alias, alias=True),
        SupportedOp("SQUEEZE", emit_alias, alias=True),
        SupportedOp("CONCATENATION", emit_concatenation),
        SupportedOp("SOFTMAX", emit_softmax),
        SupportedOp("QUANTIZE", emit_quantize),
        SupportedOp("DEQUANTIZE", emit_dequantize),
        SupportedOp("ADD", emit_add),
        SupportedOp("MEAN", emit_mean, scratch_bytes=mean_sums_bytes),
    )
}
