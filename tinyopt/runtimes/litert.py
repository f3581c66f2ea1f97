"""Running a .tflite file with the LiteRT interpreter: the one way every converted model is evaluated."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.runtimes.quantized_io import dequantize_output, quantize_input


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


def check_takes(interpreter, example_shape: tuple[int, ...], path: str | Path) -> None:
    """UserError unless the model has one input and it takes examples of `example_shape` (LiteRT itself says
    only 'Dimension mismatch')."""
    inputs = interpreter.get_input_details()
    if len(inputs) != 1:
        raise UserError(f"{path}: the model has {len(inputs)} inputs; tinyopt measures models with one input")
    takes = tuple(int(n) for n in inputs[0]["shape"][1:])
    if takes != tuple(example_shape):
        raise UserError(
            f"{path}: the model takes inputs of shape {_shape(takes)} but the data's examples are "
            f"{_shape(example_shape)}; convert a model made for this data, give the data it was made for, "
            "or measure it on random inputs (tinyopt bench --inputs random)"
        )


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def predict(path: str | Path, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    """Outputs of the .tflite model for float inputs `x` (quantized in and dequantized out as the
    model's own input/output tensors require), in batches, or one by one for a batch-1 model."""
    interpreter = load_interpreter(path)
    check_takes(interpreter, x.shape[1:], path)
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
        outputs.append(dequantize_output(interpreter.get_tensor(output_detail["index"]), output_detail))
    return np.concatenate(outputs)
