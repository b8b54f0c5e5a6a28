"""The FastAPI app: serving objects are built once in the lifespan, routers stay thin."""

import asyncio
import gc
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio.to_thread
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from feedback.db import open_store
from feedback.group_commit import GroupCommit
from flywheel.adapter_store import AdapterStore
from flywheel.generation import base_model_name
from flywheel.model_loading import LoadedModel
from flywheel.settings import Settings
from server.access_log import AccessLog
from server.adapters import AdapterManager
from server.backends.build import build_generation
from server.body_limit import BodyLimit
from server.chat import ChatService
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
from server.startup import Startup, StartupGate
from server.watch import WatchGauges

log = logging.getLogger(__name__)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings | None = None, *, model: LoadedModel | None = None) -> FastAPI:
    """The server. `model` skips loading (tests hand in a tiny one); otherwise the model
    (or, for a gateway over `settings.backends`, its tokenizer) loads in the background
    while /healthz answers "starting" (see server/startup.py)."""
    settings = settings or Settings()
    startup = Startup()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Blocking work runs in `threads` worker threads, FastAPI's (sync routes and
        # dependencies) and asyncio's (to_thread) alike; the pool has a connection for each.
        threads = settings.worker_threads()
        anyio.to_thread.current_default_thread_limiter().total_tokens = threads
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(threads, thread_name_prefix="flywheel"))
        # First: a short or empty key fails before anything is started.
        settings.secret_key = settings.resolved_secret_key()
        db = open_store(settings.db_url, event_log=settings.event_log_path,
                        pool_size=threads, wait_s=settings.db_wait_s)
        metrics = Metrics()
        metrics.registry.register(WatchGauges(db, settings))
        app.state.settings = settings
        app.state.db = db
        app.state.metrics = metrics
        app.state.rate_limiter = RateLimiter(
            settings.rate_limit_per_minute, per_address=settings.rate_limit_per_address_per_minute,
            storage=settings.rate_limit_storage)

        async def serve_model(stack: AsyncExitStack) -> None:
            generation = await build_generation(settings, startup, stack, model=model)
            manager = AdapterManager(backends=generation.backends, gateway=generation.gateway,
                                     store=AdapterStore(settings.adapters_dir), db=db,
                                     base_name=base_model_name(settings.model))
            if generation.gateway is not None:
                startup.enter(f"reaching the backends {', '.join(settings.backends)}")
                generation.gateway.on_join = manager.join
                await generation.gateway.check_all()
                _keep(stack, generation.gateway.run(every_s=settings.backend_check_s))
            startup.enter("loading the registry's adapters")
            await manager.sync()
            _keep(stack, manager.run(every_s=settings.adapter_poll_s))
            app.state.is_demo = generation.is_demo
            app.state.adapters = manager
            app.state.chat = ChatService(db=db, engine=generation.engine,
                                         tokenizer=generation.tokenizer, adapters=manager,
                                         metrics=metrics, max_context=generation.max_context,
                                         settings=settings, limiter=app.state.rate_limiter,
                                         records=records)
            log.info("serving %s%s", settings.model, " (the built-in demo model, a toy)"
                     if generation.is_demo else "")
            startup.finish()

        async with AsyncExitStack() as stack:
            stack.callback(db.dispose)
            records = app.state.records = GroupCommit(db)
            stack.callback(records.close)  # what is queued is written before the store closes
            stack.callback(gc.unfreeze)  # frozen when it was ready (`freeze_heap`)
            loading = _keep(stack, _failing_into(startup, serve_model(stack),
                                                 reraise=model is not None))
            if model is not None:  # handed in: ready before the first request
                await loading
            yield

    app = FastAPI(title="Flywheel", version="0.1.0", lifespan=lifespan,
                  summary="Chat, vote, and the model gets better.")
    app.state.startup = startup
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # innermost: logged

    app.add_middleware(AccessLog)
    docs = (app.docs_url, app.redoc_url, app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(BrowserHardening, allowed_origins=settings.allowed_origins,
                       docs_paths=[path for path in docs if path])
    app.add_middleware(StartupGate, startup=startup, health_path="/healthz")
    # Outermost: what comes after sees the client's scheme and address.
    app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.forwarded_allow_ips)

    for module in (operations, chat_ws, openai, conversations, ratings, comparisons,
                   rewrites, flags, adapters, reward_models, annotators, feedback_browser,
                   leaderboard, review, watch, users):
        app.include_router(module.router)
    if (WEB_DIR / "index.html").exists():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="web")
    return app


def _keep(stack: AsyncExitStack, coroutine) -> asyncio.Task:
    """Run `coroutine` as a task of the lifespan: cancelled when it ends."""
    task = asyncio.create_task(coroutine)
    stack.callback(task.cancel)
    return task


async def _failing_into(startup: Startup, coroutine, *, reraise: bool) -> None:
    try:
        await coroutine
    except Exception as e:  # /healthz says why; a command line's server stops
        startup.fail(e)
        if reraise:
            raise
