"""The Cortex-M cores firmware is built for and the QEMU machines that emulate them (data only, no imports
beyond the standard library: params.yaml's validation reads it too)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Core:
    name: str
    cflags: tuple[str, ...]
    machine: str  # QEMU machine
    clock_hz: int  # the machine's SysTick (core) clock in QEMU
    flash_origin: int
    flash_limit: int  # what the QEMU machine maps there
    ram_origin: int
    ram_limit: int


CORE_FLAGS = {
    "cortex-m4": ("-mcpu=cortex-m4", "-mfpu=fpv4-sp-d16", "-mfloat-abi=hard"),
    "cortex-m7": ("-mcpu=cortex-m7", "-mfpu=fpv5-d16", "-mfloat-abi=hard", "-DTINYOPT_DUAL_ISSUE"),  # kernels.h
    "cortex-m55": ("-mcpu=cortex-m55", "-mfloat-abi=hard"),
}
# QEMU machine -> (its core, SysTick clock, flash origin and size, RAM origin and size as QEMU maps them).
MACHINES = {
    "mps2-an386": ("cortex-m4", 25_000_000, 0x0, 4 << 20, 0x20000000, 4 << 20),
    "mps2-an500": ("cortex-m7", 25_000_000, 0x0, 4 << 20, 0x20000000, 4 << 20),
    "mps3-an547": ("cortex-m55", 32_000_000, 0x0, 512 << 10, 0x20000000, 512 << 10),
}


def core_name(core: str) -> str:
    """'Cortex-M4F' -> 'cortex-m4' (the F says the FPU is on, which the build assumes)."""
    name = core.lower().strip()
    return name[:-1] if name.startswith("cortex-m") and name.endswith("f") else name


def machine_for(core: str, emulator: str | None) -> str | None:
    """The QEMU machine a profile runs on: its `emulator`, or the one machine tinyopt knows for its core."""
    if emulator is not None:
        return emulator
    return next((machine for machine, spec in MACHINES.items() if spec[0] == core_name(core)), None)


def emulation_problem(core: str, emulator: str | None) -> str | None:
    """Why a profile with this core and QEMU machine cannot be built and run, or None."""
    name = core_name(core)
    if name not in CORE_FLAGS:
        return f"no emulated machine for core '{core}'; firmware builds for {', '.join(CORE_FLAGS)}"
    machine = machine_for(core, emulator)
    if machine not in MACHINES:
        return f"unknown QEMU machine '{emulator}'; known: {', '.join(MACHINES)}"
    if MACHINES[machine][0] != name:
        return f"QEMU machine {machine} emulates a {MACHINES[machine][0]}, not a {core}"
    return None


def core_of(core: str, emulator: str | None) -> Core:
    """The build and run settings; call after emulation_problem() returned None."""
    machine = machine_for(core, emulator)
    machine_core, clock, flash_origin, flash_limit, ram_origin, ram_limit = MACHINES[machine]
    return Core(
        machine_core, CORE_FLAGS[machine_core], machine, clock, flash_origin, flash_limit, ram_origin, ram_limit
    )
