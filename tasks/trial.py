"""One trial of `tinyopt search`: a chain, with the settings the search drew, built from the baseline by
the same technique steps and conversion as a run, and scored on the validation split only (the test
split is the search's to report once, at the end)."""

from __future__ import annotations

from pathlib import Path

from tasks.convert import convert_model
from tasks.techniques import technique_call
from tinyopt.core.errors import NotApplicable
from tinyopt.core.files import sha256_file
from tinyopt.mcu.firmware import toolchain_missing
from tinyopt.ml.metrics import better, score
from tinyopt.orchestration.steps import step
from tinyopt.params import CONVERSIONS, TECHNIQUES, Params
from tinyopt.params.machines import emulation_problem
from tinyopt.records.steps import SkippedRecord, TrialRecord
from tinyopt.run.device_fit import fit_verdict
from tinyopt.runtimes import litert, tflm
from tinyopt.search.space import chain_settings


@step("trial", cache=False)
def run_trial(
    number: int,
    chain: list[str],
    params: Params,
    prepared: Path,
    baseline: Path,
    floor: float | None,
    out_dir: Path,
    curves_to: tuple[str, ...] = (),
) -> TrialRecord:
    """Build `chain` with params' technique settings; a fine-tuned model scoring worse than `floor` on the
    validation split ends the trial there (pruned), before it is converted. Each fine-tune's epochs go live
    to the MLflow runs `curves_to` (the trial's own), as `<token>.loss`, ..."""
    from tinyopt.datasets.prepared import load_prepared

    metric = params.task.score_metric
    trial = dict(number=number, chain=chain, settings=chain_settings(chain, params), metric=metric)
    parent, seconds = baseline, 0.0
    for token in chain[:-1]:
        technique_step, arguments = technique_call(token, parent, prepared, params, out_dir / token)
        if TECHNIQUES[token].fine_tuned:  # a step that trains takes the runs its epochs go to
            arguments["curves_to"] = curves_to
        made = technique_step.task.fn(**arguments)
        if isinstance(made, SkippedRecord):
            return TrialRecord(**trial, state="skipped", reason=f"{token}: {made.reason}")
        seconds += made.train_seconds
        if floor is not None and better(metric, floor, made.val_score):
            reason = f"{token}: validation {metric} {made.val_score:.4f} is worse than the floor {floor:.4f}"
            return TrialRecord(**trial, state="pruned", reason=reason, val_score=made.val_score, train_seconds=seconds)
        parent = Path(made.model_path)

    converted = convert_model(parent, chain[-1], out_dir / "model.tflite", prepared, params.conversion, params.seed)
    data = load_prepared(prepared)
    tflite = Path(converted.tflite_path)
    checked = tflm.check(tflite, data["x_val"][:2])
    profile = params.devices[params.search.profile]
    verdict = fit_verdict(
        converted.raw_bytes, checked["runs"], checked.get("arena_bytes"), profile, checked.get("error")
    )
    device: dict = {}
    if latency_searched(params) is None:
        device, verdict = on_the_core(tflite, chain[-1], data["x_val"][: params.search.device_inputs], params)
    limit = params.search.max_model_bytes
    if verdict["fits"] and limit is not None and converted.raw_bytes > limit:
        verdict = {"fits": False, "reason": f"{converted.raw_bytes:,} bytes, over search.max_model_bytes ({limit:,})"}
    return TrialRecord(
        **trial,
        state="complete",
        val_score=round(score(metric, data["y_val"], litert.predict(tflite, data["x_val"]), data["x_val"]), 6),
        raw_bytes=converted.raw_bytes,
        gzip_bytes=converted.gzip_bytes,
        arena_bytes=checked.get("arena_bytes"),
        tflm_runs=bool(checked["runs"]),
        fits=verdict["fits"],
        fit_reason=verdict["reason"],
        tflite_path=str(tflite),
        sha256=sha256_file(tflite),
        train_seconds=round(seconds, 2),
        **device,
    )


def latency_searched(params: Params) -> str | None:
    """Why the search cannot measure its trials' instructions on search.profile's core; None when it does."""
    if not params.search.latency:
        return "search.latency is off"
    profile = params.devices[params.search.profile]
    problem = toolchain_missing() or emulation_problem(profile.core, profile.emulator)
    return f"instructions not searched: {problem}" if problem else None


def untrained_int8(model, prepared: Path, params: Params, on_core: bool) -> dict:
    """The drawn architecture's `model` (tasks.train.untrained_model) in full int8: its .tflite bytes and,
    `on_core`, its instructions per inference on search.profile's emulated core. Both follow the shapes, not the
    weights, so a search rejects an architecture over its budget by them, untrained. Empty where it does not convert
    to int8 (its chain may not need to), and no instructions where the core cannot run it (its trial says why)."""
    import tempfile

    from tinyopt.datasets.prepared import load_prepared
    from tinyopt.ml.models import save_model

    with tempfile.TemporaryDirectory(prefix="tinyopt-untrained-") as scratch:
        keras_path, tflite = Path(scratch) / "model.keras", Path(scratch) / "model.tflite"
        save_model(model, keras_path)
        try:
            converted = convert_model(keras_path, "int8", tflite, prepared, params.conversion, params.seed)
        except Exception:  # noqa: BLE001 - a check before training: a model int8 cannot take is its trial's to report
            return {}
        figures = {"raw_bytes": converted.raw_bytes}
        if on_core:
            x = load_prepared(prepared)["x_val"][: params.search.device_inputs]
            measured, _ = on_the_core(tflite, "int8", x, params)
            figures["instructions"] = measured.get("instructions")
    return figures


def on_the_core(tflite: Path, conversion: str, x, params: Params) -> tuple[dict, dict]:
    """The trial's generated C run on search.profile's emulated core: its instructions per inference, flash and
    RAM (the firmware linked within the profile's), and the verdict they give, the instruction budget included."""
    from tinyopt.mcu.codegen import generate
    from tinyopt.mcu.on_device import measure_library

    name = params.search.profile
    if not CONVERSIONS[conversion].on_device:
        return {}, {"fits": False, "reason": f"a {conversion} model: the search measures int8 models on {name}"}
    blob = tflite.read_bytes()
    try:
        report = measure_library(generate(blob, "model"), blob, {name: params.devices[name]}, x, None)[name]
    except NotApplicable as exc:  # an op the generator lacks
        return {}, {"fits": False, "reason": f"not compiled for {name}: {exc}"}
    if isinstance(report, str):
        return {}, {"fits": False, "reason": report}
    figures = {"instructions": report.instructions, "flash_bytes": report.flash_bytes, "ram_bytes": report.ram_bytes}
    budget = params.search.instruction_budget(params.devices[name].clock_mhz)
    if budget is not None and report.instructions > budget:
        return figures, {
            "fits": False,
            "reason": f"{report.instructions:,.0f} instructions, over the budget ({budget:,.0f})",
        }
    measured = f"measured on {name}: {report.flash_bytes:,} B flash, {report.ram_bytes:,} B RAM"
    return figures, {"fits": True, "reason": measured}
