"""Hot-swapping LoRA adapters in a running server: routing follows the registry, answers
keep the adapter they started with, old adapters drain and unload, broken adapters are
refused while the live one keeps serving, canaries, and replicas converging by polling."""

import asyncio
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.sync.client import connect as ws_connect

import server.adapters
from flywheel.adapter_store import AdapterStore
from server.app import create_app
from tests.server.hotswap_fixtures import (
    AdapterMaker,
    Streamed,
    adapter_tags,
    corrupt,
    live_between,
    make_mismatched,
    register,
    stream_chat,
)
from tests.server.support import (
    LiveServer,
    add_user,
    bearer,
    block_engine,
    load_demo,
    make_settings,
    wait_until,
)

GRACE_S = 0.3  # DRAIN_GRACE_S in these tests
POLL_S = 0.1


@pytest.fixture(scope="module")
def maker(models_dir: Path) -> AdapterMaker:
    return AdapterMaker(models_dir)


@dataclass
class Replica:
    """One server on a real socket, with a user's and an operator's API keys."""

    app: object
    url: str
    user_key: str
    operator_key: str

    @property
    def manager(self) -> server.adapters.AdapterManager:
        return self.app.state.adapters

    @property
    def db(self):
        return self.app.state.db

    def client(self, key: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=bearer(key or self.user_key),
                            timeout=60, trust_env=False)

    def act(self, method: str, path: str, **kwargs) -> dict:
        """An operator action that must succeed."""
        with self.client(self.operator_key) as http:
            response = http.request(method, path, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def health(self) -> dict:
        with self.client() as http:
            return http.get("/healthz").json()

    def ask(self, model: str = "flywheel", max_tokens: int = 8) -> tuple[str, str | None]:
        """A greedy answer and the adapter version it was recorded with."""
        with self.client() as http:
            response = http.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "hello there"}],
                "max_tokens": max_tokens, "temperature": 0})
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return choice["message"]["content"], adapter_tags(self.db, [choice["message_id"]])[
            choice["message_id"]]


@pytest.fixture
def start_replica(models_dir: Path, tmp_path: Path,
                  monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """start_replica(): a server on tmp_path's data (and database); call it twice for
    two replicas of one deployment."""
    monkeypatch.setattr(server.adapters, "DRAIN_GRACE_S", GRACE_S)
    servers: list[LiveServer] = []

    def start() -> Replica:
        app = create_app(make_settings(tmp_path, adapter_poll_s=POLL_S),
                         model=load_demo(models_dir))
        live = LiveServer(app).__enter__()
        servers.append(live)
        _, user_key = add_user(app.state.db)
        _, operator_key = add_user(app.state.db, role="operator")
        return Replica(app, live.url, user_key, operator_key)

    yield start
    for live in reversed(servers):
        live.__exit__(None, None, None)


@pytest.fixture
def replica(start_replica) -> Replica:
    return start_replica()


def _store(replica: Replica) -> AdapterStore:
    return AdapterStore(replica.app.state.settings.adapters_dir)


def _with_live(replica: Replica, maker: AdapterMaker, *versions: str) -> None:
    """Register approved adapters (distinct weights) and promote the first."""
    for seed, version in enumerate(versions, start=1):
        register(replica.db, maker.make(_store(replica), version, seed=seed))
    replica.act("POST", f"/api/adapters/{versions[0]}/promote")


def _stream_in_thread(replica: Replica, **kwargs) -> tuple[threading.Thread, list[Streamed]]:
    out: list[Streamed] = []

    async def run() -> None:
        async with httpx.AsyncClient(base_url=replica.url, headers=bearer(replica.user_key),
                                     timeout=60, trust_env=False) as client:
            out.append(await stream_chat(client, **kwargs))

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    return thread, out


# -- promotion, draining -------------------------------------------------------------------


def test_promotion_switches_routing_and_the_old_adapter_drains(replica, maker,
                                                              monkeypatch) -> None:
    _with_live(replica, maker, "policy-a")
    register(replica.db, maker.make(_store(replica), "policy-b", seed=2), status="candidate")
    wait_until(lambda: "policy-b" in replica.manager.loaded, 10, "the candidate to load")
    base_text, base_tag = replica.ask("demo")
    a_text, a_tag = replica.ask()
    assert (base_tag, a_tag) == (None, "policy-a") and a_text != base_text

    # A long answer on policy-a is streaming when policy-b is promoted.
    thread, streamed = _stream_in_thread(replica, max_tokens=120, temperature=0)
    wait_until(lambda: replica.manager.in_flight["policy-a"] == 1, 10, "the stream to start")
    release = block_engine(replica.app.state.chat.engine)  # hold it mid-stream
    try:
        with monkeypatch.context() as patch:  # policy-b must not drain in between
            patch.setattr(server.adapters, "DRAIN_GRACE_S", 60.0)
            replica.act("POST", "/api/adapters/policy-b/approve")
            promoted = replica.act("POST", "/api/adapters/policy-b/promote")
        assert promoted["status"] == "live" and promoted["loaded"]
        assert replica.manager.resolve("flywheel") == "policy-b"
        time.sleep(GRACE_S + 3 * POLL_S)  # the grace passes; polls come and go
        assert replica.manager.in_flight["policy-a"] == 1
        assert "policy-a" in replica.manager.loaded, "unloaded under a streaming answer"
    finally:
        release.set()
    thread.join(60)
    [answer] = streamed
    assert answer.error is None and answer.text
    assert adapter_tags(replica.db, [answer.message_id])[answer.message_id] == "policy-a"
    wait_until(lambda: "policy-a" not in replica.manager.loaded, 5, "policy-a to unload")
    assert replica.health()["loaded_adapters"] == ["policy-b"]

    b_text, b_tag = replica.ask()
    assert b_tag == "policy-b" and b_text not in (a_text, base_text)

    # With nothing in flight, the one rolled back from still waits out its grace (longer
    # here, so that a slow answer on a loaded machine does not outlast it).
    monkeypatch.setattr(server.adapters, "DRAIN_GRACE_S", 2.0)
    before = time.monotonic()
    rolled = replica.act("POST", "/api/adapters/rollback")
    assert rolled["version"] == "policy-a" and rolled["loaded"]
    assert replica.ask() == (a_text, "policy-a")
    assert "policy-b" in replica.manager.loaded or time.monotonic() - before >= 2.0
    wait_until(lambda: "policy-b" not in replica.manager.loaded, 8, "policy-b to unload")
    assert time.monotonic() - before >= 2.0


def test_an_adapter_whose_last_answer_is_cancelled_unloads_without_harm(replica,
                                                                        maker) -> None:
    """The client of the last answer on a drained adapter goes away: the adapter is
    unloaded, and the answers sharing the batch with that row carry on."""
    _with_live(replica, maker, "policy-a", "policy-b")
    started, cancel = threading.Event(), threading.Event()

    def doomed() -> None:  # a long answer on policy-a whose client hangs up midway
        with ws_connect(replica.url.replace("http", "ws") + "/api/chat",
                        additional_headers=bearer(replica.user_key)) as ws:
            ws.send(json.dumps({"type": "user_turn", "content": "hi",
                                "params": {"max_tokens": 400, "temperature": 0}}))
            while json.loads(ws.recv(30))["type"] != "token":
                pass
            started.set()
            cancel.wait(30)

    hang_up = threading.Thread(target=doomed, daemon=True)
    hang_up.start()
    assert started.wait(30)
    replica.act("POST", "/api/adapters/policy-b/promote")
    thread, streamed = _stream_in_thread(replica, max_tokens=120, temperature=0)
    wait_until(lambda: replica.manager.in_flight["policy-b"] == 1, 10, "the second stream")
    release = block_engine(replica.app.state.chat.engine)
    try:
        assert replica.manager.in_flight["policy-a"] == 1
        cancel.set()  # both rows stay in the engine's batch while it is held
        hang_up.join(10)
        wait_until(lambda: replica.manager.in_flight["policy-a"] == 0, 10, "the hang-up")
        time.sleep(GRACE_S + 3 * POLL_S)  # a poll now unloads policy-a, on the engine
    finally:
        release.set()
    thread.join(60)
    [answer] = streamed
    assert answer.error is None
    wait_until(lambda: "policy-a" not in replica.manager.loaded, 5, "policy-a to unload")


def test_a_rejected_last_adapter_leaves_the_base_model_serving(replica, maker) -> None:
    base_text, _ = replica.ask("demo")
    register(replica.db, maker.make(_store(replica), "policy-c", seed=3), status="candidate")
    wait_until(lambda: "policy-c" in replica.manager.loaded, 10, "the candidate to load")
    assert replica.ask("policy-c")[1] == "policy-c"

    replica.act("POST", "/api/adapters/policy-c/reject")
    wait_until(lambda: not replica.manager.loaded, 5, "policy-c to unload")
    assert replica.ask() == (base_text, None)
    # …and a new adapter still loads into it.
    _with_live(replica, maker, "policy-d")
    assert replica.ask()[1] == "policy-d"


# -- under load ----------------------------------------------------------------------------


@pytest.mark.slow
def test_promotions_and_rollbacks_under_load_fail_no_request(replica, maker, caplog,
                                                             monkeypatch) -> None:
    """6 clients stream without pause while an operator alternates 20 promotions and
    rollbacks. No request fails, and every answer is tagged with an adapter that was live
    at some moment between its request going out and its response beginning."""
    caplog.set_level(logging.INFO, logger="server.adapters")
    # A longer grace: it also covers requests routed to an adapter but, on this busy
    # machine, not yet pinned to it (between `resolve` and `acquire`).
    monkeypatch.setattr(server.adapters, "DRAIN_GRACE_S", 0.8)
    _with_live(replica, maker, "policy-a", "policy-b")
    switches: list[tuple[float, float, str]] = []  # (action sent, answered, new live)
    answers: list[Streamed] = []

    async def operator() -> None:
        async with httpx.AsyncClient(base_url=replica.url, timeout=60, trust_env=False,
                                     headers=bearer(replica.operator_key)) as http:
            await asyncio.sleep(0.5)
            for i in range(20):
                path = ("/api/adapters/policy-b/promote" if i % 2 == 0
                        else "/api/adapters/rollback")
                sent = time.monotonic()
                response = await http.post(path)
                assert response.status_code == 200, response.text
                switches.append((sent, time.monotonic(), response.json()["version"]))
                # Long enough, now and then, for the one switched from to drain and unload.
                await asyncio.sleep(1.2 if i % 4 == 3 else 0.2)

    async def client(stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(base_url=replica.url, timeout=60, trust_env=False,
                                     headers=bearer(replica.user_key)) as http:
            while not stop.is_set():
                answers.append(await stream_chat(http))

    async def main() -> None:
        stop = asyncio.Event()
        clients = [asyncio.create_task(client(stop)) for _ in range(6)]
        try:
            await operator()
            await asyncio.sleep(0.3)
        finally:
            stop.set()
            await asyncio.gather(*clients)

    asyncio.run(main())

    failed = [a.error for a in answers if a.error]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"
    assert [v for *_, v in switches] == ["policy-b", "policy-a"] * 10
    tags = adapter_tags(replica.db, [a.message_id for a in answers])
    for answer in answers:
        allowed = live_between(switches, "policy-a", answer.started, answer.began)
        assert tags[answer.message_id] in allowed, (answer, switches)
    assert len(answers) >= 40 and {tags[a.message_id] for a in answers} == {"policy-a",
                                                                          "policy-b"}
    assert replica.manager.in_flight.total() == 0
    unloads = [r for r in caplog.records if r.getMessage().endswith(" unloaded")]
    assert len(unloads) >= 2  # the pauses let the adapter switched from drain and unload


# -- broken adapters -----------------------------------------------------------------------


def _break(replica: Replica, maker: AdapterMaker, version: str, how: str,
           tmp_path: Path) -> str:
    """Store and register `version`, broken `how`; what its refusal says."""
    if how == "mismatched":
        register(replica.db, make_mismatched(_store(replica), version))
        return "does not fit"
    stored = maker.make(_store(replica), version, seed=9)
    register(replica.db, stored)
    if how == "corrupted":
        corrupt(stored)
        return "checksum"
    # Replaced: another adapter's weights, with a manifest that matches them.
    other = maker.make(AdapterStore(tmp_path / "elsewhere"), version, seed=10)
    for path in other.path.iterdir():
        (stored.path / path.name).write_bytes(path.read_bytes())
    return "differs from the registry's"


def _refused(response: httpx.Response, why: str) -> None:
    assert response.status_code == 409, response.text
    error = response.json()["error"]
    assert (error["type"], error["code"]) == ("conflict_error", "adapter_unloadable")
    assert why in error["message"]


@pytest.mark.parametrize("broken", ["corrupted", "mismatched", "replaced"])
def test_a_broken_adapter_is_refused_and_live_keeps_serving(replica, maker, broken,
                                                            tmp_path) -> None:
    """Promoting (or a canary share for) an adapter that does not load here is refused
    before the registry changes: it never names as live what servers cannot serve."""
    _with_live(replica, maker, "policy-a")
    a_text, _ = replica.ask()
    why = _break(replica, maker, "policy-x", broken, tmp_path)

    with replica.client(replica.operator_key) as http:
        _refused(http.post("/api/adapters/policy-x/promote"), why)
        _refused(http.put("/api/adapters/policy-x/traffic", json={"share": 0.5}), why)
        shown = http.get("/api/adapters/policy-x").json()
    assert (shown["status"], shown["traffic_share"], shown["loaded"]) == ("approved", 0, False)
    health = replica.health()
    assert (health["status"], health["live_adapter"]) == ("ok", "policy-a")
    assert replica.ask() == (a_text, "policy-a")
    time.sleep(GRACE_S + 2 * POLL_S)  # polls neither load it nor drain policy-a
    assert replica.manager.loaded.keys() == {"policy-a"}
    assert replica.ask() == (a_text, "policy-a")

    # The fix comes as a new version (versions are immutable); it loads and goes live.
    register(replica.db, maker.make(_store(replica), "policy-y", seed=9))
    fixed = replica.act("POST", "/api/adapters/policy-y/promote")
    assert fixed["loaded"]
    text, tag = replica.ask()
    assert tag == "policy-y" and text != a_text
    health = replica.health()
    assert health["live_adapter"] == "policy-y" and health["refused_adapters"] == {}
    wait_until(lambda: replica.manager.loaded.keys() == {"policy-y"}, 5, "policy-a to unload")


def test_a_rollback_to_an_adapter_that_no_longer_loads_is_refused(replica, maker) -> None:
    _with_live(replica, maker, "policy-a", "policy-b")
    replica.act("POST", "/api/adapters/policy-b/promote")
    wait_until(lambda: "policy-a" not in replica.manager.loaded, 5, "policy-a to unload")
    corrupt(_store(replica).verify("policy-a"))  # its disk failed since it retired

    with replica.client(replica.operator_key) as http:
        _refused(http.post("/api/adapters/rollback"), "checksum")
        assert http.get("/api/adapters/policy-a").json()["status"] == "retired"
    assert replica.health()["live_adapter"] == "policy-b"
    assert replica.ask()[1] == "policy-b"


# -- canary and replicas -------------------------------------------------------------------


def test_a_canary_share_routes_default_traffic(replica, maker) -> None:
    _with_live(replica, maker, "policy-a", "policy-b")
    out = replica.act("PUT", "/api/adapters/policy-b/traffic", json={"share": 1.0})
    assert out["traffic_share"] == 1.0 and out["loaded"]
    assert replica.health()["canary"] == {"policy-b": 1.0}
    assert {replica.ask()[1] for _ in range(3)} == {"policy-b"}
    assert replica.ask("policy-a")[1] == "policy-a"  # by name, still there

    replica.act("PUT", "/api/adapters/policy-b/traffic", json={"share": 0})
    assert replica.health()["canary"] == {}
    assert {replica.ask()[1] for _ in range(3)} == {"policy-a"}
    wait_until(lambda: "policy-b" not in replica.manager.loaded, 5, "the canary to unload")


def test_replicas_converge_by_polling(start_replica, maker) -> None:
    one, two = start_replica(), start_replica()
    for seed, version in enumerate(["policy-a", "policy-b"], start=1):
        register(one.db, maker.make(_store(one), version, seed=seed))

    for version in ["policy-a", "policy-b"]:
        one.act("POST", f"/api/adapters/{version}/promote")
        assert one.health()["live_adapter"] == version  # at once on the one acted on
        wait_until(lambda v=version: two.health()["live_adapter"] == v, 5,
                   f"the other replica to serve {version}")
        assert one.ask() == two.ask()
        assert two.ask()[1] == version
    wait_until(lambda: two.manager.loaded.keys() == {"policy-b"}, 5, "policy-a to unload")
