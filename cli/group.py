"""The `tinyopt` command group: how every command reports a user's mistake (one line, exit 2), the options
they share, and the quieting of library noise that several commands need."""

from __future__ import annotations

import logging
import sys
import traceback

import click

from tinyopt.core import masking
from tinyopt.core.errors import NotApplicable, UserError, disk_full


def configure_prefect() -> None:
    from tinyopt.orchestration import prefect_home

    prefect_home.configure()


class _NoTracebackForUserErrors(logging.Filter):
    """Prefect logs a failed task with its traceback; a user's mistake (or a full disk) needs only its one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and (isinstance(record.exc_info[1], UserError) or disk_full(record.exc_info[1])):
            record.exc_info = None
            record.exc_text = None
        return True


def quiet_library_warnings() -> None:
    # TensorFlow, tf-keras and tfmot warn about their own internals (legacy formats, deprecations);
    # none of it is actionable for a tinyopt user.
    import warnings

    for module in ("tensorflow", "tf_keras", "tensorflow_model_optimization", "keras"):
        warnings.filterwarnings("ignore", module=module)


def quiet_user_errors_in_prefect_logs() -> None:
    for name in ("prefect", "prefect.task_runs", "prefect.flow_runs", "prefect.task_engine", "prefect.flow_engine"):
        logging.getLogger(name).addFilter(_NoTracebackForUserErrors())
    for handler in logging.getLogger("prefect").handlers:
        handler.addFilter(_NoTracebackForUserErrors())


def reach_mlflow(bound_retries: bool = True) -> None:
    """MLflow's server checked: one line within seconds when it does not answer. A short command also bounds
    MLflow's retries (seconds, not minutes); a long run keeps them, to ride out a server's restart."""
    from tinyopt.orchestration import tracking

    if bound_retries:
        tracking.bound_retries()
    tracking.check_reachable()


def reach_fleet(params) -> None:
    """The fleet's S3 endpoint checked: one line within seconds when it does not answer."""
    from tinyopt.release.fleet import FleetStore

    FleetStore(params.fleet).require_reachable()


class _Cli(click.Group):
    def invoke(self, ctx: click.Context):
        masking.install()
        try:
            return super().invoke(ctx)
        except (UserError, NotApplicable) as exc:
            click.echo(f"tinyopt: error: {masking.shown(str(exc))}", err=True)
            sys.exit(2)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            full = disk_full(exc)  # a full disk is the user's to fix, wherever it struck: one line, not a traceback
            if full is not None:
                click.echo(f"tinyopt: error: {masking.shown(full)}", err=True)
                sys.exit(2)
            # A bug keeps its traceback, masked: libraries' exceptions carry URLs with their user:password@.
            click.echo(masking.shown(traceback.format_exc()), err=True, nl=False)
            sys.exit(1)


params_option = click.option(
    "--params",
    "params_path",
    default="params.yaml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="the params file (the one place for knobs)",
)


@click.group(cls=_Cli)
@click.version_option(package_name="tinyopt")
def main() -> None:
    """tinyopt: train, optimize and benchmark neural networks for microcontrollers."""
