"""Seeded sampling for Hugging Face's `generate` that never touches the process-wide RNG.

`generate(do_sample=True)` draws from torch's global generator, which a server in the same
process (`flywheel up`) samples from too: seeding it would make the server's draws
repeat, and the server's draws would make the trainer's evaluation irreproducible. Instead,
`SeededSampler` draws the next token itself from a generator it owns and leaves only that
token possible, so greedy decoding (`do_sample=False`) takes the draw.
"""

import torch
from torch import Tensor
from transformers import LogitsProcessor, LogitsProcessorList


class SeededSampler(LogitsProcessor):
    """scores [B, V] -> [B, V]: 0 at a token drawn from softmax(scores / temperature),
    −inf elsewhere."""

    def __init__(self, generator: torch.Generator, temperature: float):
        if temperature <= 0:
            raise ValueError("sampling needs a temperature > 0 (0 is greedy: no sampler)")
        self.generator, self.temperature = generator, temperature

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        token = torch.multinomial(probs, 1, generator=self.generator)
        return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)


def sampling_kwargs(temperature: float, *, seed: int, device: torch.device) -> dict:
    """`generate` keyword arguments for answers sampled at `temperature` from `seed` (0:
    greedy)."""
    if temperature <= 0:
        return {"do_sample": False}
    generator = torch.Generator(device).manual_seed(seed)
    return {"do_sample": False,
            "logits_processor": LogitsProcessorList([SeededSampler(generator, temperature)])}
