"""Imports run one way: each layer of `tinyopt/` imports only the layers below it, and the steps, flows and
the command sit on top (README, Layout). A module that reaches up is a layer in the wrong place."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

# Bottom to top; packages on one line are one layer and do not import each other.
LAYERS = [
    ["tinyopt.core"],
    ["tinyopt.params"],
    ["tinyopt.records"],
    ["tinyopt.datasets", "tinyopt.ml", "tinyopt.runtimes"],
    ["tinyopt.mcu"],
    ["tinyopt.run"],
    ["tinyopt.search"],
    ["tinyopt.orchestration"],
    ["tinyopt.release"],
    ["tasks"],
    ["flows"],
    ["cli"],
]
RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def package_of(module: str) -> str | None:
    parts = module.split(".")
    for size in (2, 1):
        if ".".join(parts[:size]) in RANK:
            return ".".join(parts[:size])
    return None


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_ls_tinyopt_is_the_architecture():
    """No flat modules beside the layers: every module lives in the package of its layer."""
    flat = sorted(p.name for p in (REPO / "tinyopt").glob("*.py") if p.name not in {"__init__.py", "__main__.py"})
    assert flat == []
    packages = {p.name for p in (REPO / "tinyopt").iterdir() if (p / "__init__.py").is_file()}
    assert {f"tinyopt.{p}" for p in packages} == {p for p in RANK if p.startswith("tinyopt.")}


def test_imports_run_one_way():
    upward = []
    for path in sorted(REPO.glob("*/**/*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        own = package_of(module)
        if own is None:
            continue
        for name in imported(path):
            other = package_of(name)
            if other is None or other == own:
                continue
            if RANK[other] >= RANK[own]:
                upward.append(f"{path.relative_to(REPO)} imports {name} ({other} is not below {own})")
    assert upward == []
