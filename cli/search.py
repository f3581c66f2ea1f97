"""`tinyopt search`: the budget-driven search over chains and settings (flows/search.py)."""

from __future__ import annotations

import click

from cli.group import main, params_option
from cli.pipeline import input_options, start_flow_machinery


@main.command()
@params_option
@input_options
def search(params_path: str, model_path: str | None, data_path: str | None) -> None:
    """Search chains and their settings for the most accurate and the smallest model that fit a device."""
    runner = start_flow_machinery(params_path, model_path, data_path)
    from flows.search import search as search_flow
    from tinyopt.search.report import nothing_completed

    result = search_flow.with_options(task_runner=runner)(params_path=params_path, model=model_path, data=data_path)
    trials = {t.number: t for t in result.trials}
    click.echo(f"\n{len(trials)} trials in {result.seconds:.0f} s; Pareto front: {len(result.front)} trials")
    widen = nothing_completed(result)
    if widen:
        click.echo(widen)
    for objective, number in result.picks.items():
        if number is None:
            click.echo(f"pick {objective}: none fits")
            continue
        t = trials[number]
        click.echo(
            f"pick {objective}: trial {number} [{', '.join(t.chain)}] validation {t.val_score:.4f}, "
            f"test {result.test_scores[number]:.4f}, {t.raw_bytes:,} bytes, {t.gzip_bytes:,} gzip; "
            f"plan: {result.plans[objective]}"
        )
    click.echo(f"report: reports/{result.search_id}/search.md")
