"""Selection, device fit, the headline claims and the report, on typed records."""

from __future__ import annotations

from tests.record_helpers import device_figures, variant
from tinyopt.params import DEFAULT_DEVICES, Objective
from tinyopt.records.run import Baseline, Pick, Summary
from tinyopt.run.device_fit import fits_all
from tinyopt.run.pareto import pareto_front
from tinyopt.run.plots import axes_of, draw
from tinyopt.run.report import markdown, write_report
from tinyopt.run.select import select


def test_selection_applies_constraints_and_explains_the_pick():
    variants = [
        variant("a", 0.90, 18000),
        variant("b", 0.895, 7000),
        variant("c", 0.86, 5000),
        variant("d", 0.91, 40000, tflm=False, fits=False),
    ]
    picks = select(
        variants,
        0.90,
        "accuracy",
        {
            "ota": Objective(metric="gzip_bytes", goal="min", max_score_drop=0.01, tflm_only=True),
            "best": Objective(metric="score", goal="best"),
            "nano": Objective(metric="score", goal="best", profile="nano33ble"),
            "impossible": Objective(
                metric="gzip_bytes", goal="min", max_score_drop=0.0, tflm_only=True, profile="nano33ble"
            ),
        },
    )
    assert picks["ota"].variant == "b" and picks["ota"].runner_up == "a" and picks["ota"].candidates == 2
    assert "lowest gzip_bytes (7000) of 2 variants meeting: TFLM runs it;" in picks["ota"].why
    assert "highest validation accuracy (0.91)" in picks["best"].why
    assert picks["best"].variant == "d" and picks["nano"].variant == "a"
    assert picks["impossible"].variant == "a"  # exactly at the baseline passes a zero-drop limit
    assert (
        select(
            [variant("c", 0.5, 10)], 0.9, "accuracy", {"x": Objective(metric="score", goal="best", max_score_drop=0.1)}
        )["x"].variant
        is None
    )


def test_selection_follows_the_metric_direction_for_errors():
    variants = [
        variant("a", 0.30, 9000, metric="mae"),
        variant("b", 0.20, 9500, metric="mae"),
        variant("c", 0.26, 5000, metric="mae"),
    ]
    picks = select(
        variants,
        0.25,
        "mae",
        {
            "best": Objective(metric="score", goal="best"),
            "small": Objective(metric="gzip_bytes", goal="min", max_score_drop=0.02),
        },
    )
    assert picks["best"].variant == "b" and picks["best"].why.startswith("lowest validation mae (0.2)")
    assert picks["small"].variant == "c"  # 0.01 worse than the baseline's 0.25: allowed; a is 0.05 worse


def test_pareto_front_keeps_only_undominated_points():
    points = [(100, 0.80), (50, 0.85), (200, 0.90), (60, 0.84), (300, 0.89)]
    assert sorted(pareto_front(points)) == [1, 2]


def run_summary(variants: list, reference: list) -> Summary:
    """A run's summary around these records (the first variant is the baseline, the first reference its peer)."""
    return Summary(
        run_id="r1",
        created="2026-12-01T00:00:00+00:00",
        mlflow_run_id="m",
        mlflow_tracking_uri="sqlite:///mlflow.db",
        mlflow_experiment="tinyopt",
        git_commit="c",
        params_hash="h",
        dataset={"name": "fashion-mnist", "version": "v", "num_train": 1, "num_val": 1, "num_test": 1},
        baseline=Baseline(**dict(variants[0]), epochs_run=1),
        variants=variants,
        skipped=[],
        picks={
            "ota": Pick(
                variant=variants[0].name, value=17000, metric="gzip_bytes", why="because", candidates=1, runner_up=None
            )
        },
        reference=reference,
        reference_note=None,
        comparisons=[
            {
                "reference": r.name,
                "ours": variants[0].name,
                "size_ratio": 1.0,
                "gzip_ratio": 1.0,
                "score_diff": 0.0,
                "latency_ratio": 1.0,
            }
            for r in reference[:1]
        ],
        headline=[],
        devices={name: profile.model_dump() for name, profile in DEFAULT_DEVICES.items()},
        timings={},
    )


def one_variant_summary(with_reference: bool = True) -> Summary:
    """A run of one int8 variant, measured on a device, beside one reference model (or none)."""
    record = variant(
        "base-int8",
        0.9,
        17000,
        params=20410,
        macs=93288,
        latency_us_p99=12.0,
        device={"nano33ble": device_figures(4e5)},
    )
    return run_summary([record], reference=[record.model_copy(update={"name": "ref"})] if with_reference else [])


def test_report_has_every_section_and_the_device_figures(tmp_path):
    summary = one_variant_summary()
    text = markdown(summary)
    for heading in (
        "## Picks",
        "## Variants",
        "## On the emulated devices",
        "## Reference models",
        "## Ours beside the reference",
        "## How to read this",
    ):
        assert heading in text
    assert "| base-int8 | 34,000 | 17,000 | 0.9000 |" in text
    assert "| base-int8 | nano33ble | cortex-m4 (mps2-an386) | 20,000 (18,000) | 10,000 | 400,000 |" in text
    assert "| 1.000 | 1.000 |" in text  # flash and instructions as a share of base-int8's
    assert "| ref:ref | nano33ble |" in text
    assert "not device latency" in text and "QEMU counts instructions, not cycles" in text
    files = write_report(summary, tmp_path)
    assert {f.name for f in files} == {
        "report.md",
        "score-vs-gzip.png",
        "score-vs-arena.png",
        "score-vs-instructions.png",
    }


FLOAT = "not compiled for a device: a float model: microcontroller C libraries are made from int8 models"
TANH = "not compiled for a device: the MCU code generator does not support op TANH"
RAM = "stm32f746: the firmware does not fit STM32F746 Discovery: RAM (327,680 bytes) overflowed by 2,336 bytes"


def test_the_report_and_the_console_say_why_a_model_has_no_device_figures():
    from cli.pipeline import variants_table

    ours = [
        variant("base-int8", 0.9, 17000, device={"nano33ble": device_figures(4e5)}, device_note=RAM),
        variant("base-float32", 0.9, 40000, device_note=FLOAT),
        variant("prune-float16", 0.9, 30000, device_note=FLOAT),
        variant("tanh-int8", 0.9, 9000, device_note=TANH),
    ]
    summary = run_summary(ours, reference=[variant("f32", 0.9, 40000, device_note=FLOAT)])
    gaps = [
        f"base-int8: {RAM}",
        f"base-float32, prune-float16, ref:f32: {FLOAT}",  # one line per reason
        f"tanh-int8: {TANH}",
    ]
    assert "## Why no device figures\n\n" + "\n".join(f"- {gap}" for gap in gaps) + "\n" in markdown(summary)
    assert variants_table(summary).endswith("\n\nwhy no device figures:\n" + "\n".join(f"  {gap}" for gap in gaps))


def test_a_reason_every_model_shares_is_said_once():
    from cli.pipeline import variants_table

    off = "not measured on a device: arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi, qemu-system-arm)"
    ours = [variant("base-int8", 0.9, 17000, device_note=off), variant("base-float32", 0.9, 40000, device_note=off)]
    summary = run_summary(ours, reference=[])
    text = markdown(summary)
    assert text.count("arm-none-eabi-gcc is not installed") == 1
    assert (
        "No device figures: arm-none-eabi-gcc is not installed (Debian: gcc-arm-none-eabi, qemu-system-arm).\n" in text
    )
    assert "Why no device figures" not in text
    table = variants_table(summary)  # `tinyopt run` warned once, at its start
    assert "why no device figures" not in table and "not installed" not in table


def test_fastest_on_a_device_is_the_fewest_measured_instructions():
    variants = [
        variant("float", 0.90, 40000, latency=1.0),  # fastest on the host, never run on the device
        variant("a", 0.90, 18000, latency=9.0, device={"nano33ble": device_figures(5e5)}),
        variant("b", 0.90, 7000, latency=8.0, device={"nano33ble": device_figures(3e5)}),
    ]
    objective = Objective(metric="instructions", goal="min", profile="nano33ble")
    pick = select(variants, 0.90, "accuracy", {"fastest": objective})["fastest"]
    assert (pick.variant, pick.value, pick.runner_up, pick.candidates) == ("b", 3e5, "a", 2)
    assert "lowest instructions on nano33ble's emulated core (300000.0)" in pick.why


def test_a_pick_named_after_a_device_considers_only_variants_measured_bit_exact_there():
    not_exact = device_figures(4e5).model_copy(update={"bit_exact": False, "bit_exact_share": 0.98})
    variants = [
        variant("int16x8", 0.95, 30000),  # the best validation score, never run on the device
        variant("a", 0.90, 18000, device={"nano33ble": device_figures(5e5)}),
        variant("b", 0.89, 7000, device={"nano33ble": device_figures(3e5)}),
        variant("c", 0.93, 9000, device={"nano33ble": not_exact}),  # ran, but not bit-exact with TFLM
        variant("d", 0.94, 9000, device={"stm32f746": device_figures(3e5)}),  # measured on another core only
    ]
    objectives = {
        "best-on-nano33ble": Objective(metric="score", goal="best", profile="nano33ble"),
        "nano": Objective(metric="score", goal="best", profile="nano33ble"),  # not named after it: fit is enough
    }
    picks = select(variants, 0.90, "accuracy", objectives)
    pick = picks["best-on-nano33ble"]
    assert (pick.variant, pick.runner_up, pick.candidates) == ("a", "b", 2)
    assert "measured on nano33ble's emulated core, bit-exact with TFLM there" in pick.why
    assert picks["nano"].variant == "int16x8"

    none = select(variants[:1] + variants[3:], 0.90, "accuracy", objectives)["best-on-nano33ble"]
    assert none.variant is None and none.candidates == 0
    assert none.why.startswith("no variant was measured bit-exact on nano33ble's emulated core")


def test_measured_figures_decide_the_fit_where_a_device_ran_the_model():
    edge = variant("a", 0.9, 1000, raw_bytes=2_000_000, arena_bytes=1000)  # the estimate: over nano's flash
    devices = {k: DEFAULT_DEVICES[k] for k in ("nano33ble", "stm32f746", "uno")}
    verdicts = fits_all(
        edge,
        devices,
        {"nano33ble": device_figures(4e5, flash=30_000, ram=12_000)},
        {"stm32f746": "the firmware does not fit STM32F746 Discovery: FLASH (1,048,576 bytes) overflowed by 9 bytes"},
    )
    assert (
        verdicts["nano33ble"]["fits"]
        and "measured on mps2-an386: 30,000 B flash, 12,000 B RAM" in (verdicts["nano33ble"]["reason"])
    )
    assert not verdicts["stm32f746"]["fits"] and "overflowed by 9 bytes" in verdicts["stm32f746"]["reason"]
    assert not verdicts["uno"]["fits"] and verdicts["uno"]["reason"].endswith("(estimate: TFLM's runtime figures)")


def test_headline_lists_every_deployable_int8_variant_that_beats_the_reference():
    from tinyopt.run.summary import headline

    def model(name, raw, gzip, acc, tflm=True, io="int8", latency=10.0):
        return variant(name, acc, gzip, tflm=tflm, latency=latency, raw_bytes=raw, input_dtype=io, output_dtype=io)

    references = [
        model("ref-best", 23224, 17098, 0.8964, io="float32", latency=8.0),
        model("ref-small", 23208, 7549, 0.8878, io="float32", latency=5.0),
        model("ref-undeployable", 20000, 5000, 0.95, tflm=False),
    ]
    ours = [
        model("a", 22632, 16627, 0.8994),
        model("b", 23300, 16000, 0.90),
        model("c", 22000, 7000, 0.89),
        model("d", 22000, 7000, 0.95, io="float32"),
        model("e", 22000, 6000, 0.85),
    ]
    best, small = headline(ours, references)
    assert best.reference == "ref-best"
    assert [m.name for m in best.ours] == ["a"]  # b is larger, c less accurate, d has float I/O
    assert small.reference == "ref-small" and [m.name for m in small.ours] == ["c"]
    assert small.ours[0].latency_ratio_to_fastest_reference == 2.0


def legend_texts(summary: Summary) -> list[list[str]]:
    import matplotlib.pyplot as plt

    texts = []
    for _, x_label, x_of in axes_of(summary):
        figure = draw(summary, x_label, x_of)
        texts.append([text.get_text() for text in figure.axes[0].get_legend().get_texts()])
        plt.close(figure)
    return texts


def test_the_papers_marker_is_in_the_legend_only_when_the_plot_has_reference_points():
    assert legend_texts(one_variant_summary()) == [["tinyopt", "reference (paper)", "Pareto front"]] * 3
    assert legend_texts(one_variant_summary(with_reference=False)) == [["tinyopt", "Pareto front"]] * 3


def test_an_int8_variant_far_below_base_int8_is_flagged_with_its_cause():
    from tinyopt.run.report import score_drops

    base = variant("base-int8", 0.90, 100, keras_score=0.91)
    close = variant("qat-int8", 0.88, 100, chain=["train", "qat", "int8"])
    noted = variant("separable-int8", 0.85, 90, chain=["train", "separable", "int8"], notes="validation collapsed")
    converted = variant("prune-int8", 0.80, 80, chain=["train", "prune", "int8"], keras_score=0.90)
    float_one = variant("prune-float32", 0.70, 80, chain=["train", "prune", "float32"])
    drops = score_drops([base, close, noted, converted, float_one])
    assert drops == [
        "separable-int8: accuracy 0.8500, 0.050 below base-int8 (0.9000): lost in the fine-tunes: its Keras model "
        "(separable) scores 0.8500 against the baseline's 0.9100 (more epochs, a lower learning rate or a gentler "
        "setting may help); its techniques noted: validation collapsed",
        "prune-int8: accuracy 0.8000, 0.100 below base-int8 (0.9000): lost in the int8 conversion: its Keras model "
        "scores 0.9000, its int8 file 0.8000",
    ]
    summary = run_summary([base, close, noted, converted], [])
    assert "## Score drops over 0.03 against base-int8\n\n- separable-int8: accuracy 0.8500" in markdown(summary)
    errors = [variant("base-int8", 0.1, 100, metric="mae"), variant("x-int8", 0.5, 100, metric="mae")]
    assert score_drops(errors) == []  # an error's drop is not in points: not flagged this way
