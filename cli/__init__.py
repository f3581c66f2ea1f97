"""The roof: the `tinyopt` command, on top of flows/, tasks/ and the tinyopt library (nothing below imports it).
Each module adds its commands to the one group."""

from cli import operations, pipeline, release, search  # noqa: F401  (each registers its commands on main)
from cli.group import main

__all__ = ["main"]
