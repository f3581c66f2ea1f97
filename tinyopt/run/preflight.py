"""Checks before a run: the user's data and model are read and compared once, before Prefect, MLflow
or any training starts, so a mistake costs seconds, says what is wrong in one line, and writes nothing."""

from __future__ import annotations

import numpy as np

from tinyopt.core.errors import UserError
from tinyopt.datasets.checks import check_data
from tinyopt.datasets.labels import check_labels
from tinyopt.datasets.sources import load_source
from tinyopt.ml.models import check_input_shape, probe_model
from tinyopt.params import USER_DATASETS, Params, TaskParams


def check_inputs(params: Params) -> list[str]:
    """Raise UserError for data or a model (model.path) the run would fail on, or quietly mis-score;
    returns warnings for what only weakens the run."""
    # A built-in dataset is known good (verified by checksum): read it only to compare a user's model with it.
    arrays = load_source(params.data) if params.data.dataset in USER_DATASETS or params.model.path else None
    labels, warnings = None, []
    if arrays is not None:
        source = params.data.path or params.data.dataset
        labels, warnings = check_data(arrays, params.data, params.seed, params.task, source)
    if params.model.path:
        info = probe_model(params.model.path)  # in a child process: a file that crashes its loader cannot crash us
        if arrays is not None:
            check_model_fits(info, arrays, labels, params.task, params.model.path)
    elif params.task.kind != "classification":
        raise UserError(
            f"the built-in paper-cnn is a classifier; for a {params.task.kind} task give your model "
            "(--model or model.path)"
        )
    elif arrays is not None:
        _check_paper_cnn_input(arrays[0].shape[1:], params.model.kernel_size)
    return warnings


def check_model_fits(
    info: dict, arrays: tuple[np.ndarray, ...], labels: dict | None, task: TaskParams, path: str
) -> None:
    """The model (probe_model's description) takes the data's inputs and gives an output per class or
    target; a model with fewer or more outputs than the labels have classes mis-scores every variant."""
    check_input_shape(info["inputs"], arrays[0].shape[1:])
    if len(info["outputs"]) != 1:
        raise UserError(f"{path}: the model has {len(info['outputs'])} outputs; tinyopt handles models with one output")
    dims = info["outputs"][0][1:]
    if any(d is None for d in dims):
        return  # a dynamic output shape: only running the model would tell
    width = int(np.prod(dims))
    if task.kind == "regression":
        targets = int(np.prod(arrays[1].shape[1:]))
        if width != targets:
            raise UserError(
                f"{path}: the model has {width} outputs and the data {targets} regression target"
                f"{'s' if targets > 1 else ''} per example; they must match"
            )
    elif task.kind == "anomaly":
        inputs = int(np.prod(arrays[0].shape[1:]))
        if width not in (1, 2, inputs):
            raise UserError(
                f"{path}: the model has {width} outputs; an anomaly model gives one score (1 output, or 2 "
                f"with the anomaly class last), or reconstructs its {inputs} inputs (scored by the error)"
            )
    elif labels is not None:
        classes, one_hot = labels["classes"], labels["one_hot"]
        described = (
            f"one-hot labels with {one_hot} columns" if one_hot else f"{classes} classes (labels 0..{classes - 1})"
        )
        if width == 1 and classes > 2:
            raise UserError(
                f"{path}: the model has 1 output (a binary classifier) and the data {described}; give a "
                f"model with {classes} outputs"
            )
        if width > 1 and width != classes:
            raise UserError(
                f"{path}: the model has {width} outputs and the data {described}; give a model with "
                f"{classes} outputs, or labels for its {width} classes"
            )


def check_prepared(params: Params, data: dict) -> None:
    """For `tinyopt train` with model.path: the model fits the prepared split it is to train on."""
    arrays = (data["x_train"], data["y_train"], data["x_test"], data["y_test"])
    labels = check_labels(arrays, params.task, "the prepared data")
    check_model_fits(probe_model(params.model.path), arrays, labels, params.task, params.model.path)


def _check_paper_cnn_input(shape: tuple[int, ...], kernel_size: int) -> None:
    if len(shape) not in (2, 3) or min(shape[:2]) <= kernel_size:
        raise UserError(
            f"the built-in paper-cnn takes images (height, width[, channels]) larger than its "
            f"{kernel_size}x{kernel_size} kernel, and each example here has shape {shape}; give your "
            "model (--model or model.path)"
        )
