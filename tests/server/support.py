"""Helpers for the server tests: a sharper demo model, settings, users with API keys, a real
uvicorn server in a thread, and websocket turns collected frame by frame."""

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import uvicorn
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from feedback.db import session_scope
from feedback.queries import users
from flywheel.api_keys import hash_api_key, new_api_key
from flywheel.model_loading import LoadedModel, load_model
from flywheel.settings import Settings
from server.app import create_app
from tests.conftest import PG_SERVER

SECRET = "test-secret-key-of-at-least-32-characters"


def load_demo(models_dir: Path, *, sharpen: float = 4.0) -> LoadedModel:
    """The demo model with its weights scaled up: the plain one answers ': : :' to every
    prompt, which would hide answers sent to the wrong stream; this one answers each
    prompt differently (still deterministic)."""
    loaded = load_model("demo", models_dir=models_dir)
    with torch.no_grad():
        for name, param in loaded.model.named_parameters():
            if "norm" not in name:
                param.mul_(sharpen)
    return loaded


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir, "secret_key": SECRET, "side_by_side_share": 0.0,
        "rate_limit_per_minute": 100_000, "max_new_tokens": 8,
    }
    values.update(overrides)
    return Settings(**values)


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    return list(tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                              tokenize=True, return_dict=False))


def greedy_reference(loaded: LoadedModel, prompt: str | list[dict], max_tokens: int) -> str:
    """What Hugging Face's own greedy `generate` answers (the engine must agree)."""
    return greedy_references(loaded, [prompt], max_tokens)[0]


def greedy_references(loaded: LoadedModel, prompts: list[str | list[dict]],
                      max_tokens: int) -> list[str]:
    """`greedy_reference` for many prompts in one left-padded `generate` call."""
    rows = [chat_ids(loaded.tokenizer, [{"role": "user", "content": p}]
                     if isinstance(p, str) else p) for p in prompts]
    width = max(len(r) for r in rows)
    pad = loaded.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=loaded.device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                        device=loaded.device)
    with torch.inference_mode():
        out = loaded.model.generate(input_ids=ids, attention_mask=mask, do_sample=False,
                                    max_new_tokens=max_tokens, pad_token_id=pad)
    return [loaded.tokenizer.decode(row[width:], skip_special_tokens=True) for row in out]


@contextlib.contextmanager
def fresh_pg_database(admin: Engine, server_url: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards."""
    name = f"flywheel_server_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.contextmanager
def app_on_database(request, demo: LoadedModel, data_dir: Path, **overrides: Any) -> Iterator:
    """The app on the database a module fixture parametrised with ["sqlite",
    "postgresql"] names in `request.param` (a fresh PostgreSQL database, dropped after)."""
    if request.param == "sqlite":
        yield create_app(make_settings(data_dir / "sqlite", **overrides), model=demo)
        return
    with fresh_pg_database(request.getfixturevalue("pg_server"), PG_SERVER) as url:
        yield create_app(make_settings(data_dir / "pg", db=url, **overrides), model=demo)


def add_user(db, *, role: str = "user", handle: str | None = None) -> tuple[int, str]:
    """A user with a fresh API key; returns (user id, key)."""
    key = new_api_key()
    with session_scope(db) as session:
        user = users.create_user(session, handle=handle or f"{role}-{key[-8:]}", role=role,
                                 api_key_hash=hash_api_key(key))
        return user.id, key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@contextlib.contextmanager
def db_session(app) -> Iterator[Session]:
    with session_scope(app.state.db) as session:
        yield session


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.005)


def block_engine(engine) -> threading.Event:
    """Hold the engine thread (as one long forward pass would) until the returned event is
    set: meanwhile requests wait in its queue."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(30)

    threading.Thread(target=asyncio.run, args=(engine.call(hold),), daemon=True).start()
    assert started.wait(10), "the engine thread did not take the call"
    return release


def assert_error(body: dict, status_type: str, code: str | None = None) -> None:
    """The one error shape: {"error": {"message", "type", "code"}}."""
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"message", "type", "code"}, body
    assert body["error"]["message"]
    assert body["error"]["type"] == status_type, body
    if code is not None:
        assert body["error"]["code"] == code, body


# -- websocket turns ------------------------------------------------------------------------


@dataclass
class Turn:
    """Every frame of one turn, sorted by kind."""

    frames: list[dict] = field(default_factory=list)

    def of(self, kind: str) -> list[dict]:
        return [f for f in self.frames if f["type"] == kind]

    @property
    def start(self) -> dict:
        return self.of("start")[0]

    @property
    def done(self) -> dict:
        return self.of("done")[0]

    @property
    def error(self) -> dict | None:
        errors = self.of("error")
        return errors[0]["error"] if errors else None

    def text(self, label: str = "a") -> str:
        return "".join(f["text"] for f in self.of("token") if f["answer"] == label)

    def end(self, label: str = "a") -> dict:
        return next(f for f in self.of("end") if f["answer"] == label)


def user_turn(content: str, **fields: Any) -> dict:
    return {"type": "user_turn", "content": content, **fields}


def finish_turn(receive: Callable[[], dict], turn: Turn | None = None) -> Turn:
    """Read frames until the turn is done, or fails with an error frame."""
    turn = turn or Turn()
    while True:
        frame = receive()
        turn.frames.append(frame)
        if frame["type"] in ("done", "error"):
            return turn


def ws_turn(ws, content: str, **fields: Any) -> Turn:
    """One turn over a starlette TestClient websocket."""
    ws.send_json(user_turn(content, **fields))
    return finish_turn(ws.receive_json)


async def async_turn(ws, content: str, **fields: Any) -> Turn:
    """One turn over a `websockets` client connection."""
    await ws.send(json.dumps(user_turn(content, **fields)))
    turn = Turn()
    while True:
        frame = json.loads(await ws.recv())
        turn.frames.append(frame)
        if frame["type"] in ("done", "error"):
            return turn


# -- a real server --------------------------------------------------------------------------


class LiveServer:
    """The app served by uvicorn on a free port of 127.0.0.1, in a background thread."""

    def __init__(self, app) -> None:
        self.app = app
        # Idle connections stay open as long as `flywheel serve` keeps them: with uvicorn's
        # 5 s (httpx's pool expiry too), a client may reuse one as the server closes it.
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                ws="websockets-sansio", lifespan="on",
                                timeout_keep_alive=Settings.model_fields["keep_alive_s"].default)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn")
        if not self.server.started:
            raise RuntimeError("uvicorn did not start")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/api/chat"
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
