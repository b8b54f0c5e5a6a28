"""`flywheel engine`: the built-in generation engine behind vLLM's protocol."""

from typing import Annotated

import typer

from flywheel.cli.common import DataDirOption, HostOption, ModelOption, settings_from
from flywheel.logs import configure_logging


def engine(
    model: ModelOption = None,
    host: HostOption = None,
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    data_dir: DataDirOption = None,
    max_batch: Annotated[int | None, typer.Option(
        help="Answers generated together. \\[env: FLYWHEEL_MAX_BATCH] \\[default: 32]",
        show_default=False)] = None,
) -> None:
    """Serve the built-in engine behind the protocol of vLLM's OpenAI-compatible server
    (streaming /v1/completions, /v1/models, runtime LoRA loading, /health), for
    `flywheel serve --backend URL`. vLLM can take its place:
    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve MODEL --enable-lora."""
    from flywheel.cli.serving import run_until_stopped
    from server.engine_api import create_engine_app

    settings = settings_from(model=model, host=host, data_dir=data_dir, max_batch=max_batch)
    configure_logging(settings.log_format)
    app = create_engine_app(model=settings.model, models_dir=settings.models_dir,
                            max_batch=settings.max_batch)
    run_until_stopped(app, "engine", settings, host=settings.host, port=port)
