"""The OpenAI-compatible API: `/v1/chat/completions` (streaming and not) and `/v1/models`.

Every answer is recorded as a message; its id comes back as `message_id` on each choice
(in the final chunk when streaming), so an SDK client can vote on it through the REST
routes.

A request is refused before any costly work when it is too big (messages, characters,
`stop` strings) or asks for more than the model can do: `max_tokens` (or
`max_completion_tokens`) beyond the model's window is a 422, as OpenAI refuses it, never
quietly cut. Tokenizing runs off the event loop, after the capacity and rate checks; the
engine starts on the answers while the conversation is being stored.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from server.auth import CallerDep, ensure_session
from server.chat import Answer, ChatService
from server.deps import Adapters, Chat
from server.errors import APIError, as_api_error
from server.sampling import MAX_STOP_CHARS, MAX_STOPS, SamplingParams

router = APIRouter(prefix="/v1", tags=["openai"])

# Bounds on lists, in the schema: validation stops at once past them (70,000 empty messages
# in a 2 MB body took a second to validate, holding the event loop).
MAX_MESSAGES, MAX_PARTS = 256, 64


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_PARTS)]

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


# `stop` is one string or a list of them; one is taken as a list of one.
Stop = Annotated[str, Field(max_length=MAX_STOP_CHARS)]
StopList = Annotated[list[Stop], Field(max_length=MAX_STOPS)]
Stops = Annotated[StopList, BeforeValidator(lambda v: [v] if isinstance(v, str) else v,
                                            json_schema_input_type=Stop | StopList)]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")  # other OpenAI options are accepted, unused

    model: str = Field(max_length=128)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: Stops | None = None
    seed: int | None = None
    n: int = Field(1, ge=1, le=4)
    min_tokens: int = Field(0, ge=0)  # vLLM's extra sampling parameters
    ignore_eos: bool = False


@router.get("/models")
def list_models(adapters: Adapters, _: CallerDep) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "flywheel"}
        for name in adapters.model_names()]}


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, caller: CallerDep, chat: Chat,
                           adapters: Adapters, request: Request, response: Response):
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    if messages[-1]["role"] != "user":
        raise APIError(422, "the last message must be the user's", code="invalid_messages")
    chat.check_messages(messages)
    adapter = adapters.resolve(body.model)
    params = chat.sampling(max_tokens=body.max_completion_tokens or body.max_tokens,
                           temperature=body.temperature, top_p=body.top_p, stop=body.stop,
                           seed=body.seed, n=body.n, min_tokens=body.min_tokens,
                           ignore_eos=body.ignore_eos)
    chat.admit(caller, answers=body.n, endpoint="openai")
    prompt_ids = await asyncio.to_thread(chat.prompt_ids, messages, params[0].max_tokens)
    # The engine starts on the answers while the conversation is stored (with many
    # requests at once, their stores take turns). One that cannot be stored still fails
    # the request with its own status, and stops its answers.
    stored: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    usage = body.stream_options is not None and body.stream_options.include_usage
    completion = _Completion(chat, body.model, prompt_ids, stored, adapter,
                             stream=body.stream, include_usage=usage)
    completion.start(params)
    try:
        user = await ensure_session(caller, request, response)  # its first write
        stored.set_result(await chat.record_messages(user_id=user.id, messages=messages,
                                                     source="api"))
    except BaseException:
        completion.cancel()
        raise
    if body.stream:
        return _EventStream(completion, headers=response.headers)  # a new session's cookie
    try:
        return completion.response(await asyncio.gather(*completion.tasks))
    finally:
        completion.cancel()


async def _ignore(_: str) -> None:
    """A non-streamed answer's text arrives all at once, at its end."""


class _Completion:
    """One request's answers, started on the engine, rendered in OpenAI's shapes."""

    def __init__(self, chat: ChatService, model: str, prompt_ids: list[int],
                 prompt_message_id: Awaitable[int], adapter: str | None, *, stream: bool,
                 include_usage: bool):
        self.chat, self.model, self.prompt_ids = chat, model, prompt_ids
        self.prompt_message_id, self.adapter = prompt_message_id, adapter
        self.stream, self.include_usage = stream, include_usage
        self.extra = {"usage": None} if include_usage else {}
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.chunks: asyncio.Queue[str | _End] = asyncio.Queue()  # streamed, not yet sent
        self.tasks: list[asyncio.Task] = []

    def start(self, params: list[SamplingParams]) -> None:
        self.tasks = [asyncio.create_task(self._streamed(i, p) if self.stream else self._run(p))
                      for i, p in enumerate(params)]

    def cancel(self) -> None:
        """Stop the answers still generating: the engine frees their slots."""
        for task in self.tasks:
            task.cancel()

    async def _run(self, params: SamplingParams, on_text=_ignore) -> Answer:
        return await self.chat.answer(prompt_ids=self.prompt_ids,
                                      prompt_message_id=self.prompt_message_id, params=params,
                                      adapter_version=self.adapter, on_text=on_text)

    async def _streamed(self, index: int, params: SamplingParams) -> None:
        """One answer's chunks into the queue, then its end (or why it failed)."""
        async def on_text(text: str) -> None:
            self.chunks.put_nowait(self.chunk([{"index": index, "delta": {"content": text},
                                                "logprobs": None, "finish_reason": None}],
                                              **self.extra))
        try:
            a = await self._run(params, on_text)
        except Exception as e:  # every failure becomes the error event
            self.chunks.put_nowait(_End(error=as_api_error(e, where="streamed answer")))
            return
        self.chunks.put_nowait(self.chunk([{"index": index, "delta": {}, "logprobs": None,
                                            "finish_reason": a.finish_reason,
                                            "message_id": a.message_id}], **self.extra))
        self.chunks.put_nowait(_End(answer=a))

    def response(self, answers: list[Answer]) -> dict:
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model, "system_fingerprint": None,
            "choices": [{"index": i, "message": {"role": "assistant", "content": a.text},
                         "logprobs": None, "finish_reason": a.finish_reason,
                         "message_id": a.message_id} for i, a in enumerate(answers)],
            "usage": _usage(answers),
        }

    def chunk(self, choices: list[dict], **extra) -> str:
        body = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "system_fingerprint": None, "choices": choices, **extra}
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n"

    async def sse(self):
        """Role delta, content deltas, a chunk with finish_reason per choice, the usage
        chunk when asked for, then `data: [DONE]` — OpenAI's stream, byte for byte. Chunks
        that are ready together go out in one write. A failed answer ends the stream with
        an error event in the one error shape (and no [DONE])."""
        for i in range(len(self.tasks)):
            yield self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                               "logprobs": None, "finish_reason": None}], **self.extra)
        answers: list[Answer] = []
        while len(answers) < len(self.tasks):
            ready = [await self.chunks.get()]
            while not self.chunks.empty():
                ready.append(self.chunks.get_nowait())
            text = [item for item in ready if isinstance(item, str)]
            ends = [item for item in ready if isinstance(item, _End)]
            if text:
                yield "".join(text)
            for end in ends:
                if end.error is not None:
                    yield f"data: {json.dumps(end.error.body())}\n\n"
                    return
                answers.append(end.answer)
        if self.include_usage:
            yield self.chunk([], usage=_usage(answers))
        yield "data: [DONE]\n\n"


class _EventStream(StreamingResponse):
    """A completion's server-sent events. However the response ends (done, a failed
    answer, the client gone, even before the first byte), the answers still generating
    are stopped, so the engine frees their slots."""

    def __init__(self, completion: _Completion, headers):
        super().__init__(completion.sse(), media_type="text/event-stream", headers=headers)
        self.completion = completion

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.completion.cancel()


@dataclass
class _End:
    """An answer's end in the stream of chunks: the answer, or why it failed."""

    answer: Answer | None = None
    error: APIError | None = None


def _usage(answers: list[Answer]) -> dict:
    prompt = answers[0].prompt_tokens if answers else 0
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
