"""`flywheel watch`: how people and the reward model received each adapter's answers, and
the verdicts on the live adapter (the reward-hacking alarm, the rollback test)."""

import json
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from

COLUMNS = (("answers", "answers", "{:.0f}"), ("thumbs up", "thumbs_up_rate", "{:.1%}"),
           ("rated", "rated", "{:.0f}"), ("flagged", "flag_rate", "{:.1%}"),
           ("length", "mean_length", "{:.1f}"), ("degenerate", "degenerate_rate", "{:.1%}"),
           ("reward", "reward_mean", "{:+.3f}"), ("scored", "scored", "{:.0f}"))


def watch(
        bucket: Annotated[str, typer.Option(
            help="hour (the last 48) or day (the last 14): the window the figures and "
            "verdicts cover.")] = "day",
        score: Annotated[bool, typer.Option(
            "--score", help="First score the answers the current reward model has not "
            "scored yet, as the worker does every FLYWHEEL_WATCH_INTERVAL_S.")] = False,
        as_json: Annotated[bool, typer.Option(
            "--json", help="One JSON object: every adapter's figures per bucket, and the "
            "verdicts.")] = False,
        db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Per adapter: thumbs-up rate, flag rate, answer length, empty or degenerate answers
    and the reward model's mean score; then the reward-hacking alarm and the rollback test
    on the live adapter against its predecessor."""
    from feedback.db import open_store, session_scope
    from feedback.queries.watch import watch_report

    settings = settings_from(db=db, data_dir=data_dir)
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    try:
        if score:
            from trainer.watch import score_served_answers

            typer.echo(f"scored {score_served_answers(settings, engine)} answers", err=True)
        with session_scope(engine) as session:
            report = watch_report(session, data_dir=settings.data_dir, bucket=bucket,
                                  rollback_min_votes=settings.auto_rollback_min_votes,
                                  rollback_alpha=settings.auto_rollback_alpha)
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps({
            "bucket": report.bucket, "since": report.since.isoformat(),
            "until": report.until.isoformat(), "reward_model": report.reward_model,
            "live": report.live, "predecessor": report.predecessor,
            "alarm": vars(report.alarm),
            "rollback": {**vars(report.rollback), "automatic": settings.auto_rollback},
            "adapters": {version: {"totals": report.totals[version].summary(),
                                   "buckets": [{"start": start.isoformat(),
                                                **figures.summary()}
                                               for start, figures in buckets]}
                         for version, buckets in sorted(report.series.items())}}))
        return
    typer.echo(f"answers served from {report.since:%Y-%m-%d %H:%M} to "
               f"{report.until:%Y-%m-%d %H:%M} UTC; reward model "
               f"{report.reward_model or '- (none current)'}")
    typer.echo(f"{'adapter':<16}" + "".join(f"{title:>11}" for title, _, _ in COLUMNS))
    for version, totals in sorted(report.totals.items()):
        figures = totals.summary()
        typer.echo(f"{version + (' *' if version == report.live else ''):<16}" + "".join(
            f"{'-' if figures[key] is None else fmt.format(figures[key]):>11}"
            for _, key, fmt in COLUMNS))
    if not report.totals:
        typer.echo("no answers served in this window")
    if report.live is None:
        typer.echo("no live adapter: the base model serves alone")
        return
    typer.echo(f"live {report.live} (*) against {report.predecessor}")
    typer.echo(f"reward-hacking alarm: {'RAISED' if report.alarm.raised else 'no'} — "
               f"{report.alarm.reason}")
    automatic = "on" if settings.auto_rollback else "off"
    typer.echo(f"rollback due: {'YES' if report.rollback.raised else 'no'} — "
               f"{report.rollback.reason} (automatic rollback {automatic})")
