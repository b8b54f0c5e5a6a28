"""What the server and the trainer share to turn chats into token ids and logits into answers:
chat encoding (truncated from the left), the set of tokens that end an answer, left-padded
batches, the inverse-CDF draw, and the names models and adapters go by.

Pure functions of their arguments: no model is run here, no random generator is drawn from.
"""

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

Messages = list[dict[str, str]]

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch


def adapter_name(version: str) -> str:
    """The name a stored adapter version takes inside a model (`policy-v1.2` ->
    `policy-v1_2`): torch module names cannot hold dots."""
    return version.replace(".", "_")


def base_model_name(model: str) -> str:
    """The base model's API name: `demo`, a hub id, or a local directory's name."""
    path = Path(model)
    return path.name if path.exists() else model


def chat_ids(tokenizer: PreTrainedTokenizerBase, messages: Messages, *,
             add_generation_prompt: bool = True, max_tokens: int | None = None) -> list[int]:
    """The chat template's rendering of `messages` as token ids (the template writes any
    special tokens itself), ready for the answer unless `add_generation_prompt` is False.
    With `max_tokens`, only the last `max_tokens` ids are kept (truncated from the left)."""
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                         tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids if max_tokens is None else ids[max(0, len(ids) - max_tokens):]


def eos_ids(model, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Every token that ends an answer, sorted: the model's generation config's EOS ids
    (one or a list) and the tokenizer's."""
    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return sorted(i for i in ids if i is not None)


def until_eos(ids: Iterable[int], eos: Iterable[int]) -> list[int]:
    """The tokens before the first end-of-answer token (all of them when there is none)."""
    ends, kept = set(eos), []
    for token in ids:
        if token in ends:
            break
        kept.append(token)
    return kept


def left_padded(rows: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
                ) -> tuple[Tensor, Tensor, Tensor]:
    """Rows of different lengths as one batch, right-aligned: (ids, attention, positions),
    each [B, W] with W the longest row. Padding is `pad_id` with attention 0; positions
    count real tokens from 0 (padding gets 0)."""
    width = max(map(len, rows))
    ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in rows], device=device)
    attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows],
                             device=device)
    return ids, attention, (attention.cumsum(-1) - 1).clamp(min=0)


CDF_BLOCK = 256  # tokens per block of the two-level inverse CDF


def inverse_cdf(weights: Tensor, uniform: Tensor, block: int = CDF_BLOCK) -> Tensor:
    """One token per row by inverting its (unnormalised) CDF at a uniform draw.

    weights: [B, V] non-negative, each row's total > 0; uniform: [B] in [0, 1). Returns [B]
    ids. The pick is the first token whose running sum of weights exceeds
    `uniform * total`, so a token of weight zero (a flat step of the CDF) is never drawn.
    One random number per row, where `torch.multinomial` draws a vocabulary's worth.

    In two levels, the same pick as one running sum over V: the running sum of the sums of
    blocks of `block` tokens finds the block the draw lands in, and a running sum inside
    that block finds the token. A running sum is sequential; over 16 rows of a 30k
    vocabulary it took a third of a decode step, the block sums are a plain reduction.
    """
    rows, vocab = weights.shape
    whole = vocab - vocab % block
    sums = weights[:, :whole].reshape(rows, -1, block).sum(-1)
    if whole < vocab:
        sums = torch.cat([sums, weights[:, whole:].sum(-1, keepdim=True)], dim=1)
    ends = sums.cumsum(-1)  # [B, blocks]: the CDF at each block's last token
    target = uniform * ends[:, -1]
    # The first block whose end exceeds the target has a positive sum, so it holds a token
    # of positive weight past the target.
    chosen = torch.searchsorted(ends, target[:, None], right=True).clamp(max=ends.shape[1] - 1)
    before = (ends.gather(1, chosen) - sums.gather(1, chosen)).squeeze(1)
    index = chosen * block + torch.arange(block, device=weights.device)  # [B, block]
    inside = weights.gather(1, index.clamp(max=vocab - 1)) * (index < vocab)
    running = inside.cumsum(-1)
    # The target inside the block, kept below its total: sums in another order may round
    # it past the block's end, which would land on a zero weight at the end.
    offset = torch.minimum((target - before).clamp(min=0),
                           torch.nextafter(running[:, -1], torch.zeros_like(target)))
    step = torch.searchsorted(running, offset[:, None], right=True)
    return index.gather(1, step.clamp(max=block - 1)).squeeze(1)


def sample_logits(logits: Tensor, uniform: Tensor) -> Tensor:
    """One token per row from softmax(logits), by `inverse_cdf`.

    logits: [B, V] (−inf where a token is excluded; at least one finite per row);
    uniform: [B] in [0, 1). Returns [B] ids.
    """
    return inverse_cdf(logits.softmax(-1), uniform)
