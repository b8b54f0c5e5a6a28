"""Sampling and streaming detokenisation as small pure functions (no model, no threads)."""

from dataclasses import dataclass, field

import torch

from flywheel.generation import sample_logits

# As OpenAI: up to 4 stop strings; each short (the stream holds back what may begin one).
MAX_STOPS, MAX_STOP_CHARS = 4, 100


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of the sampler (OpenAI's names and meanings)."""

    max_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    # vLLM's extensions: no end of text or stop string before min_tokens; no end of
    # text at all (benchmarks)
    min_tokens: int = 0
    ignore_eos: bool = False

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError("min_tokens must be between 0 and max_tokens")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if len(self.stop) > MAX_STOPS or any(not 0 < len(s) <= MAX_STOP_CHARS
                                             for s in self.stop):
            raise ValueError(f"stop takes up to {MAX_STOPS} non-empty strings of at most "
                             f"{MAX_STOP_CHARS} characters")
        if self.seed is not None and not -(2**31) <= self.seed < 2**31:
            # the feedback store keeps each answer's seed in a 32-bit INTEGER column
            raise ValueError("seed must be a signed 32-bit integer")


def top_p_filter(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Mask everything outside each row's nucleus with -inf.

    logits: [B, V]; top_p: [B] in (0, 1]. Returns [B, V]. The most likely token always
    survives, so a row never ends up empty.
    """
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # [B, V] probability of better tokens
    drop_sorted = mass_before >= top_p.unsqueeze(-1)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def sample_next_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor,
                       uniform: torch.Tensor) -> torch.Tensor:
    """One token per row, all rows at once: greedy where temperature is 0, else nucleus
    sampling by inverse CDF at the row's uniform draw.

    logits: [B, V] (last position); temperature, top_p, uniform: [B] (uniform in [0, 1),
    one draw per row from the row's own random stream). Returns [B] token ids.
    """
    greedy = temperature == 0
    any_greedy = bool(greedy.any())
    scaled = logits.float()
    if any_greedy or bool((temperature != 1).any()):
        scaled = scaled / temperature.masked_fill(greedy, 1.0).unsqueeze(-1)
    if bool((top_p < 1).any()):
        scaled = top_p_filter(scaled, top_p)
    tokens = sample_logits(scaled, uniform)
    return torch.where(greedy, logits.argmax(dim=-1), tokens) if any_greedy else tokens


@dataclass
class TextStream:
    """Turns a growing list of token ids into text deltas, holding back what may still
    change: an incomplete multi-byte character, or a tail that could begin a stop string."""

    stop: tuple[str, ...] = ()
    sent: str = ""
    stopped: bool = field(default=False)

    def update(self, text: str, *, stops: bool = True) -> str:
        """`text` is the decode of every token so far; returns the new part safe to send.
        Sets `stopped` (and cuts the text) once a stop string appears in what is new.
        `stops=False` (before min_tokens, as vLLM) lets stop strings pass as text."""
        active = self.stop if stops else ()
        for stop in active:
            at = text.find(stop, max(0, len(self.sent) - len(stop)))
            if at != -1:
                self.stopped = True
                return self._advance(text[:at])
        if text.endswith("\ufffd"):
            return ""
        hold = max((_overlap(text, stop) for stop in active), default=0)
        return self._advance(text[: len(text) - hold])

    def finish(self, text: str) -> str:
        """The final delta once generation ends (nothing is held back any more)."""
        return "" if self.stopped else self._advance(text.rstrip("\ufffd"))

    def _advance(self, text: str) -> str:
        # The concatenated deltas are what the user saw, and what gets stored.
        if len(text) <= len(self.sent):
            return ""
        delta = text[len(self.sent):]
        self.sent += delta
        return delta


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a proper start of `stop`."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
