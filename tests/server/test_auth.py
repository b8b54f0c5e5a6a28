"""Who is calling: anonymous browser sessions (signed HttpOnly cookies), hashed API keys,
and the operator role."""

import asyncio
import contextlib
import hashlib
import hmac
import time

import pytest
from itsdangerous import TimestampSigner
from sqlmodel import select
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from feedback.models import User
from server.auth import COOKIE, COOKIE_MAX_AGE, sign, verify
from tests.server.support import SECRET, add_user, assert_error, bearer, db_session, ws_turn


@pytest.fixture
def browser(app, client) -> TestClient:
    """A fresh browser (its own cookie jar) on the running app."""
    return TestClient(app)


def _cookie_attributes(header: str) -> dict[str, str]:
    name_value, *attributes = [part.strip() for part in header.split(";")]
    name, value = name_value.split("=", 1)
    out = {"name": name, "value": value}
    out.update((a.split("=", 1) + [""])[:2] for a in attributes)
    return out


def test_a_new_browser_gets_a_signed_http_only_session_cookie(app, browser) -> None:
    first = browser.get("/api/me")

    cookie = _cookie_attributes(first.headers["set-cookie"])
    me = first.json()
    assert cookie["name"] == COOKIE
    assert "HttpOnly" in cookie and cookie["SameSite"] == "Lax" and cookie["Path"] == "/"
    assert int(cookie["Max-Age"]) > 30 * 24 * 3600
    assert "Secure" not in cookie  # plain HTTP
    # itsdangerous's timestamped signature of the user id, with the server's secret key.
    signer = TimestampSigner(SECRET, salt="flywheel.session", digest_method=hashlib.sha256)
    assert signer.unsign(cookie["value"], max_age=60) == str(me["id"]).encode()
    assert me["handle"].startswith("anon-") and me["role"] == "user"

    again = browser.get("/api/me")
    assert again.json() == me and "set-cookie" not in again.headers


@pytest.mark.parametrize("forge", [
    lambda uid, cookie: cookie.rsplit(".", 1)[0] + "." + "A" * 43,
    lambda uid, cookie: f"{uid - 1}." + cookie.split(".", 1)[1],
    lambda uid, cookie: f"{uid}",
    lambda uid, cookie: "admin",
    lambda uid, cookie: sign(uid, ["other-secret"]),
    lambda uid, cookie: (f"{uid}." + hmac.new(SECRET.encode(), str(uid).encode(),
                                               hashlib.sha256).hexdigest()),
], ids=["made-up signature", "another id with my signature", "no signature", "garbage",
        "signed with another secret", "the old hand-rolled format"])
def test_a_forged_cookie_is_a_new_anonymous_user(app, browser, forge) -> None:
    me = browser.get("/api/me").json()
    stranger = TestClient(app, cookies={COOKIE: forge(me["id"], browser.cookies[COOKIE])})

    response = stranger.get("/api/me")

    assert response.status_code == 200
    assert response.json()["id"] not in (me["id"], me["id"] - 1)
    assert "set-cookie" in response.headers


def test_rotated_keys_still_verify_and_the_first_key_signs() -> None:
    before = sign(7, ["old-key"])
    assert verify(before, ["new-key", "old-key"]) == 7
    assert verify(before, ["new-key"]) is None  # the old key dropped: no session
    after = sign(7, ["new-key", "old-key"])
    assert verify(after, ["new-key"]) == 7 and verify(after, ["old-key"]) is None


def test_the_server_accepts_cookies_of_its_previous_keys(app, browser, monkeypatch) -> None:
    me = browser.get("/api/me").json()
    signed_before_rotation = {COOKIE: sign(me["id"], ["old-key"])}
    assert TestClient(app, cookies=signed_before_rotation).get("/api/me").json() != me

    monkeypatch.setattr(app.state.settings, "previous_secret_keys", ["old-key"])

    assert TestClient(app, cookies=signed_before_rotation).get("/api/me").json() == me


def test_a_cookie_older_than_its_max_age_is_no_session(monkeypatch) -> None:
    now = time.time()
    with monkeypatch.context() as clock:  # itsdangerous timestamps with time.time()
        clock.setattr(time, "time", lambda: now - COOKIE_MAX_AGE - 60)
        expired = sign(7, [SECRET])
        clock.setattr(time, "time", lambda: now - COOKIE_MAX_AGE + 60)
        old_but_valid = sign(7, [SECRET])
    assert verify(expired, [SECRET]) is None
    assert verify(old_but_valid, [SECRET]) == 7


# Each is "no session", never a server error: before, the first three were 500s.
CRAFTED = {"non-ascii digit": "\xb2.x", "non-ascii signature": "1.\xe9",
           "5000 digits": "9" * 5000 + ".x", "empty": "", "dots only": "...",
           "huge timestamp": "1." + "A" * 4000 + ".x"}


@pytest.mark.parametrize("value", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_cookie_is_no_session(app, browser, value) -> None:
    me = browser.get("/api/me").json()
    header = {"cookie": f"{COOKIE}={value}".encode()}  # UTF-8, as a browser sends text

    response = TestClient(app).get("/api/me", headers=header)

    assert response.status_code == 200
    assert response.json()["id"] != me["id"]
    with TestClient(app).websocket_connect("/api/chat", headers=header) as ws:
        assert ws_turn(ws, "hello", params={"max_tokens": 2}).error is None


@pytest.mark.parametrize("value", CRAFTED.values(), ids=CRAFTED.keys())
def test_a_crafted_cookie_in_raw_bytes_is_no_session(app, client, value) -> None:
    # Raw header bytes, as a hostile client sends them (TestClient re-encodes as UTF-8).
    headers = [(b"cookie", f"{COOKIE}={value}".encode("latin-1"))]

    assert asyncio.run(_raw_asgi(app, "http", headers))["status"] == 200
    assert asyncio.run(_raw_asgi(app, "websocket", headers))["type"] == "websocket.accept"


async def _raw_asgi(app, kind: str, headers: list[tuple[bytes, bytes]]) -> dict:
    """The app's first answer to a GET /api/me (or a websocket handshake on /api/chat)."""
    scope = {"type": kind, "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "http" if kind == "http" else "ws",
             "path": "/api/me" if kind == "http" else "/api/chat", "raw_path": b"",
             "query_string": b"", "root_path": "", "headers": [(b"host", b"testserver"),
                                                               *headers],
             "client": ("203.0.113.9", 5000), "server": ("testserver", 80),
             "subprotocols": []}
    first = {"type": "http.request"} if kind == "http" else {"type": "websocket.connect"}
    incoming = [first]
    answers: list[dict] = []

    async def receive() -> dict:
        return incoming.pop() if incoming else {"type": f"{kind}.disconnect", "code": 1000}

    async def send(message: dict) -> None:
        answers.append(message)

    with contextlib.suppress(Exception):
        await app(scope, receive, send)
    return answers[0] if answers else {}


def test_api_keys_are_stored_only_as_their_hash(app, browser) -> None:
    user_id, key = add_user(app.state.db, handle="sdk-user")

    me = browser.get("/api/me", headers=bearer(key)).json()

    assert me == {"id": user_id, "handle": "sdk-user", "role": "user"}
    with db_session(app) as session:
        row = session.exec(select(User).where(User.id == user_id)).one()
        assert row.api_key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert key not in repr(row.model_dump())
    # The scheme is case-insensitive; a key needs no cookie and sets none.
    response = browser.get("/api/me", headers={"authorization": f"bearer {key}"})
    assert response.json()["id"] == user_id and "set-cookie" not in response.headers


def test_an_unknown_key_is_refused_never_downgraded_to_a_session(app, browser) -> None:
    browser.get("/api/me")  # the browser has a valid session cookie too
    for path in ("/api/me", "/v1/models", "/api/conversations"):
        response = browser.get(path, headers=bearer("fw-not-a-real-key"))
        assert response.status_code == 401, path
        assert_error(response.json(), "authentication_error", "invalid_api_key")
    # Not a bearer key at all: the caller is a browser, as without the header.
    me = browser.get("/api/me").json()
    assert browser.get("/api/me", headers={"Authorization": "Basic dTpw"}).json() == me
    assert browser.get("/api/me", headers={"Authorization": "Bearer "}).json() == me


def test_the_websocket_knows_the_browser_and_the_key(app, browser) -> None:
    me = browser.get("/api/me").json()
    with browser.websocket_connect("/api/chat") as ws:
        assert not ws.extra_headers  # a known browser gets no new cookie
        turn = ws_turn(ws, "who am i", params={"max_tokens": 2})
    listed = [c["id"] for c in browser.get("/api/conversations").json()]
    assert turn.start["conversation_id"] in listed

    user_id, key = add_user(app.state.db)
    with browser.websocket_connect("/api/chat", headers=bearer(key)) as ws:
        keyed = ws_turn(ws, "with a key", params={"max_tokens": 2})
    mine = browser.get("/api/conversations", headers=bearer(key)).json()
    assert [c["id"] for c in mine] == [keyed.start["conversation_id"]]
    assert keyed.start["conversation_id"] not in [
        c["id"] for c in browser.get("/api/conversations").json()]
    assert me["id"] != user_id


def test_a_new_websocket_browser_gets_a_session_cookie(app) -> None:
    fresh = TestClient(app)
    with fresh.websocket_connect("/api/chat") as ws:
        headers = dict(ws.extra_headers or [])
        turn = ws_turn(ws, "hello", params={"max_tokens": 2})
    cookie = _cookie_attributes(headers[b"set-cookie"].decode())
    assert cookie["name"] == COOKIE and "HttpOnly" in cookie
    # The cookie names the user who owns the conversation.
    owner = TestClient(app, cookies={COOKIE: cookie["value"]})
    assert owner.get(f"/api/conversations/{turn.start['conversation_id']}").status_code == 200
    assert fresh.get(f"/api/conversations/{turn.start['conversation_id']}").status_code == 404


def test_a_websocket_with_an_unknown_key_is_closed_with_4401(browser) -> None:
    with pytest.raises(WebSocketDisconnect) as closed, browser.websocket_connect(
            "/api/chat", headers=bearer("fw-wrong")) as ws:
        ws.receive_json()
    assert closed.value.code == 4401


OPERATOR_ROUTES = [
    ("GET", "/api/adapters"),
    ("GET", "/api/adapters/policy-v1"),
    ("POST", "/api/adapters/policy-v1/approve"),
    ("POST", "/api/adapters/policy-v1/reject"),
    ("POST", "/api/adapters/policy-v1/promote"),
    ("POST", "/api/adapters/rollback"),
    ("PUT", "/api/adapters/policy-v1/traffic"),
    ("GET", "/api/training-runs"),
]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ROUTES)
def test_operator_routes_need_an_operator_key(app, browser, method, path) -> None:
    browser.get("/api/me")  # a session cookie is no key
    _, user_key = add_user(app.state.db, role="user")

    def call(headers=None):
        return browser.request(method, path, headers=headers or {}, json={"share": 0.5})

    anonymous = call()
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_error(anonymous.json(), "authentication_error", "missing_api_key")

    unknown = call(bearer("fw-unknown"))
    assert unknown.status_code == 401
    assert_error(unknown.json(), "authentication_error", "invalid_api_key")

    wrong_role = call(bearer(user_key))
    assert wrong_role.status_code == 403
    assert_error(wrong_role.json(), "permission_error", "forbidden")


def test_operators_and_admins_pass_the_guard(app, browser) -> None:
    _, operator_key = add_user(app.state.db, role="operator", handle="ops")
    _, admin_key = add_user(app.state.db, role="admin", handle="root")
    for key in (operator_key, admin_key):
        assert browser.get("/api/adapters", headers=bearer(key)).json() == []
        assert browser.get("/api/training-runs", headers=bearer(key)).json() == []
        missing = browser.post("/api/adapters/policy-v1/approve", headers=bearer(key))
        assert missing.status_code == 404  # past the guard: there is no such adapter
        assert_error(missing.json(), "not_found_error")
