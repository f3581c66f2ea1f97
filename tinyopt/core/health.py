"""Fail fast, in one line, when a server the command needs does not answer (the clients themselves
would retry for minutes before giving up)."""

from __future__ import annotations

import urllib.error
import urllib.request

from tinyopt.core.errors import UserError


def require_healthy(base_url: str, service: str, fix: str, timeout: float = 5.0) -> None:
    """GET base_url/health, or raise UserError naming the server, the reason and `fix`."""
    try:
        urllib.request.urlopen(base_url.rstrip("/") + "/health", timeout=timeout).read()
    except (urllib.error.URLError, OSError) as exc:
        raise UserError(f"{service} {base_url} is unreachable ({getattr(exc, 'reason', exc)}); {fix}") from None
