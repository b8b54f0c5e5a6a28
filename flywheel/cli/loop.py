"""The training loop: the scheduler worker, one cycle now, and the runs it recorded."""

import json
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, ModelOption, settings_from
from flywheel.logs import configure_logging

runs_app = typer.Typer(no_args_is_help=True, help="Training runs: status, metrics, errors.")


def worker(model: ModelOption = None, db: DbOption = None,
           data_dir: DataDirOption = None) -> None:
    """Run the scheduler: a training cycle whenever enough new feedback has arrived.

    FLYWHEEL_CYCLE_INTERVAL_S and FLYWHEEL_CYCLE_MIN_FEEDBACK set the pace. Any number of
    workers may run: a lease in the database lets one cycle run at a time."""
    from feedback.db import open_store
    from trainer.worker import make_scheduler

    settings = settings_from(model=model, db=db, data_dir=data_dir)
    open_store(settings.db_url).dispose()
    configure_logging(settings.log_format)
    typer.echo(f"worker: considering a cycle every {settings.cycle_interval_s:g} s")
    make_scheduler(settings, background=False).start()


def cycle(
    model: ModelOption = None, db: DbOption = None, data_dir: DataDirOption = None,
    if_due: Annotated[bool, typer.Option(
        help="Only if enough new feedback has arrived (as the scheduler does).")] = False,
) -> None:
    """Run one training cycle now: reward model, PPO, evaluation, a candidate adapter."""
    from feedback.db import open_store
    from trainer.cycle import CycleConfig, run_cycle

    settings = settings_from(model=model, db=db, data_dir=data_dir)
    engine = open_store(settings.db_url)
    configure_logging(settings.log_format)
    result = run_cycle(settings, engine,
                       CycleConfig(min_new_feedback=settings.cycle_min_feedback),
                       force=not if_due)
    if result.status == "succeeded":
        typer.echo(f"cycle {result.run_id} made candidate {result.adapter_version}; "
                   f"review it with: flywheel adapters show {result.adapter_version}")
    else:
        typer.echo(f"cycle {result.status}: {result.reason}", err=result.status == "failed")
        if result.status == "failed":
            raise typer.Exit(1)


@runs_app.command("list")
def list_runs(kind: Annotated[str | None, typer.Option(help="reward, ppo, eval or cycle")]
              = None, db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """The newest training runs first."""
    from feedback.db import open_store, session_scope
    from feedback.queries import runs

    with session_scope(open_store(settings_from(db=db, data_dir=data_dir).db_url)) as s:
        rows = runs.list_runs(s, kind=kind)
    for run in rows:
        typer.echo(f"{run.id:>5} {run.kind:<7} {run.status:<10} {run.started_at:%Y-%m-%d %H:%M}"
                   f"  {run.adapter_version or ''}{'  ' + run.error if run.error else ''}")
    if not rows:
        typer.echo("no training runs yet")


@runs_app.command("show")
def show_run(run_id: int, db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """One run with its configuration, data window, metrics and error, as JSON."""
    from feedback.db import open_store, session_scope
    from feedback.queries import runs

    with session_scope(open_store(settings_from(db=db, data_dir=data_dir).db_url)) as s:
        run = runs.get_run(s, run_id=run_id)
    typer.echo(json.dumps(run.model_dump(mode="json"), indent=2))
