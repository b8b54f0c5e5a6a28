"""The FastAPI app: serving objects are built once in the lifespan, routers stay thin."""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from feedback.db import open_store
from flywheel.adapter_store import AdapterStore
from flywheel.generation import base_model_name
from flywheel.model_loading import LoadedModel, load_model
from flywheel.settings import Settings
from server.adapters import AdapterManager
from server.body_limit import BodyLimit
from server.chat import ChatService
from server.engine import GenerationEngine
from server.errors import install_error_handlers
from server.limits import RateLimiter
from server.metrics import Metrics
from server.routes import (
    adapters,
    annotators,
    chat_ws,
    comparisons,
    conversations,
    feedback_browser,
    flags,
    leaderboard,
    openai,
    operations,
    ratings,
    review,
    reward_models,
    rewrites,
    users,
    watch,
)
from server.security import BrowserHardening
from server.watch import WatchGauges

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings | None = None, *, model: LoadedModel | None = None) -> FastAPI:
    """The server. `model` skips loading (tests hand in a tiny one)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Blocking work runs in `threads` worker threads, FastAPI's (sync routes and
        # dependencies) and asyncio's (to_thread) alike; the pool has a connection for each.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(settings.threads, thread_name_prefix="flywheel"))
        # First: a short or empty key fails before anything is started.
        settings.secret_key = settings.resolved_secret_key()
        db = open_store(settings.db_url, event_log=settings.event_log_path,
                        pool_size=settings.threads, wait_s=settings.db_wait_s)
        loaded = model or load_model(settings.model, models_dir=settings.models_dir)
        engine = GenerationEngine(loaded.model, loaded.tokenizer, max_batch=settings.max_batch,
                                  max_context=loaded.max_context)
        engine.start()
        metrics = Metrics()
        metrics.registry.register(WatchGauges(db, settings))
        manager = AdapterManager(engine=engine, store=AdapterStore(settings.adapters_dir),
                                 db=db, base_name=base_model_name(settings.model))
        await manager.sync()
        poller = asyncio.create_task(manager.run(every_s=settings.adapter_poll_s))
        app.state.settings = settings
        app.state.db = db
        app.state.is_demo = loaded.is_demo
        app.state.metrics = metrics
        app.state.adapters = manager
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit_per_minute, per_address=settings.rate_limit_per_address_per_minute)
        app.state.chat = ChatService(db=db, engine=engine, tokenizer=loaded.tokenizer,
                                     adapters=manager, metrics=metrics,
                                     max_context=loaded.max_context, settings=settings,
                                     limiter=app.state.rate_limiter)
        log.info("serving %s%s", settings.model, " (random-weight demo model)"
                 if loaded.is_demo else "")
        try:
            yield
        finally:
            poller.cancel()
            engine.stop()
            db.dispose()

    app = FastAPI(title="Flywheel", version="0.1.0", lifespan=lifespan,
                  summary="Chat, vote, and the model gets better.")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # innermost: logged

    @app.middleware("http")
    async def access_log(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        log.info("%s %s %d", request.method, request.url.path, response.status_code,
                 extra={"method": request.method, "path": request.url.path,
                        "status": response.status_code,
                        "ms": round((time.perf_counter() - started) * 1000, 1)})
        return response

    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(BrowserHardening, allowed_origins=settings.allowed_origins,
                       docs_paths=[path for path in docs if path])
    # Outermost: what comes after sees the client's scheme and address.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)

    for module in (operations, chat_ws, openai, conversations, ratings, comparisons,
                   rewrites, flags, adapters, reward_models, annotators, feedback_browser,
                   leaderboard, review, watch, users):
        app.include_router(module.router)
    if (WEB_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app
