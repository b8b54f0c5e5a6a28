"""Helpers for the hot-swap tests and bench/hotswap.py: LoRA adapters for the demo model
(random lora_B, so each version answers differently), saved with the AdapterStore and
registered; broken adapters (a flipped byte, the wrong shapes); a streaming OpenAI client
that notes when each answer started, began and ended; answers' adapter tags."""

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import torch
from peft import PeftModel, get_peft_model
from sqlalchemy import Engine
from sqlmodel import select
from transformers import LlamaConfig, LlamaForCausalLM

from feedback.db import session_scope
from feedback.models import Message
from feedback.queries import adapters as registry
from flywheel.adapter_store import WEIGHTS, AdapterStore, StoredAdapter
from flywheel.model_loading import load_model, lora_config

ACTOR = "hotswap-test"


class AdapterMaker:
    """Makes adapters for the demo model: one LoRA-wrapped copy of it, whose lora_B
    weights are redrawn (seeded) for every version."""

    def __init__(self, models_dir: Path, *, scale: float = 0.3):
        base = load_model("demo", models_dir=models_dir).model
        self.model: PeftModel = get_peft_model(base, lora_config(base, r=4, dropout=0.0))
        self.scale = scale

    def make(self, store: AdapterStore, version: str, *, seed: int) -> StoredAdapter:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * self.scale)
        return store.save(self.model, version, base_model="demo")


def make_mismatched(store: AdapterStore, version: str) -> StoredAdapter:
    """An adapter made on a Llama of another width: its tensors do not fit the demo model."""
    config = LlamaConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, intermediate_size=64)
    base = LlamaForCausalLM(config)
    model = get_peft_model(base, lora_config(base, r=4, dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.3)
    return store.save(model, version, base_model="demo")


def corrupt(stored: StoredAdapter) -> None:
    """Flip one byte in the middle of the weights, as a bad disk or a partial copy would."""
    path = stored.path / WEIGHTS
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def register(db: Engine, stored: StoredAdapter, *, status: str = "approved",
             parent: str | None = None) -> None:
    """Register a stored adapter as a candidate, then move it on to `status`
    ("candidate", "approved" or "live")."""
    with session_scope(db) as session:
        registry.register_adapter(session, version=stored.version, base_model="demo",
                                  path=str(stored.path), sha256=stored.sha256,
                                  parent_version=parent, status="candidate")
        for step in {"candidate": [], "approved": ["approved"],
                     "live": ["approved", "live"]}[status]:
            registry.set_adapter_status(session, version=stored.version, status=step,
                                        actor=ACTOR)


def adapter_tags(db: Engine, message_ids: list[int]) -> dict[int, str | None]:
    """message id -> the adapter version its answer was recorded with."""
    with session_scope(db) as session:
        rows = session.exec(select(Message.id, Message.adapter_version)
                            .where(Message.id.in_(message_ids)))
        return dict(rows.all())


@dataclass
class Streamed:
    """One streamed chat completion, timed on the client's monotonic clock."""

    started: float  # the request was sent (the server picks its adapter after this …)
    began: float | None = None  # … and before the response began
    first_token: float | None = None
    finished: float | None = None
    message_id: int | None = None
    text: str = ""
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.started


async def stream_chat(client: httpx.AsyncClient, *, model: str = "flywheel",
                      prompt: str = "tell me about the sea", max_tokens: int = 8,
                      temperature: float = 1.0) -> Streamed:
    """POST /v1/chat/completions with stream=True and read it to `data: [DONE]`. Any HTTP
    error, error event, broken or unfinished stream is noted in `error`, never raised."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": temperature, "stream": True}
    out = Streamed(started=time.monotonic())
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            out.began = time.monotonic()
            if response.status_code != 200:
                out.error = f"HTTP {response.status_code}: {(await response.aread())[:300]!r}"
                return out
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    out.finished = time.monotonic()
                    break
                chunk = json.loads(line[len("data: "):])
                if "error" in chunk:
                    out.error = f"error event: {chunk['error']}"
                    return out
                for choice in chunk["choices"]:
                    if choice["delta"].get("content"):
                        out.first_token = out.first_token or time.monotonic()
                        out.text += choice["delta"]["content"]
                    out.message_id = choice.get("message_id") or out.message_id
    except (httpx.HTTPError, json.JSONDecodeError, KeyError) as e:
        out.error = f"{type(e).__name__}: {e}"
        return out
    if out.finished is None or out.message_id is None:
        out.error = "the stream ended without a message id and [DONE]"
    return out


def live_between(switches: list[tuple[float, float, str]], initial: str, start: float,
                 end: float) -> set[str]:
    """The versions that may have been live at some moment of [start, end]: a switch
    happened at an unknown moment between its action being sent and answered."""
    live = {initial} if not switches or start <= switches[0][1] else set()
    for i, (sent, _, version) in enumerate(switches):
        until = switches[i + 1][1] if i + 1 < len(switches) else float("inf")
        if sent <= end and start <= until:
            live.add(version)
    return live
