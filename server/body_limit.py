"""A limit on the size of every HTTP request body, refused with 413 in the one error shape.

Pure ASGI, so it sees the body as it streams in: a declared `Content-Length` over the limit
is refused before a byte is read, and the bytes are counted as they arrive too, for a
chunked body has no length and a declared one is only a claim.
"""

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import error_response


class BodyLimit:
    def __init__(self, app: ASGIApp, *, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _declared_over(scope, self.max_bytes):
            return await self._refuse(scope, receive, send)
        received, started, refused = 0, False, False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request" and not refused:
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    if not started:
                        await self._refuse(scope, receive, send)
                    # The app reads a client that went away: it stops, and what it answers
                    # to that is dropped.
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return
            started = True
            await send(message)

        await self.app(scope, counted, guarded)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, f"request bodies are limited to {self.max_bytes} bytes",
                                  "request_too_large", headers={"Connection": "close"})
        await response(scope, receive, send)


def _declared_over(scope: Scope, max_bytes: int) -> bool:
    """Whether the request's Content-Length claims more than `max_bytes` (a malformed one
    is the server's to refuse; the count catches a body longer than it claims)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return len(value) > 18 or int(value) > max_bytes
    return False
