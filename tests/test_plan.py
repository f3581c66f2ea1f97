"""The plan: chains validated at load, shared prefixes trained once, names and lineage."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO
from tinyopt.core.errors import UserError
from tinyopt.params import DEFAULT_PLAN, TECHNIQUES, Params, parse_params
from tinyopt.run import plan as planning


@pytest.mark.parametrize(
    "chain, expected",
    [
        (["int8", "prune"], "the conversion 'int8' must be the last step"),
        (["prune"], "has 0 conversions"),
        (["prune", "int8", "float16"], "has 2 conversions"),
        (["magic", "int8"], "unknown step 'magic'"),
        (["qat", "prune", "int8"], "one quantization-aware step, and it must be the last technique"),
        (["pqat", "int8"], "pqat keeps what an earlier step made, so it needs a pruning step before it"),
        (["cluster", "pcqat", "int8"], "needs prune then sp_cluster before it"),
        (["sp_cluster", "int8"], "needs a pruning step before it"),
        (["prune", "separable", "int8"], "separable rebuilds and retrains the model, so it must come first"),
        (["prune", "prune", "int8"], "repeats a technique"),
        (["prune", "prune_filters", "int8"], "prune_filters rebuilds the model with fewer filters"),
        (["prune_filters", "sp_cluster", "int8"], "needs a pruning step before it"),
        ([], "an empty chain"),
    ],
)
def test_invalid_chains_are_rejected_at_load_with_the_reason(chain, expected):
    with pytest.raises(UserError) as info:
        parse_params({"plan": [["float32"], chain]})
    assert str(info.value).startswith("params.yaml: plan[1]: ")
    assert expected in str(info.value)


def test_a_chain_listed_twice_is_rejected():
    with pytest.raises(UserError, match=r"plan\[2\]: \[prune, int8\] is listed twice"):
        parse_params({"plan": [["int8"], ["prune", "int8"], ["prune", "int8"]]})


CONVERSIONS = {"float32", "float16", "dynamic_range", "int8_fallback", "int8", "int16x8"}


def test_default_plan_covers_every_component_of_the_paper():
    steps = {step for chain in DEFAULT_PLAN for step in chain}
    assert steps == {
        *CONVERSIONS,
        "prune",
        "prune_2_4",
        "prune_filters",
        "cluster",
        "sp_cluster",
        "qat",
        "pqat",
        "cqat",
        "pcqat",
        "separable",
        "graph",
    }
    for technique in ("prune", "cluster", "qat", "separable"):
        assert {chain[-1] for chain in DEFAULT_PLAN if chain[:-1] == [technique]} == CONVERSIONS


def test_shared_prefixes_are_one_model_each():
    chains = [
        ["prune", "int8"],
        ["prune", "float16"],
        ["prune", "sp_cluster", "int8"],
        ["prune", "sp_cluster", "pcqat", "int8"],
        ["cluster", "int8"],
    ]
    assert planning.technique_prefixes(chains) == [
        ("cluster",),
        ("prune",),
        ("prune", "sp_cluster"),
        ("prune", "sp_cluster", "pcqat"),
    ]


def test_names_paths_and_parents():
    assert planning.variant_name(["int8"]) == "base-int8"
    assert planning.variant_name(["prune", "sp_cluster", "int8"]) == "prune-sp_cluster-int8"
    assert planning.parent_variant(["prune", "sp_cluster", "int8"]) == "prune-int8"
    assert planning.parent_variant(["prune", "int8"]) == "base-int8"
    assert str(planning.variant_tflite(["prune", "int8"])) == "artifacts/variants/prune-int8/prune-int8.tflite"
    assert planning.chains(parse_params({"plan": [["int8"]]})) == [["float32"], ["int8"]]  # baseline always there


def test_chain_params_hold_one_param_per_step_setting():
    flat = planning.chain_params(["prune", "cluster", "int8"], Params())
    assert flat["chain"] == "train > prune > cluster > int8"
    assert flat["prune.target_sparsity"] == 0.7 and flat["cluster.clusters"] == 16
    assert flat["calibration_samples"] == 500 and "qat.fine_tune_epochs" not in flat


def test_dvc_builds_every_model_of_the_default_plan_from_its_parent():
    """dvc.yaml's technique stages are the default plan's models, so that `dvc repro` and the flow cannot drift:
    a fine-tuned one is an item of the technique stage's foreach, one that trains nothing (graph) its own stage."""
    from tasks.techniques import STEP_MODULES
    from tinyopt.ml.training import FineTuning

    saved_as = {r.token: r.saved_as for m in STEP_MODULES for r in vars(m).values() if isinstance(r, FineTuning)}
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    items = stages["technique"]["foreach"]
    prefixes = planning.technique_prefixes([list(chain) for chain in DEFAULT_PLAN])
    fine_tuned = [prefix for prefix in prefixes if TECHNIQUES[prefix[-1]].fine_tuned]
    assert sorted(items) == sorted(planning.model_name(prefix) for prefix in fine_tuned)
    for prefix in prefixes:
        token, parent = prefix[-1], planning.model_dir(prefix[:-1])
        parent_file = parent / (saved_as[prefix[-2]] if len(prefix) > 1 else "model.keras")
        if prefix in fine_tuned:
            assert items[planning.model_name(prefix)] == {
                "token": token,
                "settings": TECHNIQUES[token].settings,
                "parent": str(parent_file),
                "out": str(planning.model_dir(prefix)),
                "saved": saved_as[token],
            }
        else:
            command = f"tinyopt technique {token} --parent {parent_file} --out-dir {planning.model_dir(prefix)} "
            assert stages[planning.model_name(prefix)]["cmd"].startswith(command)


def test_filter_pruning_comes_before_magnitude_pruning_or_right_after_separable():
    parse_params(
        {
            "plan": [
                ["float32"],
                ["prune_filters", "prune", "sp_cluster", "int8"],
                ["separable", "prune_filters", "int8"],
            ]
        }
    )
