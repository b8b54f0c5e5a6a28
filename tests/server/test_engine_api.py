"""`flywheel engine`'s HTTP app speaks vLLM's protocol: completions (token ids or text,
streamed as SSE chunks and [DONE]), /v1/models with LoRAs' parent and root, runtime LoRA
loading and unloading with vLLM's answers and error codes, and /health."""

import json
import threading
from pathlib import Path

import pytest
import torch
from starlette.testclient import TestClient

from flywheel.adapter_store import AdapterStore
from server import engine_api
from server.engine_api import create_engine_app
from tests.server.hotswap_fixtures import AdapterMaker, corrupt, make_mismatched
from tests.server.support import chat_ids, wait_until


@pytest.fixture(scope="module")
def store(tmp_path_factory, models_dir: Path) -> AdapterStore:
    store = AdapterStore(tmp_path_factory.mktemp("engine-adapters"))
    maker = AdapterMaker(models_dir)
    maker.make(store, "policy-a", seed=1)
    corrupt(maker.make(store, "policy-bad", seed=2))
    make_mismatched(store, "policy-wide")
    return store


@pytest.fixture(scope="module")
def engine(demo, models_dir: Path):
    app = create_engine_app(model=str(models_dir / "demo"), models_dir=models_dir, loaded=demo)
    with TestClient(app) as client:
        yield client


def _vllm_error(response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error["message"]


def _complete(engine, model: str, prompt, **extra) -> dict:
    response = engine.post("/v1/completions", json={
        "model": model, "prompt": prompt, "max_tokens": 6, "temperature": 0, **extra})
    assert response.status_code == 200, response.text
    return response.json()


def _stream(engine, model: str, prompt, **extra) -> list:
    """The SSE `data:` payloads, parsed; "[DONE]" as it comes."""
    with engine.stream("POST", "/v1/completions", json={
            "model": model, "prompt": prompt, "max_tokens": 6, "temperature": 0,
            "stream": True, **extra}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines), lines
    return [p if p == "[DONE]" else json.loads(p) for p in (line[6:] for line in lines)]


def test_health_and_the_base_model(engine) -> None:
    assert engine.get("/health").status_code == 200
    models = engine.get("/v1/models").json()
    assert models["object"] == "list"
    [base] = models["data"]
    assert (base["id"], base["object"], base["parent"]) == ("demo", "model", None)
    assert base["max_model_len"] == 512 and base["root"].endswith("demo")


def test_completions_take_text_or_token_ids_and_stream_like_vllm(engine, demo) -> None:
    ids = chat_ids(demo.tokenizer, [{"role": "user", "content": "Tell me about my cat."}])
    whole = _complete(engine, "demo", ids)
    assert whole["object"] == "text_completion" and whole["model"] == "demo"
    [choice] = whole["choices"]
    assert choice["finish_reason"] in ("stop", "length") and choice["index"] == 0
    assert whole["usage"]["prompt_tokens"] == len(ids)

    chunks = _stream(engine, "demo", ids, stream_options={"include_usage": True})
    assert chunks[-1] == "[DONE]"
    usage = chunks[-2]
    assert usage["choices"] == [] and usage["usage"] == whole["usage"]
    body = chunks[:-2]
    assert {c["id"] for c in body} == {body[0]["id"]} and body[0]["id"].startswith("cmpl-")
    assert "".join(c["choices"][0]["text"] for c in body) == choice["text"]
    assert [c["choices"][0]["finish_reason"] for c in body][-1] == choice["finish_reason"]

    text = _complete(engine, "demo", "Tell me about my cat.")
    assert text["usage"]["prompt_tokens"] == len(
        demo.tokenizer.encode("Tell me about my cat."))


def test_bad_completion_requests_get_vllm_errors(engine) -> None:
    assert "`nope` does not exist" in _vllm_error(engine.post("/v1/completions", json={
        "model": "nope", "prompt": [1, 2]}), 404)
    assert "maximum context length is 512" in _vllm_error(engine.post("/v1/completions", json={
        "model": "demo", "prompt": [5] * 510, "max_tokens": 8}), 400)
    assert "vocabulary" in _vllm_error(engine.post("/v1/completions", json={
        "model": "demo", "prompt": [10**9]}), 400)
    assert "max_tokens" in _vllm_error(engine.post("/v1/completions", json={
        "model": "demo", "prompt": [1], "max_tokens": 0}), 400)
    assert "min_tokens" in _vllm_error(engine.post("/v1/completions", json={
        "model": "demo", "prompt": [1], "max_tokens": 2, "min_tokens": 3}), 400)


def test_ignore_eos_runs_to_max_tokens(engine, demo, monkeypatch) -> None:
    ids = chat_ids(demo.tokenizer, [{"role": "user", "content": "Tell me about my cat."}])
    with torch.inference_mode():
        first = int(demo.model(torch.tensor([ids])).logits[0, -1].argmax())
    # the greedy answer's first token now ends the text
    monkeypatch.setattr(engine.app.state.service.engine, "eos_ids", {first})
    assert _complete(engine, "demo", ids)["usage"]["completion_tokens"] == 0

    whole = _complete(engine, "demo", ids, max_tokens=10, ignore_eos=True)
    assert whole["choices"][0]["finish_reason"] == "length"
    assert whole["usage"]["completion_tokens"] == 10


def test_a_lora_loads_answers_is_listed_and_unloads(engine, store, demo) -> None:
    path = str(store.path("policy-a"))
    ids = chat_ids(demo.tokenizer, [{"role": "user", "content": "Tell me about my dog."}])
    base_text = _complete(engine, "demo", ids)["choices"][0]["text"]

    loaded = engine.post("/v1/load_lora_adapter", json={"lora_name": "policy-a",
                                                        "lora_path": path})
    assert (loaded.status_code, loaded.text) == (
        200, "Success: LoRA adapter 'policy-a' added successfully.")
    cards = {m["id"]: m for m in engine.get("/v1/models").json()["data"]}
    assert (cards["policy-a"]["parent"], cards["policy-a"]["root"]) == ("demo", path)
    assert _complete(engine, "policy-a", ids)["choices"][0]["text"] != base_text
    assert "already been loaded" in _vllm_error(engine.post("/v1/load_lora_adapter", json={
        "lora_name": "policy-a", "lora_path": path}), 400)

    unloaded = engine.post("/v1/unload_lora_adapter", json={"lora_name": "policy-a"})
    assert (unloaded.status_code, unloaded.text) == (
        200, "Success: LoRA adapter 'policy-a' removed successfully.")
    assert [m["id"] for m in engine.get("/v1/models").json()["data"]] == ["demo"]
    assert "cannot be found" in _vllm_error(engine.post("/v1/unload_lora_adapter", json={
        "lora_name": "policy-a"}), 404)
    assert _complete(engine, "demo", ids)["choices"][0]["text"] == base_text


def test_broken_loras_are_refused_and_nothing_is_listed(engine, store, tmp_path) -> None:
    def load(name: str, path) -> str:
        return engine.post("/v1/load_lora_adapter",
                           json={"lora_name": name, "lora_path": str(path)})

    assert "must be provided" in _vllm_error(load("x", ""), 400)
    assert "No adapter found" in _vllm_error(load("x", tmp_path / "missing"), 404)
    assert "policy-bad" in _vllm_error(load("bad", store.path("policy-bad")), 400)
    assert "policy-wide" in _vllm_error(load("wide", store.path("policy-wide")), 400)
    assert [m["id"] for m in engine.get("/v1/models").json()["data"]] == ["demo"]
    assert "lora_name" in _vllm_error(engine.post("/v1/unload_lora_adapter", json={}), 400)


def test_while_the_model_loads_health_is_503_then_200(monkeypatch, demo, models_dir) -> None:
    release = threading.Event()

    def slow_load(model, *, models_dir):
        release.wait(30)
        return demo

    monkeypatch.setattr(engine_api, "load_model", slow_load)
    app = create_engine_app(model=str(models_dir / "demo"), models_dir=models_dir)
    with TestClient(app) as client:
        starting = client.get("/health")
        assert starting.status_code == 503 and starting.headers["retry-after"]
        assert starting.json()["status"] == "starting"
        assert "loading the model" in starting.json()["stage"]
        assert client.get("/v1/models").json()["error"]["code"] == "starting"
        release.set()
        wait_until(lambda: client.get("/health").status_code == 200, 30, "the engine")
        assert client.get("/v1/models").json()["data"][0]["id"] == "demo"
