"""The `flywheel` command line.

Every command takes its common options (`--db`, `--data-dir`, `--model`) after its own
name and falls back to `FLYWHEEL_*` variables, then to the embedded defaults. A problem
the user can fix is printed as one `error:` line (exit 2), never as a traceback. Each
command imports what it runs (server, trainer) only when it runs, so `--help` is fast.
"""

from typing import Annotated

import typer

from flywheel import __version__
from flywheel.cli import (
    adapters,
    engine,
    judge,
    leaderboard,
    loop,
    policy_training,
    replay,
    review,
    reward_models,
    serving,
    simulate,
    store,
    training,
    users,
    watch,
)
from flywheel.cli.common import FlywheelGroup

app = typer.Typer(cls=FlywheelGroup, no_args_is_help=True, pretty_exceptions_enable=False,
                  add_completion=False,
                  help="Flywheel: online, human-in-the-loop RLHF for a deployed chatbot.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"flywheel {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, help="Print the version.")] = False):
    """Flywheel: online, human-in-the-loop RLHF for a deployed chatbot."""



app.command("up")(serving.up)
app.command("serve")(serving.serve)
app.command("engine")(engine.engine)
app.command("worker")(loop.worker)
app.command("cycle")(loop.cycle)
app.command("replay")(replay.replay)
app.add_typer(loop.runs_app, name="runs")
app.add_typer(adapters.adapters_app, name="adapters")
app.add_typer(reward_models.reward_models_app, name="reward-models")
app.add_typer(review.review_app, name="review")
app.add_typer(users.users_app, name="users")
app.add_typer(store.feedback_app, name="feedback")
app.add_typer(store.db_app, name="db")
app.command("demo-model")(serving.demo_model)
app.command("simulate")(simulate.simulate)
app.command("judge")(judge.judge)
app.command("leaderboard")(leaderboard.leaderboard)
app.command("watch")(watch.watch)
training.train_app.command("ppo")(policy_training.train_ppo_command)
training.train_app.command("dpo")(policy_training.train_dpo_command)
app.add_typer(training.train_app, name="train")
app.add_typer(training.eval_app, name="eval")
