"""One simulated user: a browser-like session against a running server's real API.

The user opens an anonymous session (`GET /api/me` sets its signed session cookie, as for
a browser), chats over the websocket `/api/chat` (DESIGN §4: `user_turn`, then `start`,
`token`s, one `end` per answer, `done`), picks side-by-side answers with the websocket's
`pick` frame as the web UI does, and rates, rewrites and flags through the REST routes.
A refusal for load (429 rate limit, 503 at capacity) is waited out — `Retry-After`, or
the seconds the error message names — and retried.
"""

import asyncio
import contextlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

RETRYABLE = {429, 503}
RETRY_CODES = {"rate_limit_exceeded", "overloaded"}  # the same refusals on the websocket
MAX_WAIT_S = 60.0
DEFAULT_WAIT_S = 2.0  # what the server asks when it is at capacity
COOKIE = "flywheel_session"
CLOSE_ERRORS = (OSError, websockets.WebSocketException)


class TurnFailed(Exception):
    """A turn or a vote the server refused for good (not for load)."""


@dataclass
class Answer:
    label: str
    text: str = ""
    message_id: int | None = None


@dataclass
class TurnResult:
    conversation_id: int
    prompt_message_id: int
    answers: dict[str, Answer]
    comparison_id: int | None


@dataclass
class Counters:
    """What one user did: votes by kind, errors and retries."""

    turns: int = 0
    votes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("pick", "thumb", "rewrite", "flag"), 0))
    errors: int = 0
    retries: int = 0


class Session:
    """A user's HTTP client and websocket, sharing one session cookie."""

    def __init__(self, url: str, *, timeout_s: float, max_retries: int,
                 rng: random.Random) -> None:
        self.url = url.rstrip("/")
        self.ws_url = re.sub(r"^http", "ws", self.url) + "/api/chat"
        self.timeout_s, self.max_retries, self.rng = timeout_s, max_retries, rng
        self.http = httpx.AsyncClient(base_url=self.url, timeout=timeout_s)
        self.ws: Any = None
        self.user_id: int | None = None
        self.handle: str | None = None
        self.counters = Counters()

    async def open(self) -> None:
        me = await self.request("GET", "/api/me")
        self.user_id, self.handle = me["id"], me["handle"]
        cookie = self.http.cookies.get(COOKIE)
        headers = {"Cookie": f"{COOKIE}={cookie}"} if cookie else {}
        self.http.headers.update(headers)
        self.http.cookies.clear()  # sent by hand: jars differ on 127.0.0.1
        self.ws = await websockets.connect(self.ws_url, additional_headers=headers,
                                           open_timeout=self.timeout_s, max_size=2**24)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(*CLOSE_ERRORS):
                await self.ws.close()
        await self.http.aclose()

    # -- REST ----------------------------------------------------------------------------

    async def request(self, method: str, path: str, body: dict | None = None) -> dict:
        for attempt in range(self.max_retries + 1):
            response = await self.http.request(method, path, json=body)
            if response.status_code < 400:
                return response.json()
            if response.status_code not in RETRYABLE or attempt == self.max_retries:
                raise TurnFailed(f"{method} {path}: {response.status_code} {_message(response)}")
            await self._wait(_retry_after(response.headers.get("retry-after")))
        raise AssertionError("unreachable")

    # -- websocket -----------------------------------------------------------------------

    async def turn(self, content: str, *, conversation_id: int | None,
                   parent_id: int | None, side_by_side: bool | None,
                   params: dict) -> TurnResult:
        frame = {"type": "user_turn", "content": content, "params": params}
        if conversation_id is not None:
            frame.update(conversation_id=conversation_id, parent_id=parent_id)
        if side_by_side is not None:
            frame["side_by_side"] = side_by_side
        for attempt in range(self.max_retries + 1):
            await self.ws.send(json.dumps(frame))
            try:
                return await self._read_turn()
            except _Retry as retry:
                if attempt == self.max_retries:
                    raise TurnFailed(str(retry)) from None
                await self._wait(retry.after)
        raise AssertionError("unreachable")

    async def pick(self, comparison_id: int, choice: str) -> int:
        """Send the verdict; returns the answer the conversation continues from."""
        await self.ws.send(json.dumps({"type": "pick", "comparison_id": comparison_id,
                                       "choice": choice}))
        frame = await self._recv()
        if frame["type"] == "error":
            raise TurnFailed(frame["error"]["message"])
        return frame["continue_from"]

    async def _read_turn(self) -> TurnResult:
        start, answers, failure = None, {}, None
        while True:
            frame = await self._recv()
            kind = frame["type"]
            if kind == "error":
                error = frame["error"]
                if start is None:  # refused before it began: nothing follows
                    if error.get("code") in RETRY_CODES:
                        raise _Retry(error["message"], _retry_after(error["message"]))
                    raise TurnFailed(error["message"])
                failure = error["message"]  # one answer failed; `done` still follows
            elif kind == "start":
                start = frame
                answers = {label: Answer(label) for label in frame["answers"]}
            elif kind == "token":
                answers[frame["answer"]].text += frame["text"]
            elif kind == "end":
                answers[frame["answer"]].message_id = frame["message_id"]
            elif kind == "done":
                if failure is not None:
                    raise TurnFailed(failure)
                return TurnResult(start["conversation_id"], start["message_id"], answers,
                                  frame["comparison_id"])

    async def _recv(self) -> dict:
        try:
            raw = await asyncio.wait_for(self.ws.recv(), self.timeout_s)
        except TimeoutError:
            raise TurnFailed(f"no answer from the server in {self.timeout_s:g} s") from None
        return json.loads(raw)

    async def _wait(self, seconds: float) -> None:
        self.counters.retries += 1
        await asyncio.sleep(min(MAX_WAIT_S, seconds) * (1 + 0.1 * self.rng.random()))


class _Retry(Exception):
    def __init__(self, message: str, after: float) -> None:
        super().__init__(message)
        self.after = after


def _retry_after(text: str | None) -> float:
    """Seconds from a Retry-After header ("3") or an error message ("retry in 3 s")."""
    text = (text or "").strip()
    try:
        return float(text)
    except ValueError:
        found = re.search(r"retry in (\d+(?:\.\d+)?)", text)
        return float(found.group(1)) if found else DEFAULT_WAIT_S


def _message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
