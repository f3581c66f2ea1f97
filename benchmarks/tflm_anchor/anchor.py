"""TensorFlow Lite Micro + CMSIS-NN, the anchor tinyopt's device figures are compared with in the same run.

Built from pinned upstream commits for each emulated core with TFLM's own Makefile flags, linked into a harness
(harness.cc) that shares tinyopt's semihosting, inputs, outputs, SysTick counting and report line, and run on
the same QEMU machines (tinyopt.mcu.firmware.run_firmware), so both sides are counted the same way.

    tree = prepare(sources, work)      # TFLM at its pin, its downloads at theirs (local git repos or clones)
    library = build(tree, core)        # the objects the measured ops need, compiled as `make microlite` would
    figures = measure(library, blob, profile, inputs, out)

A benchmark adds the options (`add_arguments`), builds each profile's library (`libraries`) and measures each
model beside its own figures (`measure_or_reason`); whatever fails is a sentence in the table, never a constant.

Only benchmarks use this: the pipeline and its tests never need TFLM's sources.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinyopt.mcu.firmware import (
    CFLAGS,
    FIRMWARE,
    STACK_RESERVE,
    Firmware,
    elf_sizes,
    link_script,
    qemu_command,
    run_firmware,
)
from tinyopt.params import DeviceProfile
from tinyopt.params.machines import Core

HERE = Path(__file__).parent
TFLM = ("tensorflow/tflite-micro", "90b983c2b3f1480642e040bbd2ddb37b998f3424")
# Where TFLM's Makefile looks for each third-party tree (under tools/make/downloads) -> repository, commit or tag.
DOWNLOADS = {
    "cmsis_nn": ("ARM-software/CMSIS-NN", "4ab83cc3cc98fb85ed6dafb55e8ca02f1628dcae"),
    "cmsis": ("ARM-software/CMSIS_6", "5782d6f8057906d360f4b95ec08a2354afe5c9b9"),
    "cmsis/Cortex_DFP": ("ARM-software/Cortex_DFP", "c2c70a97a20fb355815e2ead3d4a40e35a4a3cdf"),
    "gemmlowp": ("google/gemmlowp", "719139ce755a0f31cbf1c37f7f98adcc7fc9f425"),
    "ruy": ("google/ruy", "d37128311b445e758136b8602d1bbd2a755e115d"),
    "flatbuffers": ("google/flatbuffers", "v25.9.23"),
}
NOT_BUILT = ("kissfft", "pigweed")  # the Makefile checks they exist (else it downloads); none of their code is built
MAKE_DIR = "tensorflow/lite/micro/tools/make"
# TFLM's TARGET_ARCH and FPU for each core, as its cortex_m_generic target spells them.
TARGETS = {
    "cortex-m4": ("cortex-m4+fp", "fpv4-sp-d16"),
    "cortex-m7": ("cortex-m7+fp", "fpv5-d16"),
    "cortex-m55": ("cortex-m55", ""),  # selects CMSIS-NN's Helium (MVE) kernels
}
# The kernels of the ops harness.cc registers, and what they share; CMSIS-NN is compiled whole.
KERNELS = {
    *("conv", "depthwise_conv", "fully_connected", "pooling", "add", "softmax", "reshape", "reduce"),
    *("conv_common", "depthwise_conv_common", "fully_connected_common", "pooling_common", "add_common"),
    *("softmax_common", "reshape_common", "reduce_common", "kernel_util", "micro_tensor_utils"),
    *("quantize", "quantize_common", "dequantize", "dequantize_common"),
}
UNUSED = ("signal/", "test_helper", "mock_micro_graph", "fake_micro_context", "recording_", "kernel_runner")


class AnchorUnavailable(Exception):
    """Why the anchor cannot be built here (no sources, no network, a failed compile): said, never hidden."""


def _sh(cmd: str, cwd: Path, timeout: float = 600) -> str:
    done = subprocess.run(["bash", "-c", cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise AnchorUnavailable(f"`{cmd[:120]}` failed: {(done.stderr or done.stdout).strip()[-1500:]}")
    return done.stdout


def _repository(sources: Path | None, repo: str, work: Path) -> Path:
    """A git repository holding `repo`: under `sources` as owner+name/repo (the layout of a GitHub mirror), name
    or name.git, else a clone from GitHub into `work` when this machine is online."""
    owner, name = repo.split("/")
    for candidate in [sources / f"{owner}+{name}" / "repo", sources / name, sources / f"{name}.git"] if sources else []:
        if candidate.exists():
            return candidate
    clone = work / "clones" / name
    if not clone.exists():
        try:
            _sh(f"git clone -q --filter=blob:none https://github.com/{repo} {shlex.quote(str(clone))}", work, 1800)
        except AnchorUnavailable as e:
            where = f"under {sources}" if sources else "(no --tflm-sources given)"
            raise AnchorUnavailable(f"no git repository of {repo} {where}, and cloning it failed: {e}") from None
    return clone


def _export(repo: Path, commit: str, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    _sh(f"git -C {shlex.quote(str(repo))} archive {commit} | tar -x -C {shlex.quote(str(dest))}", dest)


def prepare(sources: Path | None, work: Path) -> Path:
    """TFLM at its pinned commit with every download at its pin, under `work` (reused when complete)."""
    tree = work / f"tflite-micro-{TFLM[1][:8]}"
    if (tree / ".complete").exists():
        return tree
    (work / "clones").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tree, ignore_errors=True)
    _export(_repository(sources, TFLM[0], work), TFLM[1], tree)
    downloads = tree / MAKE_DIR / "downloads"
    for folder, (repo, commit) in DOWNLOADS.items():  # cmsis before cmsis/Cortex_DFP: the dict keeps that order
        _export(_repository(sources, repo, work), commit, downloads / folder)
    _sh(f"patch -p1 -s < {shlex.quote(str(tree / MAKE_DIR / 'flatbuffers.patch'))}", downloads / "flatbuffers")
    for folder in NOT_BUILT:
        (downloads / folder).mkdir(exist_ok=True)
    (tree / ".complete").touch()
    return tree


@dataclass
class Library:
    tree: Path
    core: Core
    objects: list[Path]
    cxx_flags: list[str]  # TFLM's flags for its core sources (-Os), which the harness compiles with


def _make_arguments(core: Core) -> list[str]:
    arch, fpu = TARGETS[core.name]
    return [
        *("-f", f"{MAKE_DIR}/Makefile", "TARGET=cortex_m_generic", f"TARGET_ARCH={arch}"),
        *("OPTIMIZED_KERNEL_DIR=cmsis_nn", "TOOLCHAIN=gcc", "TARGET_TOOLCHAIN_ROOT=/usr/bin/", "BUILD_TYPE=release"),
        *([f"FPU={fpu}"] if fpu else []),
    ]


def _needed(source: str) -> bool:
    if any(part in source for part in UNUSED):
        return False
    if "/micro/kernels/" in source:
        return Path(source).stem in KERNELS
    return True


def build(tree: Path, core: Core, jobs: int | None = None) -> Library:
    """Compile, with the exact commands `make microlite` would run (read from `make -n -B`), the runtime, the
    kernels of the registered ops (CMSIS-NN's where it has them) and CMSIS-NN; objects already built are kept."""
    env_path = f"{Path(sys.executable).parent}:{os.environ['PATH']}"  # the Makefile runs Python with numpy, Pillow
    plan = _sh(f"PATH={shlex.quote(env_path)} make -n -B {shlex.join(_make_arguments(core))} microlite", tree, 300)
    commands = [line for line in plan.splitlines() if " -c " in line and " -o " in line]
    if not commands:
        raise AnchorUnavailable(f"`make -n microlite` listed no compile commands for {core.name}")
    chosen, objects = [], []
    for line in commands:
        source, obj = re.search(r" -c (\S+) -o (\S+)", line).groups()
        if _needed(source):
            objects.append(tree / obj)
            if not (tree / obj).exists():
                chosen.append((line.replace(f" -o {obj}", f" -o {obj}.part"), tree / obj))
    for _, obj in chosen:
        obj.parent.mkdir(parents=True, exist_ok=True)

    def compile_one(job: tuple[str, Path]) -> None:  # an interrupted build leaves no object to be reused
        _sh(job[0], tree)
        os.replace(f"{job[1]}.part", job[1])

    with ThreadPoolExecutor(jobs or os.cpu_count() or 2) as pool:
        list(pool.map(compile_one, chosen))
    interpreter = next(line for line in commands if " -c tensorflow/lite/micro/micro_interpreter.cc " in line)
    flags = shlex.split(interpreter.split(" -c ")[0])[1:]
    return Library(tree, core, objects, [f for f in flags if f != "-MD"])


@dataclass
class AnchorFigures:
    flash_bytes: int  # text + data of the whole firmware
    ram_bytes: int  # data + bss (the smallest arena that works) + stack high-water mark
    arena_bytes: int
    instructions_per_inference: float
    outputs: np.ndarray
    elf: Path  # the measured firmware, kept for benchmarks/cycles


def _link_script(core: Core, profile: DeviceProfile) -> str:
    """tinyopt's linker script with what a C++ runtime adds: constructors (.init_array) and the arena section."""
    script = link_script(core, profile)
    script = script.replace(
        "  _sidata =",
        "  .init_array : { __init_array_start = .; KEEP(*(SORT(.init_array.*))) KEEP(*(.init_array)) "
        "__init_array_end = .; } > FLASH\n  _sidata =",
    )
    return script.replace(
        "  .stack",
        "  .arena (NOLOAD) : { . = ALIGN(16); _sarena = .; . = . + ARENA_BYTES; _earena = .; } > RAM\n"
        "  end = .;\n  .stack",
    )


def _compile(library: Library, blob: bytes, profile: DeviceProfile, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    model = ", ".join(str(b) for b in blob)
    (out / "model.cc").write_text(f'extern "C" alignas(16) const unsigned char g_model[] = {{{model}}};\n')
    (out / "link.ld").write_text(_link_script(library.core, profile))
    cxx = ["arm-none-eabi-g++", *library.cxx_flags, "-I", str(FIRMWARE)]
    objects = []
    for source, command in (
        (HERE / "harness.cc", cxx),
        (out / "model.cc", cxx),
        (FIRMWARE / "startup.c", ["arm-none-eabi-gcc", *library.core.cflags, *CFLAGS, "-fno-tree-vectorize"]),
    ):
        obj = out / f"{source.stem}.o"
        _sh(shlex.join([*command, "-c", str(source), "-o", str(obj)]), library.tree, 600)
        objects.append(obj)
    return objects


def _link(library: Library, objects: list[Path], arena: int, out: Path) -> Path:
    elf = out / f"firmware-{arena}.elf"
    _sh(
        shlex.join(
            [
                *("arm-none-eabi-g++", *library.core.cflags, "-mthumb", "-nostartfiles"),
                *("--specs=nano.specs", "--specs=nosys.specs", "-T", str(out / "link.ld"), "-Wl,--gc-sections"),
                f"-Wl,--defsym=ARENA_BYTES={arena}",
                *map(str, objects + library.objects),
                *("-lm", "-o", str(elf)),
            ]
        ),
        library.tree,
        600,
    )
    return elf


def _allocates(elf: Path, core: Core, one_input: np.ndarray) -> tuple[bool, int]:
    """Whether the interpreter allocates and invokes in this arena, and the arena_used_bytes() it reports."""
    with tempfile.TemporaryDirectory() as scratch:
        one_input.tofile(Path(scratch) / "inputs.bin")
        done = subprocess.run(qemu_command(elf, core), cwd=scratch, capture_output=True, text=True, timeout=600)
    used = re.search(r"TFLM arena_used=(\d+)", done.stdout + done.stderr)
    return done.returncode == 0, int(used.group(1)) if used else 0


def measure(
    library: Library, blob: bytes, profile: DeviceProfile, inputs: np.ndarray, out: Path, output_dtype: str = "int8"
) -> AnchorFigures:
    """Flash, RAM with the smallest arena that allocates and invokes (arena_used_bytes() under-reports it by a
    few bytes to a few hundred), instructions per inference and the outputs, on the profile's emulated core."""
    core = library.core
    objects = _compile(library, blob, profile, out)
    one = np.ascontiguousarray(inputs[:1])
    roomy = min(profile.sram_bytes, core.ram_limit) - (32 << 10)  # room for the harness, data and stack
    works, used = _allocates(_link(library, objects, roomy, out), core, one)
    if not works:
        raise AnchorUnavailable(f"TFLM did not allocate or invoke {out.name} in a {roomy:,}-byte arena")
    # In 16-byte units: below what TFLM reported using fails; grow until it works, then bisect.
    low, high, step = -(-used // 16) - 1, None, 1
    while high is None:
        candidate = low + step
        if _allocates(_link(library, objects, candidate * 16, out), core, one)[0]:
            high = candidate
        else:
            low, step = candidate, step * 2
    while high - low > 1:
        middle = (low + high) // 2
        if _allocates(_link(library, objects, middle * 16, out), core, one)[0]:
            high = middle
        else:
            low = middle
    arena = high * 16
    elf = _link(library, objects, arena, out)
    text, data, bss = elf_sizes(elf)
    firmware = Firmware(elf, core, profile, text + data, len(blob), data + bss - STACK_RESERVE, arena)
    run = run_firmware(firmware, inputs, [], output_dtype)
    return AnchorFigures(text + data, run.ram_bytes, arena, run.instructions_per_inference, run.outputs, elf)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tflm-sources",
        type=Path,
        help="a directory of git repositories of TFLM and its downloads (owner+name/repo as a GitHub mirror lays "
        "them out, or name/); without it they are cloned from GitHub",
    )
    parser.add_argument(
        "--tflm-work",
        type=Path,
        default=Path.home() / ".cache" / "tinyopt" / "tflm-anchor",
        help="where TFLM's tree and objects are kept between runs (about 1.5 minutes per core to build)",
    )
    parser.add_argument("--no-tflm", action="store_true", help="tinyopt's figures only, without the anchor")


def libraries(profiles: dict[str, DeviceProfile], args: argparse.Namespace) -> dict[str, Library | str]:
    """Each profile's TFLM + CMSIS-NN library (one build per core), or why there is none."""
    from tinyopt.mcu.firmware import core_for

    if args.no_tflm:
        return dict.fromkeys(profiles, "not built (--no-tflm)")
    try:
        tree = prepare(args.tflm_sources, args.tflm_work)
    except AnchorUnavailable as e:
        return dict.fromkeys(profiles, f"TFLM's sources: {e}")
    built: dict[str, Library | str] = {}
    for profile in profiles.values():
        core = core_for(profile)
        if core.name not in built:
            print(f"building TFLM + CMSIS-NN for the {core.name} ...", flush=True)
            try:
                built[core.name] = build(tree, core)
            except AnchorUnavailable as e:
                built[core.name] = f"building TFLM for the {core.name} failed: {e}"
    return {name: built[core_for(profile).name] for name, profile in profiles.items()}


def measure_or_reason(
    library: Library | str, blob: bytes, profile: DeviceProfile, inputs: np.ndarray, out: Path, output_dtype: str
) -> AnchorFigures | str:
    if isinstance(library, str):
        return library
    try:
        return measure(library, blob, profile, inputs, out, output_dtype)
    except (AnchorUnavailable, RuntimeError) as e:  # RuntimeError: run_firmware's failure, in words
        return f"TFLM + CMSIS-NN could not run it: {e}"
