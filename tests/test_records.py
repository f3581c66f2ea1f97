"""The typed records read back exactly the summary.json they write."""

from __future__ import annotations

import json

import pytest

from tinyopt.core.errors import UserError
from tinyopt.records.run import Measured, Variant, load_summary

FIGURES = dict(
    name="base-int8",
    tflite="artifacts/variants/base/int8.tflite",
    raw_bytes=1000,
    gzip_bytes=800,
    metric="accuracy",
    score=0.9,
    val_score=0.91,
    latency_us_p50=10.5,
    latency_us_p99=12.0,
    input_dtype="int8",
    output_dtype="int8",
    params=100,
    macs=2000,
    ops={"CONV_2D": 2},
    tflm_runs=True,
    arena_bytes=4096,
    fits={"cortex-m4": True},
    fit_reasons={"cortex-m4": "fits"},
)


def test_the_score_is_also_written_under_the_metrics_own_name_and_read_back_without_it():
    dumped = Measured(**FIGURES).model_dump(mode="json")
    assert dumped["accuracy"] == dumped["score"] == 0.9
    assert list(dumped).index("accuracy") == list(dumped).index("val_score") + 1
    assert "mlflow_run_id" not in dumped  # not logged yet
    assert Measured.model_validate(dumped) == Measured(**FIGURES)


def test_a_variant_round_trips_with_its_run_id_last():
    variant = Variant(
        **FIGURES,
        chain=["train", "int8"],
        model="artifacts/models/base/model.keras",
        c_source="artifacts/variants/base/int8.cc",
        keras_score=0.9,
        train_seconds=3.0,
        sparsity=0.0,
        unique_weights={"dense": 50},
    ).model_copy(update={"mlflow_run_id": "abc"})
    dumped = json.loads(variant.model_dump_json())
    assert list(dumped)[-1] == "mlflow_run_id"
    assert Variant.model_validate(dumped) == variant


def test_a_file_that_is_no_summary_is_a_user_error(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text('{"run_id": "x"}')
    with pytest.raises(UserError, match="not a tinyopt run summary"):
        load_summary(path)
    with pytest.raises(UserError, match="no such run summary"):
        load_summary(tmp_path / "missing.json")
