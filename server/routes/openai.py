"""The OpenAI-compatible API: `/v1/chat/completions` (streaming and not) and `/v1/models`.

Every answer is recorded as a message; its id comes back as `message_id` on each choice
(in the final chunk when streaming), so an SDK client can vote on it through the REST
routes.

A request is refused before any costly work when it is too big (messages, characters,
`stop` strings) or asks for more than the model can do: `max_tokens` (or
`max_completion_tokens`) beyond the model's window is a 422, as OpenAI refuses it, never
quietly cut. Tokenizing runs off the event loop, after the capacity and rate checks.
"""

import asyncio
import json
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from flywheel.settings import Settings
from server.auth import CallerDep, ensure_session
from server.chat import Answer, ChatService
from server.deps import Adapters, Chat, Limiter, MetricsDep, SettingsDep
from server.engine import Failed, Finished, Token
from server.errors import APIError
from server.limits import check_capacity
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


@router.get("/models")
def list_models(adapters: Adapters, _: CallerDep) -> dict:
    created = int(time.time())
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": created, "owned_by": "flywheel"}
        for name in adapters.model_names()]}


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, caller: CallerDep, chat: Chat,
                           adapters: Adapters, settings: SettingsDep, limiter: Limiter,
                           metrics: MetricsDep, request: Request, response: Response):
    messages = _conversation(body, settings)
    adapter = adapters.resolve(body.model)
    params = _sampling(body, settings, chat)
    check_capacity(chat.engine, settings.max_queue, cost=body.n)
    limiter.check(caller.user_id, address=caller.metered_address, cost=body.n)
    prompt_ids = await asyncio.to_thread(chat.prompt_ids, messages, params[0].max_tokens)
    metrics.requests.labels("openai").inc()
    user = await ensure_session(caller, request, response)  # its first write
    prompt_message_id = await asyncio.to_thread(chat.record_messages, user_id=user.id,
                                                messages=messages, source="api")
    completion = _Completion(chat, body.model, prompt_ids, prompt_message_id, adapter)
    if body.stream:
        usage = body.stream_options is not None and body.stream_options.include_usage
        return StreamingResponse(completion.sse(params, usage), media_type="text/event-stream",
                                 headers=response.headers)  # a new session's cookie
    answers = await asyncio.gather(*[completion.run(i, p) for i, p in enumerate(params)])
    return completion.response(answers)


def _conversation(body: ChatCompletionRequest, settings: Settings) -> list[dict]:
    """The messages as the chat template takes them, refused when they cannot be answered
    or are too big (cheap checks, before anything is tokenized)."""
    messages = [{"role": m.role, "content": m.text()} for m in body.messages]
    if messages[-1]["role"] != "user":
        raise APIError(422, "the last message must be the user's", code="invalid_messages")
    if max(len(m["content"]) for m in messages) > settings.max_message_chars:
        raise APIError(413, f"messages are limited to {settings.max_message_chars} characters",
                       code="message_too_long")
    if sum(len(m["content"]) for m in messages) > settings.max_conversation_chars:
        raise APIError(413, f"the messages together are limited to "
                       f"{settings.max_conversation_chars} characters",
                       code="conversation_too_long")
    for i, m in enumerate(messages):
        try:
            m["content"].encode()
        except UnicodeEncodeError:  # a lone surrogate ("\ud800"): JSON can escape it
            raise APIError(422, f"messages.{i}.content: not valid Unicode (a lone "
                           "surrogate)", code="invalid_request") from None
    return messages


def _sampling(body: ChatCompletionRequest, settings: Settings,
              chat: ChatService) -> list[SamplingParams]:
    """One answer's sampling for each of the `n` asked for (seeds counting up)."""
    max_tokens = body.max_completion_tokens or body.max_tokens or settings.max_new_tokens
    chat.check_max_tokens(max_tokens)
    try:
        return [SamplingParams(max_tokens=max_tokens, temperature=body.temperature,
                               top_p=body.top_p, stop=tuple(body.stop or ()),
                               seed=None if body.seed is None else body.seed + i)
                for i in range(body.n)]
    except ValueError as e:
        raise APIError(422, str(e), code="invalid_request") from None


class _Completion:
    """One request's answers, rendered in OpenAI's shapes."""

    def __init__(self, chat: ChatService, model: str, prompt_ids: list[int],
                 prompt_message_id: int, adapter: str | None):
        self.chat, self.model, self.prompt_ids = chat, model, prompt_ids
        self.prompt_message_id, self.adapter = prompt_message_id, adapter
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    async def run(self, index: int, params: SamplingParams, on_token=None) -> Answer:
        started = time.perf_counter()
        async for event in self.chat.stream(self.prompt_ids, params, self.adapter):
            if isinstance(event, Token) and on_token is not None:
                await on_token(index, event.text)
            elif isinstance(event, Failed):
                raise APIError(500, event.error, code="generation_failed")
            elif isinstance(event, Finished):
                return await asyncio.to_thread(
                    self.chat.record_answer, prompt_message_id=self.prompt_message_id,
                    finished=event, params=params, adapter_version=self.adapter,
                    latency_ms=(time.perf_counter() - started) * 1000)
        raise APIError(500, "generation ended without an answer", code="generation_failed")

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

    async def sse(self, params: list[SamplingParams], include_usage: bool):
        """Role delta, content deltas, a chunk with finish_reason per choice, the usage
        chunk when asked for, then `data: [DONE]` — OpenAI's stream, byte for byte."""
        extra = {"usage": None} if include_usage else {}
        queue: asyncio.Queue[str] = asyncio.Queue()
        for i in range(len(params)):
            yield self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                               "logprobs": None, "finish_reason": None}], **extra)

        async def on_token(index: int, text: str) -> None:
            await queue.put(self.chunk([{"index": index, "delta": {"content": text},
                                         "logprobs": None, "finish_reason": None}], **extra))

        async def answer(index: int, p: SamplingParams) -> Answer:
            a = await self.run(index, p, on_token)
            await queue.put(self.chunk([{"index": index, "delta": {}, "logprobs": None,
                                         "finish_reason": a.finish_reason,
                                         "message_id": a.message_id}], **extra))
            return a

        tasks = asyncio.gather(*[answer(i, p) for i, p in enumerate(params)])
        try:
            while not (tasks.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, tasks}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            try:
                answers = tasks.result()
            except APIError as e:
                yield f"data: {json.dumps({'error': {'message': e.message, 'code': e.code}})}\n\n"
                return
            if include_usage:
                yield self.chunk([], usage=_usage(answers))
            yield "data: [DONE]\n\n"
        finally:
            tasks.cancel()  # the client went away: free the engine's slots


def _usage(answers: list[Answer]) -> dict:
    prompt = answers[0].prompt_tokens if answers else 0
    completion = sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}
