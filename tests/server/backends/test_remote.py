"""A remote engine seen through its vLLM protocol, on a fake transport: what an answer's
request carries, and how its SSE stream becomes the engine's events."""

import asyncio
import json

import httpx

from server.backends.remote import RemoteBackend
from server.engine import Finished, Token
from server.sampling import SamplingParams

STREAM = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in [
    {"choices": [{"index": 0, "text": "it is", "finish_reason": None}]},
    {"choices": [{"index": 0, "text": " kind", "finish_reason": "length"}]},
    {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
]) + "data: [DONE]\n\n"


def test_an_answer_asks_for_every_sampling_parameter_and_streams_its_events() -> None:
    sent = []

    def engine(request: httpx.Request) -> httpx.Response:
        sent.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, text=STREAM, headers={"content-type": "text/event-stream"})

    backend = RemoteBackend("http://engine:8000/", smoke_prompt=[1],
                            transport=httpx.MockTransport(engine))
    params = SamplingParams(max_tokens=2, temperature=0.5, top_p=0.9, stop=("!",), seed=7,
                            min_tokens=1, ignore_eos=True)

    async def answer():
        try:
            return [e async for e in backend.generate([4, 5, 6], params, "policy-v1")]
        finally:
            await backend.close()

    events = asyncio.run(answer())

    assert events == [Token("it is"), Token(" kind"), Finished("length", "it is kind", 3, 2)]
    [(path, body)] = sent
    assert path == "/v1/completions"
    assert body == {"model": "policy-v1", "prompt": [4, 5, 6], "max_tokens": 2,
                    "temperature": 0.5, "top_p": 0.9, "stop": ["!"], "seed": 7,
                    "min_tokens": 1, "ignore_eos": True, "stream": True,
                    "stream_options": {"include_usage": True}}
