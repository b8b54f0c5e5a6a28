"""`flywheel judge`: AI feedback — a judge votes on the store's turns like an annotator,
or judges one candidate's evaluation samples."""

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from
from flywheel.errors import FlywheelError


def judge(
    judge_function: Annotated[str | None, typer.Option(
        "--judge", help="A judge function, module:function (e.g. "
        "flywheel.judge.functions:kindness_80). \\[env: FLYWHEEL_JUDGE]",
        show_default=False)] = None,
    judge_url: Annotated[str | None, typer.Option(
        help="An OpenAI-compatible chat API to judge with, e.g. http://127.0.0.1:8001/v1. "
        "\\[env: FLYWHEEL_JUDGE_URL]", show_default=False)] = None,
    judge_model: Annotated[str | None, typer.Option(
        help="The model at --judge-url; without it, a local Hugging Face model (a directory "
        "or hub id) judging by the log-probabilities of its verdicts. "
        "\\[env: FLYWHEEL_JUDGE_MODEL]", show_default=False)] = None,
    rubric: Annotated[Path | None, typer.Option(
        help="The principles a model judges by, one '- ' line each. "
        "\\[env: FLYWHEEL_JUDGE_RUBRIC] \\[default: flywheel/judge/rubric.md]",
        show_default=False)] = None,
    server: Annotated[str, typer.Option(
        help="The Flywheel server the judge votes at.")] = "http://127.0.0.1:8000",
    share: Annotated[float, typer.Option(
        min=0, max=1, help="Share of turns to judge (a stable choice per turn).")] = 1.0,
    backlog: Annotated[bool, typer.Option(
        "--backlog", help="Judge every turn not judged yet, not only new ones.")] = False,
    follow: Annotated[bool, typer.Option(
        "--follow", help="Keep judging new turns as they come, until interrupted.")] = False,
    interval: Annotated[float, typer.Option(
        min=0.1, help="Seconds between looks for new turns with --follow.")] = 5.0,
    limit: Annotated[int, typer.Option(min=1, help="Turns judged per pass at most.")] = 1000,
    candidate: Annotated[str | None, typer.Option(
        help="Instead, judge this candidate adapter's evaluation samples against the "
        "baseline's and add the judge's win rate to its eval report.", show_default=False)]
    = None,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """A judge votes on the store's turns through the server's routes, with the API key in
    FLYWHEEL_JUDGE_KEY (a user made with `flywheel users create NAME --role judge`). Each
    pair is judged in both orders; disagreeing orders are a tie. Prints one JSON line:
    calls, tokens, latency, parse failures, position flips, votes, and the judge's
    agreement with people and training weight."""
    from feedback.db import open_store
    from flywheel.judge import build_judge

    settings = settings_from(db=db, data_dir=data_dir, judge=judge_function,
                             judge_url=judge_url, judge_model=judge_model,
                             judge_rubric=rubric)
    chosen = build_judge(function=settings.judge, url=settings.judge_url,
                         model=settings.judge_model, api_key=settings.judge_api_key,
                         rubric=settings.judge_rubric, models_dir=settings.models_dir)
    engine = open_store(settings.db_url)
    if candidate is not None:
        from flywheel.judge.evaluation import judge_candidate

        typer.echo(json.dumps({"candidate": candidate,
                               **judge_candidate(chosen, engine, version=candidate)}))
        return
    if not settings.judge_key:
        raise FlywheelError("set FLYWHEEL_JUDGE_KEY to a judge's API key (`flywheel users "
                            "create NAME --role judge` prints one)")
    from flywheel.judge.runner import JudgeRunner

    runner = JudgeRunner(chosen, engine, server, settings.judge_key, share=share)
    try:
        runner.run_pass(backlog=backlog, limit=limit)
        while follow:
            typer.echo(json.dumps(runner.report()), err=True)
            time.sleep(interval)
            runner.run_pass(limit=limit)
    except KeyboardInterrupt:
        pass
    finally:
        runner.close()
    typer.echo(json.dumps(runner.report()))
