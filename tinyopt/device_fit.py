"""Device fit: does a variant fit a device profile's flash and SRAM, with the runtime counted?

Flash holds the model (its .tflite bytes, as the C array) and the runtime; SRAM holds the tensor
arena TFLM measured and the runtime's own RAM. The runtime figures are labelled estimates (see
DeviceProfile). A model TFLM cannot run fits no microcontroller profile.
"""

from __future__ import annotations

from typing import Any

from tinyopt.params import DeviceProfile


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


def fits_all(edge: Any, devices: dict[str, DeviceProfile]) -> dict[str, dict]:
    """The verdict for every device profile, from a benchmark's figures (an EdgeRecord or a Measured)."""
    return {
        name: fit_verdict(edge.raw_bytes, edge.tflm_runs, edge.arena_bytes, profile, edge.tflm_error)
        for name, profile in devices.items()
    }
