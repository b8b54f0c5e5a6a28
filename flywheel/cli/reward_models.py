"""Commands on the reward-model registry: which reward models were trained, what they saw,
how they scored on the held-out split, and which one is current."""

import json
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from

reward_models_app = typer.Typer(no_args_is_help=True, help="List and show the reward models "
                                "in the registry.")

JsonOption = Annotated[bool, typer.Option("--json", help="One JSON object per line.")]


def _store(db, data_dir):
    """The store; the reward models of a data directory made before the registry (a
    `CURRENT` file names the current one) are imported first."""
    from feedback.db import open_store

    settings = settings_from(db=db, data_dir=data_dir)
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    if (settings.data_dir / "reward_models" / "CURRENT").is_file():  # the trainer is slow
        from trainer.reward.store import import_legacy_reward_models  # to import: only then

        import_legacy_reward_models(engine, settings.data_dir)
    return engine


def _accuracy(row) -> str:
    heldout = row.heldout or {}
    if heldout.get("accuracy") is None:
        return "accuracy -"
    figures = f"accuracy {heldout['accuracy']:.3f} on {heldout.get('pairs') or 0} pairs"
    if heldout.get("margin_low") is None:  # registered before margins were kept
        return figures
    chance = "  no better than chance" if heldout["margin_low"] <= 0 else ""
    return (f"{figures}, margin {heldout['margin']:+.2f} "
            f"({heldout['margin_low']:+.2f} to {heldout['margin_high']:+.2f}){chance}")


def _line(row) -> str:
    erased = "  trained on erased data" if row.trained_on_erased_data else ""
    return (f"{row.version:<10} {row.status:<9} {_accuracy(row):<28} "
            f"parent {row.parent_version or '-':<10} {row.created_at:%Y-%m-%d %H:%M}{erased}")


@reward_models_app.command("list")
def list_reward_models(
        status: Annotated[str | None, typer.Option(
            help="Only this status: current, retired or rejected.")] = None,
        as_json: JsonOption = False, db: DbOption = None,
        data_dir: DataDirOption = None) -> None:
    """Every reward model, newest first, with its held-out accuracy."""
    from feedback.db import session_scope
    from feedback.queries import reward_models as registry

    with session_scope(_store(db, data_dir)) as session:
        rows = registry.list_reward_models(session, status=status)
    for row in rows:
        typer.echo(json.dumps(row.model_dump(mode="json")) if as_json else _line(row))
    if not rows and not as_json:
        typer.echo("no reward models yet")


@reward_models_app.command("show")
def show(version: str, as_json: JsonOption = False, db: DbOption = None,
         data_dir: DataDirOption = None) -> None:
    """One reward model: its directory, data window, held-out figures and audit trail."""
    from feedback.db import session_scope
    from feedback.queries import reward_models as registry

    with session_scope(_store(db, data_dir)) as session:
        row = registry.get_reward_model(session, version=version)
        events = registry.reward_model_audit_events(session, version=version)
    if as_json:
        typer.echo(json.dumps({**row.model_dump(mode="json"), "audit": [
            e.model_dump(mode="json", exclude={"adapter_version"}) for e in events]}))
        return
    typer.echo(_line(row))
    typer.echo(f"path {row.path}\nbackbone {row.backbone}")
    typer.echo(f"data {json.dumps(row.data_window)}\nheld out {json.dumps(row.heldout)}")
    for event in events:
        typer.echo(f"{event.created_at:%Y-%m-%d %H:%M:%S}  {event.action:<12} by {event.actor}"
                   f"  {json.dumps(event.detail) if event.detail else ''}".rstrip())
