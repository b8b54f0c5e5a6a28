"""`flywheel simulate`: a crowd of simulated users driving a running server."""

import json
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import progress_bar


def simulate(
    url: Annotated[str, typer.Option(help="The running server, e.g. http://127.0.0.1:8000.")]
    = "http://127.0.0.1:8000",
    users: Annotated[int, typer.Option(min=1, help="Simulated users.")] = 10,
    turns: Annotated[int, typer.Option(min=1, help="Chat turns per user.")] = 10,
    preference: Annotated[str, typer.Option(
        help="What users like: module:function scoring (prompt, answer), higher is better.")]
    = "flywheel.simulate.preferences:kindness",
    seed: Annotated[int, typer.Option(help="Fixes the personas, prompts and votes.")] = 0,
    careless: Annotated[float, typer.Option(
        min=0, max=1, help="Share of careless users (always A, always up, random).")] = 0.1,
    adversarial: Annotated[float, typer.Option(
        min=0, max=1, help="Share of adversarial users (inverted preference).")] = 0.05,
    concurrency: Annotated[int, typer.Option(min=1, help="Users chatting at once.")] = 32,
    side_by_side: Annotated[float, typer.Option(
        min=0, max=1, help="Share of turns asked to be answered side by side.")] = 0.3,
    calibration: Annotated[float, typer.Option(
        min=0, max=1, help="Share of turns on fixed calibration prompts (consensus).")] = 0.2,
    max_tokens: Annotated[int | None, typer.Option(
        min=1, help="Answer length cap. [default: the server's]", show_default=False)] = None,
    report: Annotated[Path | None, typer.Option(
        help="Also write the full report, each user's persona included, as JSON here.")]
    = None,
) -> None:
    """Simulated users chat with a running server over its websocket and vote through its
    REST routes according to a preference, with noise, disagreement, and shares of
    careless and adversarial users. Prints one JSON line of figures."""
    from flywheel.simulate import run_crowd

    with progress_bar(f"{users} simulated users") as on_progress:
        result = run_crowd(url, users=users, turns=turns, preference=preference, seed=seed,
                           careless=careless, adversarial=adversarial,
                           concurrency=concurrency, side_by_side=side_by_side,
                           calibration=calibration, max_tokens=max_tokens,
                           on_progress=on_progress)
    if report is not None:
        report.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    typer.echo(json.dumps(result.summary()))
