"""Device fit: does a variant fit a device profile's flash and SRAM?

Measured where the profile's core was emulated (tasks/device.py): the firmware linked within the
profile's flash and RAM, and its flash and RAM (stack high-water mark included) are the figures. Elsewhere
an estimate: flash holds the model (its .tflite bytes, as the C array) and TFLM, SRAM the tensor arena TFLM
measured and TFLM's own RAM (labelled estimates, see DeviceProfile); a model TFLM cannot run fits no
microcontroller profile there.
"""

from __future__ import annotations

from tinyopt.params import DeviceProfile
from tinyopt.records.run import DeviceFigures, EdgeFigures
from tinyopt.records.steps import FIRMWARE_FAILED


def fit_verdict(
    raw_bytes: int,
    tflm_runs: bool,
    arena_bytes: int | None,
    profile: DeviceProfile,
    tflm_error: str | None = None,
) -> dict:
    """{'fits': bool, 'reason': str, 'flash_needed', 'ram_needed'}; the reason names the first budget
    broken and by how much."""
    if not tflm_runs or arena_bytes is None:
        why = (tflm_error or "unknown reason").split(";")[0][:160]
        return {"fits": False, "reason": f"TFLM cannot run it ({why})", "flash_needed": None, "ram_needed": None}
    flash = raw_bytes + profile.runtime_flash_bytes
    ram = arena_bytes + profile.runtime_ram_bytes
    verdict = {"fits": True, "reason": "fits", "flash_needed": flash, "ram_needed": ram}
    if flash > profile.flash_bytes:
        verdict.update(
            fits=False,
            reason=f"flash over by {flash - profile.flash_bytes:,} bytes ({flash:,} needed of {profile.flash_bytes:,})",
        )
    elif ram > profile.sram_bytes:
        verdict.update(
            fits=False,
            reason=f"SRAM over by {ram - profile.sram_bytes:,} bytes ({ram:,} needed of {profile.sram_bytes:,})",
        )
    return verdict


def measured_verdict(figures: DeviceFigures, profile: DeviceProfile) -> dict:
    """The verdict from what the emulated core measured (the firmware linked within the profile's budgets)."""
    fits = figures.flash_bytes <= profile.flash_bytes and figures.ram_bytes <= profile.sram_bytes
    reason = (
        f"fits (measured on {figures.machine}: {figures.flash_bytes:,} B flash, {figures.ram_bytes:,} B RAM)"
        if fits
        else f"measured {figures.flash_bytes:,} B flash and {figures.ram_bytes:,} B RAM exceed {profile.name}'s"
    )
    return {"fits": fits, "reason": reason, "flash_needed": figures.flash_bytes, "ram_needed": figures.ram_bytes}


def fits_all(
    edge: EdgeFigures,
    devices: dict[str, DeviceProfile],
    measured: dict[str, DeviceFigures] | None = None,
    not_run: dict[str, str] | None = None,
) -> dict[str, dict]:
    """The verdict for every device profile: measured where the device step ran the model on the profile's
    core (`measured`; `not_run` says why it could not, e.g. the firmware does not fit), else the estimate
    from a benchmark's figures (an EdgeRecord or a Measured)."""
    measured, not_run = measured or {}, not_run or {}
    verdicts = {}
    for name, profile in devices.items():
        if name in measured:
            verdicts[name] = measured_verdict(measured[name], profile)
        elif "does not fit" in not_run.get(name, ""):
            verdicts[name] = {"fits": False, "reason": not_run[name], "flash_needed": None, "ram_needed": None}
        elif not_run.get(name, "").startswith(FIRMWARE_FAILED):  # no figures to trust: an estimate would mislead
            reason = f"not known to fit: {not_run[name]}"
            verdicts[name] = {"fits": False, "reason": reason, "flash_needed": None, "ram_needed": None}
        else:
            verdict = fit_verdict(edge.raw_bytes, edge.tflm_runs, edge.arena_bytes, profile, edge.tflm_error)
            if verdict["fits"] or verdict["flash_needed"] is not None:
                verdict["reason"] += " (estimate: TFLM's runtime figures)"
            verdicts[name] = verdict
    return verdicts
