"""Sequences of prompt and answer tokens for training: chat encoding, padded batches, the
answers' log-probs in one forward pass, and sampling with a KV cache. Shared by SFT, DPO and
online DPO; PPO's sampler is the same loop with a value head.

A batch is laid out as `[left padding | prompt | answer | right padding]`, so that every
answer starts at the same column P. One forward pass then gives the log-probs of all answer
tokens, and the output layer (a vocabulary wide, the costliest part of a small model) runs
only on the positions that predict a real answer token: not over prompts, not over padding.
Every random draw comes from a generator the caller owns, never from the process-wide RNG.
"""

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from peft import PeftModel
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from flywheel import generation
from flywheel.generation import chat_ids, inverse_cdf, left_padded
from trainer.rlhf.ppo_math import logprobs_from_logits

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
RewardFn = Callable[[list[Messages], list[str]], Tensor]
"""(prompts as chat message lists, decoded answers) -> a score per answer, [B]."""


@dataclass
class Batch:
    """Left-padded prompts followed by right-padded answers."""

    sequences: Tensor  # [B, P + T] token ids
    attention: Tensor  # [B, P + T] 1 on real tokens
    prompt_len: int  # P: where every answer starts
    mask: Tensor  # [B, T] 1.0 on the answers' tokens

    @property
    def answers(self) -> Tensor:
        """[B, T] the answer tokens."""
        return self.sequences[:, self.prompt_len:]

    def __getitem__(self, rows) -> "Batch":
        return Batch(self.sequences[rows], self.attention[rows], self.prompt_len, self.mask[rows])


@dataclass
class Rollout:
    """Sampled answers (`batch.mask` ends each at its first EOS) and, per answer token, its
    log-prob at the sampling temperature, the entropy it was drawn from, and the value
    head's estimate (None without a value head). All [B, T]."""

    batch: Batch
    logprobs: Tensor
    entropy: Tensor
    values: Tensor | None


# -- encoding and batching --------------------------------------------------------------


def prompt_batches(count: int, batch_size: int, generator: torch.Generator
                   ) -> Iterator[list[int]]:
    """Batches of prompt indices without end: shuffles of all prompts, one after another."""
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending += torch.randperm(count, generator=generator).tolist()
        yield pending[:batch_size]
        pending = pending[batch_size:]


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: Messages, max_tokens: int
                  ) -> list[int]:
    """The chat-formatted prompt, ready for the answer; truncated from the left."""
    return chat_ids(tokenizer, messages, max_tokens=max_tokens)


def encode_exchange(tokenizer: PreTrainedTokenizerBase, messages: Messages, answer: str,
                    eos: Tensor) -> tuple[list[int], list[int]]:
    """(prompt ids, answer ids): the answer's tokens as the chat template renders them after
    the prompt, through the first EOS (what the model should learn to end with; the template's
    text after it, a newline say, is never sampled). Where the template renders the prompt
    differently alone, the answer starts where the two renderings part (as TRL does)."""
    prompt = chat_ids(tokenizer, messages)
    full = chat_ids(tokenizer, messages + [{"role": "assistant", "content": answer}],
                    add_generation_prompt=False)
    start = 0
    while start < min(len(prompt), len(full)) and prompt[start] == full[start]:
        start += 1
    answer_ids, ends = full[start:], set(eos.tolist())
    end = next((i + 1 for i, token in enumerate(answer_ids) if token in ends), len(answer_ids))
    return full[:start], answer_ids[:end]


def fit(prompt: list[int], answers: list[list[int]], max_length: int
        ) -> tuple[list[int], list[list[int]]]:
    """Cut a prompt and its answers so that the prompt and the longest answer fit in
    `max_length` tokens: the prompt loses its beginning, keeping at least half the budget
    (or all of itself when shorter); the answers lose their ends."""
    longest = max(map(len, answers))
    kept = max(max_length - longest, min(len(prompt), max_length // 2), 1)
    prompt = prompt[-kept:]
    return prompt, [answer[:max_length - len(prompt)] for answer in answers]


def eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> Tensor:
    """Every token that ends an answer (flywheel.generation.eos_ids), as a tensor."""
    return torch.tensor(generation.eos_ids(model, tokenizer), device=model.device)


def make_batch(prompts: list[list[int]], answers: list[list[int]], pad_id: int,
               device: torch.device) -> Batch:
    """Pad prompts on the left and answers on the right (the module's layout)."""
    width = max(map(len, prompts))
    length = max(1, max(map(len, answers)))
    rows, attention, mask = [], [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        left, right = width - len(prompt), length - len(answer)
        rows.append([pad_id] * left + prompt + answer + [pad_id] * right)
        attention.append([0] * left + [1] * (len(prompt) + len(answer)) + [0] * right)
        mask.append([1.0] * len(answer) + [0.0] * right)
    return Batch(torch.tensor(rows, device=device), torch.tensor(attention, device=device),
                 width, torch.tensor(mask, device=device))


# -- forward passes ---------------------------------------------------------------------


def answer_logprobs(model: nn.Module, batch: Batch, temperature: float = 1.0) -> Tensor:
    """log π(token) of every answer token at `temperature`, [B, T] (0 on padding).

    The backbone runs over the whole batch; the output layer only on the hidden states that
    predict real answer tokens (module doc). A model whose logits are scaled or capped after
    that layer (Gemma 2, say) takes its own forward pass, over every answer position."""
    lm = model.get_base_model() if isinstance(model, PeftModel) else model
    positions = (batch.attention.cumsum(1) - 1).clamp(min=0)
    inputs = dict(input_ids=batch.sequences, attention_mask=batch.attention,
                  position_ids=positions, use_cache=False)
    keep = batch.mask.bool()
    if any(getattr(lm.config, name, None) is not None for name in _LOGIT_TRANSFORMS):
        logits = model(**inputs, logits_to_keep=batch.mask.shape[1] + 1).logits[:, :-1][keep]
    else:
        hidden = getattr(lm, lm.base_model_prefix)(**inputs).last_hidden_state
        logits = lm.get_output_embeddings()(hidden[:, batch.prompt_len - 1:-1][keep])
    if temperature != 1.0:
        logits = logits / temperature
    logprobs = torch.zeros(batch.mask.shape, device=logits.device)
    logprobs[keep] = logprobs_from_logits(logits, batch.answers[keep])
    return logprobs


# Config fields of models whose logits are transformed after the output layer.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling",
                     "output_multiplier", "lm_head_multiplier")


def sample(model: nn.Module, prompts: list[list[int]], *, eos: Tensor, pad_id: int,
           max_new_tokens: int, temperature: float, generator: torch.Generator,
           value_head: nn.Module | None = None) -> Rollout:
    """Sample an answer to each prompt with a KV cache, by inverse CDF (one random number per
    answer and token, from `generator`: on CPU far cheaper than `torch.multinomial` over a
    large vocabulary, and the process-wide RNG is never touched)."""
    device = next(model.parameters()).device
    width = max(map(len, prompts))
    inputs, attention, positions = left_padded(prompts, pad_id, device)
    prompt_tokens, past = inputs, None
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    tokens, logprobs, entropies, values = [], [], [], []
    for _ in range(max_new_tokens):
        out = model(input_ids=inputs, attention_mask=attention, position_ids=positions,
                    past_key_values=past, use_cache=True, logits_to_keep=1,
                    output_hidden_states=value_head is not None)
        past = out.past_key_values
        token, logprob, entropy = draw(out.logits[:, -1].float(), temperature, generator)
        token = torch.where(done, pad_id, token)
        tokens.append(token)
        logprobs.append(logprob)
        entropies.append(entropy)
        if value_head is not None:
            values.append(value_head(out.hidden_states[-1][:, -1]))
        done |= torch.isin(token, eos)
        if done.all():
            break
        inputs = token[:, None]
        attention = torch.cat([attention, torch.ones_like(inputs)], dim=1)
        positions = positions[:, -1:] + 1
    answers = torch.stack(tokens, dim=1)
    mask = response_mask(answers, eos)
    batch = Batch(torch.cat([prompt_tokens, answers], dim=1),
                  torch.cat([attention[:, :width], mask.long()], dim=1), width, mask)
    return Rollout(batch, torch.stack(logprobs, 1), torch.stack(entropies, 1),
                   torch.stack(values, 1) if value_head is not None else None)


def draw(logits: Tensor, temperature: float, generator: torch.Generator | None = None
         ) -> tuple[Tensor, Tensor, Tensor]:
    """One token per row from softmax(logits / temperature) by inverse CDF, with its log-prob
    and the row's entropy: [B, V] -> three [B], in as few passes over V as it takes."""
    if temperature != 1.0:
        logits = logits / temperature
    shifted = logits - logits.amax(-1, keepdim=True)
    weights = shifted.exp()
    total = weights.sum(-1)
    token = inverse_cdf(weights, torch.rand(len(logits), device=logits.device,
                                             generator=generator))
    log_total = total.log()
    logprob = shifted.gather(1, token[:, None]).squeeze(1) - log_total
    entropy = log_total - (weights * shifted).sum(-1) / total
    return token, logprob, entropy


def response_mask(responses: Tensor, eos: Tensor) -> Tensor:
    """1.0 on each answer's tokens up to and including its first EOS."""
    is_eos = torch.isin(responses, eos).int()
    return ((is_eos.cumsum(1) - is_eos) == 0).float()


def decode(tokenizer: PreTrainedTokenizerBase, batch: Batch, eos: Tensor) -> list[str]:
    """The answers' text, without EOS and padding."""
    keep = batch.mask.bool() & ~torch.isin(batch.answers, eos)
    return [tokenizer.decode(row[k].tolist(), skip_special_tokens=True)
            for row, k in zip(batch.answers, keep, strict=True)]


class KLCap:
    """A hard cap on the policy's mean per-answer KL to the reference: it keeps a copy of
    the last trainable weights within the cap, and puts them back when a step's policy
    goes over (the run then stops at its last good step)."""

    def __init__(self, params: list[nn.Parameter], cap: float):
        self.params, self.cap = params, cap
        self.kept = [p.detach().clone() for p in params]

    def went_over(self, kl: float, step: int) -> bool:
        """True, with the last weights within the cap restored, when `kl` is over it;
        otherwise the current weights become the ones to go back to."""
        if kl > self.cap:
            logger.warning("KL %.2f is over the cap %.2f at step %d: stopping", kl, self.cap,
                           step)
            with torch.no_grad():
                for param, value in zip(self.params, self.kept, strict=True):
                    param.copy_(value)
            return True
        self.kept = [p.detach().clone() for p in self.params]
        return False
