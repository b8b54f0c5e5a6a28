"""The request body limit: as ASGI (a body in chunks, with a length, without one, or with
one that lies) and on the real server (413 in the one error shape; the route never runs)."""

import asyncio
import json

import httpx
import pytest
from sqlmodel import select

from feedback.models import Message
from server.body_limit import BodyLimit
from tests.server.support import assert_error, db_session

LIMIT = 1000
SETTINGS = {"max_body_bytes": LIMIT}


class _Echo:
    """An app that reads the whole body, then answers 200 with the length it read."""

    def __init__(self):
        self.read: list[dict] = []

    async def __call__(self, scope, receive, send):
        size = 0
        while True:
            message = await receive()
            self.read.append(message)
            if message["type"] == "http.disconnect":
                break
            size += len(message["body"])
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})


def _call(chunks: list[bytes], headers: list[tuple[bytes, bytes]] = ()) -> tuple[
        list[dict], _Echo]:
    """What the client gets when a body arrives in `chunks` through the limit."""
    app, sent = _Echo(), []
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": list(headers)}
    asyncio.run(BodyLimit(app, max_bytes=LIMIT)(scope, receive, send))
    return sent, app


def _status_and_body(sent: list[dict]) -> tuple[int, dict | str]:
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    status = sent[0]["status"]
    return status, json.loads(body) if status == 413 else body.decode()


def test_a_body_within_the_limit_passes_whole() -> None:
    sent, _ = _call([b"x" * 400, b"x" * 400, b"x" * 200])
    assert _status_and_body(sent) == (200, str(LIMIT))


def test_a_body_over_the_limit_is_refused_as_it_streams_in() -> None:
    """No Content-Length (a chunked body): the count refuses it, and the app reads a client
    that went away; what it answers to that never reaches the client."""
    sent, app = _call([b"x" * 400] * 3)
    status, body = _status_and_body(sent)
    assert status == 413
    assert_error(body, "invalid_request_error", "request_too_large")
    assert str(LIMIT) in body["error"]["message"]
    assert [m["type"] for m in app.read] == ["http.request", "http.request", "http.disconnect"]
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]


@pytest.mark.parametrize("length", [b"1001", b"9" * 5000])
def test_a_declared_length_over_the_limit_is_refused_unread(length) -> None:
    sent, app = _call([b"x" * 10], headers=[(b"content-length", length)])
    assert _status_and_body(sent)[0] == 413
    assert (b"connection", b"close") in sent[0]["headers"]
    assert app.read == []


def test_a_declared_length_is_only_a_claim() -> None:
    sent, _ = _call([b"x" * 600, b"x" * 600], headers=[(b"content-length", b"10")])
    assert _status_and_body(sent)[0] == 413


def test_websockets_pass_untouched() -> None:
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    asyncio.run(BodyLimit(app, max_bytes=1)({"type": "websocket", "headers": []}, None, None))
    assert seen == ["websocket"]


# -- on the server ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=60, trust_env=False) as http:
        yield http


def _completion(content: str) -> bytes:
    return json.dumps({"model": "demo", "max_tokens": 1,
                       "messages": [{"role": "user", "content": content}]}).encode()


def test_every_route_refuses_a_big_body_with_413_and_never_runs(app, http) -> None:
    big = _completion("too big " * 200)
    assert len(big) > LIMIT
    declared = http.post("/v1/chat/completions", content=big,
                         headers={"content-type": "application/json"})
    streamed = http.post("/v1/chat/completions", content=iter([big[:600], big[600:]]),
                         headers={"content-type": "application/json"})
    vote = http.put("/api/messages/1/rating", content=b'{"thumb": 1, "comment": "' +
                    b"c" * LIMIT + b'"}', headers={"content-type": "application/json"})

    for response in (declared, streamed, vote):
        assert response.status_code == 413, response.text
        assert_error(response.json(), "invalid_request_error", "request_too_large")
    assert "content-length" not in streamed.request.headers
    with db_session(app) as session:
        assert session.exec(select(Message).where(Message.content.contains("too big"))).all() \
            == []
    fits = http.post("/v1/chat/completions", content=_completion("small enough"),
                     headers={"content-type": "application/json"})
    assert fits.status_code == 200, fits.text
