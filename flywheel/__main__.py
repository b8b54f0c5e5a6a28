"""`python -m flywheel` is the `flywheel` command."""

from flywheel.cli import app

app(prog_name="flywheel")
