"""Commands on the feedback store: schema, import, export and replay (users and keys:
`flywheel.cli.users`)."""

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, DbOption, progress_bar, settings_from

db_app = typer.Typer(no_args_is_help=True, help="The feedback store's schema.")
feedback_app = typer.Typer(no_args_is_help=True,
                           help="Import, export and replay feedback.")


class ExportFormat(StrEnum):
    dpo = "dpo"
    kto = "kto"
    sft = "sft"
    log = "log"


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Apply the schema migrations (every command that opens the store does this too)."""
    from feedback.db import current_revision, open_store

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    typer.echo(f"schema at revision {current_revision(engine)}")


@feedback_app.command("import")
def feedback_import(
    file: Annotated[Path, typer.Argument(help="JSON lines (optionally .gz): TRL preference, "
                                         "TRL unpaired, Anthropic HH, or a flywheel log.")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
    user: Annotated[str, typer.Option(help="The user that owns the imported records.")]
    = "import",
    skip_invalid: Annotated[bool, typer.Option(
        help="Skip and count malformed lines instead of aborting the import.")] = False,
) -> None:
    """Import a feedback file in one transaction: all of it, or (on an error) none of it."""
    from feedback.db import open_store
    from feedback.importer import import_file

    settings = settings_from(db=db, data_dir=data_dir)
    engine = open_store(settings.db_url, event_log=settings.event_log_path)
    with progress_bar(f"importing {file.name}") as on_progress:
        report = import_file(engine, file, user_handle=user, skip_invalid=skip_invalid,
                             on_progress=on_progress)
    typer.echo(report.summary())


@feedback_app.command("export")
def feedback_export(
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="dpo: TRL preference pairs; kto: TRL unpaired labels; sft: rewrites "
        "as TRL conversational `messages` rows; log: every record, for replay.")],
    out: Annotated[Path, typer.Option(help="Output file (.gz to compress).")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export feedback in a format TRL and `datasets` read as it is, without what operators
    left out of training (and, with FLYWHEEL_REVIEW_REWRITES=1, sft without the rewrites
    not yet approved)."""
    from feedback.db import open_store
    from feedback.exporter import export_feedback

    settings = settings_from(db=db, data_dir=data_dir)
    engine = open_store(settings.db_url)
    with progress_bar(f"exporting {fmt}") as on_progress:
        count = export_feedback(engine, fmt=fmt.value, out=out, on_progress=on_progress,
                                approved_rewrites_only=settings.review_rewrites)
    typer.echo(f"wrote {count} {fmt.value} records to {out}")


@feedback_app.command("replay")
def feedback_replay(
    log: Annotated[Path, typer.Argument(help="A flywheel log: an event log (events.jsonl) "
                                        "or `feedback export --format log` (optionally .gz).")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Rebuild a store from a log, keeping its ids: into an empty store only (to merge a
    log into one that has feedback, use `feedback import`). One transaction."""
    from feedback.db import open_store
    from feedback.replay import replay_log

    # Not written to an event log: the log being replayed already is this store's history.
    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    with progress_bar(f"replaying {log.name}") as on_progress:
        report = replay_log(engine, log, on_progress=on_progress)
    typer.echo(report.summary())
