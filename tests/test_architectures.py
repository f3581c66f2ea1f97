"""tinyopt's `blocks` architectures (what a search draws for images and sensor windows) and a user model's
width multiplier: built, trained by the train step, converted to int8 and compiled to C."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from tasks.convert import convert_model
from tasks.techniques import technique_call
from tasks.train import train_baseline, untrained_model
from tasks.trial import on_the_core, untrained_int8
from tests.test_mcu import needs_arm
from tinyopt.core.errors import UserError
from tinyopt.mcu.codegen import generate
from tinyopt.ml.architectures import build_blocks, describe_blocks
from tinyopt.ml.models import int8_weight_bytes
from tinyopt.params import ModelParams, Params, SearchParams, TaskParams, TrainParams, parse_params
from tinyopt.search.space import chain_settings, draw, width_of, write_plan

BLOCKS = [
    {"kind": "conv", "filters": 8, "kernel_size": 3, "stride": 2},
    {"kind": "separable", "filters": 16, "kernel_size": 3, "pool": True},
    {"kind": "inverted", "filters": 16, "kernel_size": 5, "expansion": 2},
]
TRAIN = TrainParams(epochs=1, batch_size=32, early_stopping_patience=0)


def prepared(directory: Path, shape: tuple[int, ...]) -> Path:
    rng = np.random.default_rng(0)
    x, y = rng.random((96, *shape), dtype=np.float32), rng.integers(0, 4, 96)
    path = directory / "prepared.npz"
    np.savez(path, input_scale=np.float64(1.0), x_train=x, y_train=y, x_val=x[:32], y_val=y[:32], x_test=x, y_test=y)
    return path


@pytest.mark.parametrize("signal, shape", [("image", (28, 28)), ("series", (64, 3))])
def test_a_blocks_model_trains_converts_and_compiles_for_images_and_sensor_windows(tmp_path, signal, shape):
    params = ModelParams(architecture="blocks", blocks=BLOCKS, signal=signal, head="average")
    data = prepared(tmp_path, shape)
    record = train_baseline(data, params, TRAIN, TaskParams(), 0, tmp_path / "baseline")
    assert record.notes == "blocks c8k3s2-s16k3p-i16k5" and record.epochs_run == 1
    converted = convert_model(Path(record.model_path), "int8", tmp_path / "m.tflite", data)
    generated = generate(Path(converted.tflite_path).read_bytes(), "m")
    kinds = set(generated.op_kinds)
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "ADD", "MEAN", "FULLY_CONNECTED"} <= kinds, kinds


def test_each_block_kind_makes_its_layers():
    import tensorflow as tf

    def kinds(blocks, head="average"):
        model = build_blocks((16, 16, 3), 5, ModelParams(architecture="blocks", blocks=blocks, head=head))
        return [type(layer).__name__ for layer in model.layers if not isinstance(layer, tf.keras.layers.InputLayer)]

    assert kinds([{"kind": "conv", "filters": 4}]) == [
        "Conv2D", "BatchNormalization", "ReLU", "GlobalAveragePooling2D", "Dense",
    ]  # fmt: skip
    assert kinds([{"kind": "separable", "filters": 4, "pool": True}], head="flatten")[:7] == [
        "DepthwiseConv2D", "BatchNormalization", "ReLU", "Conv2D", "BatchNormalization", "ReLU", "MaxPooling2D",
    ]  # fmt: skip
    # An inverted residual adds its input back when stride and width allow, and not otherwise.
    assert "Add" in kinds([{"kind": "inverted", "filters": 3}])
    assert "Add" not in kinds([{"kind": "inverted", "filters": 3, "stride": 2}])
    assert "Add" not in kinds([{"kind": "inverted", "filters": 8}])
    with pytest.raises(UserError, match="model.blocks: the blocks architecture takes 1 to 6 blocks"):
        parse_params({"model": {"architecture": "blocks"}})


def test_a_search_draws_architectures_and_a_pick_s_params_file_rebuilds_them(tmp_path):
    import optuna

    params = parse_params(
        {"search": {"space": {"chains": [["int8"]], "blocks": {"depth": [2, 2], "kinds": ["separable"]}}}}
    )
    fixed = {"chain": "base-int8", "depth": 2, "head": "flatten"}
    for index, (filters, kernel, stride, pool) in enumerate([(8, 3, 2, False), (24, 5, 1, True)]):
        fixed |= {f"block{index}_filters": filters, f"block{index}_kernel_size": kernel}
        fixed |= {f"block{index}_kind": "separable", f"block{index}_stride": stride, f"block{index}_pool": pool}
    drawn = draw(optuna.trial.FixedTrial(fixed), params)
    assert drawn.model.architecture == "blocks" and describe_blocks(drawn.model) == "s8k3s2-s24k5p-flat"
    assert chain_settings(["int8"], drawn)["model"] == width_of(drawn)

    class Trial:  # what write_plan reads of a trial record
        number, chain, metric, val_score, raw_bytes, gzip_bytes, instructions, sha256 = (
            0,
            ["int8"],
            "accuracy",
            0.9,
            1,
            1,
            None,
            "x",
        )
        settings = {"model": width_of(drawn)}

    plan = write_plan(Trial, {0: drawn}, tmp_path / "none.yaml", tmp_path / "plan.yaml")
    rebuilt = parse_params(yaml.safe_load(plan.read_text()))
    assert rebuilt.model == drawn.model.model_copy(update={"blocks": [*drawn.model.blocks]})
    assert rebuilt.plan == [["int8"]]


def test_a_users_model_at_another_width_is_rebuilt_and_trained_from_scratch(tmp_path):
    import tensorflow as tf

    layers = tf.keras.layers
    model = tf.keras.Sequential([tf.keras.Input((64, 3)), layers.Conv1D(8, 5), layers.Flatten(), layers.Dense(4)])
    model.save(tmp_path / "mine.keras")
    data = prepared(tmp_path, (64, 3))
    half = ModelParams(path=str(tmp_path / "mine.keras"), width_multiplier=0.5)
    record = train_baseline(data, half, TRAIN, TaskParams(), 0, tmp_path / "half")
    assert record.epochs_run == 1 and "width x 0.5, trained from scratch" in record.notes
    assert record.num_params < model.count_params()
    single = tf.keras.Sequential([tf.keras.Input((64, 3)), layers.Flatten(), layers.Dense(4)])
    single.save(tmp_path / "single.keras")
    with pytest.raises(UserError, match="model.width_multiplier: the model has no hidden layer"):
        train_baseline(
            data,
            ModelParams(path=str(tmp_path / "single.keras"), width_multiplier=2),
            TRAIN,
            TaskParams(),
            0,
            tmp_path / "s",
        )


def test_the_plateau_schedule_divides_the_learning_rate_by_5_when_validation_loss_stalls_down_to_a_125th(tmp_path):
    # A rate of 1e-9 changes nothing (and the paper CNN has no batch norm statistics to move), so validation loss
    # stalls from the first epoch on: every epoch after lr_patience (1) divides the rate, until the floor.
    data = prepared(tmp_path, (28, 28))
    params = ModelParams(conv_filters=2)
    rate = 1e-9
    train = TrainParams(
        epochs=6, batch_size=32, learning_rate=rate, early_stopping_patience=0, lr_schedule="plateau", lr_patience=1
    )
    record = train_baseline(data, params, train, TaskParams(), 0, tmp_path / "plateau")
    rates = record.history["lr"]
    assert rates[0] == pytest.approx(rate) and rates[1] == pytest.approx(rate)  # judged after its epoch
    assert rates[2:5] == pytest.approx([rate / 5, rate / 25, rate / 125])
    assert rates[5] == pytest.approx(rate / 125)  # the floor
    constant = train_baseline(
        data, params, train.model_copy(update={"lr_schedule": "constant"}), TaskParams(), 0, tmp_path / "constant"
    )
    assert "lr" not in constant.history and constant.epochs_run == 6


@pytest.mark.parametrize(
    "params",
    [ModelParams(architecture="blocks", blocks=BLOCKS, head="flatten"), ModelParams(conv_filters=6, kernel_size=5)],
    ids=["blocks", "paper-cnn"],
)
def test_the_weight_bytes_a_search_rejects_by_are_a_lower_bound_of_the_int8_model(tmp_path, params):
    data = prepared(tmp_path, (28, 28))
    least = int8_weight_bytes(untrained_model(data, params, TaskParams()))
    record = train_baseline(data, params, TRAIN, TaskParams(), 0, tmp_path / "baseline")
    converted = convert_model(Path(record.model_path), "int8", tmp_path / "m.tflite", data)
    assert 0.4 * converted.raw_bytes < least <= converted.raw_bytes, (least, converted.raw_bytes)  # tensors, ops: more


@needs_arm
@pytest.mark.parametrize(
    "params",
    [ModelParams(architecture="blocks", blocks=BLOCKS, head="flatten"), ModelParams(conv_filters=6, kernel_size=5)],
    ids=["blocks", "paper-cnn"],
)
def test_an_untrained_int8_model_takes_the_instructions_of_the_trained_one_and_no_more_bytes(
    tmp_path, monkeypatch, params
):
    from flows.search import UNTRAINED_MARGIN

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    data = prepared(tmp_path, (28, 28))
    drawn = Params(model=params, search=SearchParams(max_instructions=100_000))
    untrained = untrained_int8(untrained_model(data, params, TaskParams(), drawn.seed), data, drawn, on_core=True)
    assert not list(scratch.glob("tinyopt-untrained-*"))  # its scratch is gone
    record = train_baseline(data, params, TRAIN, TaskParams(), 0, tmp_path / "baseline")
    trained = {}
    for chain in (["int8"], ["qat", "int8"]):
        parent = Path(record.model_path)
        if chain[0] == "qat":
            technique_step, arguments = technique_call("qat", parent, data, drawn, tmp_path / "qat")
            parent = Path(technique_step(**arguments).model_path)
        converted = convert_model(parent, "int8", tmp_path / f"{chain[0]}.tflite", data)
        trained[chain[0]] = converted.raw_bytes
        assert untrained["raw_bytes"] <= converted.raw_bytes, (untrained, trained)  # rejecting by it rejects no fit
    figures, verdict = on_the_core(tmp_path / "int8.tflite", "int8", np.load(data)["x_val"][:4], drawn)
    assert not verdict["fits"] and "over the budget (100,000)" in verdict["reason"]
    measured = figures["instructions"]
    assert abs(untrained["instructions"] - measured) <= (UNTRAINED_MARGIN - 1) * measured / 2, (untrained, measured)
