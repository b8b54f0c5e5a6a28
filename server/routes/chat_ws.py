"""The websocket chat: streamed answers, side-by-side battles, and picks."""

import asyncio
import contextlib
import json
import random
from dataclasses import replace
from typing import Annotated, Literal

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from server import auth
from server.chat import Answer, ChatService
from server.errors import APIError, as_api_error, error_body
from server.sampling import MAX_STOP_CHARS, MAX_STOPS
from server.store import RowId

router = APIRouter(tags=["chat"])


class Sampling(BaseModel):
    temperature: float = Field(0.7, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[Annotated[str, Field(max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOPS)
    seed: int | None = None


class UserTurn(BaseModel):
    type: Literal["user_turn"]
    content: str = Field(min_length=1)
    conversation_id: RowId | None = None
    parent_id: RowId | None = None
    model: str | None = Field(None, max_length=128)
    side_by_side: bool | None = None  # None: the server decides
    params: Sampling = Field(default_factory=Sampling)


class Pick(BaseModel):
    type: Literal["pick"]
    comparison_id: RowId
    choice: Literal["a", "b", "tie", "both_bad"]


class Stop(BaseModel):
    type: Literal["stop"]


Frame = TypeAdapter(Annotated[UserTurn | Pick | Stop, Field(discriminator="type")])


@router.websocket("/api/chat")
async def chat(websocket: WebSocket):
    """Chat over one websocket. Every frame is a JSON object with a `type`.

    Client → server:
      {"type": "user_turn", "content": str, "conversation_id"?: int, "parent_id"?: int,
       "model"?: str, "side_by_side"?: bool,
       "params"?: {"temperature", "top_p", "max_tokens", "stop": [str], "seed"}}
          Starts a turn. No conversation_id starts a new conversation. parent_id is the
          message this turn follows (default: the picked, or the last, answer).
      {"type": "pick", "comparison_id": int, "choice": "a" | "b" | "tie" | "both_bad"}
          The verdict on a side-by-side turn; the picked answer continues the chat.
      {"type": "stop"}
          Stops the answer being generated (it ends with finish_reason "stop").

    Server → client, for each turn:
      {"type": "start", "conversation_id", "message_id" (the user turn),
       "answers": ["a"] or ["a", "b"], "side_by_side": bool}
      {"type": "token", "answer": "a" | "b", "text": str}          (many)
      {"type": "end", "answer", "message_id", "adapter_version", "prompt_tokens",
       "completion_tokens", "finish_reason"}                         (one per answer;
       adapter_version is null in a side-by-side turn until the pick reveals it)
      {"type": "done", "comparison_id": int | null}
    and for a pick: {"type": "picked", "comparison_id", "choice", "continue_from": int,
       "models": {"a": str, "b": str}}.
    Errors never close the socket: {"type": "error", "error": {"message", "type",
    "code"}} — the same shape as every HTTP error. Frames are text: a binary frame gets
    that error (code "binary_frame"), then the socket closes with code 1003 (unsupported
    data).
    """
    app = websocket.app
    chat_service: ChatService = app.state.chat
    caller, cookie = await asyncio.to_thread(_authenticate, websocket)
    if caller is None:  # accepted first: a close before accepting reaches clients as HTTP 403
        await websocket.accept()
        await websocket.close(code=4401, reason="invalid API key")
        return
    await websocket.accept(headers=[(b"set-cookie", cookie.encode())] if cookie else None)
    session = _ChatSession(websocket, chat_service, caller)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("text") is None:
                await session.error(422, "frames are JSON text; binary frames are not "
                                    "supported", "binary_frame")
                await websocket.close(code=1003, reason="binary frames are not supported")
                break
            await session.handle(message["text"])
    except WebSocketDisconnect:
        pass
    finally:
        if session.turn is not None:
            session.turn.cancel()  # frees the engine's slots at once


def _authenticate(websocket: WebSocket) -> tuple[auth.Caller | None, str | None]:
    """The caller (None for an unknown API key) and, for a browser without a session,
    the cookie of one started now: a socket can set a cookie only in its handshake."""
    try:
        caller = auth.identify(websocket)
    except APIError:
        return None, None
    if caller.user is not None:
        return caller, None
    user, cookie = auth.new_session(websocket)
    return replace(caller, user=user), cookie


class _ChatSession:
    """One connection's state: the turn in flight and the battles it showed."""

    def __init__(self, websocket: WebSocket, chat: ChatService, caller: auth.Caller):
        self.ws, self.chat, self.caller = websocket, chat, caller
        self.user_id = caller.user_id
        self.turn: asyncio.Task | None = None
        self.stopping = False  # the user asked to stop the turn in flight
        self.battles: dict[int, dict] = {}  # comparison id -> {label: (message id, version)}

    async def handle(self, raw: str) -> None:
        try:
            frame = Frame.validate_python(json.loads(raw))
        except (json.JSONDecodeError, ValidationError) as e:
            return await self.error(422, _frame_error(e), "invalid_frame")
        if isinstance(frame, Stop):
            self.stopping = True
        elif isinstance(frame, Pick):
            await self.pick(frame)
        elif self.turn is not None and not self.turn.done():
            await self.error(409, "a turn is still streaming; send stop first", "busy")
        else:
            self.stopping = False
            self.turn = asyncio.create_task(self.run_turn(frame))

    async def error(self, status: int, message: str, code: str | None) -> None:
        await self.ws.send_json({"type": "error", **error_body(status, message, code)})

    async def fail(self, e: Exception, where: str) -> None:
        """Any exception as an error frame (never leave the client waiting)."""
        error = as_api_error(e, where=where)
        with contextlib.suppress(Exception):  # the socket may be gone too
            await self.error(error.status, error.message, error.code)

    async def run_turn(self, turn: UserTurn) -> None:
        try:
            await self._run_turn(turn)
        except Exception as e:
            await self.fail(e, "websocket turn")

    async def _run_turn(self, turn: UserTurn) -> None:
        self.chat.check_messages([{"role": "user", "content": turn.content}])
        adapter = self.ws.app.state.adapters.resolve(turn.model)
        answers = self._plan(turn, adapter)
        self.chat.admit(self.caller, answers=len(answers), endpoint="websocket")
        conversation_id, message_id, prompt_ids = await asyncio.to_thread(
            self.chat.record_user_turn, user_id=self.user_id, content=turn.content,
            conversation_id=turn.conversation_id, parent_id=turn.parent_id, source="chat",
            max_tokens=answers[0][2].max_tokens)
        side_by_side = len(answers) == 2
        await self.ws.send_json({"type": "start", "conversation_id": conversation_id,
                                 "message_id": message_id, "side_by_side": side_by_side,
                                 "answers": [label for label, _, _ in answers]})
        results = await asyncio.gather(*[
            self._answer(label, version, params, prompt_ids, message_id, side_by_side)
            for label, version, params in answers])
        comparison_id = None
        if side_by_side and all(results):
            comparison_id = await self.chat.record_comparison(
                user_id=self.user_id, prompt_message_id=message_id,
                candidate_ids=[r.message_id for r in results])
            self.battles[comparison_id] = {
                label: (r.message_id, r.adapter_version)
                for (label, _, _), r in zip(answers, results, strict=True)}
        await self.ws.send_json({"type": "done", "comparison_id": comparison_id})

    def _plan(self, turn: UserTurn, adapter: str | None):
        """[(label, adapter version, sampling)]: one answer, or two for a side-by-side
        pick — live vs a candidate while one is under evaluation, else two samples."""
        settings = self.ws.app.state.settings
        p = turn.params
        [params] = self.chat.sampling(max_tokens=p.max_tokens, temperature=p.temperature,
                                      top_p=p.top_p, stop=p.stop, seed=p.seed)
        candidates = self.ws.app.state.adapters.candidates
        wanted = turn.side_by_side
        if wanted is None:
            wanted = bool(candidates) or random.random() < settings.side_by_side_share
        if not wanted:
            return [("a", adapter, params)]
        if candidates and turn.model is None:
            pair = [(adapter, params), (random.choice(candidates), params)]
        else:  # two samples of the same model, with different seeds
            seed = p.seed if p.seed is not None else random.randrange(2**31 - 1)
            temperature = params.temperature or 0.7
            pair = [(adapter, replace(params, seed=seed, temperature=temperature)),
                    (adapter, replace(params, seed=seed + 1, temperature=temperature))]
        random.shuffle(pair)
        return [("a", *pair[0]), ("b", *pair[1])]

    async def _answer(self, label, version, params, prompt_ids,
                      prompt_message_id, anonymous) -> Answer | None:
        async def on_text(text: str) -> bool:
            await self.ws.send_json({"type": "token", "answer": label, "text": text})
            return not self.stopping

        try:
            answer = await self.chat.answer(
                prompt_ids=prompt_ids, prompt_message_id=prompt_message_id, params=params,
                adapter_version=version, on_text=on_text)
        except APIError as e:  # this answer failed; the other of a pair goes on
            await self.error(e.status, e.message, e.code)
            return None
        await self.ws.send_json({
            "type": "end", "answer": label, "message_id": answer.message_id,
            "adapter_version": None if anonymous else answer.adapter_version,
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "finish_reason": answer.finish_reason})
        return answer

    async def pick(self, pick: Pick) -> None:
        try:
            candidates = await self.chat.record_pick(
                user_id=self.user_id, comparison_id=pick.comparison_id, choice=pick.choice)
        except Exception as e:
            return await self.fail(e, "websocket pick")
        winner = candidates[1] if pick.choice == "b" else candidates[0]
        battle = self.battles.get(pick.comparison_id, {})
        await self.ws.send_json({
            "type": "picked", "comparison_id": pick.comparison_id, "choice": pick.choice,
            "continue_from": winner,
            "models": {label: version or "base" for label, (_, version) in battle.items()}})


def _frame_error(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"frame is not JSON: {e.msg}"
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {first['msg']}" if where else first["msg"]
