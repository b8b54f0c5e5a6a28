"""Training and evaluating the reward model: one recipe, top to bottom."""

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from feedback.stats import paired_mean_ci
from trainer.configs import RewardConfig
from trainer.data import Label, Pair
from trainer.distributed import ONE_PROCESS, DataParallel, data_parallel
from trainer.reward.model import RewardModel
from trainer.rlhf.reward_losses import (
    bradley_terry_loss,
    expected_calibration_error,
    pairwise_accuracy,
    pointwise_loss,
)

log = logging.getLogger(__name__)
Progress = Callable[[int, int | None], None]  # (steps done, total steps)
# The held-out figures a model keeps with it and the registry shows.
HELDOUT_FIGURES = ("accuracy", "loss", "ece", "margin", "margin_low", "margin_high", "pairs")
STATS_SAMPLE = 2048  # answers scored for the reward mean/std when nothing is held out


def train_reward_model(train_pairs: Sequence[Pair], heldout_pairs: Sequence[Pair],
                       config: RewardConfig | None = None, *,
                       train_labels: Sequence[Label] = (),
                       warm_start: str | Path | None = None,
                       on_progress: Progress | None = None
                       ) -> tuple[RewardModel, dict[str, Any]]:
    """Train a reward model with the Bradley–Terry loss (plus a pointwise term for
    labels), evaluate it on the held-out pairs, and store the reward mean/std and the
    metrics in it. `warm_start` (a saved reward model of the same backbone) is where
    training starts from instead of a fresh head. Returns the model (eval mode) and the
    metrics."""
    config = config or RewardConfig()
    if not train_pairs:
        raise ValueError("no training pairs: the reward model needs preferences")
    model = _initial_model(config, warm_start)
    if config.backbone == "minilm":
        # The embeddings are 12M of MiniLM's 23M weights: freezing them halves the
        # optimizer's work and guards the pre-trained vocabulary against a small data
        # set. Freezing the lowest layers too means no backward pass through them at all
        # (a third less compute for 3 of 6), and the top layers are where a preference
        # signal specialises the general-purpose sentence features.
        frozen = list(model.backbone.encoder.layer[:config.frozen_layers])
        if config.freeze_embeddings:
            frozen.append(model.backbone.embeddings)
        for module in frozen:
            module.requires_grad_(False)

    # Tokenize once. A pair is one row of 2 sequences; a label one row of 1.
    chosen = model.encode([p.prompt for p in train_pairs], [p.chosen for p in train_pairs])
    rejected = model.encode([p.prompt for p in train_pairs], [p.rejected for p in train_pairs])
    labelled = model.encode([x.prompt for x in train_labels], [x.completion for x in train_labels])
    pair_rows = [(c, r, p.weight) for c, r, p in zip(chosen, rejected, train_pairs, strict=True)]
    label_rows = [(s, x.label, x.weight) for s, x in zip(labelled, train_labels, strict=True)]

    steps_per_epoch = (math.ceil(len(pair_rows) / config.batch_size)
                       + math.ceil(len(label_rows) / (2 * config.batch_size)))
    total = steps_per_epoch * config.epochs
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, int(config.warmup_ratio * total))

    def lr_factor(s: int) -> float:  # linear warm-up, then linear decay to zero
        return (s + 1) / warmup if s < warmup else max(0.0, (total - s) / (total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)

    model.train()
    for module in model.modules():
        # No dropout: the two answers of a pair must differ only in their text, not in
        # which units were dropped (dropout noise swamps a small reward difference).
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    rng = random.Random(config.seed)
    dp = data_parallel()  # on several processes, each trains on its part of every batch
    dp.sync_parameters(params)
    step, start, cpu_start = 0, time.perf_counter(), time.process_time()
    for _ in range(config.epochs):
        batches = (_length_batches("pairs", pair_rows, config.batch_size, rng,
                                   lambda r: max(len(r[0][0]), len(r[1][0])))
                   + _length_batches("labels", label_rows, 2 * config.batch_size, rng,
                                     lambda r: len(r[0][0])))
        rng.shuffle(batches)
        for kind, rows in batches:
            mine = rows[dp.part(len(rows), allow_empty=True)]
            if mine:
                _batch_loss(model, kind, mine, rows, config, dp.world_size).backward()
            dp.sync_gradients(params)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if on_progress:
                on_progress(step, total)
    train_seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start
    model.eval()

    # Normalisation statistics come from the held-out answers' rewards (the training set's
    # when nothing is held out), so that PPO sees rewards of about mean 0 and std 1 on
    # fresh answers.
    start = time.perf_counter()
    heldout_rewards = _pair_rewards(model, heldout_pairs, config.eval_batch_size, dp)
    metrics = _heldout_figures(*heldout_rewards, seconds=time.perf_counter() - start)
    raw = torch.cat(heldout_rewards if heldout_pairs else _pair_rewards(
        model, train_pairs[:STATS_SAMPLE // 2], config.eval_batch_size, dp))
    model.reward_mean = float(raw.mean())
    model.reward_std = float(raw.std()) if raw.numel() > 1 else 1.0
    model.reward_std = max(model.reward_std, 1e-6)
    metrics.update(train_pairs=len(train_pairs), train_labels=len(train_labels),
                   epochs=config.epochs, steps=step, train_seconds=round(train_seconds, 2),
                   train_pairs_per_s=round(len(train_pairs) * config.epochs / train_seconds, 2),
                   train_cpu_seconds=round(cpu_seconds, 2),
                   reward_mean=model.reward_mean, reward_std=model.reward_std)
    model.metrics = {"heldout": {k: metrics[k] for k in HELDOUT_FIGURES},
                     "config": config.to_dict()}
    return model, metrics


def _batch_loss(model: RewardModel, kind: str, mine: list, rows: list, config: RewardConfig,
                world_size: int) -> torch.Tensor:
    """The loss of this rank's rows `mine` of the global batch `rows`, scaled so that its
    gradient averaged over the ranks is the global batch's: each mean over rows is weighted
    by world size × this rank's share of its denominator (1 on one process)."""
    weight = torch.tensor([r[2] for r in mine], device=model.device)
    share = world_size * sum(r[2] for r in mine) / max(sum(r[2] for r in rows), 1e-8)
    if kind == "labels":
        batch = model.collate([r[0] for r in mine])
        labels = torch.tensor([float(r[1]) for r in mine], device=model.device)
        return share * config.pointwise_coef * pointwise_loss(model(*batch), labels, weight)
    batch = model.collate([r[0] for r in mine] + [r[1] for r in mine])
    r_chosen, r_rejected = model(*batch).chunk(2)  # one pass for both sides
    loss = share * bradley_terry_loss(r_chosen, r_rejected, margin=config.margin, weight=weight)
    if config.center_coef:  # the centring term is a plain mean over pairs
        count_share = world_size * len(mine) / len(rows)
        loss = loss + count_share * config.center_coef * ((r_chosen + r_rejected) ** 2).mean()
    return loss


def _initial_model(config: RewardConfig, warm_start: str | Path | None) -> RewardModel:
    """The model training starts from: `warm_start` when it has the configured backbone
    (cycles build on each other), else a fresh one."""
    if warm_start is not None:
        model = RewardModel.load(warm_start, device=config.device, models_dir=config.models_dir)
        if model.kind == config.backbone and model.max_length == config.max_length:
            for name, param in model.backbone.named_parameters():  # peft loads a LoRA frozen
                if model.kind == "minilm" or "lora_" in name:
                    param.requires_grad_(True)
            return model
        log.info("reward model %s is %s/%d, the recipe asks for %s/%d: starting fresh",
                 warm_start, model.kind, model.max_length, config.backbone, config.max_length)
    return RewardModel.create(config.backbone, max_length=config.max_length,
                              base_model=config.base_model, models_dir=config.models_dir,
                              lora_r=config.lora_r, device=config.device, seed=config.seed)


def evaluate_reward_model(model: RewardModel, pairs: Sequence[Pair], *,
                          batch_size: int = 64, dp: DataParallel = ONE_PROCESS
                          ) -> dict[str, Any]:
    """Accuracy, Bradley–Terry loss and calibration (ECE) of the model on `pairs`, its
    margin, and pairs scored per second. Empty `pairs` give NaN figures. With `dp`, every
    rank calls it with the same pairs and scores its part of them.

    The margin is the mean of the chosen answer's reward minus the rejected one's, in
    units of the rewards' standard deviation, with a 90% bootstrap interval (`margin_low`,
    `margin_high`): a low end above zero says the model agrees with the voters beyond
    chance, by a one-sided test at the 5% level. It tells a model that agrees with them
    from one that does not where accuracy cannot: a pair whose answers the voters like
    alike gets a coin-flip label, which costs a good model accuracy but not margin (it
    scores the two alike)."""
    start = time.perf_counter()
    chosen, rejected = _pair_rewards(model, pairs, batch_size, dp)
    return _heldout_figures(chosen, rejected, seconds=time.perf_counter() - start)


def _heldout_figures(chosen: torch.Tensor, rejected: torch.Tensor, *, seconds: float
                     ) -> dict[str, Any]:
    """`evaluate_reward_model`'s figures from the rewards [N] of the chosen and of the
    rejected answers, scored in `seconds`."""
    pairs = len(chosen)
    if not pairs:
        return {**dict.fromkeys((*HELDOUT_FIGURES, "eval_pairs_per_s"), float("nan")),
                "pairs": 0}
    spread = float(torch.cat([chosen, rejected]).std()) if pairs > 1 else 0.0
    margin, low, high = paired_mean_ci(((chosen - rejected) / max(spread, 1e-6)).tolist(),
                                       level=0.9)
    return {"accuracy": float(pairwise_accuracy(chosen, rejected)),
            "loss": float(bradley_terry_loss(chosen, rejected)),
            "ece": float(expected_calibration_error(chosen, rejected)),
            "margin": margin, "margin_low": low, "margin_high": high,
            "pairs": pairs, "eval_pairs_per_s": round(pairs / max(seconds, 1e-9), 2)}


def _pair_rewards(model: RewardModel, pairs: Sequence[Pair], batch_size: int,
                  dp: DataParallel = ONE_PROCESS) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw rewards [N] of the chosen and of the rejected answers, on the CPU (each rank
    scores its part of the pairs; every rank gets them all)."""
    pairs = pairs[dp.part(len(pairs), allow_empty=True)]
    prompts = [p.prompt for p in pairs]
    rewards = model.score(prompts * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs],
                          normalized=False, batch_size=batch_size).float().cpu()
    return dp.gather_rows(rewards[:len(pairs)]), dp.gather_rows(rewards[len(pairs):])


def _length_batches(kind: str, rows: list, size: int, rng: random.Random,
                    length: Callable[[Any], int]) -> list[tuple[str, list]]:
    """Batches of rows of similar length, so padding is small: shuffle, then sort by
    length inside windows of 50 batches (keeps some randomness in what meets what)."""
    order = rows[:]
    rng.shuffle(order)
    window = 50 * size
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=length)
        batches += [(kind, chunk[i:i + size]) for i in range(0, len(chunk), size)]
    return batches
