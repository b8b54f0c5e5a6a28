"""The training loop: the scheduler worker, one cycle now, and the runs it recorded."""

import json
from pathlib import Path
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
    from_log: Annotated[Path | None, typer.Option(
        help="Reproduce a logged cycle from this flywheel log instead, in a temporary "
        "store and data directory, and compare its metrics with the logged ones.")] = None,
    run: Annotated[int | None, typer.Option(
        help="With --from-log: the cycle run to reproduce. [default: the last that "
        "succeeded]", show_default=False)] = None,
    seed: Annotated[int | None, typer.Option(
        help="With --from-log: the seed to run with. [default: the logged one]",
        show_default=False)] = None,
) -> None:
    """Run one training cycle now: reward model, PPO, evaluation, a candidate adapter."""
    if from_log is not None:
        reproduce(settings_from(model=model, db=db, data_dir=data_dir), from_log,
                  run_id=run, seed=seed)
        return
    from feedback.db import open_store
    from trainer.cycle import cycle_config_from, run_cycle

    settings = settings_from(model=model, db=db, data_dir=data_dir)
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    configure_logging(settings.log_format)
    result = run_cycle(settings, engine,
                       cycle_config_from(settings),
                       force=not if_due)
    if result.status == "succeeded":
        typer.echo(f"cycle {result.run_id} made candidate {result.adapter_version}; "
                   f"review it with: flywheel adapters show {result.adapter_version}")
    else:
        typer.echo(f"cycle {result.status}: {result.reason}", err=result.status == "failed")
        if result.status == "failed":
            raise typer.Exit(1)


def reproduce(settings, log: Path, *, run_id: int | None, seed: int | None) -> None:
    """`cycle --from-log`: the logged run's metrics beside the reproduced ones; the last
    line is one JSON object of figures. Exit code 1 when they differ."""
    from flywheel.cli.common import progress_bar
    from trainer.reproduce import reproduce_cycle

    configure_logging(settings.log_format)
    with progress_bar(f"replaying {log.name}") as on_progress:
        result = reproduce_cycle(settings, log, run_id=run_id, seed=seed,
                                 on_progress=on_progress)
    differences = result.differences
    shown = [path for path in result.logged if not path.startswith("ppo.steps[")]
    last_step = max((p for p in result.logged if p.startswith("ppo.steps[")), default=None)
    if last_step:
        prefix = last_step.split("]")[0] + "]"
        shown += [p for p in result.logged if p.startswith(prefix)]
    shown += [p for p in differences if p not in shown]
    typer.echo(f"{'figure':<44} {'logged':>22} {'reproduced':>22}")
    for path in shown:
        mark = "  <- differs" if path in differences else ""
        typer.echo(f"{path:<44} {_cell(result.logged.get(path)):>22} "
                   f"{_cell(result.reproduced.get(path)):>22}{mark}")
    for note in result.notes:
        typer.echo(f"note: {note}")
    compared = len(result.logged.keys() | result.reproduced.keys())
    typer.echo(f"cycle {result.run_id} (seed {result.seed}): "
               + ("the metrics match exactly" if result.matches else
                  f"{len(differences)} of {compared} figures differ"))
    typer.echo(json.dumps({"run": result.run_id, "seed": result.seed, "status": result.status,
                           "match": result.matches, "figures": compared,
                           "differences": len(differences)}))
    if not result.matches:
        raise typer.Exit(1)


def _cell(value) -> str:
    return "-" if value is None else str(value)[:22]


@runs_app.command("list")
def list_runs(kind: Annotated[str | None, typer.Option(help="reward, ppo, dpo, eval or cycle")]
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
