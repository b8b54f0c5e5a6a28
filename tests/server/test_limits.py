"""Limits, each refused in the one JSON error shape: message length, the model's window,
per-user rate limits and the server's capacity."""

import asyncio
import json
import os
import time
import uuid

import httpx
import pytest
import redis
from sqlmodel import select
from websockets.asyncio.client import connect

from feedback.models import Message
from server.chat import ChatService
from server.errors import APIError
from server.limits import RateLimiter
from tests.server.support import (
    add_user,
    assert_error,
    async_turn,
    bearer,
    block_engine,
    chat_ids,
    db_session,
    wait_until,
)

SETTINGS = {"rate_limit_per_minute": 3, "max_batch": 1, "max_queue": 2,
            "max_message_chars": 2000}
WINDOW = 512  # the demo model's
REDIS = os.environ.get("FLYWHEEL_TEST_REDIS", "127.0.0.1:6379")


@pytest.fixture(scope="module")
def http(live):
    with httpx.Client(base_url=live.url, timeout=60, trust_env=False) as http:
        yield http


def _user(app) -> dict[str, str]:
    return bearer(add_user(app.state.db)[1])


def _ask(http, headers, content="hi", **extra) -> httpx.Response:
    return http.post("/v1/chat/completions", headers=headers, json={
        "model": "demo", "messages": [{"role": "user", "content": content}], "max_tokens": 1,
        **extra})


async def _ws_error(live, headers, **turn) -> dict:
    async with connect(live.ws_url, proxy=None, additional_headers=headers) as ws:
        result = await async_turn(ws, **{"content": "hi", "params": {"max_tokens": 1}, **turn})
    assert result.error is not None, result.frames
    assert result.of("start") == []
    return result.error


# -- message length -------------------------------------------------------------------------


def test_a_message_over_the_limit_is_413(app, live, http) -> None:
    user = _user(app)
    too_long = _ask(http, user, "x" * 2001)
    assert too_long.status_code == 413
    assert_error(too_long.json(), "invalid_request_error", "message_too_long")
    assert "2000" in too_long.json()["error"]["message"]
    # A single long word is one [UNK] token: at the limit is fine.
    assert _ask(http, user, "x" * 2000).status_code == 200

    error = asyncio.run(_ws_error(live, user, content="y" * 2001))
    assert (error["type"], error["code"]) == ("invalid_request_error", "message_too_long")
    with db_session(app) as session:
        assert session.exec(select(Message).where(Message.content == "y" * 2001)).all() == []


def test_over_long_vote_texts_are_422(app, http) -> None:
    user = _user(app)
    answer = _ask(http, user).json()["choices"][0]["message_id"]
    response = http.put(f"/api/messages/{answer}/rating", headers=user,
                        json={"thumb": 1, "comment": "c" * 4001})
    assert response.status_code == 422
    assert_error(response.json(), "invalid_request_error", "invalid_request")
    assert http.put(f"/api/messages/{answer}/rating", headers=user,
                    json={"thumb": 1, "comment": "c" * 4000}).status_code == 200


# -- the model's window ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat(demo) -> ChatService:
    return ChatService(db=None, engine=None, tokenizer=demo.tokenizer, adapters=None,
                       metrics=None, max_context=WINDOW, settings=None, limiter=None,
                       records=None)


def _conversation(turns: int, words: int = 40) -> list[dict]:
    messages = [{"role": "system", "content": "you are a helpful pirate"}]
    for i in range(turns):
        messages.append({"role": "user", "content": f"question {i} " + "sea " * words})
        messages.append({"role": "assistant", "content": f"answer {i} " + "arr " * words})
    messages.append({"role": "user", "content": "last question"})
    return messages


def test_oldest_turns_are_dropped_to_fit_the_window_and_the_system_prompt_stays(
        demo, chat) -> None:
    tokenizer = demo.tokenizer
    messages = _conversation(turns=12)
    assert len(chat_ids(tokenizer, messages)) > WINDOW

    ids = chat.prompt_ids(messages, max_tokens=64)

    assert len(ids) <= WINDOW - 64
    # The system prompt, then whole exchanges: the kept thread starts with a user turn ...
    starts = [i for i, m in enumerate(messages) if m["role"] == "user"]
    kept = next(i for i in starts if chat_ids(tokenizer, [messages[0], *messages[i:]]) == ids)
    assert kept > 1
    # ... and only as many turns went as had to.
    assert len(chat_ids(tokenizer, [messages[0], *messages[kept - 2:]])) > WINDOW - 64
    assert tokenizer.decode(ids).startswith("system : you are a helpful pirate")


def test_without_a_system_prompt_the_oldest_turns_go_too(demo, chat) -> None:
    messages = _conversation(turns=12)[1:]
    ids = chat.prompt_ids(messages, max_tokens=8)
    assert len(ids) <= WINDOW - 8
    assert demo.tokenizer.decode(ids).startswith("user : question")
    assert "last question" in demo.tokenizer.decode(ids)


def test_a_single_turn_beyond_the_window_is_413(chat) -> None:
    with pytest.raises(APIError) as refused:
        chat.prompt_ids([{"role": "system", "content": "be brief"},
                         {"role": "user", "content": "word " * 600}], max_tokens=8)
    assert (refused.value.status, refused.value.code) == (413, "context_length_exceeded")


def test_a_long_conversation_over_the_api_is_answered_within_the_window(app, http) -> None:
    messages = _conversation(turns=12, words=20)
    response = http.post("/v1/chat/completions", headers=_user(app), json={
        "model": "demo", "messages": messages, "max_tokens": 16, "temperature": 0})
    assert response.status_code == 200, response.text
    usage = response.json()["usage"]
    assert usage["prompt_tokens"] <= WINDOW - 16 and usage["completion_tokens"] == 16

    too_big = http.post("/v1/chat/completions", headers=_user(app), json={
        "model": "demo", "messages": [{"role": "user", "content": "a " * 600}]})
    assert too_big.status_code == 413
    assert_error(too_big.json(), "invalid_request_error", "context_length_exceeded")


# -- per-user rate limit --------------------------------------------------------------------


def test_the_fourth_answer_in_a_minute_is_429_with_retry_after(app, live, http) -> None:
    user, other = _user(app), _user(app)
    assert [_ask(http, user).status_code for _ in range(3)] == [200, 200, 200]

    limited = _ask(http, user)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert_error(limited.json(), "rate_limit_error", "rate_limit_exceeded")
    error = asyncio.run(_ws_error(live, user))
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limit_exceeded")
    # Votes are not answers, and other users have their own budget.
    assert http.get("/api/conversations", headers=user).status_code == 200
    assert _ask(http, other).status_code == 200


def test_n_answers_cost_n(app, http) -> None:
    user = _user(app)
    assert _ask(http, user, n=2).status_code == 200
    assert _ask(http, user, n=2).status_code == 429
    assert _ask(http, user).status_code == 200


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    """The wall clock the limiter's moving windows read, moved by hand."""
    now = [1_000_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


def test_the_window_slides(clock) -> None:
    limiter = RateLimiter(per_minute=2)
    limiter.check(1)
    clock[0] += 30
    limiter.check(1)
    with pytest.raises(APIError) as limited:
        limiter.check(1)
    assert limited.value.headers == {"Retry-After": "30"}
    limiter.check(2)  # per user
    clock[0] += 31  # the first answer is over a minute old
    limiter.check(1)
    with pytest.raises(APIError):
        limiter.check(1)


def test_a_refused_answer_charges_neither_budget() -> None:
    limiter = RateLimiter(per_minute=1, per_address=2)
    limiter.check(1, address="198.51.100.1")
    with pytest.raises(APIError, match="answers a minute;"):
        limiter.check(1, address="198.51.100.1")  # the user is out; the address is not
    limiter.check(2, address="198.51.100.1")
    with pytest.raises(APIError, match="from one address"):
        limiter.check(3, address="198.51.100.1")
    limiter.check(3, address="198.51.100.2")


def test_windows_a_minute_old_are_forgotten(clock) -> None:
    limiter = RateLimiter(per_minute=5)
    for i in range(500):  # a crowd of users and addresses within one minute
        limiter.check(i, address=f"10.0.{i // 256}.{i % 256}")
    assert len(limiter.storage.events) == 1000
    clock[0] += 61
    limiter.check(1)
    assert list(limiter.storage.events) == ["flywheel-user/1/5/1/minute"]


@pytest.fixture
def redis_url() -> str:
    storage = f"redis://{REDIS}"
    try:
        redis.Redis.from_url(storage, socket_connect_timeout=1).ping()
    except redis.RedisError as e:
        pytest.skip(f"Redis unreachable at {REDIS}: {e}")
    return storage


def test_replicas_sharing_redis_share_one_budget(redis_url) -> None:
    """Two servers' limiters on one Redis: the limit holds for both together, per user and
    per address, where in-memory counters would allow it twice."""
    namespace = f"test-{uuid.uuid4().hex[:8]}"
    replicas = [RateLimiter(per_minute=3, per_address=4, storage=redis_url,
                            namespace=namespace) for _ in range(2)]
    replicas[0].check(1)
    replicas[1].check(1)
    replicas[0].check(1)
    with pytest.raises(APIError) as limited:
        replicas[1].check(1)
    assert limited.value.status == 429 and 1 <= int(limited.value.headers["Retry-After"]) <= 60
    replicas[1].check(2, address="192.0.2.7", cost=2)
    replicas[0].check(3, address="192.0.2.7", cost=2)
    with pytest.raises(APIError, match="from one address"):
        replicas[1].check(4, address="192.0.2.7")
    # A refusal on one replica charged nothing: user 4 still has its whole budget.
    replicas[0].check(4, cost=3)


# -- capacity -------------------------------------------------------------------------------


def test_past_the_queue_requests_get_503_and_the_queued_ones_are_answered(app, live) -> None:
    engine = app.state.chat.engine
    users = [_user(app) for _ in range(4)]

    async def scenario():
        async with httpx.AsyncClient(base_url=live.url, timeout=60, trust_env=False) as http:
            def ask(headers):
                return http.post("/v1/chat/completions", headers=headers, json={
                    "model": "demo", "messages": [{"role": "user", "content": "queue me"}],
                    "max_tokens": 4, "temperature": 0})

            release = block_engine(engine)
            try:
                queued = [asyncio.create_task(ask(h)) for h in users[:2]]
                for _ in range(1000):
                    if engine.queued == 2:
                        break
                    await asyncio.sleep(0.01)
                refused = await ask(users[2])
                ws_error = await _ws_error(live, users[3])
                still_queued = engine.queued
            finally:
                release.set()
            return refused, ws_error, still_queued, await asyncio.gather(*queued)

    refused, ws_error, still_queued, answered = asyncio.run(scenario())

    assert refused.status_code == 503 and refused.headers["retry-after"] == "2"
    assert_error(refused.json(), "overloaded_error", "overloaded")
    assert (ws_error["type"], ws_error["code"]) == ("overloaded_error", "overloaded")
    assert still_queued == 2
    assert [r.status_code for r in answered] == [200, 200]
    assert [r.json()["usage"]["completion_tokens"] for r in answered] == [4, 4]
    assert answered[0].json()["choices"][0]["message"]["content"] == (
        answered[1].json()["choices"][0]["message"]["content"])
    wait_until(lambda: engine.active == 0 and engine.queued == 0, what="an idle engine")


def test_a_full_batch_queues_streams_rather_than_refusing_them(app, live) -> None:
    async def one(i: int):
        async with connect(live.ws_url, proxy=None,
                           additional_headers=_user(app)) as ws:
            return await async_turn(ws, f"stream {i}", params={"max_tokens": 6,
                                                               "temperature": 0})

    async def scenario():
        return await asyncio.gather(*[one(i) for i in range(2)])

    turns = asyncio.run(scenario())  # one runs (max_batch 1), one waits its turn
    assert [t.error for t in turns] == [None, None]
    assert [t.end()["completion_tokens"] for t in turns] == [6, 6]
    assert json.dumps(turns[0].done) == json.dumps({"type": "done", "comparison_id": None})
