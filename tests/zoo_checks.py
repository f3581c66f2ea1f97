"""The zoo's slow checks (issue 22): each architecture of tests/zoo.py trained on its synthetic data and run
through `tinyopt run` with every technique of the default plan once, then int8, against the issue's targets:
every technique applies or says why not, every int8 variant scores within 0.03 of base-int8 unless the run's
report says why, `graph` applies to these functional models, and what runs on the emulated M4 is bit-exact with
TFLM's reference kernels. tests/test_zoo_*.py collect them, each for some of the architectures."""

from __future__ import annotations

import pytest

from tests import zoo
from tests.conftest import make_project, run_cli
from tests.flow_helpers import summary_of

# The slow tests: the whole pipeline on each architecture. Small, so the zoo fits the slow suite's budget: about
# 1,200 training examples, a few epochs per technique, 60 test examples on the emulated M4.
COUNT = 1200
DEVICE_IMAGES = 60


# Targets the zoo measured failing for reasons in tinyopt (none now; an entry is strict, so a fix shows as an
# unexpected pass): (target, architecture) -> the figures of the failing run.
KNOWN_FAILURES: dict[tuple[str, str], str] = {}


def expect_failure(request, target: str, name: str) -> None:
    """Mark this target xfail(strict) for this architecture where the zoo measured it failing."""
    reason = KNOWN_FAILURES.get((target, name))
    if reason:
        request.node.add_marker(pytest.mark.xfail(reason=f"{name}: {reason}", strict=True))


def zoo_run_for(names: list[str]):
    """A module's `zoo_run` fixture over these architectures (the slow checks are split across files so that
    pytest-xdist's --dist loadfile runs them on both workers)."""

    @pytest.fixture(scope="module", params=names)
    def zoo_run(request, tmp_path_factory):
        return run_architecture(request.param, tmp_path_factory)

    return zoo_run


def run_architecture(name: str, tmp_path_factory) -> tuple:
    """One architecture trained and run through `tinyopt run` with the zoo's plan: (name, summary, rows, the
    run's report.md)."""
    root = tmp_path_factory.mktemp(f"zoo-{name}")
    model, data, _ = zoo.save_trained(name, root / "inputs", count=COUNT)
    overrides = zoo.params(zoo.ZOO[name].kind, quick=True, device_images=DEVICE_IMAGES)
    make_project(root / "project", **overrides)
    result = run_cli(["run", "--model", str(model), "--data", str(data)], cwd=root / "project", timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = summary_of(root / "project")
    report = (root / "project" / "reports" / "latest" / "report.md").read_text()
    rows = zoo.outcomes(summary, overrides["plan"], report)
    print("\n" + zoo.table({name: rows}, {name: summary["baseline"]["metric"]}))  # shown with -rP
    return name, summary, rows, report


@pytest.mark.slow
def test_the_baseline_learns_its_data_but_not_perfectly(zoo_run):
    name, summary, rows, report = zoo_run
    assert 0.75 <= summary["baseline"]["score"] < 0.99, (name, summary["baseline"]["score"])


@pytest.mark.slow
def test_every_technique_applies_or_says_why_not(zoo_run):
    name, summary, rows, report = zoo_run
    unaccounted = [row["name"] for row in rows if "score" not in row and not row.get("skipped")]
    assert not unaccounted, f"{name}: neither a score nor a skip reason for {unaccounted}"
    for row in rows:
        if "skipped" in row:
            assert_skip_is_true(name, row)


def assert_skip_is_true(name: str, row: dict) -> None:
    """A skip's reason is checked against the architecture where the zoo knows the truth."""
    model = zoo.ZOO[name].build()
    kinds = [type(layer).__name__ for layer in model.layers]
    if "tfmot cannot" in row["skipped"]:
        # tfmot's registries have no DepthwiseConv1D (prune, cluster and quantize refuse it): true while the model
        # holds one. A gap tinyopt reports rather than fills (its Conv1D rewrite covers Conv1D only).
        assert "DepthwiseConv1D" in kinds, row
    elif "the teacher's validation" in row["skipped"] and "far below the student's" in row["skipped"]:
        pass  # the figures are in the reason: the teacher trained here (a few epochs in these tests) fell short
    elif "a reconstruction model's target is its own input" in row["skipped"]:
        assert model.output_shape == model.input_shape, row  # an autoencoder: distill has no teacher outputs
    elif "no Conv2D layer" in row["skipped"]:
        assert "Conv2D" not in kinds, row
    elif row["chain"][0] == "separable":
        # "no Conv2D layer has a k x k kernel whose separable form costs fewer MACs": true only when every k x k
        # Conv2D has a single input channel or is no cheaper as a pair.
        for layer in model.layers:
            if type(layer).__name__ == "Conv2D" and max(layer.kernel_size) > 1:
                kh, kw = layer.kernel_size
                depth, filters = layer.input_shape[-1], layer.filters
                assert kh * kw * depth + depth * filters >= kh * kw * depth * filters, (layer.name, row)
    else:
        pytest.fail(f"{name}: {row['name']} skipped, and the zoo cannot check why: {row['skipped']}")


@pytest.mark.slow
def test_every_int8_variant_scores_within_0_03_of_base_int8_unless_flagged(zoo_run, request):
    name, summary, rows, report = zoo_run
    expect_failure(request, "drop", name)
    too_low = [
        f"{row['name']} {row['score']:.4f} ({-row['drop']:+.4f})"
        for row in rows
        if row.get("drop") is not None and row["drop"] > zoo.MAX_DROP and not row["flagged"]
    ]
    base = next(row for row in rows if row["name"] == "base-int8")
    assert not too_low, f"{name}: base-int8 {base['score']:.4f}; unflagged drops over 0.03: {too_low}"


@pytest.mark.slow
def test_graph_applies_to_the_functional_models(zoo_run):
    name, summary, rows, report = zoo_run
    graph = next(row for row in rows if row["name"] == "graph-int8")
    assert "score" in graph, graph.get("skipped")
    assert "folded" in graph["notes"]


@pytest.mark.slow
def test_what_runs_on_the_m4_is_bit_exact(zoo_run, request):
    name, summary, rows, report = zoo_run
    ran = [row for row in rows if row.get("instructions") is not None]
    base = next(row for row in rows if row["name"] == "base-int8")
    assert base.get("instructions") is not None, base.get("device_note")  # the base int8 model reaches the M4
    assert base["bit_exact"], name  # the autoencoder's too: its reconstruction error computed on the device
    expect_failure(request, "bit_exact", name)
    assert not [row["name"] for row in ran if not row["bit_exact"]], name
