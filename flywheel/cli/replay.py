"""`flywheel replay`: answer the logged prompts again with an adapter, and compare."""

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, ModelOption, progress_bar, settings_from


def replay(
    adapter: Annotated[str, typer.Option(help="The adapter version to answer with, e.g. "
                                         "policy-v7 (from the data directory's adapters).")],
    log: Annotated[Path, typer.Option(help="A flywheel log: an event log or an export.")],
    limit: Annotated[int | None, typer.Option(
        help="At most this many logged answers, oldest first. [default: all]",
        show_default=False)] = None,
    out: Annotated[Path | None, typer.Option(
        help="Write one JSON line per prompt: the logged and new answers, their rewards "
        "and the delta.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Length of the new answers.")] = 64,
    seed: Annotated[int, typer.Option(help="Seeds the sampling.")] = 0,
    model: ModelOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Answer every logged prompt again with ADAPTER and score both answers with the
    current reward model: the mean reward delta (new − logged) with a 95% bootstrap
    interval, overall and per adapter that wrote the logged answers. The last line is one
    JSON object of figures."""
    from feedback.formats import write_json_lines
    from trainer.replay import ReplayConfig, replay_answers

    settings = settings_from(model=model, data_dir=data_dir)
    config = ReplayConfig(max_new_tokens=max_new_tokens, seed=seed)
    with progress_bar(f"answering with {adapter}") as on_progress:
        rows, figures = replay_answers(settings, log, adapter=adapter, limit=limit,
                                       config=config, on_progress=on_progress)
    typer.echo(f"{'logged answers by':<20} {'answers':>8} {'logged':>9} {'replayed':>9} "
               f"{'delta':>9}  95% interval")
    for version, group in [*figures["by_logged_adapter"].items(), ("all", figures)]:
        typer.echo(f"{version:<20} {group['answers']:>8} {group['logged_reward']:>9.3f} "
                   f"{group['replayed_reward']:>9.3f} {group['mean_delta']:>+9.3f}  "
                   f"{group['delta_low']:+.3f} to {group['delta_high']:+.3f}")
    if out is not None:
        write_json_lines(out, rows)
        typer.echo(f"wrote {len(rows)} rows to {out}")
    typer.echo(json.dumps(figures))
