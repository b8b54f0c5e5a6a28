"""The chat service both front doors share (websocket and OpenAI API): admit a request
(its size, its sampling parameters, the server's capacity, the caller's rate limit), fit the
conversation into the model's window, stream an answer from the engine and record it, and
record picks; with the metrics of each. The routes only translate their protocol."""

import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlmodel import Session

from feedback.db import session_scope
from feedback.group_commit import GroupCommit
from feedback.queries import conversations as convs
from feedback.queries import votes
from flywheel.generation import chat_ids
from flywheel.settings import Settings
from server.adapters import AdapterManager
from server.auth import Caller
from server.engine import Event, Failed, Finished, Token
from server.errors import APIError
from server.limits import RateLimiter, check_capacity
from server.metrics import Metrics
from server.sampling import SamplingParams

log = logging.getLogger(__name__)

_ONCE = ""  # _overhead's name for the template's tokens once a prompt
# How the template's tokens around one message of a role are measured: the render of the
# second conversation less that of the first (empty messages, in an order every template
# takes).
_PROBES = {
    "system": (("user",), ("system", "user")),
    "user": (("user", "assistant"), ("user", "assistant", "user")),
    "assistant": (("user",), ("user", "assistant")),
}


@dataclass
class Answer:
    """One finished answer, as recorded."""

    message_id: int
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    adapter_version: str | None
    extra: dict = field(default_factory=dict)


# What the engine (or a gateway over engines) offers: `generate(prompt_ids, params,
# adapter)`, an async stream of Token events ending in Finished or Failed, and `queued`.
OnText = Callable[[str], Awaitable[bool | None]]


class ChatService:
    def __init__(self, *, db: Engine, engine, tokenizer, adapters: AdapterManager,
                 metrics: Metrics, max_context: int, settings: Settings,
                 limiter: RateLimiter, records: GroupCommit | None):
        self.db, self.engine, self.tokenizer = db, engine, tokenizer
        self.records = records  # the conversations and answers, written in groups
        self.adapters, self.metrics, self.max_context = adapters, metrics, max_context
        self.settings, self.limiter = settings, limiter
        self._overheads: dict[str, int] = {}  # see _overhead

    # -- admission (cheap checks, before anything is tokenized or stored) --------------------

    def check_messages(self, messages: list[dict]) -> None:
        """Refuse messages too big to take (413) or not valid Unicode (422)."""
        limit = self.settings.max_message_chars
        if max(len(m["content"]) for m in messages) > limit:
            raise APIError(413, f"messages are limited to {limit} characters",
                           code="message_too_long")
        total = self.settings.max_conversation_chars
        if sum(len(m["content"]) for m in messages) > total:
            raise APIError(413, f"the messages together are limited to {total} characters",
                           code="conversation_too_long")
        for i, m in enumerate(messages):
            try:
                m["content"].encode()
            except UnicodeEncodeError:  # a lone surrogate ("\ud800"): JSON can escape it
                raise APIError(422, f"messages.{i}.content: not valid Unicode (a lone "
                               "surrogate)", code="invalid_request") from None

    def sampling(self, *, max_tokens: int | None, temperature: float, top_p: float,
                 stop: list[str] | None, seed: int | None, n: int = 1,
                 min_tokens: int = 0, ignore_eos: bool = False) -> list[SamplingParams]:
        """The sampling of each of `n` answers (seeds counting up from `seed`); max_tokens
        defaults to the settings'. What SamplingParams refuses is a 422."""
        max_tokens = max_tokens or self.settings.max_new_tokens
        self.check_max_tokens(max_tokens)
        try:
            return [SamplingParams(max_tokens=max_tokens, temperature=temperature,
                                   top_p=top_p, stop=tuple(stop or ()),
                                   seed=None if seed is None else seed + i,
                                   min_tokens=min_tokens, ignore_eos=ignore_eos)
                    for i in range(n)]
        except ValueError as e:
            raise APIError(422, str(e), code="invalid_request") from None

    def admit(self, caller: Caller, *, answers: int, endpoint: str) -> None:
        """Take a request for `answers` answers: 503 while the queue is full, 429 past the
        caller's rate limit (neither charges anything); counted by endpoint."""
        check_capacity(self.engine, self.settings.max_queue, cost=answers)
        self.limiter.check(caller.user_id, address=caller.metered_address, cost=answers)
        self.metrics.requests.labels(endpoint).inc()

    # -- prompts ---------------------------------------------------------------------------

    def prompt_ids(self, messages: list[dict], max_tokens: int) -> list[int]:
        """The chat-templated prompt. Turns beyond the model's window are dropped oldest
        first, up to the next user turn so the prompt still starts with the user (a system
        prompt is kept); the answer keeps room for `max_tokens`.

        Linear in the conversation, never quadratic: the cut comes from running totals of
        each turn's tokens (newest first, and only as far back as the window reaches) plus
        the template's tokens around it, and the template renders just the turns kept. The
        count is exact for templates whose tokens add up; where they do not, a render or
        two more moves the cut to where the whole render fits."""
        system = [m for m in messages[:1] if m["role"] == "system"]
        turns = messages[len(system):]
        budget = self.max_context - min(max_tokens, self.max_context // 2)
        # estimated[s]: the prompt's tokens when turns[s:] are kept.
        estimated = [math.inf] * len(turns) + [
            self._overhead(_ONCE) + sum(self._tokens(m) for m in system)]
        for s in range(len(turns) - 1, -1, -1):
            if estimated[s + 1] > budget:
                break
            estimated[s] = estimated[s + 1] + self._tokens(turns[s])
        starts = _thread_starts(turns)
        k = next((k for k, s in enumerate(starts) if estimated[s] <= budget), len(starts) - 1)
        ids = self._render(system + turns[starts[k]:])
        while len(ids) > budget and k + 1 < len(starts):  # the count ran low
            k += 1
            ids = self._render(system + turns[starts[k]:])
        if len(ids) > budget:
            raise APIError(413, f"the message needs {len(ids)} tokens; the model's window "
                           f"leaves room for {budget}", code="context_length_exceeded")
        while k > 0 and len(ids) < estimated[starts[k]]:  # it ran high: more may fit
            earlier = self._render(system + turns[starts[k - 1]:])
            if len(earlier) > budget:
                break
            k, ids = k - 1, earlier
        return ids

    def check_max_tokens(self, max_tokens: int) -> None:
        """An answer cannot outgrow the model's window: asking for more is refused (as
        OpenAI refuses it), not quietly cut."""
        if max_tokens > self.max_context:
            raise APIError(422, f"max_tokens is {max_tokens}; the model's window holds "
                           f"{self.max_context} tokens", code="invalid_request")

    def _render(self, messages: list[dict], generation: bool = True) -> list[int]:
        return chat_ids(self.tokenizer, messages, add_generation_prompt=generation)

    def _tokens(self, message: dict) -> int:
        """A message's tokens in the prompt: its text's and the template's around it."""
        return self.count_tokens(message["content"]) + self._overhead(message["role"])

    def _overhead(self, role: str) -> int:
        """The tokens the chat template adds around a message of `role` (_ONCE: those it
        adds once a prompt, before the first message and for the answer), measured on
        empty messages the first time they are needed."""
        if role not in self._overheads:
            if role == _ONCE:
                size = len(self._render(_empty("user"))) - self._overhead("user")
            else:
                before, after = _PROBES[role]
                size = (len(self._render(_empty(*after), generation=False))
                        - len(self._render(_empty(*before), generation=False)))
            self._overheads[role] = size
        return self._overheads[role]

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # -- generation ------------------------------------------------------------------------

    async def stream(self, prompt_ids: list[int], params: SamplingParams,
                     adapter_version: str | None) -> AsyncIterator[Event]:
        """Engine events for one answer, timed into the metrics."""
        started = time.perf_counter()
        first_token_at = None
        self.adapters.acquire(adapter_version)
        self.metrics.active_streams.inc()
        try:
            async for event in self.engine.generate(
                    prompt_ids, params, self.adapters.engine_name(adapter_version)):
                if first_token_at is None and isinstance(event, Token):
                    first_token_at = time.perf_counter()
                    self.metrics.time_to_first_token.observe(first_token_at - started)
                if isinstance(event, Finished):
                    self._observe(event, adapter_version, started, first_token_at)
                yield event
        finally:
            self.metrics.active_streams.dec()
            self.adapters.release(adapter_version)

    async def answer(self, *, prompt_ids: list[int], prompt_message_id: int | Awaitable[int],
                     params: SamplingParams, adapter_version: str | None,
                     on_text: OnText) -> Answer:
        """Stream one answer through `on_text` (each new piece of text; returning False
        stops the answer, keeping what was sent) and record it. A failed generation is a
        500 `generation_failed`, and nothing is recorded. The prompt may still be being
        stored (`prompt_message_id` awaitable): generation need not wait for the store,
        and the answer is recorded once the prompt is."""
        started = time.perf_counter()
        text, finished = "", None
        async with contextlib.aclosing(self.stream(prompt_ids, params,
                                                   adapter_version)) as events:
            async for event in events:
                if isinstance(event, Token):
                    text += event.text
                    if await on_text(event.text) is False:
                        break  # closing the stream frees the engine's slot
                elif isinstance(event, Finished):
                    finished = event
                elif isinstance(event, Failed):
                    raise APIError(500, event.error, code="generation_failed")
        if finished is None:  # stopped: keep what was sent
            finished = Finished("stop", text, len(prompt_ids), self.count_tokens(text))
        if not isinstance(prompt_message_id, int):
            prompt_message_id = await prompt_message_id
        return await self.record_answer(
            prompt_message_id=prompt_message_id, finished=finished, params=params,
            adapter_version=adapter_version, latency_ms=(time.perf_counter() - started) * 1000)

    def _observe(self, finished: Finished, adapter_version: str | None, started: float,
                 first_token_at: float | None) -> None:
        now = time.perf_counter()
        tps = None
        if first_token_at is not None and finished.completion_tokens > 1 and now > first_token_at:
            tps = (finished.completion_tokens - 1) / (now - first_token_at)
            self.metrics.tokens_per_second.observe(tps)
        self.metrics.completion_tokens.inc(finished.completion_tokens)
        log.info("answer finished", extra={
            "adapter": adapter_version or "base", "prompt_tokens": finished.prompt_tokens,
            "completion_tokens": finished.completion_tokens, "finish_reason": finished.reason,
            "ttft_ms": None if first_token_at is None
            else round((first_token_at - started) * 1000, 1),
            "tokens_per_s": None if tps is None else round(tps, 1)})

    # -- records (through the group commit; record_user_turn, which tokenizes the thread it
    # stores, blocks: call it through asyncio.to_thread) -----------------------------------

    def record_user_turn(self, *, user_id: int, content: str, conversation_id: int | None,
                         parent_id: int | None, source: str,
                         max_tokens: int) -> tuple[int, int, list[int]]:
        """Store the user's turn; returns (conversation id, message id, prompt ids). A
        turn that cannot fit the model's window is refused and not stored."""
        with session_scope(self.db) as session:
            if conversation_id is None:
                if parent_id is not None:
                    raise APIError(422, "parent_id needs its conversation_id")
                conversation_id = convs.create_conversation(
                    session, user_id=user_id, title=content[:80], source=source).id
            else:
                convs.get_conversation(session, conversation_id=conversation_id,
                                       user_id=user_id)
                if parent_id is None:
                    parent_id = _continuation(session, conversation_id)
            message = convs.add_message(session, conversation_id=conversation_id,
                                        role="user", content=content, parent_id=parent_id)
            thread = convs.message_path(session, message_id=message.id)
            prompt_ids = self.prompt_ids([_as_chat(m) for m in thread], max_tokens)
            return conversation_id, message.id, prompt_ids

    async def record_messages(self, *, user_id: int, messages: list[dict], source: str) -> int:
        """Store a whole conversation sent at once (the OpenAI API); returns the last id."""
        def store(session: Session) -> int:
            first_user = next((m["content"] for m in messages if m["role"] == "user"), "")
            conversation = convs.create_conversation(session, user_id=user_id,
                                                     title=first_user[:80], source=source)
            parent_id = None
            for m in messages:
                parent_id = convs.add_message(session, conversation_id=conversation.id,
                                              role=m["role"], content=m["content"],
                                              parent_id=parent_id).id
            return parent_id
        return await self.records.run(store)

    async def record_answer(self, *, prompt_message_id: int, finished: Finished,
                            params: SamplingParams, adapter_version: str | None,
                            latency_ms: float) -> Answer:
        def store(session: Session) -> Answer:
            prompt = convs.get_message(session, message_id=prompt_message_id)
            message = convs.add_message(
                session, conversation_id=prompt.conversation_id, role="assistant",
                content=finished.text, parent_id=prompt_message_id,
                adapter_version=adapter_version,
                sampling=_sampling_record(params),
                seed=params.seed, prompt_tokens=finished.prompt_tokens,
                completion_tokens=finished.completion_tokens,
                finish_reason=finished.reason, latency_ms=latency_ms)
            return Answer(message.id, finished.text, finished.reason, finished.prompt_tokens,
                          finished.completion_tokens, adapter_version)
        return await self.records.run(store)

    async def record_pick(self, *, user_id: int, comparison_id: int, choice: str) -> list[int]:
        """The user's verdict on a side-by-side turn; returns its candidates, A first."""
        def store(session: Session) -> list[int]:
            return votes.record_choice(session, comparison_id=comparison_id, user_id=user_id,
                                       choice=choice).candidate_ids
        candidates = await self.records.run(store)
        self.metrics.votes.labels("comparison").inc()
        return candidates

    async def record_comparison(self, *, user_id: int, prompt_message_id: int,
                                candidate_ids: list[int]) -> int:
        def store(session: Session) -> int:
            return votes.create_comparison(session, user_id=user_id,
                                           prompt_message_id=prompt_message_id,
                                           candidate_ids=candidate_ids).id
        return await self.records.run(store)


def _thread_starts(turns: list[dict]) -> list[int]:
    """Where a kept thread may start, oldest first: the first turn, then each user turn
    (and the last turn, whatever its role)."""
    return [i for i, m in enumerate(turns)
            if i in (0, len(turns) - 1) or m["role"] == "user"] or [0]


def _empty(*roles: str) -> list[dict]:
    return [{"role": role, "content": ""} for role in roles]


def _continuation(session, conversation_id: int) -> int | None:
    """Where a turn without a parent continues: the last answer, or, when that answer was
    one side of a battle, the side the user picked."""
    messages = convs.conversation_messages(session, conversation_id=conversation_id)
    if not messages:
        return None
    last = messages[-1]
    battle = (votes.latest_comparison_for(session, prompt_message_id=last.parent_id)
              if last.role == "assistant" and last.parent_id is not None else None)
    if battle is None or last.id not in battle.candidate_ids:
        return last.id
    if battle.ranking:
        return battle.ranking[0]
    return battle.candidate_ids[1 if battle.choice == "b" else 0]


def _as_chat(message) -> dict:
    return {"role": str(message.role), "content": message.content}


def _sampling_record(params: SamplingParams) -> dict:
    """What an answer's stored `sampling` says; vLLM's extensions only where used."""
    record = {"temperature": params.temperature, "top_p": params.top_p,
              "max_tokens": params.max_tokens, "stop": list(params.stop)}
    if params.min_tokens:
        record["min_tokens"] = params.min_tokens
    if params.ignore_eos:
        record["ignore_eos"] = True
    return record
