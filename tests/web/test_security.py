"""The browser side of the server's hardening: the UI runs under its Content-Security-Policy
(every other browser test fails on a violation), the policy blocks injected script, and a
page of another site cannot open the chat websocket with the user's cookie."""

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

pytestmark = pytest.mark.slow

OPEN_SOCKET = """async (url) => await new Promise((resolve) => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); resolve("open"); };
  ws.onerror = () => resolve("refused");
})"""


def test_injected_inline_script_is_blocked_and_reported(page, live) -> None:
    page.goto(live.url)
    page.get_by_label("Message", exact=True).wait_for()

    with page.expect_console_message(lambda m: m.text.startswith("CSP violation")):
        page.evaluate("""() => { const s = document.createElement("script");
                                 s.textContent = "window.__injected = 1";
                                 document.body.append(s); }""")

    assert page.evaluate("() => window.__injected") is None
    assert [e.split()[2] for e in page.errors] == ["script-src-elem"]


def test_only_the_servers_own_pages_open_the_chat_websocket(page, live) -> None:
    page.goto(live.url)
    assert page.evaluate(OPEN_SOCKET, live.ws_url) == "open"

    with _another_site() as elsewhere:  # a real server on another port: another origin
        page.goto(elsewhere)
        assert page.evaluate(OPEN_SOCKET, live.ws_url) == "refused"


@contextlib.contextmanager
def _another_site() -> Iterator[str]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<!doctype html><title>another site</title>")

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
