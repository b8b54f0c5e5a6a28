"""Build the server's generation side from its settings: the built-in engine in this
process (the default), or a gateway over the backends `FLYWHEEL_BACKENDS` names (then only
the tokenizer is loaded here)."""

from contextlib import AsyncExitStack
from dataclasses import dataclass

from flywheel.demo_model import demo_model_path
from flywheel.model_loading import DEMO_NAME, LoadedModel, load_model, load_tokenizer
from flywheel.settings import Settings
from server.backends.gateway import Gateway
from server.backends.local import LocalBackend
from server.backends.remote import RemoteBackend
from server.engine import GenerationEngine
from server.startup import Startup


@dataclass
class Generation:
    engine: GenerationEngine | Gateway  # what the chat service streams answers from
    backends: list  # where the adapter manager loads adapters
    gateway: Gateway | None
    tokenizer: object
    max_context: int
    is_demo: bool


async def build_generation(settings: Settings, startup: Startup, stack: AsyncExitStack, *,
                           model: LoadedModel | None = None) -> Generation:
    """Load what generation needs (logging each stage) and register its shutdown on
    `stack`. `model` skips loading (tests hand in a tiny one)."""
    if settings.backends:
        loaded = await startup.run(_stage(settings, "its tokenizer (the backends hold the "
                                          "weights)"), lambda: load_tokenizer(
                                              settings.model, models_dir=settings.models_dir))
        probe = [loaded.tokenizer.bos_token_id or loaded.tokenizer.eos_token_id or 1] * 4
        backends = [RemoteBackend(url, smoke_prompt=probe, max_batch=settings.max_batch)
                    for url in settings.backends]
        gateway = Gateway(backends)
        stack.push_async_callback(gateway.close)
        return Generation(gateway, backends, gateway, loaded.tokenizer, loaded.max_context,
                          loaded.is_demo)
    if model is None:
        model = await startup.run(_stage(settings, "it"), lambda: load_model(
            settings.model, models_dir=settings.models_dir))
    startup.enter("starting the generation engine")
    engine = GenerationEngine(model.model, model.tokenizer, max_batch=settings.max_batch,
                              max_context=model.max_context)
    engine.start()
    stack.callback(engine.stop)
    return Generation(engine, [LocalBackend(engine)], None, model.tokenizer, model.max_context,
                      model.is_demo)


def _stage(settings: Settings, what: str) -> str:
    if (settings.model == DEMO_NAME
            and not (demo_model_path(settings.models_dir) / "config.json").is_file()):
        return (f"building and teaching the demo model (first start only, a minute or so on a "
                f"CPU), then loading {what}")
    return f"loading the model {settings.model}: {what}"
