"""Prefect for the commands that run flows: the project's own Prefect home, and an API that answers
before any work starts.

Without an API URL, Prefect starts a temporary server whose first start creates and migrates a SQLite
database under PREFECT_HOME. On a fresh or busy 2-core machine that takes longer than Prefect's own
20 s allowance, and the user got a traceback; `make setup` migrates the project's database ahead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tinyopt.core import layout
from tinyopt.core.errors import UserError

STARTUP_TIMEOUT_SECONDS = 180  # a first start (migration) on a busy 2-core machine, with room to spare
USER_PROFILES = Path.home() / ".prefect" / "profiles.toml"


def set_defaults() -> None:
    """Defaults for the Prefect settings tinyopt relies on; a user's own values (environment) win.
    Call before Prefect is imported: it reads its settings once."""
    os.environ.setdefault("PREFECT_HOME", str(layout.PREFECT_HOME.resolve()))
    if USER_PROFILES.is_file():  # keep `prefect config set ...` (a server URL, say) working with the project's home
        os.environ.setdefault("PREFECT_PROFILES_PATH", str(USER_PROFILES))
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(STARTUP_TIMEOUT_SECONDS))
    # Task results (the cache) live in the project, so a fresh clone starts cold and `make clean` resets it.
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(layout.PREFECT_STORAGE.resolve()))
    # The temporary server's telemetry cannot reach its host from offline machines and logs an error.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def configure() -> None:
    """set_defaults, and the Prefect home made (Prefect's import creates only its last component)."""
    set_defaults()
    try:
        Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    except OSError:
        pass  # start_api, or Prefect itself, says so in its own words


def start_api() -> str:
    """Make sure the Prefect API a flow will use answers, or fail in one line; returns its URL.

    PREFECT_API_URL set: that server must answer. Otherwise the temporary server starts now, before
    any work. Starts are serialized per Prefect home, so two runs at once never migrate one database
    together; the second then finds it migrated and starts in seconds."""
    from prefect.settings import get_current_settings

    from tinyopt.core.health import require_healthy

    settings = get_current_settings()
    if settings.api.url:
        require_healthy(
            settings.api.url,
            "Prefect API",
            "start that server, or unset PREFECT_API_URL to let tinyopt start a temporary one",
        )
        return settings.api.url
    home = Path(settings.home)
    timeout = settings.server.ephemeral.startup_timeout_seconds
    try:
        home.mkdir(parents=True, exist_ok=True)
        lock = open(home / ".tinyopt-server-start.lock", "a")
    except OSError as exc:
        raise UserError(
            f"Prefect home {home} is not writable ({exc.strerror}); fix its permissions or set "
            "PREFECT_HOME to a writable directory"
        ) from None
    server = _server_that_dies_with_us()
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            server.start(timeout=timeout)
        except RuntimeError as exc:
            server.stop()
            reason = str(exc).split(" stdout:")[0]
            raise UserError(
                f"Prefect's temporary API server did not start ({reason.rstrip('.')}; database under {home}): "
                f"retry when the machine is less busy, allow it longer with "
                f"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS (now {timeout}), or migrate the database ahead "
                f"with `make setup`"
            ) from None
    return server.api_url


def _server_that_dies_with_us():
    """Prefect's temporary server (the instance Prefect's own clients find), killed by tinyopt's watchdog should
    tinyopt die before it stops the server itself; Prefect starts it in tinyopt's process group, so the
    watchdog kills the process alone."""
    from prefect.server.api.server import SubprocessASGIServer

    from tinyopt.core.children import dies_with_us

    class Server(SubprocessASGIServer):
        def _run_uvicorn_command(self):
            process = super()._run_uvicorn_command()
            dies_with_us(process)
            return process

    return Server()
