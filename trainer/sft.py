"""Supervised fine-tuning on demonstrations (the classic recipe's stage 1): one readable
recipe, `train_sft`.

The adapter learns to write the users' rewrites: the loss is the negative log-likelihood of
the answer's tokens only (the prompt is context, never a target), each example weighted by its
user's annotator weight. Prompt and answer are rendered with the tokenizer's chat template,
exactly as PPO and the server render them, and the answer ends with its EOS so the model also
learns where to stop. Dropout stays off (the model stays in eval mode), as in PPO; every draw
(the batches' order) comes from a generator the run owns. The math is in
`trainer.rlhf.dpo_math`.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from peft import PeftModel
from transformers import PreTrainedTokenizerBase

from trainer.demonstrations import Demonstration
from trainer.rlhf.dpo_math import sft_loss
from trainer.rollout import answer_logprobs, encode_exchange, eos_ids, fit, make_batch

logger = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Every knob of an SFT run, with its default."""

    epochs: int = 2  # passes over the demonstrations
    batch_size: int = 8  # demonstrations per gradient step
    learning_rate: float = 1e-4  # AdamW, for the LoRA weights
    max_length: int = 512  # prompt + answer tokens; the prompt loses its beginning first
    max_grad_norm: float = 1.0  # gradient clipping
    seed: int = 0  # seeds the order of the batches: same seed, same run


@dataclass
class SFTResult:
    model: PeftModel  # the policy, adapter "default" trained
    metrics: list[dict[str, float]]  # one log per step (see `train_sft`)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: encoding, update


def train_sft(
    policy: PeftModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[Demonstration],
    config: SFTConfig,
    *,
    on_step: Callable[[dict[str, float]], None] | None = None,
) -> SFTResult:
    """Fine-tune the policy's adapter on `examples`; returns it and one log per step.

    Each log holds: step, epoch, loss (the weighted mean NLL per answer token of the batch,
    before its update), tokens (answer tokens in the batch).
    """
    if not examples:
        raise ValueError("SFT needs at least one demonstration")
    started = time.perf_counter()
    device = next(policy.parameters()).device
    policy.eval()
    eos = eos_ids(policy, tokenizer)
    encoded: list[tuple[list[int], list[int]]] = []  # (prompt, answer) token ids
    for example in examples:
        prompt, answer = encode_exchange(tokenizer, example.prompt, example.completion, eos)
        prompt, (answer,) = fit(prompt, [answer], config.max_length)
        encoded.append((prompt, answer))
    weights = torch.tensor([e.weight for e in examples], device=device)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=0.0)
    order = torch.Generator().manual_seed(config.seed)
    timings = {"encoding": time.perf_counter() - started, "update": 0.0}
    metrics: list[dict[str, float]] = []
    for epoch in range(config.epochs):
        for rows in torch.randperm(len(examples), generator=order).split(config.batch_size):
            update_started = time.perf_counter()
            rows = rows.tolist()
            batch = make_batch([encoded[i][0] for i in rows], [encoded[i][1] for i in rows],
                               tokenizer.pad_token_id, device)
            logprobs = answer_logprobs(policy, batch)
            loss = sft_loss(logprobs, batch.mask, weights[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            timings["update"] += time.perf_counter() - update_started
            metrics.append({"step": len(metrics), "epoch": epoch, "loss": loss.item(),
                            "tokens": batch.mask.sum().item()})
            if on_step:
                on_step(metrics[-1])
    logger.info("SFT: %d steps on %d demonstrations, loss %.3f -> %.3f", len(metrics),
                len(examples), metrics[0]["loss"], metrics[-1]["loss"])
    return SFTResult(policy, metrics, timings)

