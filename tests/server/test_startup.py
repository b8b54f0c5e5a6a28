"""Starting up: the server answers while its model loads (/healthz "starting", other
requests 503 `starting`, websockets closed with 1013), says why when loading fails, and a
gateway whose backends are not up yet starts anyway and refuses answers as retryable."""

import gc
import threading

import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from flywheel.errors import FlywheelError
from server.app import create_app
from server.backends import build
from tests.server.support import add_user, assert_error, bearer, make_settings, wait_until

CHAT = {"model": "demo", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}


def test_the_server_answers_while_the_model_loads(monkeypatch, demo, tmp_path) -> None:
    release = threading.Event()

    def slow_load(model, *, models_dir):
        release.wait(30)
        return demo

    monkeypatch.setattr(build, "load_model", slow_load)
    with TestClient(create_app(make_settings(tmp_path))) as client:
        health = client.get("/healthz")
        assert health.status_code == 503 and health.headers["retry-after"] == "5"
        assert health.json()["status"] == "starting"
        assert health.json()["stage"].startswith("building and teaching the demo model")
        refused = client.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
        assert_error(refused.json(), "overloaded_error", "starting")
        with pytest.raises(WebSocketDisconnect) as closed, \
                client.websocket_connect("/api/chat") as ws:
            ws.receive_json()
        assert closed.value.code == 1013

        release.set()
        wait_until(lambda: client.get("/healthz").status_code == 200, 30, "the model")
        assert client.get("/healthz").json()["status"] == "ok"
        key = add_user(client.app.state.db)[1]
        assert client.post("/v1/chat/completions", json=CHAT,
                           headers=bearer(key)).status_code == 200


def test_once_ready_the_collector_no_longer_walks_the_model(demo, tmp_path) -> None:
    # A full collection over the model and the libraries held the interpreter lock for
    # 130-360 ms at a time under load: everything alive at start-up is frozen.
    assert any(o is demo.model for o in gc.get_objects())
    with TestClient(create_app(make_settings(tmp_path), model=demo)) as client:
        assert client.get("/healthz").status_code == 200
        assert gc.get_freeze_count() > 0
        assert not any(o is demo.model for o in gc.get_objects())
    assert any(o is demo.model for o in gc.get_objects())  # handed back at shutdown


def test_a_failed_start_says_why_and_stops_the_server(monkeypatch, tmp_path) -> None:
    def broken_load(model, *, models_dir):
        raise FlywheelError("model path not found: nowhere")

    monkeypatch.setattr(build, "load_model", broken_load)
    app = create_app(make_settings(tmp_path))
    stopped = threading.Event()
    app.state.startup.on_failure = stopped.set
    with TestClient(app) as client:
        assert stopped.wait(30)
        health = client.get("/healthz").json()
        assert (health["status"], health["error"]) == (
            "failed", "model path not found: nowhere")
        assert_error(client.get("/api/me").json(), "overloaded_error", "startup_failed")


def test_a_gateway_starts_before_its_backends_and_refuses_answers_as_retryable(
        models_dir, tmp_path) -> None:
    settings = make_settings(tmp_path, model=str(models_dir / "demo"),
                             backends=["http://127.0.0.1:9"], backend_check_s=60)
    with TestClient(create_app(settings)) as client:
        wait_until(lambda: client.get("/healthz").status_code == 200, 60, "the gateway")
        gateway = client.app.state.chat.engine
        assert [b.up for b in gateway.backends] == [False]
        key = add_user(client.app.state.db)[1]
        refused = client.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert_error(refused.json(), "overloaded_error", "backend_unavailable")
