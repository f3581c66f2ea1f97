"""One record per plan token, technique or conversion: the settings a step reads, its family, where it may stand
in a chain, what it saves. Every table about techniques (and check_chain's rules) is derived from these."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Family:
    """Techniques that do the same kind of thing: a chain holds at most one of each family."""

    name: str
    twice: str  # the error for a chain with two of them ({chain}: the chain as written)
    last: bool = False  # its step must be the chain's last technique


@dataclass(frozen=True)
class Technique:
    """A technique, as its token in a plan chain (also its step's name in the CLI, the Prefect UI, the records)."""

    token: str
    settings: str  # the section of params.yaml's `techniques` its step reads
    saves: str  # what it saves (or buys), in a few words
    fine_tuned: bool = True  # trains: reads the train settings and the seed
    family: str | None = None
    needs: str | None = None  # a family or a token one earlier step must be: it keeps what that step made
    needs_said: str = ""  # how the error names `needs`
    comes: Literal["first", "early"] | None = None  # first; or first but for the steps that come first
    comes_why: str = ""  # why it stands there, for the error


@dataclass(frozen=True)
class Conversion:
    """A post-training conversion to .tflite, as its token: the last step of every chain."""

    token: str
    calibrates: bool  # integer activations: calibrated on training examples
    on_device: bool = False  # what microcontrollers run (int8 kernels only): compiled and run on the devices


FAMILIES = {
    family.name: family
    for family in (
        Family("pruning", "{chain} prunes twice"),
        Family("clustering", "{chain} clusters twice"),
        Family("quantization", "{chain}: one quantization-aware step, and it must be the last technique", last=True),
    )
}

TECHNIQUES = {
    technique.token: technique
    for technique in (
        Technique("prune", "prune", "gzip bytes (zeros compress)", family="pruning"),
        Technique("prune_2_4", "prune_2_4", "gzip bytes; MACs where kernels skip zeros", family="pruning"),
        Technique(
            "prune_filters",
            "prune_filters",
            "MACs, flash and RAM: whole filters removed",
            comes="early",
            comes_why="rebuilds the model with fewer filters (zeros or clusters made before would not survive)",
        ),
        Technique("cluster", "cluster", "gzip bytes (few distinct values compress)", family="clustering"),
        Technique(
            "sp_cluster",
            "cluster",
            "gzip bytes (pruned zeros kept, values shared)",
            family="clustering",
            needs="pruning",
            needs_said="a pruning step",
        ),
        Technique("qat", "qat", "int8 accuracy", family="quantization"),
        Technique(
            "pqat",
            "qat",
            "int8 accuracy, sparsity kept",
            family="quantization",
            needs="pruning",
            needs_said="a pruning step",
        ),
        Technique(
            "cqat",
            "qat",
            "int8 accuracy, clusters kept",
            family="quantization",
            needs="clustering",
            needs_said="a clustering step",
        ),
        Technique(
            "pcqat",
            "qat",
            "int8 accuracy, sparsity and clusters kept",
            family="quantization",
            needs="sp_cluster",
            needs_said="prune then sp_cluster",
        ),
        Technique(
            "separable",
            "separable",
            "parameters and MACs (depthwise-separable convolutions)",
            comes="first",
            comes_why="rebuilds and retrains the model",
        ),
        Technique(
            "distill",
            "distill",
            "accuracy of a small model (a larger teacher's outputs)",
            comes="early",
            comes_why="fine-tunes every weight",
        ),
        Technique("graph", "graph", "ops (batch-norm and activations folded)", fine_tuned=False),
    )
}

CONVERSIONS = {
    conversion.token: conversion
    for conversion in (
        Conversion("float32", calibrates=False),
        Conversion("float16", calibrates=False),
        Conversion("dynamic_range", calibrates=False),
        Conversion("int8_fallback", calibrates=True, on_device=True),
        Conversion("int8", calibrates=True, on_device=True),
        Conversion("int16x8", calibrates=True),
    )
}
CONVERSION_STEPS = tuple(CONVERSIONS)
NEEDS_CALIBRATION = tuple(token for token, conversion in CONVERSIONS.items() if conversion.calibrates)


def members(name: str) -> tuple[str, ...]:
    """The tokens of a family, or the token itself."""
    if name in FAMILIES:
        return tuple(token for token, technique in TECHNIQUES.items() if technique.family == name)
    return (name,)


QAT_STEPS = members("quantization")  # tasks.qat builds one step per token


def sections_read(chain: list[str]) -> list[str]:
    """The settings sections the chain's techniques read, in the chain's order, each once."""
    return list(dict.fromkeys(TECHNIQUES[step].settings for step in chain[:-1]))


def check_chain(chain: list[str]) -> None:
    """Raise ValueError (with the reason) for a chain that cannot be run."""
    shown = "[" + ", ".join(chain) + "]"
    if not chain:
        raise ValueError("an empty chain; a chain ends with a conversion, e.g. [prune, int8]")
    for step in chain:
        if step not in TECHNIQUES and step not in CONVERSIONS:
            raise ValueError(
                f"unknown step '{step}' in {shown}; techniques: {', '.join(TECHNIQUES)}; "
                f"conversions: {', '.join(CONVERSIONS)}"
            )
    conversions = [step for step in chain if step in CONVERSIONS]
    if len(conversions) != 1:
        raise ValueError(f"{shown} has {len(conversions)} conversions; a chain ends with exactly one")
    if chain[-1] not in CONVERSIONS:
        raise ValueError(f"{shown}: the conversion '{conversions[0]}' must be the last step")
    techniques = chain[:-1]
    if len(set(techniques)) != len(techniques):
        raise ValueError(f"{shown} repeats a technique")
    check_places(techniques, shown)
    earlier: set[str] = set()
    for step in techniques:
        technique = TECHNIQUES[step]
        if technique.needs and not earlier & set(members(technique.needs)):
            raise ValueError(
                f"{shown}: {step} keeps what an earlier step made, so it needs {technique.needs_said} before it"
            )
        if technique.family and earlier & set(members(technique.family)):
            raise ValueError(FAMILIES[technique.family].twice.format(chain=shown))
        earlier.add(step)


def check_places(techniques: list[str], shown: str) -> None:
    """The steps that must come first, early (right after those) or last stand there."""
    firsts = [token for token, technique in TECHNIQUES.items() if technique.comes == "first"]
    for step in techniques:
        technique = TECHNIQUES[step]
        if technique.comes == "first" and techniques[0] != step:
            raise ValueError(f"{shown}: {step} {technique.comes_why}, so it must come first")
    for step in techniques:
        technique = TECHNIQUES[step]
        if technique.comes == "early" and techniques.index(step) != int(techniques[0] in firsts):
            raise ValueError(
                f"{shown}: {step} {technique.comes_why}, so it comes first (or right after {' or '.join(firsts)})"
            )
    for family in FAMILIES.values():
        found = [step for step in techniques if step in members(family.name)]
        if family.last and (len(found) > 1 or (found and techniques[-1] != found[0])):
            raise ValueError(family.twice.format(chain=shown))
