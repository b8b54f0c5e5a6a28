"""Operator commands on the adapter registry. Servers pick changes up within their poll
interval (`FLYWHEEL_ADAPTER_POLL_S`); every change is audited under `--actor`. An adapter
is made live (promoted, rolled back to) only once its files in the adapter store
(`--data-dir`) match the registry's checksum and its weights read back finite."""

import getpass
import json
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, settings_from

adapters_app = typer.Typer(no_args_is_help=True, help="List, approve, promote and roll back "
                           "LoRA adapters.")

ActorOption = Annotated[str | None, typer.Option(
    help="Who does it, for the audit trail. [default: your login name]", show_default=False)]


def _store(db, data_dir):
    from feedback.db import open_store

    settings = settings_from(db=db, data_dir=data_dir)
    return open_store(settings.db_url, event_log=settings.event_log_path)


def _line(adapter) -> str:
    share = f"  canary {adapter.traffic_share:.0%}" if adapter.traffic_share else ""
    erased = "  trained on erased data" if adapter.trained_on_erased_data else ""
    return (f"{adapter.version:<16} {adapter.status:<10} parent {adapter.parent_version or '-':<14}"
            f" {adapter.created_at:%Y-%m-%d %H:%M}{share}{erased}")


@adapters_app.command("list")
def list_adapters(status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
                  db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Every adapter version, newest first."""
    from feedback.db import session_scope
    from feedback.queries import adapters as registry

    with session_scope(_store(db, data_dir)) as session:
        rows = registry.list_adapters(session, status=status)
    for adapter in rows:
        typer.echo(_line(adapter))
    if not rows:
        typer.echo("no adapters yet")


@adapters_app.command("show")
def show(version: str, db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """One adapter with its evaluation report and audit trail."""
    from feedback.db import session_scope
    from feedback.queries import adapters as registry

    with session_scope(_store(db, data_dir)) as session:
        adapter = registry.get_adapter(session, version=version)
        events = registry.list_audit_events(session, adapter_version=version)
    typer.echo(_line(adapter))
    typer.echo(f"path {adapter.path}\nsha256 {adapter.sha256}\n"
               f"reward model {adapter.reward_model_version or '-'}")
    if adapter.eval_report:
        typer.echo(json.dumps(adapter.eval_report, indent=2))
    for event in events:
        typer.echo(f"{event.created_at:%Y-%m-%d %H:%M:%S}  {event.action:<9} by {event.actor}")


def _change(status: str | None, version: str | None, actor: str | None, db, data_dir) -> None:
    from feedback.db import session_scope
    from feedback.queries import adapters as registry
    from flywheel.adapter_store import AdapterStore
    from flywheel.errors import FlywheelError

    who = actor or f"cli:{getpass.getuser()}"
    with session_scope(_store(db, data_dir)) as session:
        if status is None:
            adapter = registry.rollback(session, actor=who)
        elif status == "live":
            adapter = registry.promote(session, version=version, actor=who)
        else:
            adapter = registry.set_adapter_status(session, version=version, status=status,
                                                  actor=who)
        if adapter.status == "live":  # checked before the commit: a failure undoes it all
            store = AdapterStore(settings_from(db=db, data_dir=data_dir).adapters_dir)
            try:
                store.verify(adapter.version, sha256=adapter.sha256)
            except FlywheelError as e:
                raise FlywheelError(f"{adapter.version} was not made live, as servers could "
                                    f"not serve it: {e}") from None
    typer.echo(f"{adapter.version} is now {adapter.status}")


@adapters_app.command("approve")
def approve(version: str, actor: ActorOption = None, db: DbOption = None,
            data_dir: DataDirOption = None) -> None:
    """Approve a candidate (it can then be promoted)."""
    _change("approved", version, actor, db, data_dir)


@adapters_app.command("reject")
def reject(version: str, actor: ActorOption = None, db: DbOption = None,
           data_dir: DataDirOption = None) -> None:
    """Reject a candidate or an approved adapter."""
    _change("rejected", version, actor, db, data_dir)


@adapters_app.command("promote")
def promote(version: str, actor: ActorOption = None, db: DbOption = None,
            data_dir: DataDirOption = None) -> None:
    """Make an approved adapter live; the live one retires."""
    _change("live", version, actor, db, data_dir)


@adapters_app.command("rollback")
def rollback(actor: ActorOption = None, db: DbOption = None,
             data_dir: DataDirOption = None) -> None:
    """Bring back the previously live adapter."""
    _change(None, None, actor, db, data_dir)
