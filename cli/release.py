"""The release commands: keys, the model registry, fleet channels (promote, verify, rollback, status)."""

from __future__ import annotations

from pathlib import Path

import click

from cli.group import (
    configure_prefect,
    main,
    params_option,
    quiet_user_errors_in_prefect_logs,
    reach_fleet,
    reach_mlflow,
)
from tinyopt.core import layout
from tinyopt.core.errors import UserError
from tinyopt.params import DEFAULT_OBJECTIVE, DEFAULT_PROFILE


@main.command()
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="a directory outside the project"
)
@click.option("--force", is_flag=True, help="replace an existing key pair (devices then need the new signing.pub)")
@params_option
def keygen(out_dir: str, force: bool, params_path: str) -> None:
    """Make an Ed25519 key pair for signing manifests (keep signing.key out of the repository)."""
    from tinyopt.release import signing

    project = signing.project_of(Path(params_path))
    if signing.inside_project(Path(out_dir), project):
        raise UserError(
            f"{out_dir}: inside the project or a git working tree; keys must live outside both (e.g. ~/.tinyopt-keys)"
        )
    private, public = signing.generate_keys(Path(out_dir).expanduser(), force)
    click.echo(
        f"private key: {private} (export TINYOPT_SIGNING_KEY_FILE={private})\npublic key: {public} (give it to devices)"
    )


@main.command()
@click.option("--variant", default=None, help="a variant of the run (default: the pick of --objective)")
@click.option("--objective", default=DEFAULT_OBJECTIVE, show_default=True, help="whose pick to register")
@click.option(
    "--profile", default=None, help=f"the target device profile (default: the objective's, else {DEFAULT_PROFILE})"
)
@click.option("--name", "model_name", default=None, help="registered model name (default: <dataset>-<profile>)")
@click.option("--summary", "summary_path", default=str(layout.REPORTS / "latest" / "summary.json"), show_default=True)
@params_option
def register(
    variant: str | None,
    objective: str,
    profile: str | None,
    model_name: str | None,
    summary_path: str,
    params_path: str,
) -> None:
    """Register a picked variant in MLflow's model registry (alias: candidate)."""
    from tinyopt.params import check_name, load_params
    from tinyopt.records.run import load_summary
    from tinyopt.release.registry import register_variant

    if model_name:
        check_name("model", model_name)
    params = load_params(params_path)
    summary = load_summary(Path(summary_path))
    if variant is None:
        pick = summary.picks.get(objective)
        if not pick or not pick.variant:
            raise UserError(f"objective '{objective}' picked nothing in run {summary.run_id}; pass --variant")
        variant = pick.variant
        profile = profile or (params.objectives[objective].profile if objective in params.objectives else None)
    reach_mlflow()
    done = register_variant(summary, variant, profile or DEFAULT_PROFILE, model_name)
    click.echo(f"registered {done['variant']} as {done['model']} version {done['version']} (alias {done['alias']})")


@main.command()
@click.argument("model")
@click.option("--version", required=True, type=int)
@click.option("--channel", required=True)
@click.option("--force", is_flag=True, help="publish even if the channel's gate refuses (needs --reason)")
@click.option("--reason", default=None, help="why the gate is overridden (recorded in the manifest and registry)")
@params_option
def promote(model: str, version: int, channel: str, force: bool, reason: str | None, params_path: str) -> None:
    """Publish a registered model version to a fleet channel (signed manifest on S3); promoting what a
    channel serves again re-signs it when needed (near expiry, tampered with)."""
    from tinyopt.params import check_name, load_params

    check_name("model", model)
    if force and not reason:
        raise UserError("--force needs --reason: the override is recorded")
    params = load_params(params_path)  # a bad params file is one line before Prefect starts
    reach_mlflow()
    reach_fleet(params)  # an unreachable server too, before anything is published
    configure_prefect()
    from flows.promote import promote as promote_flow

    quiet_user_errors_in_prefect_logs()
    done = promote_flow(model, version, channel, params_path, reason if force else None)
    echo_repair(channel, done)
    click.echo(
        f"{channel}: {done['status']} {model} v{version} (sha256 {done['sha256'][:12]}, sequence {done['sequence']})"
    )


def echo_repair(channel: str, done: dict) -> None:
    """The line saying a swapped or missing model object was uploaded again (see release.promote)."""
    if done.get("model_object"):
        click.echo(f"{channel}: {done['model_object']}")


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None


@main.command()
@click.option("--channel", required=True, help="the channel this device is on (a manifest for another is rejected)")
@click.option(
    "--manifest",
    "manifest_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="check this manifest file (with --model) instead of downloading the channel's from S3",
)
@click.option("--model", "model_path", default=None, type=click.Path(dir_okay=False))
@click.option("--public-key", "public_key", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--into", default="fleet-download", show_default=True, help="where a download keeps the model, manifest and state"
)
@click.option(
    "--state",
    "state_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="the device's last accepted sequence (default: INTO/state.json, or state.json beside --model)",
)
@params_option
def verify(
    channel: str,
    manifest_path: str | None,
    model_path: str | None,
    public_key: str,
    into: str,
    state_path: str | None,
    params_path: str,
) -> None:
    """Check a manifest and its model the way a device does: signature, channel, expiry, sequence
    (no downgrade), size and sha256; then record the sequence in the state file."""
    from tinyopt.params import check_name, load_params
    from tinyopt.release import signing, updater

    check_name("channel", channel)
    if bool(manifest_path) != bool(model_path):
        raise UserError("give both --manifest and --model (files), or neither (download the channel from S3)")
    key = signing.load_public_key(Path(public_key))
    if manifest_path:
        state = Path(state_path) if state_path else Path(model_path).parent / "state.json"
        manifest = updater.verify(_read_file(manifest_path, "manifest"), Path(model_path), key, channel, state)
    else:
        if state_path and Path(state_path) != Path(into) / "state.json":
            raise UserError("a download keeps its state in INTO/state.json; pass --into instead of --state")
        manifest = updater.download_and_verify(channel, load_params(params_path), key, Path(into))
    click.echo(
        f"verified: {manifest.model_name} v{manifest.version} sha256 {manifest.sha256[:12]} on "
        f"{channel}, sequence {manifest.sequence}, expires {manifest.expires}, "
        "signature good"
    )


@main.command()
@click.argument("channel")
@params_option
def rollback(channel: str, params_path: str) -> None:
    """Publish a new manifest that serves what the channel served before its current model."""
    from tinyopt.params import load_params
    from tinyopt.release.promote import rollback as roll_back

    params = load_params(params_path)
    reach_mlflow()  # before anything is published: the rollback ends by moving the registry alias
    reach_fleet(params)
    done = roll_back(channel, params, Path(params_path).resolve().parent)
    echo_repair(channel, done)
    click.echo(
        f"{channel}: back to {done['model_name']} v{done['version']} (sha256 {done['sha256'][:12]}, "
        f"sequence {done['sequence']})"
    )


@main.command()
@click.option(
    "--public-key",
    "public_key",
    default=None,
    type=click.Path(dir_okay=False),
    help="also check each channel as a device would (signature, schema, channel, expiry, no older sequence than "
    "the signed history) and its model object (size, sha256)",
)
@params_option
def status(public_key: str | None, params_path: str) -> None:
    """What each fleet channel serves now."""
    from tinyopt.params import load_params
    from tinyopt.release import signing
    from tinyopt.release.channel import status as channel_status

    key = signing.load_public_key(Path(public_key)) if public_key else None
    params = load_params(params_path)
    reach_fleet(params)
    for row in channel_status(params, key):
        shown = row.manifest
        if not row.published:
            serves = "nothing"
        elif shown is None or "model_name" not in shown:
            serves = "an unreadable manifest (promote again to re-sign it)"
        else:
            serves = (
                f"{shown['model_name']} v{shown['version']} ({shown.get('metric')} {shown.get('score')}, "
                f"sha256 {str(shown.get('sha256'))[:12]}, sequence {shown.get('sequence')}, "
                f"expires {shown.get('expires')})"
            )
        unchecked = " [not verified: pass --public-key]" if row.published else ""
        check = f" [{row.check}]" if row.check else unchecked
        click.echo(f"{row.channel}: {serves}{check}; {row.history} manifests published")
