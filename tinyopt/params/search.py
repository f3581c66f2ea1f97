"""params.yaml's `search` section: what `tinyopt search` may try (chains and their settings), under which
device profile's limits, for how long, and how it scores a trial (on the validation split only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tinyopt.params.devices import DEFAULT_PROFILE
from tinyopt.params.section import Section
from tinyopt.params.techniques import check_chain

DEFAULT_SEARCH_CHAINS = (
    ("qat", "int8"),
    ("cluster", "cqat", "int8"),
    ("prune", "pqat", "int8"),
    ("prune", "sp_cluster", "pcqat", "int8"),
)


class BlockSpace(Section):
    """The `blocks` architectures a search draws from (tinyopt's own model, model.path null): a stack of
    `depth` blocks, each drawing its kind, filters, kernel size, stride and pool, then a head."""

    depth: tuple[int, int] = Field(default=(1, 4), description="blocks in the stack, at least and at most")
    kinds: list[Literal["conv", "separable", "inverted"]] = Field(
        default_factory=lambda: ["conv", "separable", "inverted"]
    )
    filters: list[int] = Field(default_factory=lambda: [8, 16, 24, 32, 48])
    kernel_size: list[int] = Field(default_factory=lambda: [3, 5])
    stride: list[Literal[1, 2]] = Field(default_factory=lambda: [1, 2])
    pool: list[bool] = Field(default_factory=lambda: [False, True])
    head: list[Literal["average", "flatten"]] = Field(default_factory=lambda: ["average", "flatten"])

    @model_validator(mode="after")
    def _valid(self) -> BlockSpace:
        low, high = self.depth
        if not 1 <= low <= high <= 6:
            raise ValueError("search.space.blocks.depth: [low, high] with 1 <= low <= high <= 6")
        for name in ("kinds", "filters", "kernel_size", "stride", "pool", "head"):
            if not getattr(self, name):
                raise ValueError(f"search.space.blocks.{name}: give at least one choice")
        if any(not 1 <= f <= 512 for f in self.filters) or any(not 1 <= k <= 11 for k in self.kernel_size):
            raise ValueError("search.space.blocks: filters from 1 to 512, kernel sizes from 1 to 11")
        return self


class SearchSpace(Section):
    """The ranges a trial draws its settings from; a chain's steps read only their own settings."""

    chains: list[list[str]] = Field(
        default_factory=lambda: [list(chain) for chain in DEFAULT_SEARCH_CHAINS],
        description="the deployable chains (full int8) that were on a default run's front; see benchmarks/RESULTS.md",
    )
    distill: bool = Field(default=False, description="also try each chain with distill first (trains a teacher)")
    target_sparsity: tuple[float, float] = (0.6, 0.85)
    clusters: list[int] = Field(default_factory=lambda: [8, 12, 16])
    fine_tune_epochs: tuple[int, int] = Field(default=(2, 8), description="prune and cluster")
    qat_epochs: tuple[int, int] = (2, 8)
    learning_rate: tuple[float, float] = Field(
        default=(1e-4, 3e-3), description="log-uniform, drawn per technique for every fine-tune of the chain"
    )
    conv_filters: list[int] | None = Field(
        default_factory=lambda: [10, 12, 14],
        description="tinyopt's own CNN only (model.path null): a trial draws its width from these and trains that "
        "baseline (once per width); null: model.conv_filters",
    )
    kernel_size: list[int] | None = Field(
        default_factory=lambda: [5],
        description="5x5 scored as 3x3 on validation with 12% fewer bytes (benchmarks/RESULTS.md); "
        "null: model.kernel_size",
    )
    blocks: BlockSpace | None = Field(
        default=None,
        description="search architectures instead of the paper CNN's width: each trial draws a blocks "
        "architecture (model.architecture blocks) and trains that baseline once; null: the width above",
    )
    width_multiplier: list[float] | None = Field(
        default=None,
        description="your model (model.path) only: a trial draws a width multiplier and trains that rescaled copy "
        "from scratch (once per multiplier; 1 keeps your model as given); null: your model as it is",
    )

    @model_validator(mode="after")
    def _valid(self) -> SearchSpace:
        if not self.chains:
            raise ValueError("search.space.chains: give at least one chain")
        for index, chain in enumerate(self.chains):
            try:
                check_chain(chain)
            except ValueError as exc:
                raise ValueError(f"search.space.chains[{index}]: {exc}") from None
            if {"separable", "distill"} & set(chain):
                raise ValueError(
                    f"search.space.chains[{index}]: separable is not searched, and distill is search.space.distill"
                )
        for name in ("target_sparsity", "fine_tune_epochs", "qat_epochs", "learning_rate"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"search.space.{name}: [low, high] with 0 < low <= high")
        if self.target_sparsity[1] >= 1:
            raise ValueError("search.space.target_sparsity: below 1")
        if any(not 2 <= c <= 256 for c in self.clusters) or not self.clusters:
            raise ValueError("search.space.clusters: values from 2 to 256")
        for name, low, high in (("conv_filters", 1, 512), ("kernel_size", 1, 11)):
            values = getattr(self, name)
            if values is not None and (not values or any(not low <= v <= high for v in values)):
                raise ValueError(f"search.space.{name}: a list of values from {low} to {high}, or null")
        return self


class SearchParams(Section):
    """`tinyopt search`: Optuna's multi-objective TPE over chains and their settings, for the best validation
    score against the smallest size among models that fit `profile` (flash and RAM). Each trial builds its chain
    from the baseline as a run would. No new trial starts after time_budget_s. The test split scores the Pareto
    front and the picks once, at the end; each pick is written back as a params file that `tinyopt run --params`
    rebuilds byte for byte. Runs on `runner` (Dask: a trial per worker)."""

    trials: int = Field(default=20, ge=1, le=10000, description="at most; the time budget may stop it first")
    time_budget_s: int = Field(default=1200, ge=10, description="no new trial starts after this many seconds")
    profile: str = Field(default=DEFAULT_PROFILE, description="the device whose flash and RAM a model must fit")
    size: Literal["gzip_bytes", "raw_bytes"] = Field(
        default="gzip_bytes",
        description="the second objective: gzip_bytes, the over-the-air payload, or raw_bytes, the flash the model "
        "takes",
    )
    max_model_bytes: int | None = Field(
        default=23224,
        ge=1,
        description="a .tflite larger than this is infeasible, as one that does not fit the profile; the default "
        "is the paper's largest deployable model (graph-int8-floatio); null: the profile's flash alone",
    )
    latency: bool = Field(
        default=True,
        description="run each int8 trial's generated C on the profile's emulated core (QEMU, device_inputs "
        "validation inputs) and search its instructions per inference as a third objective; flash and RAM "
        "then come from that firmware",
    )
    device_inputs: int = Field(default=4, ge=1, le=1000, description="instruction counts barely depend on the data")
    max_instructions: int | None = Field(
        default=None, ge=1, description="an int8 trial taking more instructions per inference is infeasible; null: any"
    )
    max_latency_ms: float | None = Field(
        default=None,
        gt=0,
        description="the same budget as time at the profile's clock (one instruction a cycle: an estimate); null: any",
    )
    max_drop: float | None = Field(
        default=0.03,
        ge=0,
        description="the smallest pick scores within this of the baseline on the validation split (the task "
        "metric's units); null: any score",
    )
    stop_drop: float | None = Field(
        default=None,
        ge=0,
        description="a fine-tuned model worse than the baseline by more than this on the validation split ends "
        "its trial there (pruned), before conversion; null: max_drop (a step before the last one scores lower "
        "than the chain's result: give it room)",
    )
    prune_architectures: bool = Field(
        default=True,
        description="stop training a drawn architecture (blocks, a width, a width multiplier) whose validation "
        "figure at an epoch is worse than the median of the architectures trained in full, at that epoch "
        "(Optuna's MedianPruner); its trials are pruned. false: every architecture trains its full schedule",
    )
    pruner_startup: int = Field(
        default=3,
        ge=0,
        description="architectures trained in full before any stops (the search's own baseline counts, but not the "
        "paper CNN among blocks)",
    )
    pruner_warmup_epochs: int = Field(
        default=5,
        ge=0,
        description="epochs every architecture trains before the pruner first judges it",
    )
    space: SearchSpace = SearchSpace()

    def instruction_budget(self, clock_mhz: float | None) -> float | None:
        """The tighter of max_instructions and max_latency_ms at the clock (instructions), or None."""
        budgets = [self.max_instructions] if self.max_instructions else []
        if self.max_latency_ms and clock_mhz:
            budgets.append(self.max_latency_ms * clock_mhz * 1e3)
        return min(budgets) if budgets else None
