from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli
from tinyopt.core.errors import UserError
from tinyopt.params import Params, load_params, parse_params


def test_repository_params_are_the_schema_rendered():
    from tinyopt.params.render import REGENERATE, default_params_yaml

    assert (REPO / "params.yaml").read_text() == default_params_yaml(), f"params.yaml is stale: run {REGENERATE}"


def test_the_rendered_params_read_back_as_the_defaults():
    loaded = load_params(REPO / "params.yaml")
    assert loaded.model_copy(update={"reference": Params().reference}) == Params()
    assert loaded.reference.dir == str(REPO.parent / "shared" / "reference" / "seed-cnn1")


def test_relative_paths_are_relative_to_the_params_file(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "params.yaml").write_text("data: {dataset: npz, path: my.npz}\nreference: {dir: refs}\n")
    params = load_params(tmp_path / "sub" / "params.yaml")
    assert params.data.path == str(tmp_path / "sub" / "my.npz")
    assert params.reference.dir == str(tmp_path / "sub" / "refs")


def test_digest_changes_with_any_knob():
    assert Params().digest() == Params().digest()
    assert Params().digest() != parse_params({"train": {"epochs": 3}}).digest()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"trian": {"epochs": 1}}, "unknown key 'trian'"),
        ({"train": {"epoch": 1}}, "unknown key 'train.epoch'"),
        ({"train": {"epochs": "many"}}, "'train.epochs': Input should be a valid integer"),
        ({"train": {"epochs": 0}}, "'train.epochs': Input should be greater than or equal to 1, got 0"),
        ({"train": {"learning_rate": -1}}, "'train.learning_rate': Input should be greater than 0"),
        ({"data": {"validation_fraction": 0.9}}, "'data.validation_fraction': Input should be less than 0.5"),
        (
            {"data": {"dataset": "cifar"}},
            "'data.dataset' must be one of 'fashion-mnist', 'mnist', 'npz', 'idx' or 'images'",
        ),
        ({"data": {"dataset": "npz"}}, "data.path is required when data.dataset is npz"),
        ({"data": {"path": "x.npz"}}, "data.path is only used when data.dataset is one of npz, idx, images"),
        (
            {"task": {"kind": "regression", "metric": "accuracy"}},
            "task.metric accuracy does not score a regression task",
        ),
        ({"schedule": {"cron": "every night"}}, "schedule.cron: 'every night' is not a cron expression"),
        ({"schedule": {"timezone": "Mars/Olympus"}}, "schedule.timezone: unknown time zone 'Mars/Olympus'"),
        (
            {"schedule": {"objective": "cheapest"}},
            "schedule.objective: no objective 'cheapest' (objectives: smallest-ota,",
        ),
        ({"schedule": {"channel": "beta"}}, "schedule.channel: no channel 'beta' (channels: canary, stable)"),
        ([1, 2], "the top level must be a mapping"),
    ],
)
def test_bad_values_name_the_key_and_what_is_allowed(raw, expected):
    with pytest.raises(UserError) as info:
        parse_params(raw, "params.yaml")
    message = str(info.value)
    assert message.startswith("params.yaml: ")
    assert expected in message
    assert "\n" not in message


def test_malformed_yaml_names_the_line(tmp_path: Path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\ntrain:\n  epochs: [1,\n")
    with pytest.raises(UserError, match=r"not valid YAML at line \d+"):
        load_params(bad)


def test_missing_params_file(tmp_path: Path):
    with pytest.raises(UserError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_cli_reports_a_bad_params_file_in_one_line_without_traceback(tmp_path: Path):
    (tmp_path / "params.yaml").write_text("train:\n  epochs: -3\n")
    result = run_cli(["run"], cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "tinyopt: error: params.yaml: 'train.epochs': Input should be greater than or equal to 1, got -3"
    )
    assert "Traceback" not in result.stdout + result.stderr
    # Nothing was started or written.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def _number_fields(model: type, prefix: str = ""):
    """Every int or float field of the schema, as a dotted key path (nested sections included)."""
    from pydantic import BaseModel

    from tinyopt.params import _number_not_bool

    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _number_fields(annotation, f"{prefix}{name}.")
        elif _number_not_bool(annotation):
            yield f"{prefix}{name}"


NUMBER_KEYS = list(_number_fields(Params))


@pytest.mark.parametrize("key", NUMBER_KEYS)
def test_true_or_false_is_never_a_number(key: str):
    raw: dict = {}
    *sections, last = key.split(".")
    node = raw
    for section in sections:
        node = node.setdefault(section, {})
    node[last] = True
    with pytest.raises(UserError, match=rf"'{key}': Input should be a number, not true/false"):
        parse_params(raw)


def test_the_bool_check_covers_every_numeric_knob():
    assert {
        "seed",
        "train.epochs",
        "train.learning_rate",
        "data.validation_fraction",
        "data.train_limit",
        "techniques.prune.target_sparsity",
        "conversion.batch_size",
        "benchmark.latency_repeats",
    } <= set(NUMBER_KEYS)
    assert parse_params({"conversion": {"strip_names": False}}).conversion.strip_names is False  # a real bool still is


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "train:\n  epochs: 3\n  batch_size: 8\n  epochs: 30\n",
            r"at line 4, column 3: the key 'epochs' is given twice",
        ),
        ("seed: 1\nseed: 2\n", r"at line 2, column 1: the key 'seed' is given twice"),
        ("", r"empty file"),
        ("   \n\n", r"empty file"),
    ],
)
def test_duplicate_keys_and_empty_files_are_refused(tmp_path: Path, text: str, expected: str):
    (tmp_path / "params.yaml").write_text(text)
    with pytest.raises(UserError, match=expected):
        load_params(tmp_path / "params.yaml")


def test_a_class_folder_named_idx_is_still_an_image_directory(tmp_path: Path):
    from tinyopt.params import with_inputs

    (tmp_path / "images" / "idx-birds").mkdir(parents=True)
    (tmp_path / "images" / "cats").mkdir()
    assert with_inputs(Params(), data=str(tmp_path / "images")).data.dataset == "images"
    (tmp_path / "mnist").mkdir()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert with_inputs(Params(), data=str(tmp_path / "mnist")).data.dataset == "idx"
