"""Running a .tflite file with the LiteRT interpreter: the one way every converted model is evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError


def load_interpreter(path: str | Path, num_threads: int = 1):
    from ai_edge_litert.interpreter import Interpreter

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such .tflite file")
    try:
        interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable .tflite model ({reason}); re-run the conversion") from None
    return interpreter


def quantize_input(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float inputs as the model's input tensor wants them (quantized with its scale and zero point)."""
    dtype = detail["dtype"]
    if np.issubdtype(dtype, np.integer) and x.dtype.kind == "f":
        scale, zero_point = detail["quantization"]
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)
    return x.astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if np.issubdtype(y.dtype, np.integer) and scale:
        return (y.astype(np.float32) - zero_point) * scale
    return y.astype(np.float32)


def predict(path: str | Path, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Outputs of the .tflite model for float inputs `x` (quantized in and dequantized out as the
    model's own input/output tensors require), in batches, or one by one for a batch-1 model."""
    interpreter = load_interpreter(path)
    input_detail = interpreter.get_input_details()[0]
    if input_detail["shape_signature"][0] == 1:  # converted for a fixed batch of one, as for an MCU
        batch_size = 1
    outputs = []
    current = None
    output_detail = interpreter.get_output_details()[0]
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        if current != len(chunk) and batch_size > 1:
            interpreter.resize_tensor_input(input_detail["index"], [len(chunk), *input_detail["shape"][1:]])
            interpreter.allocate_tensors()
            current = len(chunk)
            input_detail = interpreter.get_input_details()[0]
            output_detail = interpreter.get_output_details()[0]
        interpreter.set_tensor(input_detail["index"], quantize_input(chunk, input_detail))
        interpreter.invoke()
        outputs.append(_dequantize(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs)
