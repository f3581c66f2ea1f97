"""Estimated cycles per inference on a Cortex-M4, from the instruction mix a firmware executes under QEMU.

QEMU counts instructions, not cycles. A QEMU plugin (insn_mix.c) counts, between the firmware's
fw_window_open() and fw_window_close() (around each timed invoke), the executed instructions by class, the
registers load/store-multiple instructions move and the branches taken; the Cortex-M4 Technical Reference
Manual's timing table turns them into a cycle range. An estimate, labelled so, to compare with the
milliseconds vendors publish for real boards, under these assumptions:
- memory with no wait states and no caches (a board's flash wait states and accelerator add to real figures);
- a taken branch refills the pipeline in P = 1 (low) to 3 (high) cycles; a division takes 2 to 12; an IT
  instruction is folded (0) or not (1);
- a load or store single pipelines with the one before only when both are in the same straight-line block.
The Cortex-M7 (dual issue, caches) and the Cortex-M55's Helium beats need a pipeline model, not a table: no
estimate for them.

    mix = instruction_mix(elf, core, inputs, work)   # per inference
    low, high = cycles(mix, CORTEX_M4)
"""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyopt.mcu.firmware import qemu_command
from tinyopt.params.machines import Core

HERE = Path(__file__).parent
PLUGIN_SOURCE = HERE / "insn_mix.c"
# The plugin's classes (its enum, in order).
CLASSES = (
    *("alu", "mul", "div", "load", "load_next", "store", "store_next", "double", "multi", "multi_regs"),
    *("branch", "taken", "it", "fp_mac", "fp_div", "fp_mem", "fp", "vector"),
)
INSTRUCTION_CLASSES = tuple(c for c in CLASSES if c not in ("multi_regs", "taken"))  # the rest are not instructions


@dataclass(frozen=True)
class Timing:
    core: str
    source: str
    cycles: dict[str, tuple[float, float]]  # class -> (low, high) cycles per count


# Arm Cortex-M4 Technical Reference Manual r0p1 (DDI 0439B), 3.3.1, Table 3-1, and the FPU's table 7-1.
CORTEX_M4 = Timing(
    "cortex-m4",
    "Cortex-M4 TRM (DDI 0439B) Table 3-1 and FPU Table 7-1",
    {
        "alu": (1, 1),
        "mul": (1, 1),  # MUL, MLA, the 64-bit and the DSP multiplies (SMLAD...): one cycle on the M4
        "div": (2, 12),
        "load": (2, 2),
        "load_next": (1, 1),  # neighbouring load/store singles pipeline their address and data phases
        "store": (2, 2),
        "store_next": (1, 1),
        "double": (3, 3),  # LDRD/STRD: 1 + 2
        "multi": (1, 1),  # LDM/STM/PUSH/POP: 1 + N, N counted in multi_regs
        "multi_regs": (1, 1),
        "branch": (1, 1),
        "taken": (1, 3),  # P, the pipeline refill of a taken branch
        "it": (0, 1),
        "fp_mac": (3, 3),  # VMLA/VFMA
        "fp_div": (14, 14),  # VDIV, VSQRT
        "fp_mem": (2, 2),  # VLDR, VSTR
        "fp": (1, 1),
    },
)


class MixUnavailable(Exception):
    """Why the instruction mix could not be counted (no host compiler, no markers in the firmware)."""


@functools.cache
def plugin(work: Path) -> Path:
    """The plugin, compiled for this host (kept by its source's hash)."""
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes()).hexdigest()[:12]
    library = work / f"insn_mix-{digest}.so"
    if not library.exists():
        compiler = shutil.which("gcc") or shutil.which("cc")
        if not compiler:
            raise MixUnavailable("no host C compiler (gcc) to build the QEMU plugin")
        work.mkdir(parents=True, exist_ok=True)
        command = [compiler, "-shared", "-fPIC", "-O2", "-o", str(library), str(PLUGIN_SOURCE)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise MixUnavailable(f"compiling the QEMU plugin failed: {done.stderr.strip()[-500:]}")
    return library


def _symbol(elf: Path, name: str) -> int:
    listing = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    found = re.search(rf"^([0-9a-f]+) \w {re.escape(name)}$", listing, re.M)
    if not found:
        raise MixUnavailable(f"{elf.name} has no {name}() (built before the window markers?)")
    return int(found.group(1), 16)


def instruction_mix(elf: Path, core: Core, inputs: np.ndarray, work: Path) -> dict[str, float]:
    """Per inference: executed instructions by class, registers moved by LDM/STM/PUSH/POP, branches taken."""
    opens, closes = _symbol(elf, "fw_window_open"), _symbol(elf, "fw_window_close")
    with tempfile.TemporaryDirectory() as scratch:
        np.ascontiguousarray(inputs).tofile(Path(scratch) / "inputs.bin")
        options = f"{plugin(work)},open={opens:#x},close={closes:#x},out=mix.txt"
        done = subprocess.run(
            [*qemu_command(elf, core), "-plugin", options], cwd=scratch, capture_output=True, text=True, timeout=1800
        )
        if done.returncode:
            raise MixUnavailable(f"QEMU with the plugin failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        counts = dict(item.split("=") for item in (Path(scratch) / "mix.txt").read_text().split())
    return {name: int(counts[name]) / len(inputs) for name in CLASSES}


def instructions(mix: dict[str, float]) -> float:
    return sum(mix[c] for c in INSTRUCTION_CLASSES)


def cycles(mix: dict[str, float], timing: Timing = CORTEX_M4) -> tuple[float, float]:
    """The (low, high) estimated cycles of the mix; MixUnavailable when it holds a class the table lacks."""
    missing = [c for c, n in mix.items() if n and c not in timing.cycles]
    if missing:
        raise MixUnavailable(f"the {timing.core} table has no timing for {', '.join(missing)}")
    low = sum(n * timing.cycles[c][0] for c, n in mix.items() if n)
    high = sum(n * timing.cycles[c][1] for c, n in mix.items() if n)
    return low, high
