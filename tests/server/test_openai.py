"""The OpenAI-compatible API, through the real `openai` SDK and as raw bytes."""

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest
from sqlmodel import func, select

from feedback.models import Conversation, Message
from server.engine import Failed, Token
from server.sampling import MAX_STOP_CHARS
from tests.server.support import (
    add_user,
    assert_error,
    bearer,
    db_session,
    greedy_references,
    wait_until,
)

PROMPT = "write a haiku about tests"
MESSAGES = [{"role": "user", "content": PROMPT}]
WINDOW = 512  # the demo model's


@pytest.fixture(scope="module")
def reference(demo) -> str:
    """The greedy answer of 8 tokens (computed before the server starts)."""
    return greedy_references(demo, [PROMPT], 8)[0]


@pytest.fixture(scope="module")
def key(live, app) -> str:
    return add_user(app.state.db)[1]


@pytest.fixture(scope="module")
def sdk(live, key) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{live.url}/v1", api_key=key, max_retries=0, timeout=60,
                         http_client=httpx.Client(trust_env=False))


@pytest.fixture(scope="module")
def http(live, key):
    with httpx.Client(base_url=live.url, headers=bearer(key), timeout=60,
                      trust_env=False) as http:
        yield http


def _sse_events(body: bytes) -> list[str]:
    """The events of an SSE body, each exactly `data: ...` followed by a blank line."""
    assert body.endswith(b"\n\n")
    events = body.decode().split("\n\n")[:-1]
    assert all(e.startswith("data: ") and "\n" not in e for e in events), events
    return [e[len("data: "):] for e in events]


def test_models_lists_the_default_and_the_base_model(sdk) -> None:
    models = sdk.models.list().data
    assert [m.id for m in models] == ["flywheel", "demo"]
    assert all(m.object == "model" and m.owned_by == "flywheel" for m in models)


def test_a_completion_answers_and_carries_the_message_id_to_vote_on(reference, sdk, http,
                                                                    app) -> None:
    completion = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=8,
                                             temperature=0)

    assert completion.id.startswith("chatcmpl-") and completion.object == "chat.completion"
    assert completion.model == "demo"
    choice = completion.choices[0]
    assert choice.index == 0 and choice.finish_reason == "length"
    assert (choice.message.role, choice.message.content) == ("assistant", reference)
    assert completion.usage.completion_tokens == 8
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + 8
    message_id = choice.model_extra["message_id"]
    with db_session(app) as session:
        answer = session.get(Message, message_id)
        assert (answer.role, answer.content, answer.finish_reason) == (
            "assistant", reference, "length")
        question = session.get(Message, answer.parent_id)
        assert (question.role, question.content) == ("user", PROMPT)
        assert session.get(Conversation, answer.conversation_id).source == "api"

    vote = http.put(f"/api/messages/{message_id}/rating", json={"thumb": 1})
    assert vote.status_code == 200 and vote.json()["message_id"] == message_id
    _, stranger = add_user(app.state.db)
    assert http.put(f"/api/messages/{message_id}/rating", json={"thumb": -1},
                    headers=bearer(stranger)).status_code == 404


def test_streaming_through_the_sdk_with_usage(reference, sdk) -> None:
    chunks = list(sdk.chat.completions.create(
        model="flywheel", messages=MESSAGES, max_tokens=8, temperature=0, stream=True,
        stream_options={"include_usage": True}))

    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" and c.model == "flywheel" for c in chunks)
    first, *middle, finish, usage = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    assert "".join(c.choices[0].delta.content for c in middle) == reference
    assert all(c.choices[0].finish_reason is None and c.usage is None for c in middle)
    assert finish.choices[0].finish_reason == "length" and finish.usage is None
    assert isinstance(finish.choices[0].model_extra["message_id"], int)
    assert usage.choices == []
    assert usage.usage.completion_tokens == 8
    assert usage.usage.total_tokens == usage.usage.prompt_tokens + 8


def test_the_stream_is_openai_s_bytes(reference, http) -> None:
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 8, "temperature": 0,
            "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read()
    events = _sse_events(raw)

    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    # Compact JSON, in OpenAI's key order, without a usage key unless it was asked for.
    assert events[0] == json.dumps(chunks[0], separators=(",", ":"))
    assert all(list(c) == ["id", "object", "created", "model", "system_fingerprint", "choices"]
               for c in chunks)
    assert chunks[0]["choices"] == [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "logprobs": None, "finish_reason": None}]
    deltas = [c["choices"][0]["delta"] for c in chunks[1:-1]]
    assert all(list(d) == ["content"] for d in deltas)
    assert "".join(d["content"] for d in deltas) == reference
    last = chunks[-1]["choices"][0]
    assert (last["delta"], last["finish_reason"]) == ({}, "length")


def test_include_usage_adds_a_null_usage_to_every_chunk_and_a_usage_chunk(http) -> None:
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 3, "stream": True,
            "stream_options": {"include_usage": True}}
    response = http.post("/v1/chat/completions", json=body)
    chunks = [json.loads(e) for e in _sse_events(response.content)[:-1]]

    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_a_generation_failing_mid_stream_ends_with_the_one_error_shape(app, http,
                                                                      monkeypatch) -> None:
    async def failing(prompt_ids, params, adapter=None):
        yield Token("half an")
        yield Failed("generation failed: the device fell over")

    monkeypatch.setattr(app.state.chat.engine, "generate", failing)
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 8, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        events = _sse_events(response.read())

    assert json.loads(events[1])["choices"][0]["delta"] == {"content": "half an"}
    assert json.loads(events[-1]) == {"error": {
        "message": "generation failed: the device fell over", "type": "server_error",
        "code": "generation_failed"}}
    assert "[DONE]" not in events


def test_a_client_leaving_mid_stream_frees_the_engine(app, http) -> None:
    engine = app.state.chat.engine
    before = engine.tokens_generated
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 400, "temperature": 0,
            "stream": True, "n": 2}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        next(line for line in response.iter_lines() if '"content":"' in line and
             '"content":""' not in line)  # the first piece of an answer, then away

    wait_until(lambda: engine.active == 0, what="the abandoned answers to leave the batch")
    assert engine.tokens_generated - before < 400  # of the 800 asked for
    assert http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 2,
                                                   "n": 1}).status_code == 200


def test_the_engine_starts_while_the_conversation_is_stored(app, http, monkeypatch) -> None:
    chat, engine = app.state.chat, app.state.chat.engine
    store = chat.record_messages
    started_before_stored = []

    async def slow_store(**kwargs):
        await asyncio.sleep(0.3)  # a store under load
        started_before_stored.append(engine.tokens_generated > before)
        return await store(**kwargs)

    monkeypatch.setattr(chat, "record_messages", slow_store)
    before = engine.tokens_generated
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 400, "temperature": 0,
            "stream": True, "stream_options": {"include_usage": True}}
    response = http.post("/v1/chat/completions", json=body)

    assert started_before_stored == [True]
    final = [json.loads(e) for e in _sse_events(response.content)[:-1]]
    message_id = next(c["choices"][0]["message_id"] for c in final
                      if c["choices"] and c["choices"][0]["finish_reason"])
    with db_session(app) as session:  # the answer hangs off the prompt stored meanwhile
        answer = session.get(Message, message_id)
        assert session.get(Message, answer.parent_id).content == PROMPT


@pytest.mark.parametrize("stream", [True, False])
def test_a_conversation_that_cannot_be_stored_fails_the_request_and_its_answers(
        app, http, monkeypatch, stream) -> None:
    from sqlalchemy.exc import OperationalError

    chat, engine = app.state.chat, app.state.chat.engine

    async def locked(**kwargs):
        await asyncio.sleep(0.2)  # the answers have begun
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(chat, "record_messages", locked)
    before = engine.tokens_generated
    body = {"model": "demo", "messages": MESSAGES, "max_tokens": 400, "temperature": 0,
            "stream": stream, "n": 2}
    response = http.post("/v1/chat/completions", json=body)

    assert response.status_code == 503 and response.headers["retry-after"] == "2"
    assert_error(response.json(), "overloaded_error", "database_busy")
    wait_until(lambda: engine.active == 0, what="the answers to leave the batch")
    assert engine.tokens_generated - before < 800


def test_n_answers_stream_side_by_side_and_can_be_ranked(sdk, http, app) -> None:
    chunks = list(sdk.chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=6, temperature=1.0, seed=3, n=2,
        stream=True))
    finished = {c.choices[0].index: c.choices[0].model_extra["message_id"]
                for c in chunks if c.choices and c.choices[0].finish_reason}
    texts = {i: "".join(c.choices[0].delta.content or "" for c in chunks
                        if c.choices and c.choices[0].index == i) for i in (0, 1)}

    assert set(finished) == {0, 1} and finished[0] != finished[1]
    assert texts[0] != texts[1]  # seeds 3 and 4

    again = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=6,
                                        temperature=1.0, seed=3, n=2)
    assert [c.message.content for c in again.choices] == [texts[0], texts[1]]
    assert again.usage.completion_tokens == 12

    with db_session(app) as session:
        prompt = session.get(Message, finished[0]).parent_id
        assert session.get(Message, finished[1]).parent_id == prompt
    ranked = http.post("/api/comparisons", json={"prompt_message_id": prompt,
                                                 "ranking": [finished[1], finished[0]]})
    assert ranked.status_code == 201
    assert ranked.json()["ranking"] == [finished[1], finished[0]]


def test_vllm_s_ignore_eos_runs_the_answer_to_max_tokens_and_is_stored(sdk, app) -> None:
    completion = sdk.chat.completions.create(
        model="demo", messages=MESSAGES, max_tokens=40, temperature=1.0, seed=3,
        extra_body={"ignore_eos": True, "min_tokens": 2})

    assert completion.choices[0].finish_reason == "length"
    assert completion.usage.completion_tokens == 40
    with db_session(app) as session:
        answer = session.get(Message, completion.choices[0].model_extra["message_id"])
        assert answer.sampling == {"temperature": 1.0, "top_p": 1.0, "max_tokens": 40,
                                   "stop": [], "min_tokens": 2, "ignore_eos": True}


def test_stop_strings_and_content_parts(reference, sdk) -> None:
    stop = reference[len(reference) // 2:][:3]
    cut = sdk.chat.completions.create(model="demo", messages=MESSAGES, max_tokens=8,
                                      temperature=0, stop=stop)
    assert cut.choices[0].message.content == reference[:reference.index(stop)]
    assert cut.choices[0].finish_reason == "stop"

    parts = [{"type": "text", "text": PROMPT[:7]}, {"type": "text", "text": PROMPT[7:]}]
    as_parts = sdk.chat.completions.create(
        model="demo", messages=[{"role": "user", "content": parts}], max_tokens=8,
        temperature=0)
    assert as_parts.choices[0].message.content == reference


def test_errors_reach_the_sdk_as_its_own_exceptions(sdk, live) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="gpt-17", messages=MESSAGES)
    assert missing.value.body["code"] == "model_not_found"

    with pytest.raises(openai.UnprocessableEntityError) as last_turn:
        sdk.chat.completions.create(model="demo", messages=[
            *MESSAGES, {"role": "assistant", "content": "hi"}])
    assert last_turn.value.body["code"] == "invalid_messages"

    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="demo", messages=MESSAGES, temperature=3)

    for seed in (2**31, -(2**31) - 1):  # the store keeps seeds as 32-bit integers
        with pytest.raises(openai.UnprocessableEntityError):
            sdk.chat.completions.create(model="demo", messages=MESSAGES, seed=seed)

    with pytest.raises(openai.APIStatusError) as too_long:
        sdk.chat.completions.create(model="demo", messages=[
            {"role": "user", "content": "x" * 8001}])
    assert too_long.value.status_code == 413
    assert too_long.value.body["code"] == "message_too_long"

    stranger = openai.OpenAI(base_url=f"{live.url}/v1", api_key="fw-not-a-key", max_retries=0,
                             http_client=httpx.Client(trust_env=False))
    with pytest.raises(openai.AuthenticationError) as refused:
        stranger.models.list()
    assert refused.value.body["code"] == "invalid_api_key"


def test_anonymous_callers_get_a_session(live) -> None:
    with httpx.Client(base_url=live.url, trust_env=False, timeout=60) as browser:
        response = browser.post("/v1/chat/completions", json={
            "model": "demo", "messages": MESSAGES, "max_tokens": 2})
        assert response.status_code == 200
        assert "flywheel_session=" in response.headers["set-cookie"]
        me = browser.get("/api/me").json()
        again = browser.get("/api/me")
    assert me["handle"].startswith("anon-")
    assert again.json() == me and "set-cookie" not in again.headers


# -- hostile and oversized requests --------------------------------------------------------


def _raw(http, body: dict) -> httpx.Response:
    """`body` as JSON with non-ASCII escaped: lone surrogates travel as `\\ud800`."""
    return http.post("/v1/chat/completions", content=json.dumps(body),
                     headers={"content-type": "application/json"})


def _stored(app) -> int:
    with db_session(app) as session:
        return session.exec(select(func.count()).select_from(Message)).one()


@pytest.mark.parametrize("change", [
    {"messages": [{"role": "user", "content": "lone \ud800 surrogate"}]},
    {"messages": [{"role": "user", "content": [{"type": "text", "text": "lone \udfff"}]}]},
    {"model": "demo\ud800"},
    {"stop": "\ud800"},
    {"stop": ["ok", "\ud800"]},
    {"stop": "x" * (MAX_STOP_CHARS + 1)},
    {"stop": ["a", "b", "c", "d", "e"]},
    {"n": 5},
    {"min_tokens": -1},
    {"min_tokens": 2},
    {"max_tokens": 10**30},
    {"max_tokens": WINDOW + 1},
    {"max_completion_tokens": 2**64},
])
def test_hostile_values_are_a_422_and_nothing_is_stored(app, http, change) -> None:
    stored = _stored(app)
    response = _raw(http, {"model": "demo", "max_tokens": 1, "messages": MESSAGES, **change})
    assert response.status_code == 422, response.text
    assert_error(response.json(), "invalid_request_error", "invalid_request")
    assert _stored(app) == stored


def test_max_tokens_are_refused_beyond_the_window_only(http) -> None:
    response = _raw(http, {"model": "demo", "max_tokens": 10**30, "messages": MESSAGES})
    assert f"window holds {WINDOW} tokens" in response.json()["error"]["message"]


def _issue_conversation() -> list[dict]:
    """The issue's request: 199 alternating long user and short assistant turns, 0.8 MB."""
    messages = []
    for i in range(99):
        messages += [{"role": "user", "content": f"question {i} " + "sea " * 1000},
                     {"role": "assistant", "content": "ok"}]
    return [*messages, {"role": "user", "content": "and now?"}]


@pytest.mark.parametrize(("messages", "status", "code"), [
    ([{"role": "user", "content": "hi"}] * 257, 422, "invalid_request"),
    ([{"role": "user", "content": [{"type": "text", "text": "a"}] * 65}], 422,
     "invalid_request"),
    ([{"role": "user", "content": "x" * 8000}] * 26, 413, "conversation_too_long"),
    (_issue_conversation(), 413, "conversation_too_long"),
])
def test_too_big_a_conversation_is_refused_before_any_work(http, messages, status,
                                                           code) -> None:
    response = _raw(http, {"model": "demo", "max_tokens": 1, "messages": messages})
    assert response.status_code == status, response.text
    assert_error(response.json(), "invalid_request_error", code)


def _largest_conversation() -> list[dict]:
    """The largest the limits let through: 256 messages, 200,000 characters."""
    messages = []
    for i in range(127):
        messages += [{"role": "user", "content": f"question {i} " + "sea " * 385},
                     {"role": "assistant", "content": "ok"}]
    messages = [{"role": "system", "content": "be brief"}, *messages,
                {"role": "user", "content": "and now?"}]
    assert len(messages) == 256
    assert 190_000 < sum(len(m["content"]) for m in messages) <= 200_000
    return messages


@pytest.mark.parametrize(("messages", "status"), [
    # Refitted by rendering it again after each dropped turn, it held the event loop for
    # seconds.
    (_largest_conversation(), 200),
    # A megabyte of empty messages: validating them all held it for half a second.
    ([{"role": "user", "content": ""}] * 30_000, 422),
], ids=["largest-accepted", "a-megabyte-of-messages"])
def test_healthz_answers_at_once_while_a_big_request_is_handled(live, http, messages,
                                                                status) -> None:
    latencies, done = [], threading.Event()

    def poll() -> None:
        with httpx.Client(base_url=live.url, timeout=10, trust_env=False) as probe:
            while not done.is_set():
                started = time.perf_counter()
                assert probe.get("/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.005)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        while not latencies and poller.is_alive():  # the probe has answered once
            time.sleep(0.001)
        started = time.perf_counter()
        response = _raw(http, {"model": "demo", "max_tokens": 1, "messages": messages})
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        poller.join()

    assert response.status_code == status, response.text
    assert elapsed < 5
    assert max(latencies) < 0.2, sorted(latencies)[-5:]
