"""What the infra/ test modules (tests/test_infra_compose.py, test_infra_loopback.py) share: the
compose file, parsed, and Compose's own reading of it (the .env.example variables, interpolated)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.conftest import REPO

INFRA = REPO / "infra"
COMPOSE = yaml.safe_load((INFRA / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def dotenv(path: Path = INFRA / ".env.example") -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:?message} and ${VAR:-default}, over a parsed compose value."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"${{{name}}} is not set" + (f": {arg}" if op == ":?" else ""))

    return re.sub(r"\$\{(\w+)(?:(:\?|:-)([^}]*))?\}", one, value)
