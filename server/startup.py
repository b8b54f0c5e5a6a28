"""Starting up: the HTTP server answers at once while the model loads in the background.

`Startup` records the stage it is at and logs each one, and, every few seconds of a long
one (building and teaching the demo model, loading a real model), that it is still at it.
`StartupGate` answers for the app meanwhile: its health path with 503
`{"status": "starting", "stage", "elapsed_s"}` (or `"failed"` and the `error`), every other
request with 503 `starting` + Retry-After, and websockets with close code 1013 (try again
later). Once ready it steps aside.
"""

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from server.errors import error_body

log = logging.getLogger(__name__)

HEARTBEAT_S = 5.0
RETRY_AFTER_S = 5


@dataclass
class Startup:
    on_failure: Callable[[], None] | None = None  # a command line's: stop the server
    stage: str = "starting"
    ready: bool = False
    error: str | None = None
    started_at: float = field(default_factory=time.monotonic)

    @property
    def elapsed_s(self) -> float:
        return round(time.monotonic() - self.started_at, 1)

    def enter(self, stage: str) -> None:
        self.stage = stage
        log.info("starting: %s", stage, extra={"stage": stage, "elapsed_s": self.elapsed_s})

    async def run(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking `fn(*args)` in a thread as the stage `stage`, logging while it runs."""
        self.enter(stage)
        task = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        began = time.monotonic()
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_S)
            if done:
                return task.result()
            log.info("starting: still %s (%.0f s)", stage, time.monotonic() - began,
                     extra={"stage": stage, "elapsed_s": self.elapsed_s})

    def finish(self) -> None:
        freeze_heap()
        self.stage, self.ready = "ready", True
        log.info("ready after %.1f s", self.elapsed_s, extra={"elapsed_s": self.elapsed_s})

    def fail(self, error: BaseException) -> None:
        stage, self.stage, self.error = self.stage, "failed", str(error) or type(error).__name__
        log.error("start-up failed while %s: %s", stage, self.error, exc_info=error)
        if self.on_failure is not None:
            self.on_failure()


def freeze_heap() -> None:
    """Move every object alive now (the model, its tokenizer, the libraries' modules) out
    of the garbage collector's sight, once, when serving starts: a full collection walked
    them all, holding the interpreter lock 130-360 ms, and every request waited for it
    (17 of them in a 15 s load run, the /healthz p99). Reference counting still frees
    them; `gc.unfreeze()` at shutdown hands them back to the collector."""
    gc.collect()
    gc.freeze()


class StartupGate:
    """ASGI middleware: answers for the app until `startup.ready`."""

    def __init__(self, app, *, startup: Startup, health_path: str):
        self.app, self.startup, self.health_path = app, startup, health_path

    async def __call__(self, scope, receive, send) -> None:
        if self.startup.ready or scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1013})
            return
        startup = self.startup
        if scope["path"] == self.health_path:
            body = {"status": "failed" if startup.error else "starting", "stage": startup.stage,
                    "elapsed_s": startup.elapsed_s, "error": startup.error}
        elif startup.error:
            body = error_body(503, f"the server failed to start: {startup.error}",
                              "startup_failed")
        else:
            body = error_body(503, f"the server is starting ({startup.stage}); retry "
                              f"in {RETRY_AFTER_S} s", "starting")
        payload = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
            (b"retry-after", str(RETRY_AFTER_S).encode())]})
        await send({"type": "http.response.body", "body": payload})
