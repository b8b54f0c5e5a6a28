"""One log line per HTTP request, when its response starts: method, path, status, ms.

Pure ASGI: a streamed answer's chunks pass straight through. (Starlette's `@app.middleware`
would relay every chunk through a memory stream and a task of its own: per token, per
stream.)
"""

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("server.app")  # the name these lines have always had


class AccessLog:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        logged = False

        def log_once(status: int) -> None:
            nonlocal logged
            if not logged:
                logged = True
                log.info("%s %s %d", scope["method"], scope["path"], status,
                         extra={"method": scope["method"], "path": scope["path"],
                                "status": status,
                                "ms": round((time.perf_counter() - started) * 1000, 1)})

        async def logged_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                log_once(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, logged_send)
        except Exception:  # not a cancellation: a client that left has no status
            log_once(500)  # the error middleware outside answers it
            raise
