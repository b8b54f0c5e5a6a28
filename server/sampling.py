"""Sampling and streaming detokenisation as small pure functions (no model, no threads)."""

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of the sampler (OpenAI's names and meanings)."""

    max_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError("temperature must be between 0 and 2")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError("top_p must be in (0, 1]")
        if len(self.stop) > 4 or any(not s for s in self.stop):
            raise ValueError("stop takes up to 4 non-empty strings")


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
                       generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row: greedy where temperature is 0, else nucleus sampling.

    logits: [B, V] (last position); temperature, top_p: [B]; generators: B seeded
    generators (or None for the global RNG). Returns [B] token ids.

    Sampling uses the exponential-race trick, argmax(p / E) with E ~ Exp(1), which draws
    from p exactly and is much cheaper than `torch.multinomial` over a large vocabulary.
    """
    greedy = logits.argmax(dim=-1)
    rows = (temperature > 0).nonzero().flatten()
    if rows.numel() == 0:
        return greedy
    scaled = logits[rows].float() / temperature[rows].unsqueeze(-1)
    if bool((top_p[rows] < 1).any()):
        scaled = top_p_filter(scaled, top_p[rows])
    probs = scaled.softmax(dim=-1)
    noise = torch.empty_like(probs)
    row_generators = [generators[row] for row in rows.tolist()]
    if all(g is None for g in row_generators):
        noise.exponential_()
    else:
        for i, generator in enumerate(row_generators):
            noise[i].exponential_(generator=generator)
    out = greedy.clone()
    out[rows] = (probs / noise).argmax(dim=-1)
    return out


@dataclass
class TextStream:
    """Turns a growing list of token ids into text deltas, holding back what may still
    change: an incomplete multi-byte character, or a tail that could begin a stop string."""

    stop: tuple[str, ...] = ()
    sent: str = ""
    stopped: bool = field(default=False)

    def update(self, text: str) -> str:
        """`text` is the decode of every token so far; returns the new part safe to send.
        Sets `stopped` (and cuts the text) once a stop string appears."""
        for stop in self.stop:
            at = text.find(stop, max(0, len(self.sent) - len(stop)))
            if at != -1:
                self.stopped = True
                return self._advance(text[:at])
        if text.endswith("\ufffd"):
            return ""
        hold = max((_overlap(text, stop) for stop in self.stop), default=0)
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
