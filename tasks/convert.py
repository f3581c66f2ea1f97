"""Convert step: a Keras model file to a .tflite file with the TFLite converter."""

from __future__ import annotations

from pathlib import Path

from tinyopt.errors import UserError
from tinyopt.files import gzip_size, write_bytes
from tinyopt.steps import StepRecord, outputs_of, step_task

CONVERSIONS = ("float32",)


class ConvertRecord(StepRecord):
    conversion: str
    tflite_path: str
    raw_bytes: int
    gzip_bytes: int


def load_keras_model(path: str | Path):
    """Load a saved Keras model, or raise UserError naming the file when it is missing or broken."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such model file; train it first (`tinyopt train`) or fix the path")
    try:
        return tf.keras.models.load_model(path, compile=False)
    except Exception as exc:  # Keras raises many types for a damaged file; all mean the same here.
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not a loadable Keras model ({reason}); re-train or re-export it") from None


def convert_model(model_path: Path, conversion: str, out_path: Path) -> ConvertRecord:
    """Write the model as .tflite (atomically) with the given post-training conversion."""
    import tensorflow as tf

    if conversion not in CONVERSIONS:
        raise UserError(f"unknown conversion '{conversion}'; choose one of {', '.join(CONVERSIONS)}")
    model = load_keras_model(model_path)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    try:
        blob = converter.convert()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:300]
        raise UserError(f"{model_path}: the TFLite converter rejected the model ({reason})") from None
    write_bytes(out_path, blob)
    return ConvertRecord(
        conversion=conversion,
        tflite_path=str(out_path),
        raw_bytes=out_path.stat().st_size,
        gzip_bytes=gzip_size(out_path),
        outputs=outputs_of(out_path),
    )


convert_task = step_task(convert_model)
