"""Convert step: a Keras model to a .tflite file with one post-training conversion, plus its C array.

Integer conversions calibrate on training examples only (never validation or test data).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.core.files import gzip_size, write_bytes
from tinyopt.ml.models import load_model
from tinyopt.orchestration.steps import step
from tinyopt.params import CONVERSION_STEPS, NEEDS_CALIBRATION, ConversionParams
from tinyopt.records.steps import ConvertRecord, outputs_of
from tinyopt.runtimes.c_array import write_c_array


def calibration_set(prepared: Path, samples: int, seed: int) -> np.ndarray:
    """`samples` training examples, drawn with a fixed seed."""
    from tinyopt.datasets.prepared import load_prepared

    x_train = load_prepared(prepared)["x_train"]
    rng = np.random.default_rng(seed)
    return x_train[rng.choice(len(x_train), size=min(samples, len(x_train)), replace=False)]


def configure(converter, conversion: str, calibration: np.ndarray | None) -> None:
    """Set the TFLite converter up for one of the six conversions."""
    import tensorflow as tf

    if conversion == "float32":
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if conversion == "float16":
        converter.target_spec.supported_types = [tf.float16]
        return
    if conversion == "dynamic_range":
        return  # weights int8, activations float at run time (hybrid kernels)

    def representative():
        for sample in calibration:
            yield [sample[np.newaxis].astype(np.float32)]

    converter.representative_dataset = representative
    if conversion == "int8":  # full integer, int8 input and output: what a microcontroller wants
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif conversion == "int16x8":  # int16 activations, int8 weights; float input and output
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    # int8_fallback: int8 kernels where possible, float ops allowed, float input and output.


@step("convert")
def convert_model(
    model_path: Path,
    conversion: str,
    out_path: Path,
    prepared: Path | None = None,
    settings: ConversionParams = ConversionParams(),
    seed: int = 0,
) -> ConvertRecord:
    """Write the model as .tflite (atomically) with the given conversion, and its C array beside it."""
    import tensorflow as tf

    if conversion not in CONVERSION_STEPS:
        raise UserError(f"unknown conversion '{conversion}'; choose one of {', '.join(CONVERSION_STEPS)}")
    calibration = None
    if conversion in NEEDS_CALIBRATION:
        if prepared is None:
            raise UserError(f"the {conversion} conversion calibrates on training data: pass the prepared data")
        calibration = calibration_set(prepared, settings.calibration_samples, seed)
    model = load_model(model_path)
    if settings.batch_size:
        spec = tf.TensorSpec([settings.batch_size, *model.input_shape[1:]], model.inputs[0].dtype)

        def serve(x):
            return model(x, training=False)

        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [tf.function(serve).get_concrete_function(spec)], model
        )
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    configure(converter, conversion, calibration)
    try:
        blob = converter.convert()
    except Exception as exc:
        reason = converter_message(str(exc)) or type(exc).__name__
        raise NotApplicable(f"the TFLite converter rejects this model for {conversion}: {reason}") from None
    if settings.strip_names:
        blob = strip_names(blob)
    write_bytes(out_path, blob)
    source, header = write_c_array(out_path, out_path.with_suffix(".cc"), out_path.with_suffix(".h"))
    from tinyopt.runtimes.litert import load_interpreter

    interpreter = load_interpreter(out_path)
    return ConvertRecord(
        conversion=conversion,
        tflite_path=str(out_path),
        c_source=str(source),
        c_header=str(header),
        raw_bytes=out_path.stat().st_size,
        gzip_bytes=gzip_size(out_path),
        input_dtype=np.dtype(interpreter.get_input_details()[0]["dtype"]).name,
        output_dtype=np.dtype(interpreter.get_output_details()[0]["dtype"]).name,
        calibration_samples=len(calibration) if calibration is not None else 0,
        outputs=outputs_of(out_path, source, header),
    )


# An MLIR diagnostic: `<where>: error: <message>`, where <where> is a source location (a Python file's
# path:line:col, `<unknown>:0`) and/or a `loc(...)`; the converter glues some of them to its own first words.
LOCATION_END = re.compile(r":\d+(?::\d+)?:\s*")  # the end of `path:line:col: ` or `<unknown>:0: `
SEVERITY = re.compile(r"^(?P<severity>error|warning|note|remark):\s*(?P<message>.*)$")
MLIR_DUMP = re.compile(r"\s*(?:see current operation:|%\w+ = \"|\^bb\d).*$")
GENERIC = ("failed while converting", "could not translate mlir to flatbuffer")
REASON_CHARS = 300


def _strip_locs(text: str) -> str:
    """`text` without its leading `loc(...)` groups (nested brackets and quoted strings inside)."""
    text = text.lstrip()
    while text.startswith("loc("):
        depth, quoted, end = 0, False, None
        for index, char in enumerate(text):
            if char == '"' and text[index - 1] != "\\":
                quoted = not quoted
            elif not quoted and char in "([":
                depth += 1
            elif not quoted and char in ")]":
                depth -= 1
                if depth == 0:
                    end = index
                    break
        if end is None:
            return text
        text = text[end + 1 :].lstrip().removeprefix(":").lstrip()
    return text


def _diagnostic(line: str) -> tuple[str, str] | None:
    """(severity, message) of an MLIR diagnostic line, without its locations; None for any other line."""
    for rest in [line, *(line[found.end() :] for found in LOCATION_END.finditer(line))]:
        severity = SEVERITY.match(_strip_locs(rest))
        if severity:
            return severity["severity"], _strip_locs(severity["message"])
    return None


def _one_line(text: str) -> str:
    text = " ".join(MLIR_DUMP.sub("", text).split()).rstrip(" :")
    if len(text) > REASON_CHARS:
        text = text[: REASON_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return text


def converter_message(text: str) -> str:
    """The converter's own words for why it failed, in one line: the first MLIR error's message without the
    source locations, `loc(...)` prefixes and IR dumps around it (its generic 'failed while converting'
    followed by the first line that says more); any other error's first line as it is."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    errors = []
    for index, line in enumerate(lines):
        found = _diagnostic(line)
        if found is None or found[0] != "error":
            continue
        message = found[1].strip().rstrip(":").strip()
        if message and not message.lower().startswith(GENERIC):
            return _one_line(message)
        following = next((n for n in lines[index + 1 :] if _diagnostic(n) is None and n.strip() not in "^"), "")
        errors.append(_one_line(following.strip()) or _one_line(message))
    if errors:
        return errors[0]
    return _one_line(_strip_locs(lines[0])) if lines else ""


def strip_names(blob: bytes) -> bytes:
    """The same model without tensor and subgraph names (TFLite's own strip_strings)."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(blob))
    flatbuffer_utils.strip_strings(model)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
