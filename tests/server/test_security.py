"""Browser hardening: security headers on every response, the websocket's Origin check, and
Secure session cookies over HTTPS (also behind a trusted proxy)."""

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from server.auth import COOKIE
from server.security import FOREIGN_ORIGIN
from tests.server.support import ws_turn

# TestClient calls come from the address "testclient": here it is a trusted proxy.
SETTINGS = {"allowed_origins": "https://chat.example.com, https://other.example.com",
            "forwarded_allow_ips": "testclient"}


def _headers_hold_the_policy(headers) -> None:
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


@pytest.mark.parametrize("path", ["/", "/console.html", "/app.js", "/style.css", "/api/me",
                                  "/healthz", "/v1/models", "/no-such-page",
                                  "/api/conversations/not-a-number"])
def test_every_response_carries_the_security_headers(client, path) -> None:
    response = client.get(path)

    _headers_hold_the_policy(response.headers)
    policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_the_api_docs_get_a_policy_of_their_own(client) -> None:
    response = client.get("/docs")

    assert response.status_code == 200
    _headers_hold_the_policy(response.headers)
    assert "https://cdn.jsdelivr.net" in response.headers["content-security-policy"]


@pytest.mark.parametrize("origin", ["https://evil.example", "http://testserver.evil.example",
                                    "http://testserver:8080", "null", "ftp://testserver",
                                    "http://[::1", "https://chat.example.com.evil.example"])
def test_a_websocket_opened_by_another_site_is_refused_before_accepting(client,
                                                                        origin) -> None:
    with pytest.raises(WebSocketDisconnect) as refused, client.websocket_connect(
            "/api/chat", headers={"origin": origin}):
        pass  # never reached: the handshake itself is refused

    assert refused.value.code == FOREIGN_ORIGIN


@pytest.mark.parametrize("origin", [None, "http://testserver", "HTTP://TestServer",
                                    "https://chat.example.com", "https://other.example.com"])
def test_a_websocket_from_this_site_an_allowed_one_or_no_browser_is_served(client,
                                                                          origin) -> None:
    headers = {"origin": origin} if origin else {}
    with client.websocket_connect("/api/chat", headers=headers) as ws:
        assert ws_turn(ws, "hello", params={"max_tokens": 2}).error is None


def _session_cookie(response_headers) -> str:
    return next(value for value in response_headers.get_list("set-cookie")
                if value.startswith(f"{COOKIE}="))


def test_the_session_cookie_is_secure_over_https(app, client) -> None:
    over_http = TestClient(app).get("/api/me")
    over_https = TestClient(app, base_url="https://testserver").get("/api/me")

    assert "Secure" not in _session_cookie(over_http.headers)
    assert "; Secure" in _session_cookie(over_https.headers)
    with TestClient(app).websocket_connect("wss://testserver/api/chat") as ws:
        assert "; Secure" in dict(ws.extra_headers)[b"set-cookie"].decode()


def test_a_trusted_proxy_says_the_client_came_over_https(app, client) -> None:
    proxied = {"x-forwarded-proto": "https"}

    trusted = TestClient(app).get("/api/me", headers=proxied)
    anyone = TestClient(app, client=("203.0.113.9", 5000)).get("/api/me", headers=proxied)

    assert "; Secure" in _session_cookie(trusted.headers)
    assert "Secure" not in _session_cookie(anyone.headers)
