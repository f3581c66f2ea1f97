"""Build measurement firmware for a device profile (arm-none-eabi-gcc) and run it under QEMU.

The linker script holds the profile's flash and RAM, so a model that does not fit fails to link with that
reason. What comes back is measured: flash (text + data) of the whole firmware and of the model's object,
RAM (data + bss + the painted stack's high-water mark), instructions per inference and per op (QEMU with
-icount shift=0 runs 1 instruction per virtual nanosecond; SysTick counts the core clock), and the outputs.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from tinyopt.core.children import run_child
from tinyopt.core.errors import NotApplicable, UserError
from tinyopt.mcu.codegen import Generated
from tinyopt.params import DeviceProfile
from tinyopt.params.machines import Core, core_of, emulation_problem

CFLAGS = (
    "-O2",
    "-std=c99",
    "-mthumb",
    "-ffreestanding",
    "-ffunction-sections",
    "-fdata-sections",
    "-fno-tree-loop-distribute-patterns",
    "-ffp-contract=off",
    "-fno-strict-aliasing",
    "-Wall",
)
STACK_RESERVE = 2048  # linked below RAM's end; the painted high-water mark says what was used


def core_for(profile: DeviceProfile) -> Core:
    """The core and QEMU machine the profile names; NotApplicable with the reason when it cannot be emulated."""
    problem = emulation_problem(profile.core, profile.emulator)
    if problem:
        raise NotApplicable(f"{profile.name}: {problem}")
    return core_of(profile.core, profile.emulator)


FIRMWARE = Path(__file__).parent / "firmware"
# Not Python, yet the code a measurement runs: tinyopt.orchestration.cache digests these with this module.
CODE_FILES = (
    *(FIRMWARE / name for name in ("startup.c", "main.c", "semihost.h", "link.ld.in")),
    Path(__file__).parent / "kernels.h",
)


@functools.cache
def toolchain_version() -> str:
    """The cross compiler's and QEMU's versions (first lines), or '' when one is missing."""
    if toolchain_missing():
        return ""
    lines = [
        _run([tool, "--version"], Path.cwd()).stdout.splitlines()[:1]
        for tool in ("arm-none-eabi-gcc", "qemu-system-arm")
    ]
    return "; ".join(line[0] for line in lines if line)


def toolchain_missing() -> str | None:
    """Why firmware cannot be built or run here, or None."""
    for tool in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: gcc-arm-none-eabi, qemu-system-arm; scripts/setup.sh)"
    return None


@dataclass
class Firmware:
    elf: Path
    core: Core
    profile: DeviceProfile
    flash_bytes: int  # text + data of the whole firmware
    model_flash_bytes: int  # text + data of the generated model (weights, parameters, code, kernels inlined)
    static_ram_bytes: int  # data + bss
    model_arena_bytes: int


@dataclass
class DeviceRun:
    """Measured on the emulated core."""

    core: str
    machine: str
    count: int
    flash_bytes: int
    model_flash_bytes: int
    ram_bytes: int  # data + bss + stack high-water mark
    stack_bytes: int
    instructions_per_inference: float
    instructions_per_op: list[float]
    op_kinds: list[str]
    outputs: np.ndarray = field(repr=False)
    errors: np.ndarray | None = field(default=None, repr=False)  # an autoencoder's reconstruction errors (float32)

    def latency_estimate_ms(self, clock_mhz: float, cpi: float = 1.0) -> float:
        """An estimate, not a measurement: instructions x an assumed CPI at the profile's clock."""
        return self.instructions_per_inference * cpi / (clock_mhz * 1e3)


def _run(cmd: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """A toolchain command; one that runs too long is killed with its children (gcc's cc1) and is a RuntimeError,
    the build failure measure_library reports for that profile."""
    try:
        return run_child(cmd, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{cmd[0]} did not finish within {timeout:.0f} s") from None


def elf_sizes(elf: Path) -> tuple[int, int, int]:
    """text, data and bss of a linked firmware (arm-none-eabi-size, Berkeley format)."""
    out = _run(["arm-none-eabi-size", "-B", str(elf)], elf.parent).stdout.splitlines()[1].split()
    return int(out[0]), int(out[1]), int(out[2])


def harness_defines(generated: Generated) -> list[str]:
    """The model's output bytes and op count for main.c: its output and per-op tick buffers are sized from them;
    for an autoencoder its input bytes too: main.c keeps a copy of each input for its reconstruction error."""
    defines = [f"-DTINYOPT_OUTPUT_BYTES={generated.output_bytes}", f"-DTINYOPT_OP_COUNT={len(generated.op_kinds)}"]
    return defines + ([f"-DTINYOPT_INPUT_BYTES={generated.input_bytes}"] if generated.reconstructs else [])


def link_script(core: Core, profile: DeviceProfile) -> str:
    """The linker script for the profile's flash and RAM on the core's machine."""
    script = (FIRMWARE / "link.ld.in").read_text()
    for key, value in {
        "FLASH_ORIGIN": core.flash_origin,
        "FLASH_BYTES": min(profile.flash_bytes, core.flash_limit),
        "RAM_ORIGIN": core.ram_origin,
        "RAM_BYTES": min(profile.sram_bytes, core.ram_limit),
        "STACK_BYTES": STACK_RESERVE,
    }.items():
        script = script.replace(f"@{key}@", hex(value))
    return script


def build_firmware(generated: Generated, profile: DeviceProfile, out_dir: Path) -> Firmware:
    """Cross-compile and link the generated model with the measurement firmware for the profile's core."""
    core = core_for(profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = generated.write(out_dir)
    fw = resources.files("tinyopt.mcu").joinpath("firmware")
    for name in ("startup.c", "main.c", "semihost.h"):
        (out_dir / name).write_text(fw.joinpath(name).read_text())
    (out_dir / "link.ld").write_text(link_script(core, profile))
    cc = ["arm-none-eabi-gcc", *core.cflags, *CFLAGS, "-I", str(out_dir)]
    objects = []
    for src, extra in (
        (paths["source"], ["-DTINYOPT_GENERIC_ENTRY", "-DTINYOPT_OP_HOOK=tinyopt_op_hook"]),
        (out_dir / "main.c", harness_defines(generated)),
        (out_dir / "startup.c", ["-fno-tree-vectorize"]),
    ):
        obj = src.with_suffix(".o")
        done = _run([*cc, *extra, "-c", str(src), "-o", str(obj)], out_dir)
        if done.returncode:
            raise RuntimeError(f"arm-none-eabi-gcc failed on {src.name}: {done.stderr.strip()[-2000:]}")
        objects.append(obj)
    elf = out_dir / "firmware.elf"
    done = _run(
        [
            *cc,
            "-nostdlib",
            "-T",
            "link.ld",
            "-Wl,--gc-sections",
            "-Wl,-Map=firmware.map",
            *map(str, objects),
            "-lgcc",
            "-o",
            str(elf),
        ],
        out_dir,
    )
    if done.returncode:
        overflow = re.search(r"region `(\w+)' overflowed by (\d+) bytes", done.stderr)
        if overflow:
            region, more = overflow.group(1), int(overflow.group(2))
            budget = profile.flash_bytes if region == "FLASH" else profile.sram_bytes
            raise NotApplicable(
                f"the firmware does not fit {profile.name}: {region} ({budget:,} bytes) overflowed by {more:,} bytes"
            )
        raise RuntimeError(f"linking the firmware failed: {done.stderr.strip()[-2000:]}")
    text, data, bss = elf_sizes(elf)
    model_text, model_data, model_bss = _size_object(objects[0])
    return Firmware(
        elf, core, profile, text + data, model_text + model_data, data + bss - STACK_RESERVE, generated.arena_bytes
    )


def _size_object(obj: Path) -> tuple[int, int, int]:
    """text, data, bss of the sections of one object that survived --gc-sections (from the map file)."""
    keep = {"text": 0, "data": 0, "bss": 0}
    map_text = (obj.parent / "firmware.map").read_text()
    for match in re.finditer(
        r"^ \.(text|rodata|data|bss)[\w.]*\s*\n?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)$", map_text, re.M
    ):
        kind, _, size, source = match.groups()
        if Path(source).name == obj.name:
            keep["text" if kind in ("text", "rodata") else kind] += int(size, 16)
    return keep["text"], keep["data"], keep["bss"]


# What each exit status of a firmware run means (main.c returns 2 to 5, startup.c's fault handler 70; QEMU itself
# exits 1 when it cannot start, and prints why).
EXIT_REASONS = {
    1: "QEMU could not run the firmware",
    2: "the firmware could not open its input or output file through semihosting",
    3: "the firmware's harness was built for another model (its output bytes or op count differ from the model's)",
    4: "the firmware could not read an input through semihosting (the inputs file is shorter than expected)",
    5: "the firmware could not write an output through semihosting",
    70: "the core took a fault (HardFault, MemManage, BusFault or UsageFault) while running the model",
}


def failure_reason(code: int, said: str) -> str:
    """One sentence for a firmware run that ended with exit status `code`; `said` is what QEMU printed."""
    reason = EXIT_REASONS.get(code, f"the firmware stopped with exit status {code}, which the harness never returns")
    last = (said.strip().splitlines() or [""])[-1].strip()[:300]
    return f"the firmware failed under QEMU (exit {code}): {reason}" + (f" ({last})" if last else "")


def qemu_command(elf: Path, core: Core) -> list[str]:
    """QEMU running `elf` on the core's machine: semihosting for files and console, one instruction per virtual
    nanosecond (-icount shift=0), which SysTick counts."""
    return [
        "qemu-system-arm",
        *("-M", core.machine, "-nographic", "-monitor", "none", "-serial", "none"),
        *("-semihosting-config", "enable=on,target=native", "-icount", "shift=0", "-kernel", str(elf)),
    ]


def run_firmware(
    firmware: Firmware, inputs: np.ndarray, op_kinds: list[str], output_dtype: str, timeout: float = 600
) -> DeviceRun:
    """Run the firmware on `inputs` (already in the model's input type) under QEMU; bounded by `timeout`."""
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        np.ascontiguousarray(inputs).tofile(work / "inputs.bin")
        try:
            done = run_child(qemu_command(firmware.elf, firmware.core), cwd=work, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"QEMU did not finish within {timeout:.0f} s; measure fewer inputs") from None
        report = re.search(r"TINYOPT count=(\d+) ticks=(\d+) stack=(\d+) ops=([\d,]*)", done.stdout + done.stderr)
        if done.returncode != 0:
            raise RuntimeError(failure_reason(done.returncode, done.stdout + done.stderr))
        if not report:
            raise RuntimeError("the firmware finished without its report line (QEMU's semihosting output was lost)")
        outputs = np.fromfile(work / "outputs.bin", dtype=np.dtype(output_dtype)).reshape(len(inputs), -1)
        errors = np.fromfile(work / "errors.bin", dtype=np.float32) if (work / "errors.bin").exists() else None
    count, ticks, stack = int(report.group(1)), int(report.group(2)), int(report.group(3))
    if stack >= STACK_RESERVE:  # no painted word left: the stack grew into the data below it
        raise RuntimeError(
            f"the firmware's stack overflowed its {STACK_RESERVE:,}-byte reserve (the outputs cannot be trusted)"
        )
    per_tick = 1e9 / firmware.core.clock_hz  # instructions per SysTick tick at icount shift=0
    per_op = [int(t) * per_tick / count for t in report.group(4).split(",") if t]
    return DeviceRun(
        firmware.core.name,
        firmware.core.machine,
        count,
        firmware.flash_bytes,
        firmware.model_flash_bytes,
        firmware.static_ram_bytes + stack,
        stack,
        ticks * per_tick / count,
        per_op,
        op_kinds,
        outputs,
        errors,
    )
