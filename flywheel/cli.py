"""The `flywheel` command line.

Every command takes its common options (`--db`, `--data-dir`, `--model`) after its own
name and falls back to `FLYWHEEL_*` variables, then to the embedded defaults. A problem
the user can fix is printed as one `error:` line (exit 2), never as a traceback.
"""

from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from feedback.errors import InvalidFeedback, NotFound, StoreError
from feedback.models import Role
from flywheel import __version__
from flywheel.errors import FlywheelError
from flywheel.settings import Settings


class ExportFormat(StrEnum):
    dpo = "dpo"
    kto = "kto"
    log = "log"


USER_ERRORS = (FlywheelError, StoreError, NotFound, InvalidFeedback, OSError)


class FlywheelGroup(TyperGroup):
    """Turns the errors a user can fix into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except USER_ERRORS as e:
            typer.echo(f"error: {_describe(e)}", err=True)
            raise SystemExit(2) from None


def _describe(error: Exception) -> str:
    if isinstance(error, OSError) and error.filename is not None:
        return f"{error.filename}: {error.strerror or error}"
    return str(error)


app = typer.Typer(cls=FlywheelGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False,
                  help="Flywheel: online, human-in-the-loop RLHF for a deployed chatbot.")
db_app = typer.Typer(no_args_is_help=True, help="The feedback store's schema.")
feedback_app = typer.Typer(no_args_is_help=True, help="Import and export feedback.")
app.add_typer(db_app, name="db")
app.add_typer(feedback_app, name="feedback")

DbOption = Annotated[str | None, typer.Option(
    "--db", help="Database URL (sqlite:///… or postgresql+psycopg://…). \\[env: FLYWHEEL_DB] "
    "\\[default: SQLite in the data directory]", show_default=False)]
DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", help="Where the SQLite store, models and adapters live. "
    "\\[env: FLYWHEEL_DATA_DIR] \\[default: ./flywheel-data]", show_default=False)]
ModelOption = Annotated[str | None, typer.Option(
    "--model", help="A local Hugging Face model directory, a hub id, or 'demo'. "
    "\\[env: FLYWHEEL_MODEL] \\[default: demo]", show_default=False)]


def settings_from(**overrides) -> Settings:
    """Settings from the environment, with the options the user gave on top."""
    return Settings(**{key: value for key, value in overrides.items() if value is not None})


@contextmanager
def progress_bar(description: str):
    """A progress bar on stderr; yields an `on_progress(done, total)` callback."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    console = Console(stderr=True)
    with Progress(*columns, transient=True, console=console,
                  disable=not console.is_terminal) as progress:
        task = progress.add_task(description, total=None)

        def on_progress(done: int, total: int | None = None) -> None:
            progress.update(task, completed=done, total=total)

        yield on_progress


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flywheel {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version.")] = False):
    """Flywheel: online, human-in-the-loop RLHF for a deployed chatbot."""


# -- db ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Apply the schema migrations (every command that opens the store does this too)."""
    from feedback.db import current_revision, open_store

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    typer.echo(f"schema at revision {current_revision(engine)}")


# -- models -----------------------------------------------------------------------------


@app.command("demo-model")
def demo_model(
    data_dir: DataDirOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Write it here instead of <data-dir>/models/demo.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the random weights.")] = 0,
) -> None:
    """Write the built-in demo model: a tiny random-initialised Llama with a real tokenizer.

    It answers gibberish until trained; it exists so that everything runs with no download.
    """
    from flywheel.demo_model import demo_model_path, write_demo_model

    target = out or demo_model_path(settings_from(data_dir=data_dir).models_dir)
    if target.exists():
        hint = "" if out else " or pass --out"
        raise FlywheelError(f"{target} already exists; remove it{hint}")
    write_demo_model(target, seed=seed)
    typer.echo(f"wrote the demo model (random weights, for trying Flywheel out) to {target}")


# -- feedback ---------------------------------------------------------------------------


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

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    with progress_bar(f"importing {file.name}") as on_progress:
        report = import_file(engine, file, user_handle=user, skip_invalid=skip_invalid,
                             on_progress=on_progress)
    typer.echo(report.summary())


@feedback_app.command("export")
def feedback_export(
    fmt: Annotated[ExportFormat, typer.Option(
        "--format", help="dpo: TRL preference pairs; kto: TRL unpaired labels; log: every record, "
        "for replay.")],
    out: Annotated[Path, typer.Option(help="Output file (.gz to compress).")],
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Export feedback in a format TRL and `datasets` read as it is."""
    from feedback.db import open_store
    from feedback.exporter import export_feedback

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    with progress_bar(f"exporting {fmt}") as on_progress:
        count = export_feedback(engine, fmt=fmt.value, out=out, on_progress=on_progress)
    typer.echo(f"wrote {count} {fmt.value} records to {out}")


# -- serving ----------------------------------------------------------------------------

HostOption = Annotated[str | None, typer.Option(
    "--host", help="Interface to listen on. \\[env: FLYWHEEL_HOST] \\[default: 127.0.0.1]",
    show_default=False)]
PortOption = Annotated[int | None, typer.Option(
    "--port", help="Port to listen on. \\[env: FLYWHEEL_PORT] \\[default: 8000]",
    show_default=False)]


@app.command()
def serve(host: HostOption = None, port: PortOption = None, model: ModelOption = None,
          db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Serve the chat: websocket, OpenAI-compatible API, voting and operator routes."""
    import uvicorn

    from feedback.db import open_store
    from server.app import create_app

    settings = settings_from(host=host, port=port, model=model, db=db, data_dir=data_dir)
    open_store(settings.db_url).dispose()  # a bad --db fails here, as one line
    _configure_logging()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_config=None, ws_max_size=1 << 20)


def _configure_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- users ------------------------------------------------------------------------------

users_app = typer.Typer(no_args_is_help=True, help="Users and API keys.")
app.add_typer(users_app, name="users")


@users_app.command("create")
def users_create(
    handle: Annotated[str, typer.Argument(help="A unique name, e.g. alice.")],
    role: Annotated[Role, typer.Option(help="What the key may do.")] = Role.user,
    db: DbOption = None,
    data_dir: DataDirOption = None,
) -> None:
    """Create a user with an API key. The key is printed once and stored only hashed."""
    from feedback.db import open_store, session_scope
    from feedback.queries import users
    from flywheel.api_keys import hash_api_key, new_api_key

    engine = open_store(settings_from(db=db, data_dir=data_dir).db_url)
    key = new_api_key()
    with session_scope(engine) as session:
        if users.get_user_by_handle(session, handle=handle) is not None:
            raise FlywheelError(f"a user named {handle!r} already exists")
        users.create_user(session, handle=handle, role=role, api_key_hash=hash_api_key(key))
    typer.echo(f"created {role.value} {handle}; API key (shown only now):")
    typer.echo(key)
