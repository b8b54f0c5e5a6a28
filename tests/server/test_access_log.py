"""The access log: one line per HTTP request, with its status, and streams untouched."""

import logging

import pytest
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from server.access_log import AccessLog


async def _stream(request):
    async def chunks():
        for i in range(3):
            yield f"data: {i}\n\n"
    return StreamingResponse(chunks(), status_code=201, media_type="text/event-stream")


async def _broken(request):
    raise RuntimeError("boom")


@pytest.fixture
def client():
    app = Starlette(routes=[Route("/stream", _stream), Route("/broken", _broken)])
    app.add_middleware(AccessLog)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _lines(caplog):
    return [(r.method, r.path, r.status) for r in caplog.records if r.name == "server.app"]


def test_a_streamed_response_passes_through_and_is_logged_once(client, caplog):
    caplog.set_level(logging.INFO, logger="server.app")
    with client.stream("GET", "/stream") as response:
        assert "".join(response.iter_text()) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert response.status_code == 201
    assert _lines(caplog) == [("GET", "/stream", 201)]
    assert caplog.records[-1].ms >= 0


def test_a_request_that_fails_is_logged_as_500(client, caplog):
    caplog.set_level(logging.INFO, logger="server.app")
    assert client.get("/broken").status_code == 500
    assert _lines(caplog) == [("GET", "/broken", 500)]


def test_unknown_paths_are_logged_with_their_status(client, caplog):
    caplog.set_level(logging.INFO, logger="server.app")
    client.post("/nowhere", content=b"x")
    assert _lines(caplog) == [("POST", "/nowhere", 404)]
