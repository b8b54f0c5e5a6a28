"""`flywheel engine`: the built-in generation engine behind the protocol of vLLM's
OpenAI-compatible server, so that a gateway (`flywheel serve --backend URL`) drives it and
vLLM exactly alike:

- `POST /v1/completions`: `prompt` a string or a list of token ids; `stream` sends
  `data: {chunk}` lines and `data: [DONE]`, as vLLM does (`stream_options.include_usage`
  adds a last chunk with the usage);
- `GET /v1/models`: the base model, then each LoRA with `root` (its path) and `parent`
  (the base model's id);
- `POST /v1/load_lora_adapter {"lora_name", "lora_path"}`, `POST /v1/unload_lora_adapter
  {"lora_name"}`: plain-text "Success: …" answers; an adapter already loaded is a 400, an
  unknown one a 404. An adapter is verified against its manifest, fitted to the model and
  smoke-tested before it is listed; one being unloaded takes no new requests and goes
  once its answers have finished;
- `GET /health`: 200 once the model is loaded (503 while it loads).

Errors take vLLM's shape: `{"error": {"message", "type", "param", "code"}}`.
"""

import asyncio
import gc
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import BaseModel, Field

from flywheel.generation import adapter_name
from flywheel.model_loading import LoadedModel, load_model
from server.backends.local import LocalBackend
from server.engine import Failed, Finished, GenerationEngine, Token
from server.sampling import SamplingParams
from server.startup import Startup, StartupGate

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.05
ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError"}


class EngineError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": ERROR_TYPES.get(status, "Error"),
                                   "param": None, "code": status}}, status_code=status)


class StreamOptions(BaseModel):
    include_usage: bool = False


class CompletionRequest(BaseModel):
    model: str
    prompt: str | list[int] = Field(min_length=1)
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=1)
    min_tokens: int = Field(0, ge=0)
    ignore_eos: bool = False
    stream: bool = False
    stream_options: StreamOptions | None = None


class LoadLoRARequest(BaseModel):
    lora_name: str = ""
    lora_path: str = ""


class UnloadLoRARequest(BaseModel):
    lora_name: str = ""


@dataclass
class LoRA:
    path: str
    engine_name: str  # peft's module names cannot hold dots
    created: int


class EngineService:
    """The engine, its LoRAs, and the answers running on each."""

    def __init__(self, loaded: LoadedModel, *, model_id: str, root: str, max_batch: int):
        self.loaded, self.model_id, self.root = loaded, model_id, root
        self.engine = GenerationEngine(loaded.model, loaded.tokenizer, max_batch=max_batch,
                                       max_context=loaded.max_context)
        self.backend = LocalBackend(self.engine)
        self.loras: dict[str, LoRA] = {}
        self.in_flight: Counter[str] = Counter()
        self.unloading: set[str] = set()
        self.created = int(time.time())
        self._lock = asyncio.Lock()

    def models(self) -> dict:
        def card(id_: str, root: str, parent: str | None, created: int) -> dict:
            return {"id": id_, "object": "model", "created": created, "owned_by": "flywheel",
                    "root": root, "parent": parent,
                    "max_model_len": self.loaded.max_context if parent is None else None,
                    "permission": []}
        return {"object": "list", "data": [
            card(self.model_id, self.root, None, self.created),
            *(card(name, lora.path, self.model_id, lora.created)
              for name, lora in self.loras.items() if name not in self.unloading)]}

    async def load(self, body: LoadLoRARequest) -> str:
        if not body.lora_name or not body.lora_path:
            raise EngineError(400, "Both 'lora_name' and 'lora_path' must be provided.")
        name = body.lora_name
        engine_name = adapter_name(name)
        async with self._lock:
            if name in self.loras or name == self.model_id:
                raise EngineError(400, f"The lora adapter '{name}' has already been loaded.")
            if any(lora.engine_name == engine_name for lora in self.loras.values()):
                raise EngineError(400, f"The lora adapter name '{name}' clashes with a loaded "
                                  "one (dots and underscores are the same here).")
            path = Path(body.lora_path)
            if not path.is_dir():
                raise EngineError(404, f"No adapter found at {body.lora_path}")
            try:
                await self.backend.load_adapter(engine_name, path)
            except Exception as e:
                raise EngineError(400, f"Failed to load the lora adapter '{name}': {e}") from e
            self.loras[name] = LoRA(str(path), engine_name, int(time.time()))
        log.info("lora adapter %s loaded from %s", name, path, extra={"adapter": name})
        return f"Success: LoRA adapter '{name}' added successfully."

    async def unload(self, body: UnloadLoRARequest) -> str:
        name = body.lora_name
        if not name:
            raise EngineError(400, "'lora_name' needs to be provided to unload a LoRA adapter.")
        async with self._lock:
            if name not in self.loras or name in self.unloading:
                raise EngineError(404, f"The lora adapter '{name}' cannot be found.")
            self.unloading.add(name)
            try:
                while self.in_flight[name]:  # its answers finish on it
                    await asyncio.sleep(DRAIN_POLL_S)
                await self.backend.unload_adapter(self.loras.pop(name).engine_name)
            finally:
                self.unloading.discard(name)
        log.info("lora adapter %s unloaded", name, extra={"adapter": name})
        return f"Success: LoRA adapter '{name}' removed successfully."

    def prepare(self, body: CompletionRequest) -> tuple[list[int], SamplingParams, str | None]:
        if body.model == self.model_id:
            adapter = None
        elif body.model in self.loras and body.model not in self.unloading:
            adapter = body.model
        else:
            raise EngineError(404, f"The model `{body.model}` does not exist.")
        ids = (body.prompt if isinstance(body.prompt, list)
               else self.loaded.tokenizer.encode(body.prompt, add_special_tokens=True))
        vocab = len(self.loaded.tokenizer)
        if any(not 0 <= i < vocab for i in ids):
            raise EngineError(400, f"Token id out of vocabulary (0 to {vocab - 1}).")
        window = self.loaded.max_context
        if len(ids) + body.max_tokens > window:
            raise EngineError(400, f"This model's maximum context length is {window} tokens. "
                              f"However, you requested {len(ids) + body.max_tokens} tokens "
                              f"({len(ids)} in the messages, {body.max_tokens} in the "
                              "completion). Please reduce the length of the messages or "
                              "completion.")
        stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
        try:
            params = SamplingParams(max_tokens=body.max_tokens, temperature=body.temperature,
                                    top_p=body.top_p, stop=stop, seed=body.seed,
                                    min_tokens=body.min_tokens, ignore_eos=body.ignore_eos)
        except ValueError as e:
            raise EngineError(400, str(e)) from None
        return ids, params, adapter

    async def events(self, ids: list[int], params: SamplingParams, adapter: str | None):
        """The engine's events, with the answer counted against its adapter meanwhile."""
        if adapter is not None:
            self.in_flight[adapter] += 1
        try:
            engine_name = None if adapter is None else self.loras[adapter].engine_name
            async for event in self.engine.generate(ids, params, engine_name):
                yield event
        finally:
            if adapter is not None:
                self.in_flight[adapter] -= 1


def create_engine_app(*, model: str, models_dir: Path, max_batch: int = 32,
                      loaded: LoadedModel | None = None) -> FastAPI:
    """The engine's HTTP app. `loaded` skips loading (tests hand in a tiny model);
    otherwise the model loads in the background while /health answers 503."""
    startup = Startup()
    path = Path(model)
    model_id = path.name if path.exists() else model

    async def start(app: FastAPI) -> None:
        try:
            ready = loaded or await startup.run(f"loading the model {model}", lambda: load_model(
                model, models_dir=models_dir))
            startup.enter("starting the engine")
            service = EngineService(ready, model_id=model_id, max_batch=max_batch,
                                    root=str(path.resolve()) if path.exists() else model)
            service.engine.start()
            app.state.service = service
            startup.finish()
        except Exception as e:
            startup.fail(e)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(start(app))
        if loaded is not None:
            await loading
        try:
            yield
        finally:
            loading.cancel()
            gc.unfreeze()  # frozen when it was ready (`freeze_heap`)
            if getattr(app.state, "service", None) is not None:
                app.state.service.engine.stop()

    app = FastAPI(title="Flywheel engine", lifespan=lifespan,
                  summary="The built-in engine, speaking vLLM's OpenAI-compatible protocol.")
    app.state.startup = startup
    app.add_middleware(StartupGate, startup=startup, health_path="/health")

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, e: EngineError):
        return _error(e.status, e.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(400, f"{where}: {first.get('msg', 'invalid')}" if where else "invalid")

    @app.get("/health")
    async def health() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.get("/v1/models")
    async def models(request: Request) -> dict:
        return request.app.state.service.models()

    @app.post("/v1/load_lora_adapter")
    async def load_lora_adapter(body: LoadLoRARequest, request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.app.state.service.load(body))

    @app.post("/v1/unload_lora_adapter")
    async def unload_lora_adapter(body: UnloadLoRARequest,
                                  request: Request) -> PlainTextResponse:
        return PlainTextResponse(await request.app.state.service.unload(body))

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        service: EngineService = request.app.state.service
        ids, params, adapter = service.prepare(body)
        completion_id = f"cmpl-{uuid.uuid4().hex}"
        head = {"id": completion_id, "object": "text_completion",
                "created": int(time.time()), "model": body.model}
        events = service.events(ids, params, adapter)
        if body.stream:
            usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(_sse(events, head, usage), media_type="text/event-stream")
        text = ""
        async for event in events:
            if isinstance(event, Token):
                text += event.text
            elif isinstance(event, Failed):
                raise EngineError(500, event.error)
            elif isinstance(event, Finished):
                return {**head, "choices": [_choice(event.text, event.reason)],
                        "usage": _usage(event)}
        raise EngineError(500, "generation ended without an answer")

    return app


def _choice(text: str, finish_reason: str | None) -> dict:
    return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason,
            "stop_reason": None}


def _usage(finished: Finished) -> dict:
    return {"prompt_tokens": finished.prompt_tokens,
            "completion_tokens": finished.completion_tokens,
            "total_tokens": finished.prompt_tokens + finished.completion_tokens}


async def _sse(events: AsyncIterator, head: dict, include_usage: bool) -> AsyncIterator[str]:
    def data(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    async for event in events:
        if isinstance(event, Token):
            yield data({**head, "choices": [_choice(event.text, None)]})
        elif isinstance(event, Failed):
            yield data({"error": {"message": event.error, "type": ERROR_TYPES[500],
                                  "param": None, "code": 500}})
            break
        elif isinstance(event, Finished):
            yield data({**head, "choices": [_choice("", event.reason)]})
            if include_usage:
                yield data({**head, "choices": [], "usage": _usage(event)})
    yield "data: [DONE]\n\n"
