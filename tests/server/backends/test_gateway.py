"""A gateway over two `flywheel engine` processes, on the CPU: the openai SDK streams
through it, a promotion reaches both engines, an engine killed under load loses no
acknowledged answer and new requests go to the other, and an engine that comes back is
reconciled before it takes traffic. One set of processes for the module."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from sqlmodel import select

from feedback.db import session_scope
from feedback.models import Message
from flywheel.adapter_store import AdapterStore
from server.app import create_app
from tests.server.hotswap_fixtures import AdapterMaker, register, stream_chat
from tests.server.support import LiveServer, add_user, bearer, make_settings, wait_until

pytestmark = pytest.mark.slow

START_S = 120  # two engines importing torch at once on a loaded machine


class Engine:
    """One `flywheel engine` subprocess on a fixed port, which can be killed and restarted."""

    def __init__(self, model_dir: Path, log: Path):
        self.model_dir, self.log = model_dir, log
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "Engine":
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "engine", "--model", str(self.model_dir),
             "--port", str(self.port), "--max-batch", "8", "--data-dir", str(self.log.parent)],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env)
        return self

    def wait_healthy(self) -> None:
        def healthy() -> bool:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False
        wait_until(healthy, START_S, f"the engine on {self.url}")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def models(self) -> dict[str, dict]:
        return {m["id"]: m for m in httpx.get(f"{self.url}/v1/models").json()["data"]}


@pytest.fixture(scope="module")
def engines(models_dir: Path, tmp_path_factory) -> list[Engine]:
    logs = tmp_path_factory.mktemp("engines")
    engines = [Engine(models_dir / "demo", logs / f"engine-{i}.log").start() for i in range(2)]
    try:
        for engine in engines:
            engine.wait_healthy()
        yield engines
    finally:
        for engine in engines:
            if engine.process.poll() is None:
                engine.kill()


@pytest.fixture(scope="module")
def gateway(engines, models_dir: Path, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("gateway")
    settings = make_settings(data_dir, model=str(models_dir / "demo"),
                             backends=[e.url for e in engines], adapter_poll_s=0.2,
                             backend_check_s=0.2, max_new_tokens=8)
    with LiveServer(create_app(settings)) as server:
        wait_until(lambda: httpx.get(f"{server.url}/healthz").status_code == 200, 60,
                   "the gateway to start")
        yield server


@pytest.fixture(scope="module")
def keys(gateway) -> tuple[str, str]:
    db = gateway.app.state.db
    return add_user(db)[1], add_user(db, role="operator")[1]


def _backends(gateway):
    return gateway.app.state.chat.engine.backends


def test_the_gateway_loaded_only_the_tokenizer_and_found_both_engines(gateway) -> None:
    assert all(b.up and b.base_model == "demo" for b in _backends(gateway))
    assert not hasattr(gateway.app.state.chat.engine, "model")


def test_the_openai_sdk_streams_through_the_gateway(gateway, keys) -> None:
    client = OpenAI(base_url=f"{gateway.url}/v1", api_key=keys[0])
    stream = client.chat.completions.create(
        model="flywheel", messages=[{"role": "user", "content": "Tell me about my cat."}],
        max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    last = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert chunks[-1].usage.completion_tokens == 8 and text
    message_id = last.choices[0].model_extra["message_id"]
    with session_scope(gateway.app.state.db) as session:
        assert session.get(Message, message_id).content == text

    whole = client.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": "Tell me about my cat."}],
        max_tokens=8, temperature=0)
    assert whole.choices[0].message.content == text  # the same engine code, greedy


def test_a_promotion_reaches_both_engines(gateway, engines, keys, models_dir) -> None:
    store = AdapterStore(gateway.app.state.settings.adapters_dir)
    stored = AdapterMaker(models_dir).make(store, "policy-g1", seed=1)
    register(gateway.app.state.db, stored)
    promoted = httpx.post(f"{gateway.url}/api/adapters/policy-g1/promote",
                          headers=bearer(keys[1]), timeout=60)
    assert promoted.status_code == 200, promoted.text
    for engine in engines:
        card = engine.models()["policy-g1"]
        assert (card["parent"], card["root"]) == ("demo", str(stored.path.resolve()))

    answer = httpx.post(f"{gateway.url}/v1/chat/completions", headers=bearer(keys[0]),
                        timeout=60, json={"model": "flywheel", "max_tokens": 4,
                                          "messages": [{"role": "user", "content": "hi"}]})
    assert answer.status_code == 200, answer.text
    with session_scope(gateway.app.state.db) as session:
        message = session.get(Message, answer.json()["choices"][0]["message_id"])
        assert message.adapter_version == "policy-g1"


def test_an_engine_killed_under_load_loses_nothing_acknowledged(gateway, engines,
                                                                keys) -> None:
    async def load() -> tuple[list, list]:
        async with httpx.AsyncClient(base_url=gateway.url, headers=bearer(keys[0]),
                                     timeout=120, trust_env=False) as http:
            during = [asyncio.create_task(stream_chat(http, max_tokens=200)) for _ in range(8)]
            await asyncio.sleep(0.3)
            engines[0].kill()
            done = await asyncio.gather(*during)
            after = await asyncio.gather(*[stream_chat(http, max_tokens=8) for _ in range(6)])
            return done, after

    during, after = asyncio.run(load())

    assert [a.error for a in after] == [None] * 6  # new requests go to the live engine
    for answer in during:  # each either finished, or ended with the retryable error
        assert answer.error is None or "backend_unavailable" in answer.error, answer.error
    acknowledged = [a for a in [*during, *after] if a.error is None]
    with session_scope(gateway.app.state.db) as session:
        stored = {m.id: m.content for m in session.exec(select(Message).where(
            Message.id.in_([a.message_id for a in acknowledged])))}
    assert stored == {a.message_id: a.text for a in acknowledged}
    assert not _backends(gateway)[0].up and _backends(gateway)[1].up


def test_the_killed_engine_comes_back_reconciled(gateway, engines, keys, models_dir) -> None:
    # While it is down a new adapter is promoted: it must load that one before traffic.
    store = AdapterStore(gateway.app.state.settings.adapters_dir)
    register(gateway.app.state.db, AdapterMaker(models_dir).make(store, "policy-g2", seed=2))
    promoted = httpx.post(f"{gateway.url}/api/adapters/policy-g2/promote",
                          headers=bearer(keys[1]), timeout=60)
    assert promoted.status_code == 200, promoted.text
    assert "policy-g2" in engines[1].models()

    engines[0].start().wait_healthy()
    wait_until(lambda: _backends(gateway)[0].up, 30, "the engine to rejoin")
    assert "policy-g2" in engines[0].models()
    assert "policy-g2" in _backends(gateway)[0].adapters
    # Once drained, the retired adapter leaves both engines.
    wait_until(lambda: all("policy-g1" not in e.models() for e in engines), 30,
               "policy-g1 to unload")
