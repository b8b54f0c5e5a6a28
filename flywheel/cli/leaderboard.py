"""`flywheel leaderboard`: every version rated from users' side-by-side verdicts."""

import json
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from


def leaderboard(
        level: Annotated[float, typer.Option(
            min=0.5, max=0.999, help="The bootstrap intervals' confidence level.")] = 0.95,
        resamples: Annotated[int, typer.Option(
            min=100, max=100_000, help="Bootstrap resamples of the battles.")] = 1000,
        seed: Annotated[int, typer.Option(help="The bootstrap's random seed.")] = 0,
        as_json: Annotated[bool, typer.Option(
            "--json", help="One JSON object per version, best first.")] = False,
        db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Bradley–Terry ratings (Elo scale, the base model at 1000) of the base model and
    every adapter that fought side-by-side battles, with bootstrap intervals."""
    from feedback.db import open_store, session_scope
    from feedback.queries.leaderboard import ANCHOR_RATING
    from feedback.queries.leaderboard import leaderboard as fit

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    try:
        with session_scope(engine) as session:
            board = fit(session, level=level, resamples=resamples, seed=seed)
    finally:
        engine.dispose()
    if as_json:
        for s in board.standings:
            typer.echo(json.dumps(vars(s)))
        return
    if not board.standings:
        typer.echo("no side-by-side battles decided yet")
        return
    interval = f"{board.level:.0%} interval"
    typer.echo(f"{'rank':>4}  {'version':<16} {'rating':>7}  {interval:>15}  {'battles':>7}"
               f"  {'won':>5} {'lost':>5} {'tied':>5}  status")
    for rank, s in enumerate(board.standings, 1):
        typer.echo(f"{rank:>4}  {s.version:<16} {s.rating:>7.0f}  "
                   f"{f'{s.low:.0f} to {s.high:.0f}':>15}  {s.battles:>7}  {s.wins:>5} "
                   f"{s.losses:>5} {s.ties:>5}  {s.status or '-'}")
    typer.echo(f"{board.battles} battles; {board.anchor} fixed at {ANCHOR_RATING:.0f}; "
               f"intervals from {board.resamples} bootstrap resamples of the battles")
