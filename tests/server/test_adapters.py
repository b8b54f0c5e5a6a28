"""Per-request LoRA adapters: the registry's live and candidate adapters are loaded at
startup, `model` picks one, base and adapter requests share a batch, and side-by-side
turns put the live adapter against a candidate, anonymously and in random order."""

import asyncio
import random

import pytest
import torch
from peft import get_peft_model
from starlette.testclient import TestClient

from feedback.db import open_store, session_scope
from feedback.models import Message
from feedback.queries import adapters as registry
from flywheel.adapter_store import AdapterStore
from flywheel.model_loading import lora_config
from server.app import create_app
from server.engine import Finished, Token
from server.sampling import SamplingParams
from tests.server.hotswap_fixtures import AdapterMaker, register
from tests.server.support import (
    add_user,
    bearer,
    chat_ids,
    db_session,
    greedy_references,
    load_demo,
    make_settings,
    ws_turn,
)

LIVE, CANDIDATE = "policy-v1", "policy-v2"
PROMPTS = ["hello", "tell me a story about a dog", "what is the capital of france?"]
TOKENS = 10


@pytest.fixture(scope="module")
def trained(models_dir):
    """A copy of the demo model with two LoRA adapters whose B matrices are random (a
    fresh LoRA is the identity), as a training run would leave them."""
    loaded = load_demo(models_dir)
    config = lora_config(loaded.model, r=4, dropout=0.0)
    model = get_peft_model(loaded.model, config, adapter_name=LIVE)
    model.add_adapter(CANDIDATE, config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    model.eval()
    return loaded, model


@pytest.fixture(scope="module")
def references(trained) -> dict[str | None, list[str]]:
    """Greedy answers to PROMPTS of the base model and of each adapter, by Hugging Face."""
    loaded, model = trained
    out = {}
    with model.disable_adapter():
        out[None] = greedy_references(loaded, PROMPTS, TOKENS)
    for version in (LIVE, CANDIDATE):
        model.set_adapter(version)
        out[version] = greedy_references(loaded, PROMPTS, TOKENS)
    return out


@pytest.fixture(scope="module")
def app(trained, references, demo, data_dir):
    """The server, with LIVE live and CANDIDATE a candidate in its registry."""
    _, model = trained
    settings = make_settings(data_dir)
    store = AdapterStore(settings.adapters_dir)
    db = open_store(settings.db_url)
    with session_scope(db) as session:
        for version in (LIVE, CANDIDATE):
            stored = store.save(model, version, adapter_name=version, base_model="demo")
            registry.register_adapter(session, version=version, base_model="demo",
                                      path=str(stored.path), sha256=stored.sha256,
                                      status="candidate")
        registry.set_adapter_status(session, version=LIVE, status="approved", actor="test")
        registry.promote(session, version=LIVE, actor="test")
    db.dispose()
    return create_app(settings, model=demo)


def test_the_registry_s_adapters_are_loaded_and_listed(client) -> None:
    models = [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert models == ["flywheel", "demo", LIVE, CANDIDATE]
    health = client.get("/healthz").json()
    assert (health["live_adapter"], health["candidates"]) == (LIVE, [CANDIDATE])
    assert health["loaded_adapters"] == [LIVE, CANDIDATE]
    assert "flywheel_loaded_adapters 2.0" in client.get("/metrics").text


def test_the_model_field_selects_base_or_adapter(client, references) -> None:
    def answer(model: str, prompt: str) -> str:
        response = client.post("/v1/chat/completions", json={
            "model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": TOKENS, "temperature": 0})
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    for i, prompt in enumerate(PROMPTS[:2]):
        assert answer("demo", prompt) == references[None][i]
        assert answer(LIVE, prompt) == references[LIVE][i]
        assert answer("flywheel", prompt) == references[LIVE][i]  # the live adapter
        assert answer(CANDIDATE, prompt) == references[CANDIDATE][i]
    assert references[LIVE] != references[None] and references[CANDIDATE] != references[LIVE]


def test_an_adapter_answers_the_same_alone_and_in_a_mixed_batch(app, client, demo,
                                                                references) -> None:
    engine = app.state.chat.engine
    greedy = SamplingParams(max_tokens=TOKENS, temperature=0.0)
    ids = [chat_ids(demo.tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]

    async def answer(i: int, adapter: str | None, after: asyncio.Event | None = None,
                     started: asyncio.Event | None = None) -> str:
        if after is not None:
            await after.wait()
        text = ""
        async for event in engine.generate(ids[i], greedy, adapter):
            if isinstance(event, Token):
                text += event.text
                if started is not None:
                    started.set()
            else:
                assert isinstance(event, Finished) and event.text == text
        return text

    async def alone():
        return await answer(0, LIVE)

    async def mixed():
        running = asyncio.Event()
        return await asyncio.gather(
            answer(1, None, started=running),  # base rows, running first ...
            answer(0, None),
            answer(0, LIVE, after=running),  # ... the adapter rows join them
            answer(2, CANDIDATE, after=running),
            answer(2, None, after=running))

    by_itself = asyncio.run(alone())
    base_1, base_0, adapted_0, candidate_2, base_2 = asyncio.run(mixed())

    assert by_itself == adapted_0 == references[LIVE][0]
    assert adapted_0 != base_0
    assert (base_0, base_1, base_2) == tuple(references[None])
    assert candidate_2 == references[CANDIDATE][2]


def test_side_by_side_puts_live_against_a_candidate_anonymously(app, client,
                                                                references) -> None:
    random.seed(4)  # the server's shuffle; several turns show both orders
    orders = set()
    with client.websocket_connect("/api/chat") as ws:
        for _ in range(8):
            turn = ws_turn(ws, PROMPTS[0], params={"temperature": 0, "max_tokens": TOKENS})
            assert turn.start["side_by_side"] is True  # a candidate is under evaluation
            assert [turn.end(x)["adapter_version"] for x in "ab"] == [None, None]
            comparison_id = turn.done["comparison_id"]
            ws.send_json({"type": "pick", "comparison_id": comparison_id, "choice": "b"})
            picked = ws.receive_json()
            models = picked["models"]
            assert sorted(models.values()) == [LIVE, CANDIDATE]
            for label in "ab":  # each label's text is its adapter's answer
                assert turn.text(label) == references[models[label]][0]
                with db_session(app) as session:
                    stored = session.get(Message, turn.end(label)["message_id"])
                    assert stored.adapter_version == models[label]
            orders.add(models["a"])
            assert picked["continue_from"] == turn.end("b")["message_id"]

        after = ws_turn(ws, "go on", conversation_id=turn.start["conversation_id"],
                        side_by_side=False, params={"max_tokens": 2})
    assert orders == {LIVE, CANDIDATE}, "the live adapter should sometimes be b"
    with db_session(app) as session:
        assert session.get(Message, after.start["message_id"]).parent_id == (
            turn.end("b")["message_id"])
        assert session.get(Message, after.end()["message_id"]).adapter_version == LIVE


def test_naming_a_model_compares_two_samples_of_it(client) -> None:
    with client.websocket_connect("/api/chat") as ws:
        turn = ws_turn(ws, "two of you", model=CANDIDATE, side_by_side=True,
                       params={"max_tokens": 4, "seed": 9})
        ws.send_json({"type": "pick", "comparison_id": turn.done["comparison_id"],
                      "choice": "both_bad"})
        picked = ws.receive_json()
    assert picked["models"] == {"a": CANDIDATE, "b": CANDIDATE}
    assert turn.text("a") != turn.text("b")


def test_an_adapter_that_fails_to_load_is_skipped(models_dir, tmp_path, caplog) -> None:
    settings = make_settings(tmp_path)
    db = open_store(settings.db_url)
    with session_scope(db) as session:
        registry.register_adapter(session, version="policy-v9", base_model="demo",
                                  path=str(tmp_path / "missing"), sha256="0" * 64,
                                  status="candidate")
    db.dispose()
    with TestClient(create_app(settings, model=load_demo(models_dir))) as client:
        assert [m["id"] for m in client.get("/v1/models").json()["data"]] == [
            "flywheel", "demo"]
        response = client.post("/v1/chat/completions", json={
            "model": "policy-v9", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 404
        with client.websocket_connect("/api/chat") as ws:  # no candidate: one answer
            assert ws_turn(ws, "hi", params={"max_tokens": 2}).start["answers"] == ["a"]
        health = client.get("/healthz").json()
    assert health["loaded_adapters"] == [] and health["candidates"] == []
    assert "policy-v9" in health["refused_adapters"]
    assert "policy-v9 refused" in caplog.text


def test_a_live_adapter_this_server_cannot_load_is_reported_as_degraded(models_dir, tmp_path,
                                                                        caplog) -> None:
    """A restart: the registry names as live an adapter whose files were replaced (with a
    manifest to match) since its promotion. The server refuses it, serves the base model,
    and /healthz says so, until a live adapter it can load is promoted."""
    settings = make_settings(tmp_path)
    maker, store = AdapterMaker(models_dir), AdapterStore(settings.adapters_dir)
    db = open_store(settings.db_url)
    stored = maker.make(store, "policy-v1", seed=1)
    register(db, stored, status="live")
    swapped = maker.make(AdapterStore(tmp_path / "elsewhere"), "policy-v1", seed=2)
    for path in swapped.path.iterdir():
        (stored.path / path.name).write_bytes(path.read_bytes())
    register(db, maker.make(store, "policy-v2", seed=3))
    db.dispose()

    with TestClient(create_app(settings, model=load_demo(models_dir))) as client:
        response = client.get("/healthz")
        assert response.status_code == 200  # it still answers: no reason to drain it
        health = response.json()
        assert (health["status"], health["live_adapter"]) == ("degraded", None)
        assert health["reason"] == ("the registry says policy-v1 is live; this server "
                                    "serves the base model demo (policy-v1 was refused)")
        assert "differs from the registry's" in health["refused_adapters"]["policy-v1"]
        assert client.app.state.adapters.resolve("flywheel") is None
        assert "policy-v1 refused" in caplog.text

        _, operator = add_user(client.app.state.db, role="operator")
        promoted = client.post("/api/adapters/policy-v2/promote", headers=bearer(operator))
        assert promoted.status_code == 200 and promoted.json()["loaded"]
        health = client.get("/healthz").json()
        assert (health["status"], health["reason"], health["live_adapter"]) == (
            "ok", None, "policy-v2")
