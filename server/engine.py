"""Step-level batched generation for many concurrent conversations on one model.

One background thread owns the model. Each step it (1) admits waiting requests — they
are prefilled together and join the running batch at once, never waiting for running
requests to finish — then (2) runs one decode step for every active sequence in a
single forward pass. Each request names its own LoRA adapter (or the base model); peft
applies the right adapter to each row of the shared batch (`adapter_names`).

The batch's KV cache is left-padded: every row has the same cache length, real tokens
are right-aligned, and the attention mask hides the padding. Rows leave the batch as
soon as they finish or their client goes away, and padding columns that no row needs
any more are cut off.

transformers' own continuous batching (`generate_batch`, paged attention) has no notion
of per-request adapters, which is why this engine exists.
"""

import asyncio
import logging
import queue
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from peft import PeftModel
from transformers import DynamicCache

from flywheel.generation import BASE_ADAPTER, eos_ids, left_padded
from server.sampling import SamplingParams, TextStream, sample_next_tokens

log = logging.getLogger(__name__)


@dataclass
class Token:
    text: str


@dataclass
class Finished:
    reason: str  # "stop" (EOS or a stop string) or "length"
    text: str  # the whole answer, exactly the concatenated Token texts
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Failed:
    error: str


Event = Token | Finished | Failed


@dataclass(eq=False)
class GenerationRequest:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None  # a loaded adapter's name, or None for the base model
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    cancelled: bool = False
    submitted_at: float = field(default_factory=time.perf_counter)

    def send(self, event: Event) -> None:
        """Called from the engine thread: hand an event to the request's event loop."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


@dataclass(eq=False)
class _Sequence:
    """Engine-thread state of one admitted request. Its text is decoded incrementally:
    `generated[prefix:read]` is the window already turned into `text`, decoded again with
    the tokens after it to find the new text (a token's text can depend on the one before:
    a leading space, a multi-byte character split across tokens)."""

    request: GenerationRequest
    stream: TextStream
    rng: random.Random  # the request's own uniform draws (seeded, or from the OS)
    generated: list[int] = field(default_factory=list)
    text: str = ""  # the decode of generated[:read]
    prefix: int = 0
    read: int = 0
    done: bool = False


class GenerationEngine:
    def __init__(self, model, tokenizer, *, max_batch: int = 32, max_context: int = 2048):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_context = max_context
        self.device = next(model.parameters()).device
        self.eos_ids = set(eos_ids(model, tokenizer))
        self.tokens_generated = 0
        self._pending: queue.SimpleQueue[GenerationRequest] = queue.SimpleQueue()
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._reset_batch()

    # -- the asyncio side ----------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="generation", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    @property
    def active(self) -> int:
        return len(self._active)

    @property
    def queued(self) -> int:
        return self._pending.qsize()

    async def generate(self, prompt_ids: list[int], params: SamplingParams,
                       adapter: str | None = None) -> AsyncIterator[Event]:
        """Stream the answer to `prompt_ids`: Token events, then Finished (or Failed).
        Leaving the loop early (a client that went away) frees the slot at once.

        Tokens that arrived while this stream waited for its turn on the event loop come
        as one Token: a busy server sends fewer, longer chunks (each chunk costs the server
        and the client about as much as a one-token chunk), and never waits to merge."""
        request = GenerationRequest(prompt_ids, params, adapter, asyncio.get_running_loop())
        self._pending.put(request)
        self._wake.set()
        try:
            while True:
                ready = [await request.events.get()]
                while not request.events.empty():
                    ready.append(request.events.get_nowait())
                for event in _merge_tokens(ready):
                    yield event
                    if not isinstance(event, Token):
                        return
        finally:
            request.cancelled = True
            self._wake.set()

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the engine thread between two steps (e.g. loading an adapter),
        so the model never changes under a running forward pass."""
        future: Future = Future()
        self._calls.put((fn, future))
        self._wake.set()
        return await asyncio.wrap_future(future)

    # -- the engine thread -----------------------------------------------------------------

    def _run(self) -> None:
        with torch.inference_mode():
            while not self._stopping:
                self._run_calls()
                try:
                    self._admit()
                    if not self._active:
                        self._wake.wait(timeout=0.5)
                        self._wake.clear()
                        continue
                    self._decode_step()
                except Exception as e:  # a broken step must not kill the server
                    log.exception("generation step failed; failing the %d active requests",
                                  len(self._active))
                    for seq in self._active:
                        seq.request.send(Failed(f"generation failed: {e}"))
                    self._reset_batch()

    def _run_calls(self) -> None:
        while not self._calls.empty():
            fn, future = self._calls.get()
            # Rows cancelled before this call was queued leave the batch first: the call
            # may unload the adapter such a row names (its pin was released on cancel).
            self._retire()
            try:
                future.set_result(fn())
            except Exception as e:
                future.set_exception(e)

    def _reset_batch(self) -> None:
        self._active: list[_Sequence] = []
        self._temperature = self._top_p = torch.zeros(0, device=self.device)
        self._cache: DynamicCache | None = None
        self._mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)

    def _admit(self) -> None:
        """Prefill waiting requests together and add them to the running batch."""
        new: list[GenerationRequest] = []
        while len(self._active) + len(new) < self.max_batch and not self._pending.empty():
            request = self._pending.get()
            if request.cancelled:
                continue
            if len(request.prompt_ids) + 1 > self.max_context:
                request.send(Failed(f"prompt of {len(request.prompt_ids)} tokens does not fit "
                                    f"the model's window of {self.max_context}"))
                continue
            new.append(request)
        if not new:
            return
        try:
            seqs = [_Sequence(r, TextStream(stop=r.params.stop), random.Random(r.params.seed))
                    for r in new]
            logits, cache, mask = self._prefill(new)
        except Exception as e:
            log.exception("prefill failed for %d requests", len(new))
            for request in new:
                request.send(Failed(f"generation failed: {e}"))
            return
        self._join(seqs, cache, mask)
        self._sample_and_emit(seqs, logits, *_sampling_tensors(seqs, self.device))

    def _prefill(self, requests: list[GenerationRequest]):
        ids, mask, positions = left_padded([r.prompt_ids for r in requests],
                                           self.tokenizer.pad_token_id or 0, self.device)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                         use_cache=True,
                         **self._adapter_kwargs(requests), logits_to_keep=1)
        return out.logits[:, -1, :], out.past_key_values, mask

    def _join(self, seqs: list[_Sequence], cache: DynamicCache, mask: torch.Tensor) -> None:
        if self._cache is None:
            self._cache, self._mask = cache, mask
        else:
            length = max(self._mask.shape[1], mask.shape[1])
            for old, new in zip(self._cache.layers, cache.layers, strict=True):
                old.keys = torch.cat([_left_pad(old.keys, length), _left_pad(new.keys, length)])
                old.values = torch.cat([_left_pad(old.values, length),
                                        _left_pad(new.values, length)])
            self._mask = torch.cat([_left_pad(self._mask, length, dim=1),
                                    _left_pad(mask, length, dim=1)])
        self._active.extend(seqs)
        self._temperature, self._top_p = _sampling_tensors(self._active, self.device)

    def _decode_step(self) -> None:
        inputs = torch.tensor([[s.generated[-1]] for s in self._active], device=self.device)
        positions = self._mask.sum(-1, keepdim=True)
        self._mask = F.pad(self._mask, (0, 1), value=1)
        out = self.model(input_ids=inputs, attention_mask=self._mask, position_ids=positions,
                         past_key_values=self._cache, use_cache=True,
                         **self._adapter_kwargs([s.request for s in self._active]))
        self._cache = out.past_key_values
        self._sample_and_emit(self._active, out.logits[:, -1, :], self._temperature,
                              self._top_p)

    def _sample_and_emit(self, seqs: list[_Sequence], logits: torch.Tensor,
                         temperature: torch.Tensor, top_p: torch.Tensor) -> None:
        """Sample every row in one call, decode every row's new text in one call, and hand
        the step's events to the event loops in one call each."""
        uniform = torch.tensor([s.rng.random() for s in seqs], device=logits.device)
        self._forbid_eos(seqs, logits)
        tokens = sample_next_tokens(logits, temperature, top_p, uniform).tolist()
        outbox: list[tuple[GenerationRequest, Event]] = []
        growing = []
        for seq, token in zip(seqs, tokens, strict=True):
            if token in self.eos_ids:
                self._finish(seq, "stop", outbox)
            else:
                seq.generated.append(token)
                growing.append(seq)
        self.tokens_generated += len(growing)
        for seq, text in zip(growing, self._new_text(growing), strict=True):
            self._emit(seq, text, outbox)
        _deliver(outbox)
        self._retire()

    def _forbid_eos(self, seqs: list[_Sequence], logits: torch.Tensor) -> None:
        """Rows still short of min_tokens, or asking to ignore EOS, cannot draw an end of
        text: its logits become -inf (in place; logits: [B, V]). (Stop strings wait for
        min_tokens in `_emit`.)"""
        rows = [i for i, s in enumerate(seqs) if s.request.params.ignore_eos
                or len(s.generated) < s.request.params.min_tokens]
        if rows and self.eos_ids:  # a model without an EOS token has nothing to forbid
            eos = torch.tensor(sorted(self.eos_ids), device=logits.device)
            logits[torch.tensor(rows, device=logits.device).unsqueeze(-1), eos] = float("-inf")

    def _new_text(self, seqs: list[_Sequence]) -> list[str]:
        """Each sequence's text once its new tokens are decoded (module doc of _Sequence),
        all in one batch decode; a sequence whose last tokens end inside a multi-byte
        character keeps its text until the character is whole."""
        if not seqs:
            return []
        windows = [s.generated[s.prefix:s.read] for s in seqs]
        windows += [s.generated[s.prefix:] for s in seqs]
        decoded = self.tokenizer.batch_decode(windows, skip_special_tokens=True)
        texts = []
        for seq, before, after in zip(seqs, decoded[:len(seqs)], decoded[len(seqs):],
                                      strict=True):
            if len(after) > len(before) and not after.endswith("\ufffd"):
                seq.text += after[len(before):]
                seq.prefix, seq.read = seq.read, len(seq.generated)
            texts.append(seq.text)
        return texts

    def _emit(self, seq: _Sequence, text: str, outbox: list) -> None:
        request = seq.request
        delta = seq.stream.update(text, stops=len(seq.generated) >= request.params.min_tokens)
        if delta:
            outbox.append((request, Token(delta)))
        if seq.stream.stopped:
            self._finish(seq, "stop", outbox)
        elif (len(seq.generated) >= request.params.max_tokens
              or len(request.prompt_ids) + len(seq.generated) >= self.max_context):
            self._finish(seq, "length", outbox)

    def _finish(self, seq: _Sequence, reason: str, outbox: list) -> None:
        text = seq.text
        if seq.read < len(seq.generated):  # tokens held back, e.g. half a character
            before, after = self.tokenizer.batch_decode(
                [seq.generated[seq.prefix:seq.read], seq.generated[seq.prefix:]],
                skip_special_tokens=True)
            text += after[len(before):]
        tail = seq.stream.finish(text)
        if tail:
            outbox.append((seq.request, Token(tail)))
        outbox.append((seq.request, Finished(reason, seq.stream.sent,
                                             len(seq.request.prompt_ids), len(seq.generated))))
        seq.done = True

    def _retire(self) -> None:
        """Drop finished and cancelled rows, and padding columns no row needs."""
        keep = [i for i, s in enumerate(self._active) if not (s.done or s.request.cancelled)]
        if len(keep) == len(self._active):
            return
        if not keep:
            return self._reset_batch()
        index = torch.tensor(keep, device=self.device)
        self._active = [self._active[i] for i in keep]
        self._temperature, self._top_p = self._temperature[index], self._top_p[index]
        self._mask = self._mask[index]
        start = int((self._mask.sum(0) > 0).nonzero()[0])
        self._mask = self._mask[:, start:]
        for layer in self._cache.layers:
            layer.keys = layer.keys[index, :, start:]
            layer.values = layer.values[index, :, start:]

    def _adapter_kwargs(self, requests: list[GenerationRequest]) -> dict:
        if not isinstance(self.model, PeftModel):
            return {}
        return {"adapter_names": [r.adapter or BASE_ADAPTER for r in requests]}


def _sampling_tensors(seqs: list[_Sequence], device: torch.device
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows' temperatures and top_p values, [B] each."""
    params = [s.request.params for s in seqs]
    return (torch.tensor([p.temperature for p in params], device=device),
            torch.tensor([p.top_p for p in params], device=device))


def _deliver(outbox: list[tuple[GenerationRequest, Event]]) -> None:
    """Hand a step's events to their event loops: one wake-up per loop and step, not
    one per token (the loops' threads would otherwise fight the engine for the GIL)."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = {}
    for request, event in outbox:
        by_loop.setdefault(request.loop, []).append((request.events, event))
    for loop, items in by_loop.items():
        loop.call_soon_threadsafe(_put_all, items)


def _put_all(items: list[tuple[asyncio.Queue, Event]]) -> None:
    for events, event in items:
        events.put_nowait(event)


def _merge_tokens(events: list[Event]) -> list[Event]:
    """The events in order, with each run of Tokens joined into one."""
    merged: list[Event] = []
    for event in events:
        if isinstance(event, Token) and merged and isinstance(merged[-1], Token):
            merged[-1] = Token(merged[-1].text + event.text)
        else:
            merged.append(event)
    return merged


def _left_pad(t: torch.Tensor, length: int, dim: int = -2) -> torch.Tensor:
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
