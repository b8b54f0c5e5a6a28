"""What every command shares: its options, settings, errors shown as one line, progress."""

from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from typer.core import TyperGroup

from feedback.errors import InvalidFeedback, NotFound, StoreError
from flywheel.errors import FlywheelError
from flywheel.settings import Settings

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


DbOption = Annotated[str | None, typer.Option(
    "--db", help="Database URL (sqlite:///… or postgresql+psycopg://…). \\[env: FLYWHEEL_DB] "
    "\\[default: SQLite in the data directory]", show_default=False)]
DataDirOption = Annotated[Path | None, typer.Option(
    "--data-dir", help="Where the SQLite store, models and adapters live. "
    "\\[env: FLYWHEEL_DATA_DIR] \\[default: ./flywheel-data]", show_default=False)]
ModelOption = Annotated[str | None, typer.Option(
    "--model", help="A local Hugging Face model directory, a hub id, or 'demo'. "
    "\\[env: FLYWHEEL_MODEL] \\[default: demo]", show_default=False)]

HostOption = Annotated[str | None, typer.Option(
    "--host", help="Interface to listen on. \\[env: FLYWHEEL_HOST] \\[default: 127.0.0.1]",
    show_default=False)]
PortOption = Annotated[int | None, typer.Option(
    "--port", help="Port to listen on. \\[env: FLYWHEEL_PORT] \\[default: 8000]",
    show_default=False)]


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
