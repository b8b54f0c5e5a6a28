"""Answer the logged prompts again with a given adapter, and see whether the reward model
prefers the new answers to the logged ones.

Every logged assistant answer to a user turn (oldest first, up to `limit`) gives a prompt:
the thread above the answer. The adapter (from the adapter store, on the base model)
answers each prompt again, sampled with a fixed seed; the current reward model scores the
logged answer and the new one. The figures: the mean reward delta (new − logged) with a
95% bootstrap interval, the share of prompts where the new answer scores higher, and the
same per adapter that wrote the logged answers ("base" for the base model). The log is
read through a temporary store rebuilt from it (`feedback.replay`), so an event log and
an export read alike.
"""

import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from feedback.db import open_store, session_scope
from feedback.formats import Progress
from feedback.models import MessageRole
from feedback.queries.conversations import iter_messages, message_paths
from feedback.queries.exclusions import training_filter
from feedback.replay import replay_log
from feedback.stats import paired_mean_ci
from flywheel.adapter_store import AdapterStore
from flywheel.errors import FlywheelError
from flywheel.generation import chat_ids, eos_ids, left_padded, until_eos
from flywheel.model_loading import load_model
from flywheel.settings import Settings
from trainer.reward import RewardModel, current_reward_model
from trainer.sampling import sampling_kwargs

Messages = list[dict[str, str]]


@dataclass
class ReplayConfig:
    max_new_tokens: int = 64
    max_prompt_tokens: int = 512  # longer threads lose their beginning
    temperature: float = 0.7  # 0: greedy
    batch_size: int = 8
    seed: int = 0


@dataclass
class LoggedAnswer:
    message_id: int
    adapter_version: str  # the adapter that wrote it, or "base"
    prompt: Messages
    content: str


def replay_answers(settings: Settings, log_path: str | Path, *, adapter: str,
                   limit: int | None = None, config: ReplayConfig | None = None,
                   on_progress: Progress | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per-prompt rows and the figures (module doc). `on_progress(answers, total)`."""
    config = config or ReplayConfig()
    started = time.perf_counter()
    logged = logged_answers(log_path, limit=limit)
    registry = open_store(settings.db_url, event_log=settings.event_log_path)
    try:
        rm_dir = current_reward_model(registry, settings.data_dir)
    finally:
        registry.dispose()
    if rm_dir is None:
        raise FlywheelError("no current reward model in the registry: run a cycle or "
                            "`flywheel train reward` first")
    store = AdapterStore(settings.adapters_dir)
    store.verify(adapter)  # before the model loads: a wrong version fails at once
    loaded = load_model(settings.model, models_dir=settings.models_dir)
    policy = store.load(loaded.model, adapter, adapter_name="default")
    prompts = [answer.prompt for answer in logged]
    answers = _generate(policy, loaded.tokenizer, prompts, config, on_progress)
    reward_model = RewardModel.load(rm_dir, models_dir=settings.models_dir)
    old = reward_model.score(prompts, [answer.content for answer in logged]).tolist()
    new = reward_model.score(prompts, answers).tolist()
    rows = [{"message_id": answer.message_id, "logged_adapter": answer.adapter_version,
             "prompt": answer.prompt, "logged": answer.content, "replayed": text,
             "logged_reward": before, "replayed_reward": after, "delta": after - before}
            for answer, text, before, after in zip(logged, answers, old, new, strict=True)]
    by_adapter: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_adapter[row["logged_adapter"]].append(row)
    figures = {"adapter": adapter, "reward_model": rm_dir.name, **_summary(rows, config),
               "by_logged_adapter": {version: _summary(group, config)
                                     for version, group in sorted(by_adapter.items())},
               "seconds": round(time.perf_counter() - started, 2)}
    return rows, figures


def logged_answers(log_path: str | Path, *, limit: int | None = None) -> list[LoggedAnswer]:
    """The log's assistant answers to user turns, oldest first, with their threads; none
    whose thread holds a message that operators excluded or redacted."""
    with tempfile.TemporaryDirectory(prefix="flywheel-replay-") as temp:
        engine = open_store(f"sqlite:///{Path(temp) / 'log.db'}")
        try:
            replay_log(engine, log_path)
            with session_scope(engine) as session:
                kept = training_filter(session)
                ids = [m.id for m in iter_messages(session) if m.role == MessageRole.assistant]
                paths = message_paths(session, message_ids=ids)
                found = []
                for message_id in ids:
                    path = paths[message_id]
                    if (len(path) >= 2 and path[-2].role == MessageRole.user
                            and all(kept.keeps_message(m.id) for m in path)):
                        found.append(LoggedAnswer(
                            message_id, path[-1].adapter_version or "base",
                            [{"role": m.role, "content": m.content} for m in path[:-1]],
                            path[-1].content))
                    if limit is not None and len(found) >= limit:
                        break
        finally:
            engine.dispose()
    if not found:
        raise FlywheelError(f"{log_path} holds no assistant answers to user turns")
    return found


@torch.no_grad()
def _generate(policy, tokenizer, prompts: list[Messages], config: ReplayConfig,
              on_progress: Progress | None) -> list[str]:
    policy.eval()
    device, pad = next(policy.parameters()).device, tokenizer.pad_token_id
    sampling = sampling_kwargs(config.temperature, seed=config.seed, device=device)
    eos = eos_ids(policy, tokenizer)
    texts = []
    for start in range(0, len(prompts), config.batch_size):
        rows = [chat_ids(tokenizer, p, max_tokens=config.max_prompt_tokens)
                for p in prompts[start:start + config.batch_size]]
        inputs, attention, _ = left_padded(rows, pad, device)
        generated = policy.generate(
            input_ids=inputs, attention_mask=attention, **sampling,
            max_new_tokens=config.max_new_tokens, pad_token_id=pad)
        for row in generated[:, inputs.shape[1]:].tolist():
            texts.append(tokenizer.decode(until_eos(row, eos), skip_special_tokens=True))
        if on_progress:
            on_progress(len(texts), len(prompts))
    return texts


def _summary(rows: list[dict[str, Any]], config: ReplayConfig) -> dict[str, Any]:
    deltas = [row["delta"] for row in rows]
    mean, low, high = paired_mean_ci(deltas, seed=config.seed)
    return {"answers": len(rows), "mean_delta": mean, "delta_low": low, "delta_high": high,
            "logged_reward": sum(r["logged_reward"] for r in rows) / len(rows),
            "replayed_reward": sum(r["replayed_reward"] for r in rows) / len(rows),
            "replayed_better": sum(d > 0 for d in deltas) / len(deltas)}
