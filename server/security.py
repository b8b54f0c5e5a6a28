"""Browser hardening, as one pure-ASGI middleware: security headers on every HTTP response,
and websockets refused (before the handshake completes) when opened by another site's page.

Every page of the web UI loads its scripts, styles and data from the server itself, with no
inline script, style or event handler, so the policy allows `'self'` only. FastAPI's API
docs (/docs, /redoc) load Swagger UI and ReDoc from a CDN with inline bootstrapping: their
pages get a policy of their own.
"""

from collections.abc import Collection, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net "
            "https://fonts.googleapis.com; font-src 'self' https://fonts.gstatic.com; "
            "img-src 'self' data: https:; worker-src 'self' blob:; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
FOREIGN_ORIGIN = 1008  # policy violation; before the handshake, clients see HTTP 403


class BrowserHardening:
    def __init__(self, app: ASGIApp, *, allowed_origins: Sequence[str] = (),
                 docs_paths: Collection[str] = ()) -> None:
        self.app = app
        self.allowed_origins = {origin.rstrip("/").lower() for origin in allowed_origins}
        self.docs_paths = set(docs_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and not self.origin_allowed(Headers(scope=scope)):
            await send({"type": "websocket.close", "code": FOREIGN_ORIGIN,
                        "reason": "this origin may not open the websocket"})
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        csp = DOCS_CSP if scope["path"] in self.docs_paths else CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in (*HEADERS.items(), ("Content-Security-Policy", csp)):
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def origin_allowed(self, headers: Headers) -> bool:
        """A page may open the websocket from the server's own host (as the request names
        it) or from an allowed origin. No Origin at all is not a browser (SDKs, scripts),
        which the cookie's SameSite and CORS do not concern."""
        origin = headers.get("origin")
        if origin is None:
            return True
        if origin.rstrip("/").lower() in self.allowed_origins:
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        host = headers.get("host", "").lower()
        return parts.scheme in ("http", "https") and bool(host) and parts.netloc.lower() == host
