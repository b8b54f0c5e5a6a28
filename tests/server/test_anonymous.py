"""Callers without a session: their reads leave no trace, their first answer starts the
session, and dropping the cookie does not reset the rate limit (it is also per address)."""

import pytest
from sqlmodel import func, select
from starlette.testclient import TestClient

from feedback.models import User
from server.auth import COOKIE
from tests.server.support import add_user, assert_error, bearer, db_session, ws_turn

SETTINGS = {"rate_limit_per_minute": 10}  # and so 10 a minute per address without a key
READS = ["/v1/models", "/api/conversations", "/api/conversations/1", "/api/me/nope",
         "/nope.html", "/healthz", "/metrics", "/api/messages/1/rating"]
ASK = {"model": "demo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}


def _from(app, address: str, **kwargs) -> TestClient:
    """A client at its own address, with an empty cookie jar."""
    return TestClient(app, client=(address, 50000), **kwargs)


def _users(app) -> int:
    with db_session(app) as session:
        return session.exec(select(func.count()).select_from(User)).one()


def test_cookieless_reads_create_no_user(app, client) -> None:
    before = _users(app)

    for i in range(100):
        response = _from(app, "198.51.100.1").get(READS[i % len(READS)])
        assert response.status_code < 500, (READS[i % len(READS)], response.text)
        assert "set-cookie" not in response.headers, READS[i % len(READS)]

    assert _users(app) == before
    assert _from(app, "198.51.100.1").get("/api/conversations").json() == []


def test_a_cookieless_vote_finds_nothing_and_creates_no_user(app, client) -> None:
    answer = client.post("/v1/chat/completions", json=ASK).json()["choices"][0]["message_id"]
    before = _users(app)

    for path, body in [(f"/api/messages/{answer}/rating", {"thumb": 1}),
                       (f"/api/messages/{answer}/flags", {"category": "other"}),
                       (f"/api/messages/{answer}/rewrites", {"content": "better"})]:
        response = _from(app, "198.51.100.2").request("PUT" if "rating" in path else "POST",
                                                      path, json=body)
        assert response.status_code == 404, path
        assert_error(response.json(), "not_found_error")

    assert _users(app) == before


@pytest.mark.parametrize("stream", [False, True])
def test_a_cookieless_answer_starts_a_session(app, client, stream) -> None:
    browser = _from(app, "198.51.100.3")
    before = _users(app)

    response = browser.post("/v1/chat/completions", json={**ASK, "stream": stream})

    assert response.status_code == 200
    assert _users(app) == before + 1
    assert response.headers["set-cookie"].startswith(f"{COOKIE}=")
    # The cookie names the conversation's owner.
    mine = browser.get("/api/conversations").json()
    assert len(mine) == 1 and mine[0]["title"] == "hi"
    again = browser.post("/v1/chat/completions", json=ASK)
    assert "set-cookie" not in again.headers and _users(app) == before + 1


def test_cookieless_answers_are_limited_per_address(app, client) -> None:
    before = _users(app)

    statuses = [_from(app, "198.51.100.4").post("/v1/chat/completions", json=ASK).status_code
                for _ in range(80)]

    assert statuses == [200] * 10 + [429] * 70
    assert _users(app) == before + 10, "a refused request creates no user"
    refused = _from(app, "198.51.100.4").post("/v1/chat/completions", json=ASK)
    assert_error(refused.json(), "rate_limit_error", "rate_limit_exceeded")
    assert "from one address" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    # Another address has a budget of its own; an API key's holder is metered per user.
    assert _from(app, "198.51.100.5").post("/v1/chat/completions", json=ASK).status_code == 200
    key = bearer(add_user(app.state.db)[1])
    keyed = _from(app, "198.51.100.4", headers=key)
    assert keyed.post("/v1/chat/completions", json=ASK).status_code == 200


def test_cookieless_websockets_share_their_address_budget(app, client) -> None:
    errors = []
    for _ in range(11):
        with _from(app, "198.51.100.6").websocket_connect("/api/chat") as ws:
            turn = ws_turn(ws, "hi", params={"max_tokens": 1})
        errors.append(turn.error["code"] if turn.error else None)

    assert errors == [None] * 10 + ["rate_limit_exceeded"]
