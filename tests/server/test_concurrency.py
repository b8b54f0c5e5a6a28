"""Many clients at once on a real server: parallel streams keep their own answers and ids,
and nothing a bad or vanishing client does disturbs the others."""

import asyncio
import json

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from feedback.models import Conversation, Message
from tests.server.support import async_turn, db_session, greedy_references, wait_until

SETTINGS = {"max_batch": 8}  # 16 streams: eight run, eight wait for a slot
WORDS = ["apple", "river", "stone", "cloud", "music", "paper", "garden", "winter", "candle",
         "mirror", "forest", "ocean", "bridge", "window", "silver", "thunder"]
PROMPTS = [f"question number {i}: {word}" for i, word in enumerate(WORDS)]
LONG = {"temperature": 0, "max_tokens": 48}


@pytest.fixture(scope="module")
def references(demo) -> dict[tuple[str, int], str]:
    """Greedy answers by Hugging Face's `generate` (computed before the server starts)."""
    refs = dict(zip([(p, 16) for p in PROMPTS], greedy_references(demo, PROMPTS, 16),
                    strict=True))
    refs.update(zip([(p, 48) for p in PROMPTS[:4]], greedy_references(demo, PROMPTS[:4], 48),
                    strict=True))
    return refs


def _ws(url: str, **kwargs):
    return connect(url, proxy=None, open_timeout=20, **kwargs)


def test_sixteen_parallel_streams_complete_with_their_own_answers_and_ids(
        references, live, app) -> None:
    async def one(prompt: str):
        async with _ws(live.ws_url) as ws:
            return await async_turn(ws, prompt, params={"temperature": 0, "max_tokens": 16})

    async def everyone():
        return await asyncio.gather(*[one(p) for p in PROMPTS])

    turns = asyncio.run(everyone())

    assert len({references[(p, 16)] for p in PROMPTS}) > 8, "prompts should answer differently"
    for prompt, turn in zip(PROMPTS, turns, strict=True):
        assert turn.error is None
        assert {f["answer"] for f in turn.of("token")} == {"a"}
        assert turn.text() == references[(prompt, 16)], prompt
        assert turn.end()["completion_tokens"] == 16
    ids = [(t.start["conversation_id"], t.start["message_id"], t.end()["message_id"])
           for t in turns]
    assert len({c for c, _, _ in ids}) == 16
    assert len({m for _, q, a in ids for m in (q, a)}) == 32
    with db_session(app) as session:
        owners = set()
        for prompt, turn, (conversation_id, question_id, answer_id) in zip(
                PROMPTS, turns, ids, strict=True):
            question, answer = session.get(Message, question_id), session.get(Message, answer_id)
            assert question.content == prompt and question.conversation_id == conversation_id
            assert answer.parent_id == question_id and answer.content == turn.text()
            owners.add(session.get(Conversation, conversation_id).user_id)
    assert len(owners) == 16, "each anonymous browser is its own user"
    wait_until(lambda: app.state.chat.engine.active == 0, what="the batch to empty")


def test_bad_and_vanishing_clients_never_disturb_the_streams_running(references, live,
                                                                     app) -> None:
    engine = app.state.chat.engine
    good_prompts = PROMPTS[:4]
    streaming = asyncio.Event()
    bad_results: dict[str, object] = {}

    async def good(prompt: str):
        async with _ws(live.ws_url) as ws:
            await ws.send(json.dumps({"type": "user_turn", "content": prompt, "params": LONG}))
            frames = []
            while not frames or frames[-1]["type"] != "done":
                frames.append(json.loads(await ws.recv()))
                if frames[-1]["type"] == "token" and not streaming.is_set():
                    streaming.set()
                if len(frames) == 3:  # garbage on the socket in the middle of the answer
                    await ws.send("{not json")
            return frames

    async def vanishing():
        async with _ws(live.ws_url) as ws:
            await ws.send(json.dumps({"type": "user_turn", "content": "bye",
                                      "params": {"max_tokens": 400}}))
            await ws.recv()
            await ws.recv()
            ws.transport.abort()  # no close frame: the TCP connection just drops

    async def bad_http(http: httpx.AsyncClient):
        await streaming.wait()
        base = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
        bad = {
            "oversize": {**base, "messages": [{"role": "user", "content": "x" * 9000}]},
            "unknown model": {**base, "model": "nope"},
            "window": {**base, "messages": [{"role": "user", "content": "word " * 700}]},
            "seed": {**base, "seed": 2**64},
            "no messages": {**base, "messages": []},
        }
        for name, body in bad.items():
            bad_results[name] = (await http.post("/v1/chat/completions", json=body)).status_code
        response = await http.post("/v1/chat/completions", content=b"{oops",
                                   headers={"content-type": "application/json"})
        bad_results["not json"] = response.status_code

    async def bad_ws():
        await streaming.wait()
        with pytest.raises(ConnectionClosed) as closed:
            async with _ws(live.ws_url,
                           additional_headers={"Authorization": "Bearer fw-wrong"}) as ws:
                await ws.recv()
        bad_results["bad key"] = closed.value.rcvd.code if closed.value.rcvd else None
        async with _ws(live.ws_url) as ws:
            frames = {"ws empty": "", "ws null": "null",
                      "ws oversize": json.dumps({"type": "user_turn", "content": "y" * 9000})}
            for name, raw in frames.items():
                await ws.send(raw)
                bad_results[name] = json.loads(await ws.recv())["error"]["code"]

    async def everything():
        async with httpx.AsyncClient(base_url=live.url, timeout=60, trust_env=False) as http:
            results = await asyncio.gather(*[good(p) for p in good_prompts], vanishing(),
                                           bad_http(http), bad_ws())
        return results[:len(good_prompts)]

    before = engine.tokens_generated
    streams = asyncio.run(everything())

    assert bad_results == {
        "oversize": 413, "unknown model": 404, "window": 413, "seed": 422, "no messages": 422,
        "not json": 422, "bad key": 4401, "ws empty": "invalid_frame", "ws null": "invalid_frame",
        "ws oversize": "message_too_long",
    }
    for prompt, frames in zip(good_prompts, streams, strict=True):
        errors = [f["error"]["code"] for f in frames if f["type"] == "error"]
        text = "".join(f["text"] for f in frames if f["type"] == "token")
        end = next(f for f in frames if f["type"] == "end")
        assert errors == ["invalid_frame"]
        assert text == references[(prompt, 48)]
        assert (end["finish_reason"], end["completion_tokens"]) == ("length", 48)
    wait_until(lambda: engine.active == 0, what="the vanished client's answer to leave")
    assert engine.tokens_generated - before < 4 * 48 + 400
