"""Serving commands: the chat server and the built-in demo model."""

from pathlib import Path
from typing import Annotated

import typer

from flywheel.cli.common import (
    DataDirOption,
    DbOption,
    HostOption,
    ModelOption,
    PortOption,
    settings_from,
)
from flywheel.errors import FlywheelError
from flywheel.logs import configure_logging


def demo_model(
    data_dir: DataDirOption = None,
    out: Annotated[Path | None, typer.Option(
        help="Write it here instead of <data-dir>/models/demo.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for its initial weights and teaching.")] = 0,
) -> None:
    """Write the built-in demo model: a tiny Llama with a real tokenizer, taught in a few
    seconds to answer "Tell me about my cat." in a little language ("it is kind and odd,
    that is what i think about my cat."). It exists so that everything runs with no
    download, and so that RLHF has something it can visibly improve."""
    from flywheel.demo_model import demo_model_path, write_demo_model

    target = out or demo_model_path(settings_from(data_dir=data_dir).models_dir)
    if target.exists():
        hint = "" if out else " or pass --out"
        raise FlywheelError(f"{target} already exists; remove it{hint}")
    write_demo_model(target, seed=seed)
    typer.echo(f"wrote the demo model (a toy that speaks a little language, for trying "
               f"Flywheel out) to {target}")


BackendOption = Annotated[list[str] | None, typer.Option(
    "--backend", metavar="URL", help="A generation backend's URL (`flywheel engine`, or vLLM with "
    "--enable-lora); repeat for several. With any, this server is a gateway over them and "
    "loads only the model's tokenizer. \\[env: FLYWHEEL_BACKENDS, comma-separated] "
    "\\[default: the built-in engine, in-process]", show_default=False)]


def serve(host: HostOption = None, port: PortOption = None, model: ModelOption = None,
          db: DbOption = None, data_dir: DataDirOption = None,
          backend: BackendOption = None) -> None:
    """Serve the chat: websocket, OpenAI-compatible API, voting and operator routes."""
    run_server(settings_from(host=host, port=port, model=model, db=db, data_dir=data_dir,
                             backends=backend or None))


def up(host: HostOption = None, port: PortOption = None, model: ModelOption = None,
       db: DbOption = None, data_dir: DataDirOption = None) -> None:
    """Everything on one machine: the chat server and the training scheduler."""
    from trainer.worker import make_scheduler

    settings = settings_from(host=host, port=port, model=model, db=db, data_dir=data_dir)
    configure_logging(settings.log_format)
    scheduler = make_scheduler(settings, background=True)
    scheduler.start()
    try:
        run_server(settings)
    finally:
        scheduler.shutdown(wait=False)


def run_server(settings) -> None:

    from feedback.db import open_store
    from server.app import create_app

    open_store(settings.db_url).dispose()  # a bad --db fails here, as one line
    settings.resolved_secret_key()  # and so does a short or empty secret key
    configure_logging(settings.log_format)
    # proxy_headers off: the app itself trusts the proxies `forwarded_allow_ips` names.
    run_until_stopped(create_app(settings), "server", settings, host=settings.host,
                      port=settings.port, ws_max_size=1 << 20, proxy_headers=False)


def run_until_stopped(app, what: str, settings, **uvicorn_options) -> None:
    """Serve `app` with uvicorn. It answers at once while its model loads in the background
    (logging each stage; /healthz or /health says "starting"); a start-up that fails stops
    it, and the command then exits with that error as one line. torch gets the threads
    `settings.serving_torch_threads()` gives it, first; idle connections stay open
    `settings.keep_alive_s`."""
    import torch
    import uvicorn

    if (threads := settings.serving_torch_threads()) is not None:
        torch.set_num_threads(threads)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           timeout_keep_alive=settings.keep_alive_s,
                                           **uvicorn_options))
    app.state.startup.on_failure = lambda: setattr(server, "should_exit", True)
    server.run()
    if app.state.startup.error:
        raise FlywheelError(f"the {what} did not start: {app.state.startup.error}")
